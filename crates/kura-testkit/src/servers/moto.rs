//! moto's S3 server (`pip install 'moto[server]'`), which enforces
//! create-only-if-absent writes. Data lives in memory and dies with it.
use super::{http, log_file, lookup, require, start_with_retries, wait_ready, PortLease, ServerProcess};
use std::process::Command;

pub struct MotoServer {
    _child: ServerProcess,
    lease: PortLease,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl MotoServer {
    pub fn start() -> MotoServer {
        require("moto_server", "pip install 'moto[server]'");
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log");
        let (lease, child) = start_with_retries("moto_server", &log, |lease| {
            let (out, err) = log_file(&log);
            let mut child = Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &lease.port.to_string()])
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("start moto_server");
            // Only an S3 server answers ListBuckets with this document.
            let ready = wait_ready(&mut child, || {
                http(lease.port, "GET", "/", "")
                    .map(|r| r.starts_with("HTTP/1.1 200") && r.contains("ListAllMyBucketsResult"))
                    .unwrap_or(false)
            });
            let child = ServerProcess(child);
            ready.map(|()| (lease, child))
        });
        MotoServer { port: lease.port, _child: child, lease, _dir: dir }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.lease.port)
    }

    /// Creates a bucket (moto accepts unsigned requests).
    pub fn create_bucket(&self, name: &str) {
        let reply = http(self.port, "PUT", &format!("/{name}"), "").expect("connect to moto_server");
        assert!(reply.starts_with("HTTP/1.1 200"), "creating bucket {name}: {reply}");
    }

    /// Environment for a kura process talking to this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ENDPOINT_URL".into(), self.endpoint()),
        ]
    }

    pub fn env_fn(&self) -> impl Fn(&str) -> Option<String> {
        lookup(self.env())
    }
}
