//! Notifications with a lifecycle. [`tick`] compares the open problems
//! ([`crate::alerts`]) with those it told of before (kept in the state
//! directory's history.db): a new problem is sent once, a lasting one is
//! sent again every `remind_every` (not on every check), and an ended one
//! gets one recovery message. Runs that ended since the last tick are
//! told at level info (success with size and duration), and to ping
//! channels. `kura run` ticks after its run; `kura serve` every half
//! minute. The state is changed in one immediate transaction, so a cron
//! run and the daemon ticking at once never both send the same message.
//!
//! Delivery is retried and never fails or blocks a backup for long; a
//! delivery that failed is recorded (`kura status`, a metric) and logged.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kura_policy::{Channel, ChannelKind, Config, Level};
use kura_runner::history::History;
use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};
use serde::Serialize;

use crate::alerts::{evaluate, Alert};
use crate::MonitorError;

/// What a message says of its problem or run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A problem started (a failed run: `failed`).
    Firing,
    Failed,
    /// A problem still open after `remind_every`.
    Reminder,
    /// A problem ended.
    Resolved,
    /// A run ended well (info).
    Success,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Failed => "failed",
            Status::Reminder => "reminder",
            Status::Resolved => "resolved",
            Status::Success => "success",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub status: Status,
    pub level: Level,
    pub key: String,
    pub plan: String,
    pub target: Option<String>,
    pub summary: String,
    pub date: DateTime<Utc>,
    pub host: String,
}

impl Message {
    /// One line, for chat and mail subjects.
    pub fn line(&self) -> String {
        let tag = match self.status {
            Status::Resolved => "RESOLVED".to_string(),
            Status::Reminder => format!("STILL {}", self.level.name().to_uppercase()),
            Status::Success => "OK".to_string(),
            _ => self.level.name().to_uppercase(),
        };
        format!("[{tag}] kura on {}: {}", self.host, self.summary)
    }
}

/// A delivery that failed after its retries.
#[derive(Debug, Clone, Serialize)]
pub struct Undelivered {
    pub channel: String,
    pub error: String,
}

#[derive(Debug, Default, Serialize)]
pub struct TickReport {
    pub messages: Vec<Message>,
    pub delivered: usize,
    pub undelivered: Vec<Undelivered>,
}

/// The lifecycle's memory, in the history database beside the runs.
struct Store {
    db: Connection,
}

impl Store {
    fn open(path: &Path) -> Result<Store, MonitorError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let db = Connection::open_with_flags(path, flags).map_err(|e| MonitorError::store(path, e))?;
        db.busy_timeout(Duration::from_secs(30)).map_err(|e| MonitorError::store(path, e))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS alerts (
                 key TEXT PRIMARY KEY,
                 level TEXT NOT NULL,
                 plan TEXT NOT NULL,
                 target TEXT,
                 summary TEXT NOT NULL,
                 since TEXT NOT NULL,
                 last_sent TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS notify_state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS deliveries (
                 id INTEGER PRIMARY KEY,
                 channel TEXT NOT NULL,
                 at TEXT NOT NULL,
                 ok INTEGER NOT NULL,
                 error TEXT
             );",
        )
        .map_err(|e| MonitorError::store(path, e))?;
        Ok(Store { db })
    }
}

/// An open problem as the store remembers it.
#[derive(Debug, Clone, Serialize)]
pub struct OpenAlert {
    pub key: String,
    pub level: String,
    pub plan: String,
    pub target: Option<String>,
    pub summary: String,
    pub since: String,
    pub last_sent: String,
}

/// A delivery that failed, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct FailedDelivery {
    pub channel: String,
    pub at: String,
    pub error: String,
}

/// The problems told of and not yet resolved, and the deliveries that
/// failed lately: for `kura status`.
pub struct NotifyState {
    pub open: Vec<OpenAlert>,
    pub undelivered: Vec<FailedDelivery>,
}

pub fn open_alerts(state_dir: &Path) -> Result<NotifyState, MonitorError> {
    let path = state_dir.join("history.db");
    let store = Store::open(&path)?;
    let e = |e| MonitorError::store(&path, e);
    let mut q = store
        .db
        .prepare("SELECT key, level, plan, target, summary, since, last_sent FROM alerts ORDER BY since")
        .map_err(e)?;
    let open = q
        .query_map([], |r| {
            Ok(OpenAlert {
                key: r.get(0)?,
                level: r.get(1)?,
                plan: r.get(2)?,
                target: r.get(3)?,
                summary: r.get(4)?,
                since: r.get(5)?,
                last_sent: r.get(6)?,
            })
        })
        .map_err(e)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(e)?;
    let mut q = store
        .db
        .prepare("SELECT channel, at, error FROM deliveries WHERE ok = 0 ORDER BY id DESC LIMIT 20")
        .map_err(e)?;
    let failed = q
        .query_map([], |r| {
            Ok(FailedDelivery {
                channel: r.get(0)?,
                at: r.get(1)?,
                error: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
            })
        })
        .map_err(e)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(e)?;
    Ok(NotifyState { open, undelivered: failed })
}

/// Failed deliveries per channel, all time: a metric.
pub fn delivery_failures(state_dir: &Path) -> Result<BTreeMap<String, u64>, MonitorError> {
    let path = state_dir.join("history.db");
    let store = Store::open(&path)?;
    let e = |e| MonitorError::store(&path, e);
    let mut q = store
        .db
        .prepare("SELECT channel, count(*) FROM deliveries WHERE ok = 0 GROUP BY channel")
        .map_err(e)?;
    let rows = q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))).map_err(e)?;
    rows.collect::<Result<BTreeMap<_, _>, _>>().map_err(e)
}

/// Works out what to tell (in one transaction), then tells it. With
/// `pings`, the runs that ended since the last tick are pinged too (the
/// daemon; `kura run` pings its own run, start and end).
pub async fn tick(
    cfg: &Config,
    state_dir: &Path,
    now: DateTime<Utc>,
    host: &str,
    pings: bool,
) -> Result<TickReport, MonitorError> {
    let path = state_dir.join("history.db");
    // Made by the runner's own open first: the runs' tables exist.
    let history = History::open(&path)?;
    let alerts = evaluate(cfg, &history, state_dir, now)?;
    let mut store = Store::open(&path)?;
    let (messages, ended_runs) =
        decide(&mut store, &history, cfg, &alerts, now, host).map_err(|e| MonitorError::store(&path, e))?;
    drop(history);
    let mut report = TickReport { messages, ..TickReport::default() };
    for channel in cfg.notify.values() {
        let results: Vec<Result<(), String>> = match &channel.kind {
            ChannelKind::Ping { url } => {
                if !pings {
                    continue;
                }
                let mut out = Vec::new();
                for run in &ended_runs {
                    let target =
                        if run.ok { url.clone() } else { format!("{}/fail", url.trim_end_matches('/')) };
                    out.push(crate::send::post(&target, "text/plain", run.summary.clone()).await);
                }
                out
            }
            _ => {
                let mut out = Vec::new();
                for m in report.messages.iter().filter(|m| channel.levels.contains(&m.level)) {
                    out.push(deliver(channel, m).await);
                }
                out
            }
        };
        for r in results {
            let (ok, error) = match r {
                Ok(()) => (true, None),
                Err(e) => {
                    tracing::warn!(channel = %channel.name, "notification not delivered: {e}");
                    report.undelivered.push(Undelivered { channel: channel.name.clone(), error: e.clone() });
                    (false, Some(e))
                }
            };
            if ok {
                report.delivered += 1;
            }
            let _ = store.db.execute(
                "INSERT INTO deliveries (channel, at, ok, error) VALUES (?1, ?2, ?3, ?4)",
                params![channel.name, Utc::now().to_rfc3339(), ok, error],
            );
        }
    }
    Ok(report)
}

/// A random UUID pairing a run's start ping with its end (`?rid=`).
pub fn run_id() -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&kura_format::Id::random().as_bytes()[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

fn ping_url(base: &str, suffix: &str, rid: &str) -> String {
    let base = base.trim_end_matches('/');
    let (path, query) =
        base.split_once('?').map(|(p, q)| (p, format!("&{q}"))).unwrap_or((base, String::new()));
    format!("{path}{suffix}?rid={rid}{query}")
}

/// `/start` to every ping channel, as a run begins.
pub async fn ping_start(cfg: &Config, rid: &str) {
    for c in cfg.notify.values() {
        if let ChannelKind::Ping { url } = &c.kind {
            if let Err(e) =
                crate::send::post(&ping_url(url, "/start", rid), "text/plain", String::new()).await
            {
                tracing::warn!(channel = %c.name, "ping not delivered: {e}");
            }
        }
    }
}

/// The URL itself on success, `/fail` on failure, with the log's tail.
pub async fn ping_end(cfg: &Config, rid: &str, ok: bool, log: &str) {
    // healthchecks.io keeps the first 100 kB of a body; the end matters.
    let tail: String = log.chars().rev().take(10_000).collect::<Vec<_>>().into_iter().rev().collect();
    for c in cfg.notify.values() {
        if let ChannelKind::Ping { url } = &c.kind {
            let target = ping_url(url, if ok { "" } else { "/fail" }, rid);
            if let Err(e) = crate::send::post(&target, "text/plain", tail.clone()).await {
                tracing::warn!(channel = %c.name, "ping not delivered: {e}");
            }
        }
    }
}

/// A run that ended since the last tick.
struct EndedRun {
    ok: bool,
    summary: String,
}

/// The messages this tick sends, and the runs ended since the last one
/// (ok, and a body for a ping), with the store brought up to date.
fn decide(
    store: &mut Store,
    history: &History,
    cfg: &Config,
    alerts: &[Alert],
    now: DateTime<Utc>,
    host: &str,
) -> rusqlite::Result<(Vec<Message>, Vec<EndedRun>)> {
    let remind = cfg.alerts.remind_every.and_then(|d| chrono::Duration::from_std(d).ok());
    let tx = store.db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut messages = Vec::new();
    let message = |status, a: &Alert| Message {
        status,
        level: a.level,
        key: a.key.clone(),
        plan: a.plan.clone(),
        target: a.target.clone(),
        summary: a.summary.clone(),
        date: now,
        host: host.to_string(),
    };
    let mut known: BTreeMap<String, (String, String, Option<String>, String, String)> = BTreeMap::new();
    {
        let mut q = tx.prepare("SELECT key, level, plan, target, summary, last_sent FROM alerts")?;
        let rows = q.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        })?;
        for row in rows {
            let (k, v) = row?;
            known.insert(k, v);
        }
    }
    for a in alerts {
        match known.remove(&a.key) {
            None => {
                let status = if a.key.starts_with("failed:") { Status::Failed } else { Status::Firing };
                messages.push(message(status, a));
                tx.execute(
                    "INSERT INTO alerts (key, level, plan, target, summary, since, last_sent) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                    params![a.key, a.level.name(), a.plan, a.target, a.summary, now.to_rfc3339()],
                )?;
            }
            Some((_, _, _, _, last_sent)) => {
                let last: DateTime<Utc> = last_sent.parse().unwrap_or(now);
                let due = remind.is_some_and(|r| now - last >= r);
                if due {
                    messages.push(message(Status::Reminder, a));
                }
                tx.execute(
                    "UPDATE alerts SET summary = ?2, level = ?3, last_sent = ?4 WHERE key = ?1",
                    params![a.key, a.summary, a.level.name(), if due { now.to_rfc3339() } else { last_sent }],
                )?;
            }
        }
    }
    for (key, (level, plan, target, summary, _)) in known {
        tx.execute("DELETE FROM alerts WHERE key = ?1", params![key])?;
        messages.push(Message {
            status: Status::Resolved,
            level: Level::parse(&level).unwrap_or(Level::Warning),
            key,
            plan,
            target,
            summary,
            date: now,
            host: host.to_string(),
        });
    }
    // Runs ended since the last tick: info. The first tick ever starts
    // from now rather than telling of every run in the history.
    let cursor: Option<i64> = tx
        .query_row("SELECT value FROM notify_state WHERE name = 'last_run'", [], |r| r.get::<_, String>(0))
        .ok()
        .and_then(|v| v.parse().ok());
    let recent = history.list(None, 50).unwrap_or_default();
    let newest_id = recent.iter().map(|e| e.id).max();
    let mut ended = Vec::new();
    if let Some(cursor) = cursor {
        for e in recent.iter().rev().filter(|e| e.id > cursor && e.kind == "backup") {
            let plan = e.plan.clone().unwrap_or_default();
            let ok = e.status == "ok" || e.status == "warnings";
            let read: i64 = e.targets.iter().map(|t| t.bytes_read).sum();
            let stored: i64 = e.targets.iter().map(|t| t.bytes_stored).sum();
            let summary = if ok {
                format!(
                    "{plan} saved {} target(s), {} read, {} stored, in {}",
                    e.targets.iter().filter(|t| t.ok).count(),
                    bytes(read),
                    bytes(stored),
                    crate::health::human(chrono::Duration::milliseconds(e.duration_ms))
                ) + &retention(e.forgotten, e.bytes_pruned)
            } else {
                format!("{plan} {}: {}", e.status, e.errors.join("; "))
            };
            if ok {
                messages.push(Message {
                    status: Status::Success,
                    level: Level::Info,
                    key: format!("run:{plan}"),
                    plan: plan.clone(),
                    target: None,
                    summary: summary.clone(),
                    date: now,
                    host: host.to_string(),
                });
            }
            ended.push(EndedRun { ok, summary });
        }
    }
    if let Some(id) = newest_id.into_iter().chain(cursor).max() {
        tx.execute(
            "INSERT INTO notify_state (name, value) VALUES ('last_run', ?1)
             ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            params![id.to_string()],
        )?;
    }
    tx.commit()?;
    Ok((messages, ended))
}

/// What the run's retention did, when it did anything.
fn retention(forgotten: i64, pruned: i64) -> String {
    match (forgotten, pruned) {
        (0, 0) => String::new(),
        (f, 0) => format!("; retention forgot {f} snapshot(s)"),
        (f, p) => format!("; retention forgot {f} snapshot(s), prune freed {}", bytes(p)),
    }
}

fn bytes(n: i64) -> String {
    crate::size(n.max(0) as u64)
}

/// The JSON string of `s`, without its quotes: what a template's
/// placeholder becomes, so a summary cannot break the document.
fn json_inner(s: &str) -> String {
    let quoted = serde_json::to_string(s).expect("a string serializes");
    quoted[1..quoted.len() - 1].to_string()
}

/// A webhook body from its template, or the default document.
pub fn webhook_body(template: Option<&str>, m: &Message) -> String {
    match template {
        None => serde_json::to_string(m).expect("serializable"),
        Some(t) => {
            let mut out = t.to_string();
            for (k, v) in [
                ("status", m.status.name().to_string()),
                ("level", m.level.name().to_string()),
                ("key", m.key.clone()),
                ("plan", m.plan.clone()),
                ("target", m.target.clone().unwrap_or_default()),
                ("summary", m.summary.clone()),
                ("date", m.date.to_rfc3339()),
                ("host", m.host.clone()),
            ] {
                out = out.replace(&format!("{{{{{k}}}}}"), &json_inner(&v));
            }
            out
        }
    }
}

async fn deliver(channel: &Channel, m: &Message) -> Result<(), String> {
    match &channel.kind {
        ChannelKind::Slack { url } => {
            let body = serde_json::json!({ "text": m.line() }).to_string();
            crate::send::post(url, "application/json", body).await
        }
        ChannelKind::Webhook { url, body } => {
            crate::send::post(url, "application/json", webhook_body(body.as_deref(), m)).await
        }
        ChannelKind::Email { smtp, from, to } => {
            let subject = m.line();
            let body = format!(
                "{}\n\nstatus: {}\nlevel: {}\nplan: {}\n{}date: {}\nhost: {}\n",
                m.summary,
                m.status.name(),
                m.level.name(),
                m.plan,
                m.target.as_ref().map(|t| format!("target: {t}\n")).unwrap_or_default(),
                m.date.to_rfc3339(),
                m.host
            );
            crate::smtp::send(smtp, from, to, &subject, &body).await
        }
        ChannelKind::Ping { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_cannot_be_broken_by_what_it_quotes() {
        let m = Message {
            status: Status::Firing,
            level: Level::Critical,
            key: "failed:daily".into(),
            plan: "daily".into(),
            target: None,
            summary: "pg_dump said \"no\"\nand left".into(),
            date: "2026-12-02T02:00:00Z".parse().unwrap(),
            host: "web-1".into(),
        };
        let body = webhook_body(Some(r#"{"text":"{{level}} {{plan}}: {{summary}}","when":"{{date}}"}"#), &m);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["text"], "critical daily: pg_dump said \"no\"\nand left");
        assert_eq!(v["when"], "2026-12-02T02:00:00+00:00");
        let default: serde_json::Value = serde_json::from_str(&webhook_body(None, &m)).unwrap();
        assert_eq!(default["status"], "firing");
        assert_eq!(default["plan"], "daily");
    }
}
