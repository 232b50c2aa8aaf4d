//! An SMTP server (aiosmtpd from PyPI) on loopback, offering STARTTLS with
//! a certificate made for the test and AUTH PLAIN for one user, saving
//! each message it accepts as a file.
use super::{log_file, reserve_port, wait_ready, ServerProcess};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const SMTP_USER: &str = "kura";
pub const SMTP_PASSWORD: &str = "mail-Pa55";

const SCRIPT: &str = r#"
import asyncio, ssl, sys, os, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, maildir, cert, key, user, password = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)

class Save:
    async def handle_DATA(self, server, session, envelope):
        name = os.path.join(maildir, "%d.eml" % time.time_ns())
        with open(name + ".tmp", "wb") as f:
            f.write(("X-Rcpt: %s\r\nX-Auth: %s\r\nX-TLS: %s\r\n" % (",".join(envelope.rcpt_tos), session.authenticated, session.ssl is not None)).encode())
            f.write(envelope.original_content)
        os.rename(name + ".tmp", name)
        return "250 saved"

def auth(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login.decode() == user and data.password.decode() == password
    return AuthResult(success=ok)

c = Controller(Save(), hostname="127.0.0.1", port=int(port), tls_context=ctx, require_starttls=True,
               authenticator=auth, auth_required=True, auth_require_tls=True)
c.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

pub struct SmtpServer {
    _child: ServerProcess,
    pub port: u16,
    _lease: super::PortLease,
    dir: tempfile::TempDir,
}

impl SmtpServer {
    pub fn start() -> SmtpServer {
        let ok = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "aiosmtpd is not installed: pip install aiosmtpd (./scripts/test does this)");
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        // A CA of the test's own signs the server's certificate: a client
        // trusts the CA (SSL_CERT_FILE), as it would a real one.
        let d = dir.path();
        let ext = d.join("leaf.ext");
        std::fs::write(
            &ext,
            "basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("run openssl (apt-get install openssl)");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=kura test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-out",
            "cert.pem",
        ]);
        let mail = dir.path().join("mail");
        std::fs::create_dir_all(&mail).unwrap();
        let script = dir.path().join("smtpd.py");
        std::fs::write(&script, SCRIPT).unwrap();
        let log = dir.path().join("log");
        let lease = reserve_port();
        let (out, err) = log_file(&log);
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(lease.port.to_string())
            .arg(&mail)
            .arg(&cert)
            .arg(&key)
            .args([SMTP_USER, SMTP_PASSWORD])
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start aiosmtpd");
        let port = lease.port;
        let ready = wait_ready(&mut child, || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .and_then(|mut s| {
                    use std::io::Read;
                    s.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
                    let mut b = [0u8; 64];
                    let n = s.read(&mut b)?;
                    Ok(b[..n].starts_with(b"220"))
                })
                .unwrap_or(false)
        });
        if ready.is_err() {
            panic!("aiosmtpd did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        SmtpServer { _child: ServerProcess(child), port, _lease: lease, dir }
    }

    /// The CA that signed its certificate: a client trusts it via
    /// SSL_CERT_FILE.
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The messages received so far, oldest first.
    pub fn messages(&self) -> Vec<String> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("mail"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
