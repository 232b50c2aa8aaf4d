//! A TCP proxy on loopback that misbehaves on demand, as storage endpoints
//! do: it can be cut (open connections reset, new ones refused), answer the
//! next connections' requests with 503, accept them and never answer, or
//! stop answers short of their length.
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct CutProxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    faults: Arc<Mutex<Faults>>,
    bytes: Arc<AtomicU64>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

#[derive(Default)]
struct Faults {
    /// Connections whose first request gets a 503 and a close.
    unavailable: u32,
    /// Connections accepted and then left without an answer.
    hang: u32,
    /// Answers to stop short: the next reads from the server pass half of
    /// what they got, and the connection closes.
    truncate: u32,
}

fn answer_503(mut client: TcpStream) {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        // Read the request head (and whatever body arrives quickly), then refuse.
        let _ = client.set_read_timeout(Some(Duration::from_millis(200)));
        let mut buf = [0u8; 65536];
        let _ = client.read(&mut buf);
        let _ = client.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let _ = client.shutdown(Shutdown::Both);
    });
}

impl CutProxy {
    pub fn start(target_port: u16) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let bytes = Arc::new(AtomicU64::new(0));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let faults: Arc<Mutex<Faults>> = Arc::default();
        let (c, b, cs, fs) = (cut.clone(), bytes.clone(), conns.clone(), faults.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if c.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                {
                    let mut f = fs.lock().unwrap();
                    if f.unavailable > 0 {
                        f.unavailable -= 1;
                        answer_503(client);
                        continue;
                    }
                    if f.hang > 0 {
                        f.hang -= 1;
                        // Held open, never answered, closed after a minute.
                        std::thread::spawn(move || {
                            std::thread::sleep(Duration::from_secs(60));
                            drop(client);
                        });
                        continue;
                    }
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                cs.lock().unwrap().extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (mut from, mut to, answers) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap(), false),
                    (server, client, true),
                ] {
                    let (c, b, fs) = (c.clone(), b.clone(), fs.clone());
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            use std::io::{Read, Write};
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let short = answers && {
                                let mut f = fs.lock().unwrap();
                                let take = f.truncate > 0;
                                f.truncate = f.truncate.saturating_sub(1);
                                take
                            };
                            let n = if short { n / 2 } else { n };
                            if c.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            b.fetch_add(n as u64, Ordering::SeqCst);
                            if short {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        CutProxy { port, cut, faults, bytes, conns }
    }

    /// The next `n` connections get a 503 to their first request. Open
    /// connections are closed, so that the client has to reconnect.
    pub fn unavailable(&self, n: u32) {
        self.faults.lock().unwrap().unavailable += n;
        self.reset_open();
    }

    /// The next `n` connections are accepted and never answered.
    pub fn hang(&self, n: u32) {
        self.faults.lock().unwrap().hang += n;
        self.reset_open();
    }

    /// The next `n` reads of answers pass only half of their bytes, then
    /// the connection closes: a body shorter than its Content-Length.
    pub fn truncate(&self, n: u32) {
        self.faults.lock().unwrap().truncate += n;
    }

    fn reset_open(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Bytes forwarded so far, both directions.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` bytes went through (or 60 s passed).
    pub fn wait_for_bytes(&self, n: u64) {
        for _ in 0..6000 {
            if self.bytes() >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("proxy saw only {} bytes", self.bytes());
    }

    /// Resets every open connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    pub fn resume(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}
