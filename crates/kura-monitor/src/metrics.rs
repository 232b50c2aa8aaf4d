//! The Prometheus text exposition format (version 0.0.4) of a [`Health`]:
//! what `GET /metrics` answers. Every family has its HELP and TYPE line,
//! even with no samples yet, so dashboards and alert rules find the names.
use std::fmt::Write;

use kura_policy::Config;

use crate::health::Health;

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Family {
        Family { name, kind, help, samples: Vec::new() }
    }

    fn add(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        self.samples.push((labels, value));
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn write_family(out: &mut String, f: &Family) {
    let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
    let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
    for (labels, value) in &f.samples {
        out.push_str(f.name);
        if !labels.is_empty() {
            let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = write!(out, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(out, " {value}");
    }
}

/// What `/metrics` answers: every plan's health and runs, and the
/// notifications' state, from the state directory.
pub fn gather(
    cfg: &Config,
    state_dir: &std::path::Path,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, crate::MonitorError> {
    let health = crate::assess(cfg, state_dir, None, now)?;
    let open = crate::notify::open_alerts(state_dir)?.open;
    let failures = crate::notify::delivery_failures(state_dir)?;
    let history = kura_runner::history::History::open(&state_dir.join("history.db"))?;
    let sizes = history.repository_sizes(now)?;
    let mut text = render(cfg, &health);
    let mut stored = Family::new(
        "kura_repository_stored_bytes",
        "gauge",
        "What the repository held when a run of this host last measured it (its packs' bytes).",
    );
    for (repo, s) in &sizes {
        if let Some((_, b)) = s.last() {
            stored.add(vec![("repository", repo.clone())], *b as f64);
        }
    }
    write_family(&mut text, &stored);
    let mut alerts =
        Family::new("kura_alerts_open", "gauge", "Problems told of and not yet resolved, by level.");
    for level in ["critical", "warning"] {
        alerts
            .add(vec![("level", level.to_string())], open.iter().filter(|a| a.level == level).count() as f64);
    }
    let mut undelivered = Family::new(
        "kura_notification_failures_total",
        "counter",
        "Notifications that could not be delivered after their retries, by channel.",
    );
    for name in cfg.notify.keys() {
        undelivered.add(vec![("channel", name.clone())], failures.get(name).copied().unwrap_or(0) as f64);
    }
    write_family(&mut text, &alerts);
    write_family(&mut text, &undelivered);
    Ok(text)
}

/// The metrics of `health`, labelled by plan, target and repository.
pub fn render(cfg: &Config, health: &Health) -> String {
    let mut build = Family::new("kura_build_info", "gauge", "The running kura's version (always 1).");
    build.add(vec![("version", env!("CARGO_PKG_VERSION").to_string())], 1.0);
    let mut healthy = Family::new(
        "kura_health_status",
        "gauge",
        "1 when the plan's newest good backup (and each copy) is within its limit.",
    );
    let mut max_age =
        Family::new("kura_backup_max_age_seconds", "gauge", "How old the newest good backup may be.");
    let mut last_success = Family::new(
        "kura_backup_last_success_timestamp_seconds",
        "gauge",
        "When the plan's newest successfully completed run finished.",
    );
    let mut last_status = Family::new(
        "kura_backup_last_status",
        "gauge",
        "1 when the plan's newest run succeeded, 0 when it failed.",
    );
    let mut duration =
        Family::new("kura_backup_duration_seconds", "gauge", "How long the plan's newest run took.");
    let mut read = Family::new(
        "kura_backup_read_bytes",
        "gauge",
        "Bytes the newest good run read from the target (its size).",
    );
    let mut added = Family::new(
        "kura_backup_added_bytes",
        "gauge",
        "New bytes (before compression) the newest good run added.",
    );
    let mut stored = Family::new(
        "kura_backup_stored_bytes",
        "gauge",
        "Bytes the newest good run stored in the repository (compressed, encrypted).",
    );
    let mut files =
        Family::new("kura_backup_files", "gauge", "Files the newest good run saved for the target.");
    let mut successes = Family::new("kura_backup_success_total", "counter", "Plan runs that succeeded.");
    let mut failures =
        Family::new("kura_backup_failures_total", "counter", "Plan runs that failed in part or whole.");
    let mut running =
        Family::new("kura_run_in_progress", "gauge", "1 while a run of the plan holds its lock.");
    let mut copy = Family::new(
        "kura_copy_last_success_timestamp_seconds",
        "gauge",
        "When the newest run that copied the plan's snapshots to the repository finished.",
    );
    let mut drill_ok = Family::new(
        "kura_restore_drill_last_success_timestamp_seconds",
        "gauge",
        "When the plan's newest passing restore drill finished.",
    );
    let mut drill_time = Family::new(
        "kura_restore_drill_duration_seconds",
        "gauge",
        "How long the plan's newest passing restore drill took: its measured RTO.",
    );
    let mut drill_status = Family::new(
        "kura_restore_drill_last_status",
        "gauge",
        "1 when the plan's newest restore drill passed.",
    );
    let mut objective = Family::new(
        "kura_objective_met",
        "gauge",
        "1 when the plan meets its objective: rpo by its newest good backup, rto by its last passing drill.",
    );
    let mut target_objective = Family::new(
        "kura_target_objective_met",
        "gauge",
        "1 when the target meets its own objective: rpo by its newest good backup, rto by its last passing drill.",
    );
    for (name, p) in &health.plans {
        let plan = || vec![("plan", name.clone())];
        for (which, met) in [("rpo", p.objectives.rpo_met), ("rto", p.objectives.rto_met)] {
            if let Some(m) = met {
                objective.add(
                    vec![("plan", name.clone()), ("objective", which.to_string())],
                    if m { 1.0 } else { 0.0 },
                );
            }
        }
        for (target, o) in &p.targets {
            for (which, met) in [("rpo", o.rpo_met), ("rto", o.rto_met)] {
                if let Some(m) = met {
                    target_objective.add(
                        vec![
                            ("plan", name.clone()),
                            ("target", target.clone()),
                            ("objective", which.to_string()),
                        ],
                        if m { 1.0 } else { 0.0 },
                    );
                }
            }
        }
        if let Some(d) = &p.last_good_drill {
            drill_ok.add(plan(), d.finished.timestamp() as f64);
            drill_time.add(plan(), d.seconds);
        }
        if let Some(d) = &p.last_drill {
            drill_status.add(plan(), if d.ok { 1.0 } else { 0.0 });
        }
        healthy.add(plan(), if p.reasons.is_empty() { 1.0 } else { 0.0 });
        max_age.add(plan(), p.max_age_seconds as f64);
        if let Some(t) = p.last_backup {
            last_success.add(plan(), t.timestamp() as f64);
        }
        if let Some(s) = &p.last_status {
            last_status.add(plan(), if s == "ok" || s == "warnings" { 1.0 } else { 0.0 });
        }
        if let Some(d) = p.last_duration_seconds {
            duration.add(plan(), d);
        }
        successes.add(plan(), p.backup_count as f64);
        failures.add(plan(), p.failure_count as f64);
        running.add(plan(), if p.running_since.is_some() { 1.0 } else { 0.0 });
        let configured = cfg.plans.get(name);
        for t in p.last_good.iter().flat_map(|e| &e.targets) {
            let repository = configured
                .and_then(|c| c.repository.clone())
                .or_else(|| cfg.targets.get(&t.target).map(|c| c.repository.clone()))
                .unwrap_or_default();
            let labels = || {
                vec![("plan", name.clone()), ("target", t.target.clone()), ("repository", repository.clone())]
            };
            read.add(labels(), t.bytes_read as f64);
            added.add(labels(), t.bytes_added as f64);
            stored.add(labels(), t.bytes_stored as f64);
            files.add(labels(), t.files as f64);
        }
        for (repo, c) in &p.copies {
            if let Some(t) = c.last_copy {
                copy.add(vec![("plan", name.clone()), ("repository", repo.clone())], t.timestamp() as f64);
            }
        }
    }
    let mut out = String::new();
    for f in [
        &build,
        &healthy,
        &max_age,
        &last_success,
        &last_status,
        &duration,
        &read,
        &added,
        &stored,
        &files,
        &successes,
        &failures,
        &running,
        &copy,
        &drill_ok,
        &drill_time,
        &drill_status,
        &objective,
        &target_objective,
    ] {
        write_family(&mut out, f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut f = Family::new("x", "gauge", "h");
        f.add(vec![("plan", "a\"b\\c\nd".into())], 1.0);
        let mut out = String::new();
        write_family(&mut out, &f);
        assert!(out.contains(r#"x{plan="a\"b\\c\nd"} 1"#), "{out}");
    }
}
