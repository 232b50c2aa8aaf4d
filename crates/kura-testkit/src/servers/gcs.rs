//! gcp-storage-emulator (`pip install gcp-storage-emulator`). It does not
//! enforce preconditions and has no multipart uploads, so the conformance
//! suite skips exactly those checks for it (see `Capabilities`).
use super::{find_program, http, log_file, start_with_retries, wait_ready, PortLease, ServerProcess};
use std::process::Command;

pub struct GcsEmulator {
    _child: ServerProcess,
    _lease: PortLease,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl GcsEmulator {
    pub fn start(bucket: &str) -> GcsEmulator {
        let program = find_program("gcp-storage-emulator").unwrap_or_else(|| {
            panic!("gcp-storage-emulator not found: install it with `pip install gcp-storage-emulator` (./scripts/test does)")
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log");
        let (lease, child) = start_with_retries("gcp-storage-emulator", &log, |lease| {
            let (out, err) = log_file(&log);
            let mut child = Command::new(&program)
                .args(["start", "--host", "127.0.0.1", "--port", &lease.port.to_string(), "--in-memory"])
                .args(["--default-bucket", bucket])
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("start gcp-storage-emulator");
            // The bucket it was started with proves it is this emulator.
            let ready = wait_ready(&mut child, || {
                http(lease.port, "GET", &format!("/storage/v1/b/{bucket}"), "")
                    .map(|r| r.contains("200 OK") && r.contains("\"storage#bucket\""))
                    .unwrap_or(false)
            });
            let child = ServerProcess(child);
            ready.map(|()| (lease, child))
        });
        GcsEmulator { port: lease.port, _child: child, _lease: lease, _dir: dir }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn env_fn(&self) -> impl Fn(&str) -> Option<String> {
        // An explicit token keeps the client from looking for credentials
        // anywhere else; the emulator accepts any.
        |k| (k == "KURA_GCS_TOKEN").then(|| "emulator-token".to_string())
    }
}
