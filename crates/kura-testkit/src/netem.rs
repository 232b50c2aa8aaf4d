//! A TCP proxy on loopback that behaves like a wide-area link to a storage
//! service: every byte is held back by a fixed one-way latency, each
//! direction is paced to a bandwidth shared by all connections (as one
//! uplink and one downlink would be), and the HTTP requests passing through
//! are counted by method, since requests are what a cloud bill charges.
//!
//! The benchmark puts it in front of the S3 test server and runs kura and
//! restic through the same link (`scripts/bench --only s3`).
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The link's shape.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Added to every byte in each direction.
    pub latency: Duration,
    /// Bytes per second in each direction; `None` for no cap.
    pub rate: Option<u64>,
}

/// What went through the link so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// HTTP requests by method.
    pub requests: BTreeMap<String, u64>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub connections: u64,
}

impl Counts {
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }

    /// One line of JSON, for scripts.
    pub fn to_json(&self) -> String {
        let methods: Vec<String> = self.requests.iter().map(|(m, n)| format!("\"{m}\":{n}")).collect();
        format!(
            "{{\"requests\":{{{}}},\"total_requests\":{},\"bytes_up\":{},\"bytes_down\":{},\"connections\":{}}}",
            methods.join(","),
            self.total_requests(),
            self.bytes_up,
            self.bytes_down,
            self.connections
        )
    }
}

/// One direction of the link: the time its last queued byte leaves.
struct Pace {
    rate: Option<u64>,
    free_at: Mutex<Instant>,
}

impl Pace {
    fn new(rate: Option<u64>) -> Pace {
        Pace { rate, free_at: Mutex::new(Instant::now()) }
    }

    /// Waits until `n` bytes have had their turn on the wire.
    fn send(&self, n: usize) {
        let Some(rate) = self.rate else { return };
        let done = {
            let mut free = self.free_at.lock().unwrap();
            let start = (*free).max(Instant::now());
            *free = start + Duration::from_secs_f64(n as f64 / rate as f64);
            *free
        };
        // Sleeps overshoot by tens of microseconds; small debts wait for the
        // next piece, so the average rate stays the one asked for.
        let now = Instant::now();
        if done > now + Duration::from_millis(2) {
            thread::sleep(done - now);
        }
    }
}

pub struct Netem {
    pub addr: SocketAddr,
    counts: Arc<Mutex<Counts>>,
}

impl Netem {
    /// Listens on `listen` (port 0 for any) and forwards to `upstream`.
    pub fn start(listen: &str, upstream: SocketAddr, shape: Shape) -> std::io::Result<Netem> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let counts: Arc<Mutex<Counts>> = Arc::default();
        let up = Arc::new(Pace::new(shape.rate));
        let down = Arc::new(Pace::new(shape.rate));
        let c = counts.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                c.lock().unwrap().connections += 1;
                let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else { continue };
                let mut parser = RequestCounter::default();
                let counts_up = c.clone();
                pipe(client, server2, shape.latency, up.clone(), move |bytes| {
                    let mut counts = counts_up.lock().unwrap();
                    counts.bytes_up += bytes.len() as u64;
                    parser.feed(bytes, &mut |method| {
                        *counts.requests.entry(method.to_owned()).or_default() += 1
                    });
                });
                let counts_down = c.clone();
                pipe(server, client2, shape.latency, down.clone(), move |bytes| {
                    counts_down.lock().unwrap().bytes_down += bytes.len() as u64;
                });
            }
        });
        Ok(Netem { addr, counts })
    }

    pub fn counts(&self) -> Counts {
        self.counts.lock().unwrap().clone()
    }
}

/// Copies `from` to `to` through a delay line: a reader stamps each piece
/// with the time it may leave, a writer waits for that time and the link.
/// The queue is bounded so a fast sender feels the link's pace.
fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    latency: Duration,
    pace: Arc<Pace>,
    mut seen: impl FnMut(&[u8]) + Send + 'static,
) {
    let (tx, rx) = mpsc::sync_channel::<(Instant, Vec<u8>)>(64);
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    seen(&buf[..n]);
                    if tx.send((Instant::now() + latency, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping the sender tells the writer the stream ended.
    });
    thread::spawn(move || {
        for (due, piece) in rx {
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            pace.send(piece.len());
            if to.write_all(&piece).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// Finds HTTP/1.1 request heads in a client's byte stream, stepping over
/// bodies by `Content-Length` or chunked framing, as they arrive in pieces
/// of any size.
#[derive(Default)]
pub struct RequestCounter {
    state: State,
    line: Vec<u8>,
}

#[derive(Default)]
enum State {
    #[default]
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    Trailer,
}

impl RequestCounter {
    pub fn feed(&mut self, mut bytes: &[u8], on_request: &mut dyn FnMut(&str)) {
        while !bytes.is_empty() {
            match self.state {
                State::Body(left) | State::ChunkData(left) => {
                    let take = left.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    let left = left - take;
                    self.state = match self.state {
                        State::Body(_) if left == 0 => State::Head,
                        State::Body(_) => State::Body(left),
                        // The chunk's data and then its CRLF, counted in `left`.
                        _ if left == 0 => State::ChunkSize,
                        _ => State::ChunkData(left),
                    };
                }
                State::Head => {
                    let (used, done) = take_until(&mut self.line, bytes, b"\r\n\r\n");
                    bytes = &bytes[used..];
                    if done {
                        let head = std::mem::take(&mut self.line);
                        self.state = self.start(&head, on_request);
                    }
                }
                State::ChunkSize | State::Trailer => {
                    let (used, done) = take_until(&mut self.line, bytes, b"\r\n");
                    bytes = &bytes[used..];
                    if done {
                        let line = std::mem::take(&mut self.line);
                        let text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
                        self.state = match self.state {
                            State::ChunkSize => {
                                let size =
                                    u64::from_str_radix(text.split(';').next().unwrap_or("").trim(), 16)
                                        .unwrap_or(0);
                                if size == 0 {
                                    State::Trailer
                                } else {
                                    State::ChunkData(size + 2)
                                }
                            }
                            _ if text.is_empty() => State::Head,
                            _ => State::Trailer,
                        };
                    }
                }
            }
        }
    }

    fn start(&self, head: &[u8], on_request: &mut dyn FnMut(&str)) -> State {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let method = lines.next().and_then(|l| l.split(' ').next()).unwrap_or("");
        if method.is_empty() {
            return State::Head;
        }
        on_request(method);
        let mut length = 0;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else { continue };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
                return State::ChunkSize;
            }
            if name == "content-length" {
                length = value.parse().unwrap_or(0);
            }
        }
        if length > 0 {
            State::Body(length)
        } else {
            State::Head
        }
    }
}

/// Appends `bytes` to `acc` up to and including the first `end`; returns how
/// many bytes were used and whether `end` was reached.
fn take_until(acc: &mut Vec<u8>, bytes: &[u8], end: &[u8]) -> (usize, bool) {
    for (i, &b) in bytes.iter().enumerate() {
        acc.push(b);
        if acc.ends_with(end) {
            return (i + 1, true);
        }
    }
    (bytes.len(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(stream: &[u8], piece: usize) -> Vec<String> {
        let mut counter = RequestCounter::default();
        let mut seen = Vec::new();
        for part in stream.chunks(piece) {
            counter.feed(part, &mut |m| seen.push(m.to_owned()));
        }
        seen
    }

    #[test]
    fn requests_are_found_across_bodies_and_chunks_cut_anywhere() {
        // A body that looks like a request head must not be counted.
        let body = b"GET /not-a-request HTTP/1.1\r\n\r\n";
        let mut stream = Vec::new();
        stream.extend_from_slice(
            format!("PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
        );
        stream.extend_from_slice(body);
        stream.extend_from_slice(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
        stream.extend_from_slice(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        stream.extend_from_slice(
            b"5;ext=1\r\nHEAD \r\n1f\r\nDELETE /x HTTP/1.1\r\n\r\nxxxxxxxx\r\n0\r\nTrailer: y\r\n\r\n",
        );
        stream.extend_from_slice(b"HEAD /d HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        for piece in 1..=stream.len() {
            assert_eq!(count(&stream, piece), ["PUT", "GET", "POST", "HEAD"], "cut every {piece} bytes");
        }
    }

    #[test]
    fn the_link_adds_its_latency_each_way_and_keeps_its_pace() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = server.local_addr().unwrap();
        thread::spawn(move || {
            for conn in server.incoming() {
                let mut conn = conn.unwrap();
                thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let shape = Shape { latency: Duration::from_millis(30), rate: Some(10 << 20) };
        let link = Netem::start("127.0.0.1:0", upstream, shape).unwrap();
        let mut conn = TcpStream::connect(link.addr).unwrap();
        let start = Instant::now();
        conn.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        conn.read_exact(&mut got).unwrap();
        let rtt = start.elapsed();
        assert!(rtt >= Duration::from_millis(60), "round trip {rtt:?}");
        assert!(rtt < Duration::from_millis(500), "round trip {rtt:?}");

        // 2 MiB each way at 10 MiB/s: at least 0.2 s, the two directions in step.
        let data = vec![7u8; 2 << 20];
        let mut reader = conn.try_clone().unwrap();
        let echo = thread::spawn(move || {
            let mut back = vec![0u8; 2 << 20];
            reader.read_exact(&mut back).unwrap();
            back
        });
        let start = Instant::now();
        conn.write_all(&data).unwrap();
        assert_eq!(echo.join().unwrap(), data);
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(200), "2 MiB took {took:?}");
        let counts = link.counts();
        assert_eq!(
            (counts.bytes_up, counts.bytes_down, counts.connections),
            ((2 << 20) + 4, (2 << 20) + 4, 1)
        );
    }
}
