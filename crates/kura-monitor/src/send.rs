//! Outgoing HTTP for notifications: a POST, retried a few times a little
//! apart, bounded in time, its URL's secrets (a Slack webhook's path is
//! one) kept out of error messages.
use std::time::Duration;

const TRIES: u32 = 3;

/// The URL's scheme and host only: webhook paths and query strings carry
/// the secret that lets anyone post.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?']).next().unwrap_or("");
            let host = host.rsplit_once('@').map(|(_, h)| h).unwrap_or(host);
            format!("{scheme}://{host}/…")
        }
        None => "(a URL)".into(),
    }
}

pub async fn post(url: &str, content_type: &str, body: String) -> Result<(), String> {
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| e.to_string())?;
    let mut last = String::new();
    for attempt in 0..TRIES {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 * 2u64.pow(attempt))).await;
        }
        match client.post(url).header("Content-Type", content_type).body(body.clone()).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => {
                last = format!("{} answered {}", redact(url), r.status());
                // A receiver that refuses the message will refuse it again.
                if r.status().is_client_error() && r.status().as_u16() != 429 {
                    break;
                }
            }
            Err(e) => {
                last = format!(
                    "{}: {}",
                    redact(url),
                    if e.is_timeout() { "timed out".into() } else { without_url(&e) }
                )
            }
        }
    }
    Err(last)
}

/// reqwest's message without the URL it appends.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(u) = e.url() {
        text = text.replace(&format!(" ({u})"), "").replace(u.as_str(), "(url)");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_urls_stay_out_of_messages() {
        assert_eq!(redact("https://hooks.slack.com/services/T0/B0/XXXX"), "https://hooks.slack.com/…");
        assert_eq!(redact("http://u:p@127.0.0.1:8080/hook?token=1"), "http://127.0.0.1:8080/…");
    }
}
