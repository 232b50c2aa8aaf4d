//! A throwaway PostgreSQL cluster on 127.0.0.1 (`apt-get install postgresql`),
//! password authentication only.
use super::{is_root, start_with_retries, NotReady, PortLease, ServerProcess};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    _lease: PortLease,
    pub port: u16,
    pub password: String,
}

fn as_postgres(cmd: &Path) -> Command {
    // initdb refuses to run as root: run the server as the postgres user.
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(cmd);
        c
    } else {
        Command::new(cmd)
    }
}

impl PgServer {
    pub fn start() -> PgServer {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|rd| {
                let mut v: Vec<_> =
                    rd.flatten().map(|e| e.path().join("bin")).filter(|p| p.join("initdb").is_file()).collect();
                v.sort();
                v.pop()
            })
            .unwrap_or_else(|| {
                panic!("PostgreSQL server not found: install it with `apt-get install postgresql` (./scripts/test does)")
            });
        let dir = tempfile::tempdir().expect("tempdir");
        let password = "kura-test-password".to_string();
        std::fs::write(dir.path().join("pw"), &password).unwrap();
        std::fs::create_dir(dir.path().join("sock")).unwrap();
        let _ = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status();
        let data = dir.path().join("data");
        let out = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ])
            .arg(format!("--pwfile={}", dir.path().join("pw").display()))
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let log = dir.path().join("log");
        let lease = start_with_retries("postgres", &log, |lease| {
            let opts = format!(
                "-k {} -p {} -c listen_addresses=127.0.0.1 -c fsync=off",
                dir.path().join("sock").display(),
                lease.port
            );
            // pg_ctl -w waits for the server's own socket in our directory;
            // a taken TCP port makes the server exit and pg_ctl fail.
            let st = as_postgres(&bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .args(["-w", "-t", "60", "-o", &opts, "-l"])
                .arg(&log)
                .arg("start")
                .stdout(Stdio::null())
                .status()
                .expect("run pg_ctl");
            if !st.success() {
                return Err(NotReady::Exited(st.to_string()));
            }
            Ok(lease)
        });
        let server = PgServer { port: lease.port, _lease: lease, dir, bin, password };
        // Over TCP, the server on the port must be the one with our data.
        let seen = server.psql("postgres", "SHOW data_directory");
        assert_eq!(Path::new(&seen), data, "the server on port {} is another one", server.port);
        server
    }

    /// The server's own client program `name` (pg_restore, psql, ...).
    pub fn tool(&self, name: &str) -> std::path::PathBuf {
        self.bin.join(name)
    }

    /// A URL without the password (tests pass it as PGPASSWORD).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL through psql; returns unaligned output, panics on error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.psql_as("postgres", &self.password, db, sql).unwrap_or_else(|e| panic!("psql {sql:?}: {e}"))
    }

    /// Runs SQL as another role (logging in with its password over TCP):
    /// its unaligned output, or what psql said on failure.
    pub fn psql_as(&self, role: &str, password: &str, db: &str, sql: &str) -> Result<String, String> {
        let url = format!("postgres://{role}@127.0.0.1:{}/{db}", self.port);
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", &url, "-c", sql])
            .env("PGPASSWORD", password)
            .output()
            .expect("run psql");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Waits until `condition` (a boolean SQL expression) is true, so that
    /// tests order concurrent steps by what the server reports, not by sleeps.
    pub fn wait_until(&self, db: &str, condition: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.psql(db, &format!("SELECT {condition}")) != "t" {
            assert!(Instant::now() < deadline, "waited 60 s for {condition}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A plain-text dump of a database, for comparing before and after.
    pub fn dump_text(&self, db: &str) -> String {
        let out = Command::new(self.bin.join("pg_dump"))
            .args(["--no-owner", "--restrict-key=kuratest", "-d", &self.url(db)])
            .env("PGPASSWORD", &self.password)
            .output()
            .expect("run pg_dump");
        assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A psql session that runs `sql` in a transaction and holds on (the
    /// transaction open) until the returned guard drops. Returns once `sql`
    /// has run: the session is then asleep inside the transaction.
    pub fn hold(&self, db: &str, sql: &str) -> Hold<'_> {
        let marker = format!("kura_hold_{}", rand::random::<u32>());
        let child = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-d", &self.url(db)])
            .arg("-c")
            .arg(format!("BEGIN; {sql}; SELECT pg_sleep(600) AS {marker};"))
            .env("PGPASSWORD", &self.password)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run psql");
        let guard = Hold { server: self, client: Some(ServerProcess(child)), marker };
        self.wait_until(
            "postgres",
            &format!(
                "EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE '%{}%' AND wait_event = 'PgSleep')",
                guard.marker
            ),
        );
        guard
    }

    /// Stops the server at once, as a crash or an outage would.
    pub fn kill(&self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A session holding a transaction open; dropping it ends the session on
/// the server too (a backend asleep in `pg_sleep` would not notice its
/// client is gone, and would hold its locks for the full sleep).
pub struct Hold<'a> {
    server: &'a PgServer,
    client: Option<ServerProcess>,
    marker: String,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        drop(self.client.take());
        let _ = Command::new(self.server.bin.join("psql"))
            .args(["-X", "-q", "-d", &self.server.url("postgres"), "-c"])
            .arg(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%{}%' AND pid <> pg_backend_pid()",
                self.marker
            ))
            .env("PGPASSWORD", &self.server.password)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
    }
}
