//! Whether each plan's backups are fresh, read from this machine's run
//! history (never by listing a remote repository: an exporter that lists
//! S3 on every scrape costs money and minutes).
//!
//! A plan is healthy when its newest successfully completed run (status
//! `ok` or `warnings`) finished within its limit, every `copy_to`
//! repository holds a copy made within that limit, and no run of it has
//! held its lock for longer than the limit. The limit is the plan's
//! `max_age`, or 1.25 × the largest gap between its next slots, so a
//! weekly plan is not stale after 26 hours and a daily one is after 30.
use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use kura_policy::{Config, Plan, Target};
use kura_runner::history::{Entry, History};
use serde::Serialize;

use crate::MonitorError;

/// How many of a plan's runs are read to find its newest good one and
/// its copies: a plan failing for longer than this many runs is unhealthy
/// either way.
const RUNS_READ: usize = 200;

#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// `healthy` or `unhealthy`.
    pub status: &'static str,
    pub checked_at: DateTime<Utc>,
    /// The newest good backup of any plan.
    pub last_backup: Option<DateTime<Utc>>,
    pub age_seconds: Option<i64>,
    /// Good backup runs recorded, all plans.
    pub backup_count: u64,
    /// Bytes read by the newest good run (of the plan whose is newest).
    pub latest_size: u64,
    pub plans: BTreeMap<String, PlanHealth>,
    /// Why it is unhealthy when no plan says (none configured).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanHealth {
    pub status: &'static str,
    pub last_backup: Option<DateTime<Utc>>,
    pub age_seconds: Option<i64>,
    pub max_age_seconds: i64,
    pub backup_count: u64,
    pub failure_count: u64,
    pub latest_size: u64,
    /// The newest run's status, good or not.
    pub last_status: Option<String>,
    pub last_duration_seconds: Option<f64>,
    /// When the run holding the plan's lock started.
    pub running_since: Option<String>,
    pub copies: BTreeMap<String, CopyHealth>,
    /// The newest restore drill, and the newest that passed (its time is
    /// the plan's measured RTO).
    pub last_drill: Option<DrillHealth>,
    pub last_good_drill: Option<DrillHealth>,
    /// The plan's objectives and whether the last good backup and the
    /// last passing drill meet them (`None`: no objective, or nothing yet
    /// to judge by).
    pub objectives: Objectives,
    /// Targets of the plan with objectives of their own.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub targets: BTreeMap<String, Objectives>,
    pub reasons: Vec<String>,
    /// The newest good run, for metrics.
    #[serde(skip)]
    pub last_good: Option<Entry>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Objectives {
    pub rpo_seconds: Option<i64>,
    pub rpo_met: Option<bool>,
    pub rto_seconds: Option<i64>,
    pub rto_met: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillHealth {
    pub finished: DateTime<Utc>,
    pub ok: bool,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CopyHealth {
    pub last_copy: Option<DateTime<Utc>>,
    pub age_seconds: Option<i64>,
}

impl Health {
    pub fn healthy(&self) -> bool {
        self.status == "healthy"
    }
}

/// The limit a plan's newest good backup is held to.
pub fn max_age(plan: &Plan, now: DateTime<Utc>) -> Duration {
    // An RPO is the limit when no max_age says otherwise: a backup older
    // than it has already lost more than may be lost.
    if let Some(d) = plan.max_age.or(plan.rpo) {
        return Duration::from_std(d).unwrap_or(Duration::MAX);
    }
    match plan.longest_gap(now) {
        Some(gap) => gap * 5 / 4,
        // A schedule that fires once or never: a day.
        None => Duration::days(1),
    }
}

/// A plan's health at `now`. `running_since` says whether a run holds
/// its lock and since when.
pub fn plan_health(
    history: &History,
    plan: &Plan,
    targets: &BTreeMap<String, Target>,
    now: DateTime<Utc>,
    running_since: Option<String>,
) -> Result<PlanHealth, MonitorError> {
    let limit = max_age(plan, now);
    let all = history.list(Some(&plan.name), RUNS_READ)?;
    let drills: Vec<&Entry> = all.iter().filter(|e| e.kind == "drill").collect();
    let last_drill = drills.first().map(|d| DrillHealth {
        finished: d.finished,
        ok: d.status == "ok",
        seconds: d.duration_ms as f64 / 1000.0,
        errors: d.errors.clone(),
    });
    let last_good_drill = drills.iter().find(|d| d.status == "ok").map(|d| DrillHealth {
        finished: d.finished,
        ok: true,
        seconds: d.duration_ms as f64 / 1000.0,
        errors: Vec::new(),
    });
    let runs: Vec<Entry> = all.iter().filter(|e| e.kind == "backup").cloned().collect();
    let (backup_count, failure_count) = history.counts(&plan.name)?;
    let good = |e: &&Entry| e.status == "ok" || e.status == "warnings";
    let last_good = runs.iter().find(good).cloned();
    let mut reasons = Vec::new();
    let age = last_good.as_ref().map(|e| now - e.finished);
    match (&last_good, age) {
        (None, _) => reasons.push(match runs.first() {
            None => "no backup yet".to_string(),
            Some(r) => {
                format!("no successful backup in the last {} runs (the newest: {})", runs.len(), r.status)
            }
        }),
        (Some(_), Some(a)) if a > limit => {
            reasons.push(format!("the last successful backup is {} old (limit {})", human(a), human(limit)))
        }
        _ => {}
    }
    let mut copies = BTreeMap::new();
    for repo in &plan.copy_to {
        let last = runs.iter().filter(|e| e.copies.iter().any(|c| &c.to == repo)).map(|e| e.finished).max();
        let age = last.map(|t| now - t);
        match age {
            None => reasons.push(format!("nothing has been copied to {repo} yet")),
            Some(a) if a > limit => {
                reasons.push(format!("the copy to {repo} is {} behind (limit {})", human(a), human(limit)))
            }
            _ => {}
        }
        copies
            .insert(repo.clone(), CopyHealth { last_copy: last, age_seconds: age.map(|a| a.num_seconds()) });
    }
    if let Some(since) = &running_since {
        let started =
            chrono::NaiveDateTime::parse_from_str(since, "%Y-%m-%d %H:%M:%S UTC").ok().map(|t| t.and_utc());
        if let Some(s) = started.filter(|s| now - *s > limit) {
            reasons.push(format!("a run has been going since {since}, {} ago", human(now - s)));
        }
    }
    let secs = |d: std::time::Duration| d.as_secs() as i64;
    let objectives = Objectives {
        rpo_seconds: plan.rpo.map(secs),
        rpo_met: plan.rpo.map(|r| age.is_some_and(|a| a.num_seconds() <= secs(r))),
        rto_seconds: plan.rto.map(secs),
        rto_met: plan.rto.and_then(|r| last_good_drill.as_ref().map(|d| d.seconds <= r.as_secs_f64())),
    };
    let mut per_target = BTreeMap::new();
    for t in plan.targets.iter().filter_map(|n| targets.get(n)).filter(|t| t.rpo.is_some() || t.rto.is_some())
    {
        let backed = runs
            .iter()
            .find(|e| e.targets.iter().any(|x| x.target == t.name && x.ok))
            .map(|e| now - e.finished);
        let drilled = drills
            .iter()
            .find_map(|d| d.targets.iter().find(|x| x.target == t.name && x.ok))
            .map(|x| x.duration_ms as f64 / 1000.0);
        let o = Objectives {
            rpo_seconds: t.rpo.map(secs),
            rpo_met: t.rpo.map(|r| backed.is_some_and(|a| a.num_seconds() <= secs(r))),
            rto_seconds: t.rto.map(secs),
            rto_met: t.rto.and_then(|r| drilled.map(|s| s <= r.as_secs_f64())),
        };
        if let (Some(false), Some(r)) = (o.rpo_met, t.rpo) {
            let r = Duration::from_std(r).unwrap_or(Duration::MAX);
            reasons.push(match backed {
                Some(a) => format!(
                    "target {}: the last successful backup is {} old (its RPO {})",
                    t.name,
                    human(a),
                    human(r)
                ),
                None => format!("target {}: no successful backup yet (its RPO {})", t.name, human(r)),
            });
        }
        per_target.insert(t.name.clone(), o);
    }
    Ok(PlanHealth {
        objectives,
        targets: per_target,
        status: if reasons.is_empty() { "healthy" } else { "unhealthy" },
        last_backup: last_good.as_ref().map(|e| e.finished),
        age_seconds: age.map(|a| a.num_seconds()),
        max_age_seconds: limit.num_seconds(),
        backup_count,
        failure_count,
        latest_size: last_good
            .as_ref()
            .map(|e| e.targets.iter().map(|t| t.bytes_read.max(0) as u64).sum())
            .unwrap_or(0),
        last_status: runs.first().map(|e| e.status.clone()),
        last_duration_seconds: runs.first().map(|e| e.duration_ms as f64 / 1000.0),
        running_since,
        copies,
        last_drill,
        last_good_drill,
        reasons,
        last_good,
    })
}

/// Every plan's health (or one plan's, `only`), from the history at
/// `history_path` (a missing history is a machine that never ran a plan).
pub fn assess(
    cfg: &Config,
    state_dir: &Path,
    only: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Health, MonitorError> {
    let history = History::open(&state_dir.join("history.db"))?;
    let mut plans = BTreeMap::new();
    for plan in cfg.plans.values().filter(|p| only.is_none_or(|o| o == p.name)) {
        let running = kura_runner::plan::running_since(state_dir, &plan.name);
        plans.insert(plan.name.clone(), plan_health(&history, plan, &cfg.targets, now, running)?);
    }
    let mut reasons = Vec::new();
    if plans.is_empty() {
        reasons.push(match only {
            Some(p) => format!("no plan named {p}"),
            None => "kura.toml has no plans; health follows the runs of plans".to_string(),
        });
    }
    let newest = plans.values().filter(|p| p.last_backup.is_some()).max_by_key(|p| p.last_backup);
    let healthy = reasons.is_empty() && plans.values().all(|p| p.reasons.is_empty());
    Ok(Health {
        status: if healthy { "healthy" } else { "unhealthy" },
        checked_at: now,
        last_backup: newest.and_then(|p| p.last_backup),
        age_seconds: newest.and_then(|p| p.age_seconds),
        backup_count: plans.values().map(|p| p.backup_count).sum(),
        latest_size: newest.map(|p| p.latest_size).unwrap_or(0),
        plans,
        reasons,
    })
}

/// `3d 4h`, `26h`, `45m`, `12s`: the two largest units.
pub fn human(d: Duration) -> String {
    let s = d.num_seconds().max(0);
    let (days, hours, minutes) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(schedule: &str, max_age: Option<&str>) -> Plan {
        let text = format!(
            "[repository.main]\nurl = \"/tmp/r\"\n[target.t]\ntype = \"files\"\npaths = [\"/tmp\"]\n\
             [plan.p]\nschedule = \"{schedule}\"\ntargets = [\"t\"]\n{}",
            max_age.map(|m| format!("max_age = \"{m}\"\n")).unwrap_or_default()
        );
        Config::parse(&text, &|_| None).unwrap().plans["p"].clone()
    }

    #[test]
    fn the_limit_follows_the_longest_gap_of_the_schedule() {
        let now = "2026-12-02T12:00:00Z".parse().unwrap();
        assert_eq!(max_age(&plan("0 2 * * *", None), now), Duration::minutes(30 * 60));
        // Weekly: 1.25 weeks, never stale after a day.
        assert_eq!(max_age(&plan("0 3 * * 0", None), now), Duration::days(7) * 5 / 4);
        // Weekdays at 02:00: Friday to Monday is the longest gap.
        assert_eq!(max_age(&plan("0 2 * * 1-5", None), now), Duration::days(3) * 5 / 4);
        // Monthly on the 1st: the longest month among the next ones.
        assert_eq!(max_age(&plan("0 2 1 * *", None), now), Duration::days(31) * 5 / 4);
        assert_eq!(max_age(&plan("0 2 * * *", Some("48h")), now), Duration::hours(48));
    }

    #[test]
    fn durations_read_like_people_say_them() {
        assert_eq!(human(Duration::seconds(12)), "12s");
        assert_eq!(human(Duration::minutes(45)), "45m");
        assert_eq!(human(Duration::hours(26)), "1d 2h");
        assert_eq!(human(Duration::hours(30) + Duration::minutes(5)), "1d 6h");
        assert_eq!(human(Duration::days(3)), "3d");
        assert_eq!(human(Duration::minutes(90)), "1h 30m");
    }
}
