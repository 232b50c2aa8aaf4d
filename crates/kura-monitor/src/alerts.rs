//! The alert rules: which problems are open now, read from the run
//! history. Each problem has a stable key (rule, plan, target), so that
//! [`crate::notify`] can tell a problem that starts from one that lasts
//! and one that ends. The rules:
//!
//! - critical: a plan's newest run failed (in part or whole); no
//!   successful backup for `alert_after` (or the plan's health limit); a
//!   copy repository behind by as long; a run holding its lock for as
//!   long; the ransomware canary.
//! - warning: a target's backup read less than `size_drop` of its
//!   previous one; a run took `slow_factor` × the median of the last
//!   `slow_runs`; a slot came while the previous run was still going.
use chrono::{DateTime, Duration, Utc};
use kura_policy::{AlertRules, Config, Level, Plan};
use kura_runner::history::{Entry, History, TargetEntry};
use serde::Serialize;

use crate::health::{human, max_age, plan_health};
use crate::MonitorError;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// `rule:plan[:target]`: the same problem keeps its key.
    pub key: String,
    pub level: Level,
    pub plan: String,
    pub target: Option<String>,
    pub summary: String,
}

fn alert(rule: &str, level: Level, plan: &str, target: Option<&str>, summary: String) -> Alert {
    let key = match target {
        Some(t) => format!("{rule}:{plan}:{t}"),
        None => format!("{rule}:{plan}"),
    };
    Alert { key, level, plan: plan.to_string(), target: target.map(str::to_string), summary }
}

fn good(e: &Entry) -> bool {
    e.kind == "backup" && (e.status == "ok" || e.status == "warnings")
}

/// Every open problem of every plan.
pub fn evaluate(
    cfg: &Config,
    history: &History,
    state_dir: &std::path::Path,
    now: DateTime<Utc>,
) -> Result<Vec<Alert>, MonitorError> {
    let mut out = Vec::new();
    for plan in cfg.plans.values() {
        let running = kura_runner::plan::running_since(state_dir, &plan.name);
        out.extend(plan_alerts(&cfg.alerts, history, (plan, &cfg.targets), now, running)?);
    }
    out.extend(repository_alerts(cfg, history, now)?);
    Ok(out)
}

/// A repository above its `quota`; all of them above the `budget`.
fn repository_alerts(
    cfg: &Config,
    history: &History,
    now: DateTime<Utc>,
) -> Result<Vec<Alert>, MonitorError> {
    let sizes = history.repository_sizes(now)?;
    let latest = |name: &str| sizes.get(name).and_then(|s| s.last()).map(|(_, b)| *b);
    let mut out = Vec::new();
    let mut cost = 0.0;
    for (name, r) in &cfg.repositories {
        let Some(bytes) = latest(name) else { continue };
        if let Some(q) = r.quota.filter(|q| bytes > *q) {
            out.push(Alert {
                key: format!("quota:{name}"),
                level: Level::Warning,
                plan: String::new(),
                target: Some(name.clone()),
                summary: format!(
                    "repository {name} holds {}, above its quota of {}",
                    crate::size(bytes),
                    crate::size(q)
                ),
            });
        }
        cost += bytes as f64 / 1e9 * r.price_per_gb_month.unwrap_or(0.0);
    }
    if let Some(min) = cfg.alerts.min_free {
        for (name, r) in &cfg.repositories {
            let Ok(kura_store::StoreUrl::Local(path)) = kura_store::StoreUrl::parse(&r.url) else { continue };
            // The repository's own directory, or the nearest that exists.
            let Some(dir) = std::path::Path::new(&path).ancestors().find(|p| p.exists()) else { continue };
            let Ok(fs) = rustix::fs::statvfs(dir) else { continue };
            let free = fs.f_bavail.saturating_mul(fs.f_frsize);
            if free < min {
                out.push(Alert {
                    key: format!("space:{name}"),
                    level: Level::Critical,
                    plan: String::new(),
                    target: Some(name.clone()),
                    summary: format!(
                        "repository {name} has {} free on its disk, below {}: the next backups may fail",
                        crate::size(free),
                        crate::size(min)
                    ),
                });
            }
        }
    }
    if let Some(b) = cfg.alerts.budget.filter(|b| cost > *b) {
        out.push(Alert {
            key: "budget".into(),
            level: Level::Warning,
            plan: String::new(),
            target: None,
            summary: format!(
                "the repositories cost {cost:.2} a month at their sizes now, above the budget of {b:.2}"
            ),
        });
    }
    Ok(out)
}

pub fn plan_alerts(
    rules: &AlertRules,
    history: &History,
    (plan, targets): (&Plan, &std::collections::BTreeMap<String, kura_policy::Target>),
    now: DateTime<Utc>,
    running: Option<String>,
) -> Result<Vec<Alert>, MonitorError> {
    let name = plan.name.as_str();
    let mut out = Vec::new();
    // Newest first: runs, and what the daemon recorded instead of a run.
    let all = history.list(Some(name), 200)?;
    let runs: Vec<&Entry> = all.iter().filter(|e| e.kind == "backup").collect();
    let limit =
        rules.alert_after.and_then(|d| Duration::from_std(d).ok()).unwrap_or_else(|| max_age(plan, now));

    if let Some(last) = runs.first().filter(|e| !good(e)) {
        let why = if last.errors.is_empty() { last.status.clone() } else { last.errors.join("; ") };
        out.push(alert(
            "failed",
            Level::Critical,
            name,
            None,
            format!("the last run of {name} failed: {why}"),
        ));
    }
    let health = plan_health(history, plan, targets, now, running)?;
    // Only once the plan has run at all: a plan just added is not yet
    // late (its health says "no backup yet" meanwhile).
    let first_seen = runs.last().map(|e| e.started);
    let stale = match (health.last_backup, first_seen) {
        (Some(t), _) => {
            (now - t > limit).then(|| format!("no successful backup of {name} for {}", human(now - t)))
        }
        (None, Some(first)) if now - first > limit => {
            Some(format!("no successful backup of {name} since its first run {} ago", human(now - first)))
        }
        _ => None,
    };
    if let Some(s) = stale {
        out.push(alert("stale", Level::Critical, name, None, format!("{s} (limit {})", human(limit))));
    }
    for (repo, c) in &health.copies {
        let behind = match c.last_copy {
            Some(t) => (now - t > limit)
                .then(|| format!("the copy of {name} to {repo} is {} behind", human(now - t))),
            None => first_seen
                .filter(|f| now - *f > limit)
                .map(|_| format!("nothing of {name} has been copied to {repo}")),
        };
        if let Some(b) = behind {
            out.push(alert("copy", Level::Critical, name, Some(repo), b));
        }
    }
    if let Some(since) = &health.running_since {
        let started =
            chrono::NaiveDateTime::parse_from_str(since, "%Y-%m-%d %H:%M:%S UTC").ok().map(|t| t.and_utc());
        if let Some(s) = started.filter(|s| now - *s > limit) {
            out.push(alert(
                "stuck",
                Level::Critical,
                name,
                None,
                format!("a run of {name} has been going since {since}, {} ago", human(now - s)),
            ));
        }
    }
    if let Some(d) = all.iter().find(|e| e.kind == "drill").filter(|d| d.status != "ok") {
        out.push(alert(
            "drill",
            Level::Critical,
            name,
            None,
            format!("the restore drill of {name} failed: {}", d.errors.join("; ")),
        ));
    }
    if let (Some(rto), Some(d)) = (plan.rto, &health.last_good_drill) {
        if d.seconds > rto.as_secs_f64() {
            out.push(alert(
                "rto",
                Level::Warning,
                name,
                None,
                format!(
                    "the last restore drill of {name} took {}, above its RTO of {}",
                    human(Duration::milliseconds((d.seconds * 1000.0) as i64)),
                    human(Duration::from_std(rto).unwrap_or(Duration::MAX))
                ),
            ));
        }
    }
    if all.iter().find(|e| e.kind != "drill").is_some_and(|e| e.kind == "missed") {
        out.push(alert(
            "overrun",
            Level::Warning,
            name,
            None,
            format!("a run of {name} was still going when its next slot came"),
        ));
    }

    let good_runs: Vec<&Entry> = runs.iter().copied().filter(|e| good(e)).collect();
    if let Some(newest) = runs.first().filter(|e| good(e)) {
        // Slow: against the median of the runs before it.
        let before: Vec<i64> =
            runs.iter().skip(1).filter(|e| good(e)).take(rules.slow_runs).map(|e| e.duration_ms).collect();
        if before.len() >= 3 {
            let mut sorted = before.clone();
            sorted.sort_unstable();
            let median = sorted[sorted.len() / 2];
            // A minute's slack: runs of seconds vary by multiples for
            // nothing (a cold cache, a busy disk).
            let slower_by_a_minute = newest.duration_ms - median >= 60_000;
            if median > 0
                && slower_by_a_minute
                && newest.duration_ms as f64 > rules.slow_factor * median as f64
            {
                out.push(alert(
                    "slow",
                    Level::Warning,
                    name,
                    None,
                    format!(
                        "the last run of {name} took {}, {:.1}× the median of its last {} ({})",
                        human(Duration::milliseconds(newest.duration_ms)),
                        newest.duration_ms as f64 / median as f64,
                        before.len(),
                        human(Duration::milliseconds(median))
                    ),
                ));
            }
        }
        for t in newest.targets.iter().filter(|t| t.ok) {
            let history_of: Vec<&TargetEntry> = good_runs
                .iter()
                .skip(1)
                .filter_map(|e| e.targets.iter().find(|x| x.ok && x.target == t.target))
                .collect();
            if let Some(prev) = history_of.first() {
                if prev.bytes_read > 0 && (t.bytes_read as f64) < rules.size_drop * prev.bytes_read as f64 {
                    out.push(alert(
                        "size",
                        Level::Warning,
                        name,
                        Some(&t.target),
                        format!(
                            "the backup of {} read {} bytes, {:.0}% of the {} before it",
                            t.target,
                            t.bytes_read,
                            100.0 * t.bytes_read as f64 / prev.bytes_read as f64,
                            prev.bytes_read
                        ),
                    ));
                }
            }
            if rules.canary {
                if let Some(summary) = canary(t, &history_of) {
                    out.push(alert("canary", Level::Critical, name, Some(&t.target), summary));
                }
            }
        }
    }
    Ok(out)
}

/// The share of a target's files a backup found new or changed.
fn churn(t: &TargetEntry) -> f64 {
    if t.files <= 0 {
        return 0.0;
    }
    (t.files_new + t.files_changed) as f64 / t.files as f64
}

/// Files encrypted in place (or renamed to their encrypted copies) look
/// like this: most of a target's files new or changed at once, where its
/// usual run changes few; most of what was read new data; and that data
/// not compressing (encrypted bytes are random). A database dump changes
/// wholesale every run, so the comparison is with the target's own usual,
/// never an absolute rule.
fn canary(t: &TargetEntry, before: &[&TargetEntry]) -> Option<String> {
    // Enough of a history to know the usual, and enough files to judge.
    if before.len() < 2 || t.files < 10 || t.bytes_read <= 0 || t.bytes_added <= 0 {
        return None;
    }
    let share = churn(t);
    let mut usual: Vec<f64> = before.iter().take(10).map(|b| churn(b)).collect();
    usual.sort_by(|a, b| a.total_cmp(b));
    let usual = usual[usual.len() / 2];
    let new_share = t.bytes_added as f64 / t.bytes_read as f64;
    let stored_share = t.bytes_stored as f64 / t.bytes_added as f64;
    let fires =
        share >= 0.5 && usual < 0.2 && share >= 3.0 * usual && new_share >= 0.5 && stored_share >= 0.9;
    fires.then(|| {
        format!(
            "possible ransomware: {:.0}% of the files of {} changed at once (usually {:.0}%), and the new data does not compress \
             ({:.0}% of it stored); check the machine before retention replaces the good backups",
            100.0 * share,
            t.target,
            100.0 * usual,
            100.0 * stored_share.min(1.0)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_format::snapshot::Summary;
    use kura_format::Id;
    use kura_runner::backup::{RunReport, Saved, TargetFailure, TargetOutcome};
    use kura_runner::plan::PlanReport;

    /// Records a run of plan `p` that started at `at`, took `secs`, and
    /// read `bytes` of target `data` (or failed).
    fn record(h: &mut History, at: &str, secs: i64, bytes: Option<u64>) {
        let time: DateTime<Utc> = at.parse().unwrap();
        let result = match bytes {
            Some(b) => Ok(Saved {
                id: Id::random(),
                summary: Summary {
                    files: 100,
                    files_changed: 2,
                    bytes: b,
                    bytes_new: b / 50,
                    bytes_stored: b / 200,
                    ..Default::default()
                },
                warnings: Vec::new(),
            }),
            None => {
                Err(TargetFailure { error: kura_runner::RunError::usage("the disk is gone"), opening: false })
            }
        };
        let report = PlanReport {
            plan: "p".into(),
            run: RunReport {
                run: Id::random(),
                time,
                targets: vec![TargetOutcome { target: "data".into(), result }],
            },
            copies: Vec::new(),
            upkeep: Vec::new(),
            sizes: Vec::new(),
        };
        h.record_plan(&report, time + Duration::seconds(secs)).unwrap();
    }

    fn plan() -> Plan {
        let text =
            "[repository.main]\nurl = \"/tmp/r\"\n[target.data]\ntype = \"files\"\npaths = [\"/tmp\"]\n\
                    [plan.p]\nschedule = \"0 2 * * *\"\ntargets = [\"data\"]\n";
        Config::parse(text, &|_| None).unwrap().plans["p"].clone()
    }

    fn keys(h: &History, at: &str) -> Vec<String> {
        let now: DateTime<Utc> = at.parse().unwrap();
        let mut k: Vec<String> =
            plan_alerts(&AlertRules::default(), h, (&plan(), &Default::default()), now, None)
                .unwrap()
                .into_iter()
                .map(|a| a.key)
                .collect();
        k.sort();
        k
    }

    #[test]
    fn each_rule_fires_on_its_case_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::open(&dir.path().join("history.db")).unwrap();
        for day in 1..=5 {
            record(&mut h, &format!("2026-11-0{day}T02:00:00Z"), 60, Some(1_000_000));
        }
        assert!(keys(&h, "2026-11-05T03:00:00Z").is_empty(), "five ordinary days");
        // 30 h after the last good run (a daily plan's limit): stale.
        assert_eq!(keys(&h, "2026-11-06T08:01:00Z"), Vec::<String>::new(), "exactly at the limit");
        assert_eq!(keys(&h, "2026-11-06T08:02:00Z"), ["stale:p"]);
        // Three times the median run time: slow.
        record(&mut h, "2026-11-06T02:00:00Z", 200, Some(1_000_000));
        assert_eq!(keys(&h, "2026-11-06T03:00:00Z"), ["slow:p"]);
        // Less than half of the previous size: size.
        record(&mut h, "2026-11-07T02:00:00Z", 60, Some(400_000));
        assert_eq!(keys(&h, "2026-11-07T03:00:00Z"), ["size:p:data"]);
        // A failed run: failed, and the others judge the last good run.
        record(&mut h, "2026-11-08T02:00:00Z", 5, None);
        assert_eq!(keys(&h, "2026-11-08T03:00:00Z"), ["failed:p"]);
        // The daemon found the previous run still going at a slot.
        h.record_event(
            "missed",
            "p",
            "2026-11-08T04:00:00Z".parse().unwrap(),
            "2026-11-08T04:00:00Z".parse().unwrap(),
            "still going",
        )
        .unwrap();
        assert_eq!(keys(&h, "2026-11-08T05:00:00Z"), ["failed:p", "overrun:p"]);
        // Back to normal: nothing.
        record(&mut h, "2026-11-09T02:00:00Z", 60, Some(1_000_000));
        assert!(keys(&h, "2026-11-09T03:00:00Z").is_empty());
    }

    fn target(files: i64, new: i64, changed: i64, read: i64, added: i64, stored: i64) -> TargetEntry {
        TargetEntry {
            target: "uploads".into(),
            ok: true,
            snapshot: None,
            files,
            bytes_read: read,
            bytes_added: added,
            bytes_stored: stored,
            warnings: 0,
            error: None,
            files_new: new,
            files_changed: changed,
            duration_ms: 0,
        }
    }

    #[test]
    fn the_canary_knows_a_targets_usual() {
        let day = target(1000, 5, 10, 100_000_000, 2_000_000, 600_000);
        let before = [&day, &day, &day];
        // Everything rewritten, random bytes: fires.
        let encrypted = target(1000, 0, 990, 100_000_000, 99_000_000, 99_500_000);
        assert!(canary(&encrypted, &before).unwrap().contains("99% of the files of uploads"));
        // Everything rewritten but compressible (a mass re-format): silent.
        assert!(canary(&target(1000, 0, 990, 100_000_000, 99_000_000, 20_000_000), &before).is_none());
        // An ordinary day: silent.
        assert!(canary(&target(1000, 8, 12, 100_000_000, 3_000_000, 900_000), &before).is_none());
        // A database dump changes wholesale every run: its usual is 100%.
        let dump = target(12, 0, 12, 50_000_000, 40_000_000, 45_000_000);
        assert!(canary(&dump, &[&dump, &dump]).is_none());
        // Not enough history to know the usual.
        assert!(canary(&encrypted, &[&day]).is_none());
    }
}
