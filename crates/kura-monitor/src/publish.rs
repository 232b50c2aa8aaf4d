//! Metrics for machines that run kura from cron, where nothing stays up to
//! be scraped: after each `kura run`, the metrics of every plan are pushed
//! to a Pushgateway (PUT, replacing this host's group, so a plan removed
//! from kura.toml disappears) and/or written to a node-exporter textfile
//! (written beside it and renamed, so the exporter never reads half).
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kura_policy::Config;

use crate::metrics;

/// Publishes where `[monitor]` says; returns what failed, as warnings:
/// monitoring never fails a backup.
pub async fn publish(cfg: &Config, state_dir: &Path, now: DateTime<Utc>, host: &str) -> Vec<String> {
    let m = &cfg.monitor;
    if m.pushgateway.is_none() && m.textfile.is_none() {
        return Vec::new();
    }
    let text = match metrics::gather(cfg, state_dir, now) {
        Ok(t) => t,
        Err(e) => return vec![format!("metrics not published: {e}")],
    };
    let mut problems = Vec::new();
    if let Some(path) = &m.textfile {
        if let Err(e) = write_textfile(path, &text) {
            problems.push(format!("textfile {}: {e}", path.display()));
        }
    }
    if let Some(url) = &m.pushgateway {
        if let Err(e) = push(url, &m.pushgateway_job, host, text).await {
            problems.push(format!("pushgateway {}: {e}", without_password(url)));
        }
    }
    problems
}

fn write_textfile(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // node-exporter reads *.prom only: the partial file is not one.
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The URL with any password replaced, for messages.
fn without_password(url: &str) -> String {
    match split_userinfo(url) {
        (rest, Some((user, _))) => rest.replacen("://", &format!("://{user}:***@"), 1),
        (rest, None) => rest,
    }
}

/// `http://user:pass@host/...` → (`http://host/...`, (user, pass)).
fn split_userinfo(url: &str) -> (String, Option<(String, String)>) {
    let Some((scheme, rest)) = url.split_once("://") else { return (url.to_string(), None) };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (
                format!("{scheme}://{host}{}", &rest[authority_end..]),
                Some((user.to_string(), pass.to_string())),
            )
        }
        None => (url.to_string(), None),
    }
}

/// A path segment of the grouping key, as the Pushgateway reads it
/// (`@base64` for values that are not plain).
fn segment(v: &str) -> String {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
        return v.to_string();
    }
    use std::fmt::Write;
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in v.as_bytes().chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            let _ = write!(out, "{}", TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    format!("{out}@base64")
}

async fn push(url: &str, job: &str, host: &str, text: String) -> Result<(), String> {
    let (base, auth) = split_userinfo(url);
    let host = if host.is_empty() { "unknown" } else { host };
    let target =
        format!("{}/metrics/job/{}/instance/{}", base.trim_end_matches('/'), segment(job), segment(host));
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(15)).build().map_err(|e| e.to_string())?;
    let mut last = String::new();
    // A gateway restarting: a few tries, a second apart.
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let mut req = client.put(&target).header("Content-Type", metrics::CONTENT_TYPE).body(text.clone());
        if let Some((user, pass)) = &auth {
            req = req.basic_auth(user, Some(pass));
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                last = format!("{status}: {}", body.trim());
                if status.is_client_error() {
                    break;
                }
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_values_that_are_not_plain_go_as_base64url() {
        assert_eq!(segment("web-1.example"), "web-1.example");
        assert_eq!(segment("a/b"), "YS9i@base64");
        assert_eq!(segment("ab?"), "YWI_@base64");
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        let (base, auth) = split_userinfo("http://ops:pa:ss@gw:9091/x");
        assert_eq!(base, "http://gw:9091/x");
        assert_eq!(auth, Some(("ops".into(), "pa:ss".into())));
        assert_eq!(without_password("http://ops:secret@gw:9091"), "http://ops:***@gw:9091");
        assert_eq!(without_password("http://gw:9091"), "http://gw:9091");
    }
}
