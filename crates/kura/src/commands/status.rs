//! `kura status`: per plan, its health, the age of its last good backup
//! against its limit (the RPO it keeps), the next scheduled run, the last
//! run's duration, the size of its last runs, its copies; then the open
//! problems and the notifications that could not be delivered.
use serde::Serialize;

use crate::cli::Global;
use crate::output::{code, human_bytes, print_json, Failure};

#[derive(Serialize)]
struct PlanStatus {
    #[serde(flatten)]
    health: kura_monitor::PlanHealth,
    next_run: Option<chrono::DateTime<chrono::Utc>>,
    /// Bytes read by the last good runs, oldest first.
    size_trend: Vec<i64>,
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
    plans: std::collections::BTreeMap<String, PlanStatus>,
    alerts: Vec<kura_monitor::notify::OpenAlert>,
    undelivered: Vec<kura_monitor::notify::FailedDelivery>,
}

pub fn run(g: &Global) -> Result<u8, Failure> {
    let cfg = super::require_config(g)?;
    let state = super::state_dir();
    let now = super::clock().now();
    let fail = |e: kura_monitor::MonitorError| Failure::new(e.to_string());
    let health = kura_monitor::assess(&cfg, &state, None, now).map_err(fail)?;
    let history = kura_runner::history::History::open(&state.join("history.db"))
        .map_err(|e| Failure::new(e.to_string()))?;
    let mut plans = std::collections::BTreeMap::new();
    for (name, h) in health.plans.clone() {
        let plan = &cfg.plans[&name];
        let next_run = plan.schedule.next_after(plan.zone.local(now)).map(|t| plan.zone.instant(t));
        let runs = history.list(Some(&name), 50).map_err(|e| Failure::new(e.to_string()))?;
        let mut size_trend: Vec<i64> = runs
            .iter()
            .filter(|e| e.kind == "backup" && (e.status == "ok" || e.status == "warnings"))
            .take(5)
            .map(|e| e.targets.iter().map(|t| t.bytes_read).sum())
            .collect();
        size_trend.reverse();
        plans.insert(name, PlanStatus { health: h, next_run, size_trend });
    }
    let notes = kura_monitor::notify::open_alerts(&state).map_err(fail)?;
    let status = Status { status: health.status, plans, alerts: notes.open, undelivered: notes.undelivered };
    if g.json {
        print_json(&status);
        return Ok(code::OK);
    }
    for r in &health.reasons {
        println!("{r}");
    }
    for (name, p) in &status.plans {
        let h = &p.health;
        let age = match h.age_seconds {
            Some(a) => format!(
                "last good backup {} ago (limit {})",
                kura_monitor::health::human(chrono::Duration::seconds(a)),
                kura_monitor::health::human(chrono::Duration::seconds(h.max_age_seconds))
            ),
            None => "no good backup yet".into(),
        };
        println!("{name}: {} — {age}", h.status);
        if let Some(n) = p.next_run {
            println!("  next run    {}", n.format("%Y-%m-%d %H:%M UTC"));
        }
        if let (Some(s), Some(d)) = (&h.last_status, h.last_duration_seconds) {
            println!("  last run    {s}, {d:.1}s");
        }
        if !p.size_trend.is_empty() {
            let sizes: Vec<String> = p.size_trend.iter().map(|b| human_bytes(*b as u64)).collect();
            println!("  size        {}", sizes.join(" → "));
        }
        match (&h.last_drill, &h.last_good_drill) {
            (Some(d), good) => {
                let when = d.finished.format("%Y-%m-%d %H:%M UTC");
                let rto = good
                    .as_ref()
                    .map(|g| format!("; measured restore time {:.1}s", g.seconds))
                    .unwrap_or_default();
                println!("  last drill  {when}, {}{rto}", if d.ok { "passed" } else { "FAILED" });
            }
            (None, _) => println!("  last drill  never (kura drill --plan {name})"),
        }
        let o = &h.objectives;
        let judged = |met: Option<bool>| match met {
            Some(true) => "met",
            Some(false) => "NOT MET",
            None => "not judged yet",
        };
        if let Some(r) = o.rpo_seconds {
            let r = kura_monitor::health::human(chrono::Duration::seconds(r));
            println!("  RPO {r}: {}", judged(o.rpo_met));
        }
        if let Some(r) = o.rto_seconds {
            let r = kura_monitor::health::human(chrono::Duration::seconds(r));
            println!("  RTO {r}: {}", judged(o.rto_met));
        }
        for (repo, c) in &h.copies {
            let when =
                c.last_copy.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or("never".into());
            println!("  copy to {repo}: {when}");
        }
        for r in &h.reasons {
            println!("  ! {r}");
        }
    }
    if !status.alerts.is_empty() {
        println!("open problems:");
        for a in &status.alerts {
            println!("  [{}] {} (since {})", a.level, a.summary, a.since);
        }
    }
    if !status.undelivered.is_empty() {
        println!("notifications not delivered:");
        for u in &status.undelivered {
            println!("  {} at {}: {}", u.channel, u.at, u.error);
        }
    }
    Ok(code::OK)
}
