//! `kura config check`: every problem of a config, each with the line and
//! column it is at and what to do, rather than the first one a command
//! trips over. Beyond what loading refuses, it flags what loads but will
//! not work as meant: a section whose environment variable is unset, and
//! two plans that back up the same target at the same minute.
use chrono::{Duration, NaiveDateTime};
use serde::Serialize;

use super::{Config, ConfigError};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    /// Where in the config (`plan.daily.schedule`), if known.
    pub place: Option<String>,
    /// 1-based line and column of that place in the text.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    pub hint: Option<String>,
    /// A warning loads and runs; an error does not.
    pub severity: Severity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// Every problem of `text`, in the order of the file's sections.
pub fn check(
    text: &str,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
    now: NaiveDateTime,
) -> Vec<Problem> {
    let (cfg, errors) = super::parse::parse_collecting(text, name, env);
    let mut out: Vec<Problem> = errors.into_iter().map(|e| problem(text, e)).collect();
    let Some(cfg) = cfg else { return out };
    for u in &cfg.unresolved {
        // The error names the key whose variable is unset.
        let place = u.error.split(':').next().unwrap_or_default().to_string();
        let (line, column) = locate(text, &place);
        let place = place.as_str();
        out.push(Problem {
            place: Some(place.to_string()),
            line,
            column,
            message: u.error.strip_prefix(&format!("{place}: ")).unwrap_or(&u.error).to_string(),
            hint: Some("set the variable in the environment kura runs in (the systemd unit, the crontab), or write the value".into()),
            severity: Severity::Error,
        });
    }
    out.extend(same_minute(text, &cfg, now));
    out.sort_by_key(|p| (p.line.unwrap_or(usize::MAX), p.column));
    out
}

fn problem(text: &str, e: ConfigError) -> Problem {
    match e {
        ConfigError::Invalid { place, message } => {
            // Serde names a misspelt key only in its message.
            let key = message.strip_prefix("unknown field `").and_then(|r| r.split('`').next());
            let (line, column) = match key.map(|k| locate(text, &format!("{place}.{k}"))) {
                Some(at) => at,
                None => locate(text, &place),
            };
            let hint = hint_for(&place, &message);
            Problem { place: Some(place), line, column, message, hint, severity: Severity::Error }
        }
        ConfigError::Syntax { message, .. } => {
            // toml says "TOML parse error at line L, column C".
            let at = message.split("line ").nth(1).and_then(|r| {
                let (l, rest) = r.split_once(',')?;
                let c = rest.trim().strip_prefix("column ")?.split(|ch: char| !ch.is_ascii_digit()).next()?;
                Some((l.trim().parse().ok()?, c.parse().ok()?))
            });
            Problem {
                place: None,
                line: at.map(|a: (usize, usize)| a.0),
                column: at.map(|a| a.1),
                message: message.lines().last().unwrap_or(&message).trim().to_string(),
                hint: Some("the file is not valid TOML; nothing else was checked".into()),
                severity: Severity::Error,
            }
        }
        other => Problem {
            place: None,
            line: None,
            column: None,
            message: other.to_string(),
            hint: None,
            severity: Severity::Error,
        },
    }
}

fn hint_for(place: &str, message: &str) -> Option<String> {
    let last = place.rsplit('.').next().unwrap_or(place);
    Some(
        match last {
            "schedule" => "five cron fields: minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\"",
            "targets" => "name targets configured as [target.NAME]",
            "copy_to" | "repository" => "name repositories configured as [repository.NAME]",
            "keep" => "e.g. keep = { daily = 7, weekly = 4, monthly = 12 }",
            _ if message.contains("duration") => "durations are like 30s, 15m, 24h, 7d",
            _ if message.starts_with("unknown key") || message.starts_with("unknown field") => {
                "check the spelling against the configuration section of README.md"
            }
            _ => return None,
        }
        .to_string(),
    )
}

/// Plans sharing a target whose schedules fire at the same minute: their
/// runs would race for the target (two dumps of one database at once) and
/// the later would only find the plan lock of the other if it were the
/// same plan. Looked for over the coming year.
fn same_minute(text: &str, cfg: &Config, now: NaiveDateTime) -> Vec<Problem> {
    let plans: Vec<&super::Plan> = cfg.plans.values().collect();
    let mut out = Vec::new();
    for (i, a) in plans.iter().enumerate() {
        for b in &plans[i + 1..] {
            let shared: Vec<&String> = a.targets.iter().filter(|t| b.targets.contains(t)).collect();
            if shared.is_empty() {
                continue;
            }
            let Some(at) = first_shared_minute(a, b, now) else { continue };
            let place = format!("plan.{}.schedule", b.name);
            let (line, column) = locate(text, &place);
            out.push(Problem {
                place: Some(place),
                line,
                column,
                message: format!(
                    "plans {} and {} both back up {} at {} (and at other times)",
                    a.name,
                    b.name,
                    shared.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                    at.format("%Y-%m-%d %H:%M")
                ),
                hint: Some(
                    "move one schedule by some minutes, or let one plan include the other's targets".into(),
                ),
                severity: Severity::Warning,
            });
        }
    }
    out
}

fn first_shared_minute(a: &super::Plan, b: &super::Plan, now: NaiveDateTime) -> Option<NaiveDateTime> {
    let end = now + Duration::days(366);
    let minute = |t: NaiveDateTime| t.format("%Y%m%d%H%M").to_string();
    let (mut x, mut y) = (a.schedule.next_after(now)?, b.schedule.next_after(now)?);
    // Walk both in time order; bounded, for second-granular schedules.
    for _ in 0..200_000 {
        if x > end || y > end {
            return None;
        }
        if minute(x) == minute(y) {
            return Some(x);
        }
        if x < y {
            x = a.schedule.next_after(x)?;
        } else {
            y = b.schedule.next_after(y)?;
        }
    }
    None
}

/// The line and column of `place` (`plan.daily.schedule`): the key's line
/// within its section, else the section's header, else nothing.
pub fn locate(text: &str, place: &str) -> (Option<usize>, Option<usize>) {
    let parts: Vec<&str> = place.splitn(3, '.').collect();
    let (section, name) = match parts.as_slice() {
        [s, n, ..] => (*s, *n),
        [s] => {
            return text
                .lines()
                .position(|l| header(l).is_some_and(|h| h == *s || h.starts_with(&format!("{s}."))))
                .map_or((None, None), |i| (Some(i + 1), Some(1)))
        }
        _ => return (None, None),
    };
    let key = parts.get(2).map(|k| k.split('.').next().unwrap_or(k));
    let quoted = format!("{section}.\"{name}\"");
    let plain = format!("{section}.{name}");
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = lines.iter().position(|l| header(l).is_some_and(|h| h == plain || h == quoted)) else {
        // An inline table (`plan = { daily = {…} }`) or a dotted key.
        return (None, None);
    };
    if let Some(key) = key {
        for (i, l) in lines.iter().enumerate().skip(start + 1) {
            if header(l).is_some() {
                break;
            }
            let trimmed = l.trim_start();
            if trimmed.strip_prefix(key).is_some_and(|r| r.trim_start().starts_with('=')) {
                return (Some(i + 1), Some(l.len() - trimmed.len() + 1));
            }
        }
    }
    (Some(start + 1), Some(1))
}

/// The name in a `[section.name]` header line.
fn header(line: &str) -> Option<&str> {
    let t = line.trim();
    let inner = t.strip_prefix('[')?.split(']').next()?;
    if t.starts_with("[[") {
        return None;
    }
    Some(inner.trim())
}
