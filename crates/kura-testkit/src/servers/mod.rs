//! Real servers on loopback for kura's tests, one file per server.
//!
//! Every fixture follows the same rules, because a test run starts dozens of
//! servers at once across test binaries:
//! - its port comes from a [`PortLease`]: outside the kernel's ephemeral
//!   range (so no client connection can hold it) and locked by a file lock
//!   that other test processes respect, for as long as the server runs;
//! - it is ready when a request that only *this* server can answer succeeds
//!   (a bucket it was started with, its own socket, its own data directory),
//!   never when a TCP connect does;
//! - when it dies before that (a port taken after all), it is started again
//!   on a fresh port, and after three tries the panic quotes its own log.

mod azurite;
mod gcs;
mod mariadb;
mod moto;
mod postgres;
mod prometheus;
mod receiver;
mod smtp;

pub use azurite::{AzuriteServer, AZURITE_ACCOUNT, AZURITE_KEY};
pub use gcs::GcsEmulator;
pub use mariadb::{MariaDb, MyHold};
pub use moto::MotoServer;
pub use postgres::{Hold, PgServer};
pub use prometheus::{Prometheus, Pushgateway};
pub use receiver::{Received, Receiver};
pub use smtp::{SmtpServer, SMTP_PASSWORD, SMTP_USER};

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// A loopback port held for this process: no other kura test process is
/// given it while the lease lives, and no outgoing connection takes it,
/// because it lies outside the kernel's ephemeral range.
pub struct PortLease {
    pub port: u16,
    _lock: File,
}

/// The ports leases come from: below the ephemeral range when there is room,
/// else above it.
fn lease_range() -> (u16, u16) {
    let (lo, hi) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    if lo >= 12000 {
        (10000, (lo - 1).min(30000) as u16)
    } else if hi <= 63000 {
        ((hi + 1) as u16, 65000)
    } else {
        // The whole range is ephemeral: the file lock and the bind check
        // below still keep test servers apart.
        (20000, 30000)
    }
}

/// Takes a port lease. Panics only when every port in the range is taken.
pub fn reserve_port() -> PortLease {
    let (lo, hi) = lease_range();
    let dir = std::env::temp_dir().join("kura-test-ports");
    std::fs::create_dir_all(&dir).expect("create the port lease directory");
    let span = u32::from(hi - lo);
    let start = rand::random::<u32>() % span;
    for i in 0..span {
        let port = lo + ((start + i) % span) as u16;
        let Ok(lock) =
            File::options().create(true).truncate(false).write(true).open(dir.join(port.to_string()))
        else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue;
        }
        // Something outside the lease system may listen there.
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return PortLease { port, _lock: lock };
        }
    }
    panic!("no free loopback port in {lo}..{hi}");
}

/// A port that nothing listens on, for tests of unreachable servers: leased,
/// so no test server is started there while the lease lives.
pub fn closed_port() -> PortLease {
    reserve_port()
}

/// A server process that is killed and reaped when the fixture goes away.
pub(crate) struct ServerProcess(pub(crate) Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Why a start attempt did not give a ready server.
pub(crate) enum NotReady {
    /// The process exited (a taken port, most often): try a fresh port.
    Exited(String),
    /// It ran but never answered as itself within the time limit.
    Silent,
}

/// Polls `probe` until it answers, while the process lives. The probe must
/// be a real request that only the expected server answers.
pub(crate) fn wait_ready(child: &mut Child, mut probe: impl FnMut() -> bool) -> Result<(), NotReady> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if probe() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(NotReady::Exited(status.to_string()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(NotReady::Silent)
}

/// Starts a server up to three times, each on a fresh port, until `attempt`
/// returns it ready; then panics quoting the last attempt's log.
pub(crate) fn start_with_retries<T>(
    what: &str,
    log: &Path,
    mut attempt: impl FnMut(PortLease) -> Result<T, NotReady>,
) -> T {
    let mut last = String::new();
    for _ in 0..3 {
        match attempt(reserve_port()) {
            Ok(server) => return server,
            Err(NotReady::Exited(status)) => last = format!("exited with {status}"),
            Err(NotReady::Silent) => last = "never answered within 60 s".into(),
        }
    }
    panic!("{what} {last}, three times; its log ({}):\n{}", log.display(), tail(log));
}

/// The last lines of a server's log, for a panic message.
pub(crate) fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_else(|e| format!("(unreadable: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

pub(crate) fn require(program: &str, install: &str) {
    if find_program(program).is_none() {
        panic!("{program} not found on PATH: install it with `{install}` (./scripts/test does this)");
    }
}

pub(crate) fn find_program(program: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    // Where ./scripts/test installs npm packages.
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cache/kura-test/node_modules/.bin"));
    }
    dirs.into_iter().map(|d| d.join(program)).find(|p| p.is_file())
}

/// Looks a name up in a fixture's environment list.
pub(crate) fn lookup(env: Vec<(String, String)>) -> impl Fn(&str) -> Option<String> {
    move |k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}

/// A raw HTTP/1.1 request, enough to set a test server up without pulling an
/// HTTP client into the test kit. Returns the whole reply, or the error.
pub fn http(port: u16, method: &str, path: &str, headers: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

pub(crate) fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

/// A log file for a server, inside its own temporary directory.
pub(crate) fn log_file(path: &Path) -> (File, File) {
    let f = File::create(path).expect("create a server log");
    let g = f.try_clone().expect("clone a log handle");
    (f, g)
}
