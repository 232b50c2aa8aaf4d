//! `kura health [--plan P]`: the answer `GET /health` gives, on the command
//! line, for scripts and Nagios-style checks: exit 0 when healthy, 1 when
//! not (why, per plan, on stdout).
use crate::cli::{Global, HealthArgs};
use crate::output::{code, print_json, Failure};

/// The monitor's bearer token: `[monitor] token`, or the first line of
/// `token_file`.
pub fn monitor_token(cfg: &kura_policy::Config) -> Result<Option<String>, Failure> {
    if let Some(t) = &cfg.monitor.token {
        return Ok(Some(t.clone()));
    }
    let Some(path) = &cfg.monitor.token_file else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::new(format!("[monitor] token_file {}: {e}", path.display())))?;
    match text.lines().next().map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => Ok(Some(t.to_string())),
        None => Err(Failure::new(format!("[monitor] token_file {} is empty", path.display()))),
    }
}

pub fn run(g: &Global, a: &HealthArgs) -> Result<u8, Failure> {
    let cfg = super::require_config(g)?;
    if let Some(p) = &a.plan {
        if !cfg.plans.contains_key(p) {
            let known: Vec<&str> = cfg.plans.keys().map(String::as_str).collect();
            return Err(Failure::new(format!("no plan named {p} (configured: {})", known.join(", "))));
        }
    }
    let now = super::clock().now();
    let health = kura_monitor::assess(&cfg, &super::state_dir(), a.plan.as_deref(), now)
        .map_err(|e| Failure::new(e.to_string()))?;
    if g.json {
        print_json(&health);
    } else {
        for r in &health.reasons {
            println!("unhealthy  {r}");
        }
        for (name, p) in &health.plans {
            let last = match (p.last_backup, p.age_seconds) {
                (Some(t), Some(age)) => format!(
                    "last good backup {} ({} ago, limit {})",
                    t.format("%Y-%m-%d %H:%M UTC"),
                    kura_monitor::health::human(chrono::Duration::seconds(age)),
                    kura_monitor::health::human(chrono::Duration::seconds(p.max_age_seconds))
                ),
                _ => "no good backup recorded".to_string(),
            };
            println!(
                "{:<10} {name}: {last}; {} good runs, {} failed",
                p.status, p.backup_count, p.failure_count
            );
            for r in &p.reasons {
                println!("           - {r}");
            }
            if let Some(since) = &p.running_since {
                println!("           running since {since}");
            }
        }
    }
    Ok(if health.healthy() { code::OK } else { code::FAILED })
}
