//! An HTTP receiver on loopback that records every request it gets (method,
//! path with query, body) and answers 200, or the status a path was told
//! to answer: the far end of a Slack webhook, a generic webhook, a ping URL.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub body: String,
}

pub struct Receiver {
    pub port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    failing: Arc<Mutex<Vec<(String, u16)>>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a receiver");
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let failing: Arc<Mutex<Vec<(String, u16)>>> = Arc::new(Mutex::new(Vec::new()));
        let (g, f) = (got.clone(), failing.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut reader = BufReader::new(stream);
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    continue;
                }
                let mut parts = first.split_whitespace();
                let (method, path) =
                    (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.trim().eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let status = f
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(p, _)| path.starts_with(p.as_str()))
                    .map(|(_, s)| *s)
                    .unwrap_or(200);
                g.lock().unwrap().push(Received {
                    method,
                    path,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                let mut stream = reader.into_inner();
                let _ =
                    write!(stream, "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            }
        });
        Receiver { port, got, failing }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Requests whose path starts with `prefix` are answered `status`.
    pub fn fail(&self, prefix: &str, status: u16) {
        self.failing.lock().unwrap().push((prefix.to_string(), status));
    }

    /// Everything received on paths starting with `prefix`, in order.
    pub fn on(&self, prefix: &str) -> Vec<Received> {
        self.got.lock().unwrap().iter().filter(|r| r.path.starts_with(prefix)).cloned().collect()
    }

    /// Waits until `n` requests arrived on `prefix` (at most `secs`).
    pub fn wait_for(&self, prefix: &str, n: usize, secs: u64) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.on(prefix);
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
