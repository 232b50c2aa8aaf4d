//! Prometheus (Debian's `prometheus` package), scraping one target every
//! second with a bearer token, as an operator's would.
use super::{http, log_file, require, start_with_retries, wait_ready, ServerProcess};
use std::path::Path;
use std::process::Command;

pub struct Prometheus {
    _child: ServerProcess,
    pub port: u16,
    _lease: super::PortLease,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `target` (`127.0.0.1:PORT`, path /metrics) with the token in
    /// `token_file`.
    pub fn start(target: &str, token_file: &Path) -> Prometheus {
        require("prometheus", "apt-get install prometheus");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: kura\n    \
                 authorization:\n      credentials_file: {}\n    static_configs:\n      - targets: ['{target}']\n",
                token_file.display()
            ),
        )
        .expect("write prometheus.yml");
        let log = dir.path().join("log");
        let (lease, child) = start_with_retries("prometheus", &log, |lease| {
            let (out, err) = log_file(&log);
            let mut child = Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{}", lease.port))
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("start prometheus");
            let ready = wait_ready(&mut child, || {
                http(lease.port, "GET", "/-/ready", "")
                    .map(|r| r.contains("Prometheus Server is Ready"))
                    .unwrap_or(false)
            });
            let child = ServerProcess(child);
            ready.map(|()| (lease, child))
        });
        Prometheus { port: lease.port, _child: child, _lease: lease, _dir: dir }
    }

    /// The body of an instant query's JSON answer.
    pub fn query(&self, promql: &str) -> String {
        let q: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let reply =
            http(self.port, "GET", &format!("/api/v1/query?query={q}"), "").expect("query prometheus");
        reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or(reply)
    }
}

/// A Prometheus Pushgateway (Debian's `prometheus-pushgateway`).
pub struct Pushgateway {
    _child: ServerProcess,
    pub port: u16,
    _lease: super::PortLease,
    _dir: tempfile::TempDir,
}

impl Pushgateway {
    pub fn start() -> Pushgateway {
        require("prometheus-pushgateway", "apt-get install prometheus-pushgateway");
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log");
        let (lease, child) = start_with_retries("prometheus-pushgateway", &log, |lease| {
            let (out, err) = log_file(&log);
            let mut child = Command::new("prometheus-pushgateway")
                .arg(format!("--web.listen-address=127.0.0.1:{}", lease.port))
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("start prometheus-pushgateway");
            // Only a Pushgateway serves its own push_time_seconds family.
            let ready = wait_ready(&mut child, || {
                http(lease.port, "GET", "/metrics", "")
                    .map(|r| r.contains("pushgateway_build_info"))
                    .unwrap_or(false)
            });
            let child = ServerProcess(child);
            ready.map(|()| (lease, child))
        });
        Pushgateway { port: lease.port, _child: child, _lease: lease, _dir: dir }
    }

    /// What it exposes: the pushed groups' metrics among its own.
    pub fn metrics(&self) -> String {
        http(self.port, "GET", "/metrics", "").expect("read the pushgateway's metrics")
    }
}
