//! A small HTTP/1.1 server for `GET` requests: enough for health checks,
//! Prometheus scrapes and load balancers, without a web framework in the
//! binary. One request per connection (`Connection: close`); the request
//! head is bounded in size and time, so a slow or hostile client holds a
//! task for seconds, not forever.
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The longest request head read.
const MAX_HEAD: usize = 16 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn json(status: u16, value: &impl serde::Serialize) -> Response {
        let mut body = serde_json::to_string_pretty(value).expect("serializable");
        body.push('\n');
        Response { status, content_type: "application/json", body }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response { status, content_type: "text/plain; charset=utf-8", body: body.into() }
    }
}

/// What answers a request for a path (the query string removed).
pub trait Handler: Send + Sync + 'static {
    fn respond(&self, path: &str) -> Response;
}

/// Answers connections on `listener` until the task is dropped. With a
/// token, a request without `Authorization: Bearer TOKEN` gets 401 and
/// nothing else.
pub async fn serve(listener: TcpListener, token: Option<String>, handler: Arc<dyn Handler>) {
    let token = Arc::new(token);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!(error = %e, "monitor: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let (token, handler) = (token.clone(), handler.clone());
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &token, handler).await {
                tracing::debug!(%peer, error = %e, "monitor: a request ended early");
            }
        });
    }
}

struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
}

/// The request line and the one header that matters.
fn parse(head: &str) -> Option<Request> {
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target, version) = (first.next()?, first.next()?, first.next()?);
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let path = target.split('?').next().unwrap_or("/").to_string();
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_string());
    Some(Request { method: method.to_string(), path, authorization })
}

/// Compares without stopping at the first difference, so the time taken
/// says nothing of how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn answer(
    mut stream: TcpStream,
    token: &Option<String>,
    handler: Arc<dyn Handler>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut chunk = [0u8; 2048];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(true);
            }
            if buf.len() > MAX_HEAD {
                return Ok(false);
            }
        }
    })
    .await;
    let complete = matches!(read, Ok(Ok(true)));
    let request = complete.then(|| parse(&String::from_utf8_lossy(&buf))).flatten();
    let (response, head_only) = match request {
        None => (Response::text(400, "bad request\n"), false),
        Some(r) if r.method != "GET" && r.method != "HEAD" => {
            (Response::text(405, "only GET and HEAD\n"), false)
        }
        Some(r) => {
            let allowed = match token {
                None => true,
                Some(t) => r
                    .authorization
                    .as_deref()
                    .and_then(|a| a.strip_prefix("Bearer "))
                    .is_some_and(|given| same(given.trim().as_bytes(), t.as_bytes())),
            };
            let head_only = r.method == "HEAD";
            if allowed {
                let path = r.path.clone();
                let h = handler.clone();
                let response = tokio::task::spawn_blocking(move || h.respond(&path))
                    .await
                    .unwrap_or_else(|_| Response::text(500, "internal error\n"));
                (response, head_only)
            } else {
                (Response::text(401, "unauthorized\n"), head_only)
            }
        }
    };
    let reason = match response.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    if response.status == 401 {
        out.push_str("WWW-Authenticate: Bearer realm=\"kura\"\r\n");
    }
    if response.status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&response.body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_head_gives_its_path_and_token() {
        let r = parse("GET /health/daily?x=1 HTTP/1.1\r\nHost: a\r\nauthorization:  Bearer s3cret \r\n\r\n")
            .unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/health/daily"));
        assert_eq!(r.authorization.as_deref(), Some("Bearer s3cret"));
        assert!(parse("GET /\r\n\r\n").is_none());
        assert!(parse("garbage").is_none());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
