//! Azurite's blob service (`npm install azurite`), which enforces
//! conditional creates like Azure does.
use super::{find_program, http, log_file, lookup, start_with_retries, wait_ready, PortLease, ServerProcess};
use std::process::Command;

pub struct AzuriteServer {
    _child: ServerProcess,
    _lease: PortLease,
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// The development account every Azurite instance has.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

impl AzuriteServer {
    pub fn start() -> AzuriteServer {
        let program = find_program("azurite-blob").unwrap_or_else(|| {
            panic!("azurite-blob not found: install it with `npm install azurite` (./scripts/test does)")
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log");
        let data = dir.path().join("data");
        let (lease, child) = start_with_retries("azurite-blob", &log, |lease| {
            let (out, err) = log_file(&log);
            let mut child = Command::new(&program)
                .args([
                    "--blobHost",
                    "127.0.0.1",
                    "--blobPort",
                    &lease.port.to_string(),
                    "--disableTelemetry",
                ])
                .arg("--location")
                .arg(&data)
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("start azurite-blob");
            // Azurite names itself in every reply, even to an unsigned one.
            let ready = wait_ready(&mut child, || {
                http(lease.port, "GET", &format!("/{AZURITE_ACCOUNT}?comp=list"), "")
                    .map(|r| r.contains("Server: Azurite-Blob"))
                    .unwrap_or(false)
            });
            let child = ServerProcess(child);
            ready.map(|()| (lease, child))
        });
        AzuriteServer { port: lease.port, _child: child, _lease: lease, _dir: dir }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port)
    }

    /// Creates a container with a SharedKey-signed request.
    pub fn create_container(&self, name: &str) {
        use base64::Engine;
        use sha2::{Digest, Sha256};
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let version = "2021-08-06";
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{name}\nrestype:container"
        );
        let key = base64::engine::general_purpose::STANDARD.decode(AZURITE_KEY).unwrap();
        // HMAC-SHA256 (RFC 2104), written out to keep the test kit small.
        let mut k = [0u8; 64];
        k[..key.len()].copy_from_slice(&key);
        let inner = Sha256::new()
            .chain_update(k.iter().map(|b| b ^ 0x36).collect::<Vec<_>>())
            .chain_update(to_sign.as_bytes())
            .finalize();
        let mac = Sha256::new()
            .chain_update(k.iter().map(|b| b ^ 0x5c).collect::<Vec<_>>())
            .chain_update(inner)
            .finalize();
        let sig = base64::engine::general_purpose::STANDARD.encode(mac);
        let headers = format!(
            "x-ms-date: {date}\r\nx-ms-version: {version}\r\nAuthorization: SharedKey {AZURITE_ACCOUNT}:{sig}\r\n"
        );
        let reply = http(self.port, "PUT", &format!("/{AZURITE_ACCOUNT}/{name}?restype=container"), &headers)
            .expect("connect to azurite");
        assert!(reply.starts_with("HTTP/1.1 201"), "creating container {name}: {reply}");
    }

    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AZURE_STORAGE_ACCOUNT".into(), AZURITE_ACCOUNT.into()),
            ("AZURE_STORAGE_KEY".into(), AZURITE_KEY.into()),
        ]
    }

    pub fn env_fn(&self) -> impl Fn(&str) -> Option<String> {
        lookup(self.env())
    }
}
