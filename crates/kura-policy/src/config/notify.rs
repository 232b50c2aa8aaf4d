//! `[alerts]` (when a problem is raised, how often it is repeated) and
//! `[notify.NAME]` channels (where messages go, at which levels).
//!
//! ```toml
//! [alerts]
//! alert_after = "2d"        # critical: no successful backup of a plan for this long
//! remind_every = "24h"      # a problem still open is repeated this often, not on every check
//!
//! [notify.ops]
//! type = "slack"            # slack, webhook, email or ping
//! url = "${SLACK_WEBHOOK_URL}"
//! levels = ["critical", "warning"]
//! ```
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::values::{de_duration, expand_value, section};
use super::{invalid, ConfigError};

/// How much a message matters; a channel takes the levels it lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warning,
    Critical,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        [Level::Info, Level::Warning, Level::Critical].into_iter().find(|l| l.name() == s)
    }
}

/// The thresholds of the alert rules (`kura_monitor::alerts`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRules {
    /// Critical when a plan has had no successful backup for this long;
    /// unset, its health limit (`max_age`, or from its schedule).
    #[serde(default, deserialize_with = "de_duration")]
    pub alert_after: Option<Duration>,
    /// An open problem is sent again this often.
    #[serde(default = "day", deserialize_with = "de_duration")]
    pub remind_every: Option<Duration>,
    /// Warning when a target's backup reads less than this share of its
    /// previous one.
    #[serde(default = "half")]
    pub size_drop: f64,
    /// Warning when a run takes this many times the median of the last
    /// `slow_runs` runs.
    #[serde(default = "three")]
    pub slow_factor: f64,
    #[serde(default = "ten")]
    pub slow_runs: usize,
    /// The ransomware canary: critical when most of a target's files
    /// changed at once and the new data barely compresses.
    #[serde(default = "yes")]
    pub canary: bool,
    /// How often `kura serve` checks for problems (a backup going stale
    /// needs no run to be noticed).
    #[serde(default = "half_minute", deserialize_with = "de_duration")]
    pub check_every: Option<Duration>,
    /// A warning when the repositories' projected monthly cost (their size
    /// × `price_per_gb_month`) is above this.
    #[serde(default)]
    pub budget: Option<f64>,
    /// Critical when the filesystem of a local repository has less free
    /// space than this (`10GB`): the next backups would fail on it.
    #[serde(default, deserialize_with = "super::values::de_size")]
    pub min_free: Option<u64>,
}

fn half_minute() -> Option<Duration> {
    Some(Duration::from_secs(30))
}

fn day() -> Option<Duration> {
    Some(Duration::from_secs(86_400))
}
fn half() -> f64 {
    0.5
}
fn three() -> f64 {
    3.0
}
fn ten() -> usize {
    10
}
fn yes() -> bool {
    true
}

impl Default for AlertRules {
    fn default() -> AlertRules {
        AlertRules {
            alert_after: None,
            remind_every: day(),
            size_drop: half(),
            slow_factor: three(),
            slow_runs: ten(),
            canary: true,
            check_every: half_minute(),
            budget: None,
            min_free: None,
        }
    }
}

/// Where messages go.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelKind {
    /// A Slack incoming webhook: `{"text": …}`.
    Slack { url: String },
    /// Any JSON receiver; `body` is a template with `{{status}}`,
    /// `{{level}}`, `{{plan}}`, `{{target}}`, `{{summary}}`, `{{date}}`,
    /// `{{host}}` (each JSON-escaped); unset, a default document.
    Webhook { url: String, body: Option<String> },
    /// SMTP: `smtp://user:password@host:587` (STARTTLS when the server
    /// offers it, required unless the host is loopback), or
    /// `smtps://…:465` (TLS from the start).
    Email { smtp: String, from: String, to: Vec<String> },
    /// A healthchecks.io-style URL: `/start` when a run starts, the URL
    /// itself on success, `/fail` on failure, with `?rid=` pairing them.
    Ping { url: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
    pub levels: Vec<Level>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    #[serde(rename = "type")]
    kind: String,
    url: Option<String>,
    body: Option<String>,
    smtp: Option<String>,
    from: Option<String>,
    #[serde(default)]
    to: Vec<String>,
    levels: Option<Vec<String>>,
}

pub(super) fn alerts_section(v: Option<toml::Value>) -> Result<AlertRules, ConfigError> {
    match v {
        None => Ok(AlertRules::default()),
        Some(toml::Value::Table(t)) => {
            let r: AlertRules = section("alerts", t)?;
            if !(r.size_drop > 0.0 && r.size_drop < 1.0) {
                return Err(invalid("alerts.size_drop", "must be a share between 0 and 1, like 0.5"));
            }
            if r.slow_factor <= 1.0 {
                return Err(invalid("alerts.slow_factor", "must be more than 1, like 3"));
            }
            if r.slow_runs < 3 {
                return Err(invalid("alerts.slow_runs", "must be 3 or more"));
            }
            Ok(r)
        }
        Some(_) => Err(invalid("alerts", "must be a table (alert_after = \"2d\")")),
    }
}

pub(super) fn notify_section(
    v: Option<toml::Value>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<ConfigError>,
) -> BTreeMap<String, Channel> {
    let mut out = BTreeMap::new();
    let Some(v) = v else { return out };
    let toml::Value::Table(t) = v else {
        problems.push(invalid("notify", "must be a table of channels ([notify.NAME])"));
        return out;
    };
    for (name, mut v) in t {
        let place = format!("notify.{name}");
        let parsed = expand_value(&mut v, &place, env).and_then(|()| match v {
            toml::Value::Table(t) => channel(&name, &place, section(&place, t)?),
            _ => Err(invalid(&place, "must be a table")),
        });
        match parsed {
            Ok(c) => {
                out.insert(name, c);
            }
            Err(e) => problems.push(e),
        }
    }
    out
}

fn channel(name: &str, place: &str, r: RawChannel) -> Result<Channel, ConfigError> {
    let need = |v: Option<String>, key: &str| {
        v.filter(|s| !s.is_empty())
            .ok_or_else(|| invalid(place, format!("a {} channel needs `{key}`", r.kind)))
    };
    let url_ok = |u: &str| {
        if u.starts_with("http://") || u.starts_with("https://") {
            Ok(())
        } else {
            Err(invalid(format!("{place}.url"), format!("{u:?} is not an http:// or https:// URL")))
        }
    };
    let kind = match r.kind.as_str() {
        "slack" => {
            let url = need(r.url.clone(), "url")?;
            url_ok(&url)?;
            ChannelKind::Slack { url }
        }
        "webhook" => {
            let url = need(r.url.clone(), "url")?;
            url_ok(&url)?;
            ChannelKind::Webhook { url, body: r.body.clone() }
        }
        "ping" => {
            let url = need(r.url.clone(), "url")?;
            url_ok(&url)?;
            ChannelKind::Ping { url }
        }
        "email" => {
            let smtp = need(r.smtp.clone(), "smtp")?;
            if !smtp.starts_with("smtp://") && !smtp.starts_with("smtps://") {
                return Err(invalid(
                    format!("{place}.smtp"),
                    "must be smtp://user:password@host:587 or smtps://…:465",
                ));
            }
            let from = need(r.from.clone(), "from")?;
            if r.to.is_empty() {
                return Err(invalid(place, "an email channel needs `to` (a list of addresses)"));
            }
            ChannelKind::Email { smtp, from, to: r.to.clone() }
        }
        other => {
            return Err(invalid(
                format!("{place}.type"),
                format!("{other:?} is not a channel type (slack, webhook, email, ping)"),
            ))
        }
    };
    let levels = match r.levels {
        None => vec![Level::Warning, Level::Critical],
        Some(l) => l
            .iter()
            .map(|s| {
                Level::parse(s).ok_or_else(|| {
                    invalid(
                        format!("{place}.levels"),
                        format!("{s:?} is not a level (critical, warning, info)"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(Channel { name: name.to_string(), kind, levels })
}
