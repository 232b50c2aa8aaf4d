//! `[plan.NAME]` sections: which targets run together, when, and what of
//! their snapshots to keep.
//!
//! ```toml
//! [plan.daily]
//! schedule = "0 2 * * *"
//! targets = ["app_db", "logs"]
//! keep = { daily = 7 }
//! prune = true
//! ```
use std::collections::BTreeMap;

use super::{invalid, parse_duration, ConfigError, Target};
use crate::retention::Keep;
use crate::schedule::Schedule;
use crate::zone::Zone;

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub name: String,
    /// When `kura serve` runs it; `kura run PLAN` runs it now.
    pub schedule: Schedule,
    pub targets: Vec<String>,
    /// What of each target's snapshots to keep after a run; empty keeps all.
    pub keep: Keep,
    /// Prune after retention.
    pub prune: bool,
    /// Where every target of the plan writes, instead of its own
    /// repository.
    pub repository: Option<String>,
    /// Repositories each run's snapshots are copied to, verified, after the
    /// run (format.md §11.3); the plan's retention applies there too.
    pub copy_to: Vec<String>,
    /// Whether `kura serve` runs the plan once after downtime that made it
    /// miss its slot.
    pub catch_up: bool,
    /// The wall clock its schedule and its retention's days, weeks and
    /// months are read on.
    pub zone: Zone,
    /// How old the newest good backup may be before the plan is unhealthy;
    /// unset, it follows the schedule (see `kura_monitor`).
    pub max_age: Option<std::time::Duration>,
    /// When `kura serve` runs a restore drill of the plan's targets (on
    /// the plan's wall clock).
    pub drill: Option<Schedule>,
    /// Objectives: how much data may be lost (the age of the newest good
    /// backup) and how long a restore may take (the last drill's time).
    pub rpo: Option<std::time::Duration>,
    pub rto: Option<std::time::Duration>,
}

impl Plan {
    /// The longest time between two of the plan's next 40 slots from
    /// `from` (a schedule of uneven gaps, weekdays only or the 1st of the
    /// month, is judged by its longest); `None` for one that fires once
    /// or never.
    pub fn longest_gap(&self, from: chrono::DateTime<chrono::Utc>) -> Option<chrono::Duration> {
        let mut at = from;
        let mut largest = chrono::Duration::zero();
        let mut prev: Option<chrono::DateTime<chrono::Utc>> = None;
        for _ in 0..40 {
            let Some(next) = self.schedule.next_after(self.zone.local(at)).map(|t| self.zone.instant(t))
            else {
                break;
            };
            if let Some(p) = prev {
                largest = largest.max(next - p);
            }
            prev = Some(next);
            at = next;
        }
        (!largest.is_zero()).then_some(largest)
    }
}

const KEYS: &str =
    "schedule, targets, keep, prune, repository, copy_to, catch_up, timezone, max_age, drill, rpo, rto";
const KEEP_KEYS: &str = "last, hourly, daily, weekly, monthly, yearly, within";

pub(super) fn plan(
    name: &str,
    mut t: toml::Table,
    targets: &BTreeMap<String, Target>,
    unresolved_targets: &[&str],
    repositories: &[&str],
) -> Result<Plan, ConfigError> {
    let place = format!("plan.{name}");
    // The name becomes a file name (the plan's lock, unit names): a plain
    // word only, never a path.
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(invalid(&place, "a plan's name is letters, digits, - and _ only"));
    }
    let schedule = match t.remove("schedule") {
        Some(toml::Value::String(s)) => {
            Schedule::parse(&s).map_err(|e| invalid(format!("{place}.schedule"), e))?
        }
        Some(_) => {
            return Err(invalid(format!("{place}.schedule"), "must be a cron string like \"0 2 * * *\""))
        }
        None => return Err(invalid(&place, "missing `schedule` (a cron string like \"0 2 * * *\")")),
    };
    let names: Vec<String> = match t.remove("targets") {
        Some(toml::Value::Array(a)) => a
            .into_iter()
            .map(|v| match v {
                toml::Value::String(s) => Ok(s),
                _ => Err(invalid(format!("{place}.targets"), "must be a list of target names")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid(format!("{place}.targets"), "must be a list of target names")),
        None => return Err(invalid(&place, "missing `targets` (a list of target names)")),
    };
    if names.is_empty() {
        return Err(invalid(format!("{place}.targets"), "names no target"));
    }
    for n in &names {
        if !targets.contains_key(n) && !unresolved_targets.contains(&n.as_str()) {
            let known: Vec<&str> = targets.keys().map(String::as_str).collect();
            return Err(invalid(
                format!("{place}.targets"),
                format!(
                    "no target named {n:?} (configured: {})",
                    if known.is_empty() { "none".into() } else { known.join(", ") }
                ),
            ));
        }
    }
    let keep = match t.remove("keep") {
        None => Keep::default(),
        Some(toml::Value::Table(k)) => keep(&place, k)?,
        Some(_) => {
            return Err(invalid(format!("{place}.keep"), "must be a table like { daily = 7, weekly = 4 }"))
        }
    };
    let prune = match t.remove("prune") {
        None => false,
        Some(toml::Value::Boolean(b)) => b,
        Some(_) => return Err(invalid(format!("{place}.prune"), "must be true or false")),
    };
    let known_repository = |at: String, r: &str| {
        if repositories.contains(&r) {
            Ok(())
        } else {
            Err(invalid(
                at,
                format!(
                    "no repository named {r:?} (configured: {})",
                    if repositories.is_empty() { "none".into() } else { repositories.join(", ") }
                ),
            ))
        }
    };
    let repository = match t.remove("repository") {
        None => None,
        Some(toml::Value::String(r)) => {
            known_repository(format!("{place}.repository"), &r)?;
            Some(r)
        }
        Some(_) => return Err(invalid(format!("{place}.repository"), "must be a repository name")),
    };
    let copy_to: Vec<String> = match t.remove("copy_to") {
        None => Vec::new(),
        Some(toml::Value::Array(a)) => a
            .into_iter()
            .map(|v| match v {
                toml::Value::String(s) => {
                    known_repository(format!("{place}.copy_to"), &s)?;
                    Ok(s)
                }
                _ => Err(invalid(format!("{place}.copy_to"), "must be a list of repository names")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid(format!("{place}.copy_to"), "must be a list of repository names")),
    };
    let written: Vec<&str> = match &repository {
        Some(r) => vec![r.as_str()],
        None => names.iter().filter_map(|n| targets.get(n)).map(|t| t.repository.as_str()).collect(),
    };
    if let Some(r) = copy_to.iter().find(|r| written.contains(&r.as_str())) {
        return Err(invalid(
            format!("{place}.copy_to"),
            format!("names {r:?}, a repository the plan writes to"),
        ));
    }
    let catch_up = match t.remove("catch_up") {
        None => true,
        Some(toml::Value::Boolean(b)) => b,
        Some(_) => return Err(invalid(format!("{place}.catch_up"), "must be true or false")),
    };
    let zone = match t.remove("timezone") {
        None => Zone::Machine,
        Some(toml::Value::String(z)) => {
            Zone::named(&z).map_err(|e| invalid(format!("{place}.timezone"), e))?
        }
        Some(_) => {
            return Err(invalid(format!("{place}.timezone"), "must be a zone name like \"Asia/Tokyo\""))
        }
    };
    let max_age = match t.remove("max_age") {
        None => None,
        Some(toml::Value::String(s)) => {
            Some(parse_duration(&s).map_err(|e| invalid(format!("{place}.max_age"), e))?)
        }
        Some(_) => return Err(invalid(format!("{place}.max_age"), "must be a duration like \"48h\"")),
    };
    let drill = match t.remove("drill") {
        None => None,
        Some(toml::Value::String(s)) => {
            Some(Schedule::parse(&s).map_err(|e| invalid(format!("{place}.drill"), e))?)
        }
        Some(_) => return Err(invalid(format!("{place}.drill"), "must be a cron string like \"0 5 1 * *\"")),
    };
    let mut objective = |key: &str| match t.remove(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => {
            parse_duration(&s).map(Some).map_err(|e| invalid(format!("{place}.{key}"), e))
        }
        Some(_) => Err(invalid(format!("{place}.{key}"), "must be a duration like \"24h\"")),
    };
    let (rpo, rto) = (objective("rpo")?, objective("rto")?);
    if let Some(k) = t.keys().next() {
        return Err(invalid(format!("{place}.{k}"), format!("unknown key (known: {KEYS})")));
    }
    Ok(Plan {
        max_age,
        drill,
        rpo,
        rto,
        name: name.to_string(),
        schedule,
        targets: names,
        keep,
        prune,
        repository,
        copy_to,
        catch_up,
        zone,
    })
}

fn keep(place: &str, t: toml::Table) -> Result<Keep, ConfigError> {
    let mut k = Keep::default();
    for (key, v) in t {
        let at = format!("{place}.keep.{key}");
        let count = || match &v {
            toml::Value::Integer(n) if *n >= 1 && *n <= u32::MAX as i64 => Ok(Some(*n as u32)),
            _ => Err(invalid(&at, "must be a whole number, 1 or more")),
        };
        match key.as_str() {
            "last" => k.last = count()?,
            "hourly" => k.hourly = count()?,
            "daily" => k.daily = count()?,
            "weekly" => k.weekly = count()?,
            "monthly" => k.monthly = count()?,
            "yearly" => k.yearly = count()?,
            "within" => {
                let toml::Value::String(s) = &v else {
                    return Err(invalid(&at, "must be a duration like \"30d\""));
                };
                let d = parse_duration(s).map_err(|e| invalid(&at, e))?;
                k.within = Some(chrono::Duration::from_std(d).map_err(|_| invalid(&at, "is too long"))?);
            }
            _ => return Err(invalid(&at, format!("unknown rule (known: {KEEP_KEYS})"))),
        }
    }
    if k.is_empty() {
        return Err(invalid(format!("{place}.keep"), format!("keeps nothing but the newest snapshot; give a rule ({KEEP_KEYS}) or leave keep out to keep everything")));
    }
    Ok(k)
}
