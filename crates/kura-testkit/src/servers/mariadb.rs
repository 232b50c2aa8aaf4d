//! A throwaway MariaDB server on 127.0.0.1 (`apt-get install mariadb-server`),
//! its data in a temp dir, root with a password over TCP.
use super::{is_root, log_file, require, start_with_retries, wait_ready, PortLease, ServerProcess};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct MariaDb {
    _dir: tempfile::TempDir,
    child: ServerProcess,
    _lease: PortLease,
    pub port: u16,
    pub password: String,
}

impl MariaDb {
    pub fn start() -> MariaDb {
        require("mariadb-install-db", "apt-get install mariadb-server");
        require("mariadb", "apt-get install mariadb-client");
        let mariadbd = ["/usr/sbin/mariadbd", "/usr/sbin/mysqld"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .unwrap_or_else(|| {
                panic!("mariadbd not found: install it with `apt-get install mariadb-server` (./scripts/test does)")
            });
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        // Bootstrap names its temporary tables without regard to other
        // instances, so parallel tests sharing /tmp trip over each other.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).expect("tmp dir");
        let user = if is_root() { "root".to_string() } else { std::env::var("USER").unwrap_or_default() };
        let out = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--user={user}"))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .output()
            .expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let sock = dir.path().join("sock");
        let log = dir.path().join("log");
        let (lease, child) = start_with_retries("mariadbd", &log, |lease| {
            let (out, err) = log_file(&log);
            let mut child = Command::new(mariadbd)
                .arg("--no-defaults")
                .arg(format!("--user={user}"))
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--tmpdir={}", tmp.display()))
                .arg(format!("--socket={}", sock.display()))
                .arg(format!("--port={}", lease.port))
                .args(["--bind-address=127.0.0.1", "--skip-log-bin", "--innodb-flush-log-at-trx-commit=0"])
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("start mariadbd");
            // Our own socket answering is our server answering; it listens
            // on TCP before it opens the socket.
            let ready = wait_ready(&mut child, || {
                Command::new("mariadb-admin")
                    .arg("--no-defaults")
                    .arg(format!("--socket={}", sock.display()))
                    .args(["-uroot", "--connect-timeout=2", "ping"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
            });
            let child = ServerProcess(child);
            ready.map(|()| (lease, child))
        });
        let password = "kura-test-Pa55".to_string();
        let server = MariaDb { port: lease.port, _lease: lease, _dir: dir, child, password };
        // Fresh installs let root in through the socket without a password;
        // give it one for TCP, as a real deployment would.
        let st = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", sock.display()))
            .args(["-uroot", "-e"])
            .arg(format!("ALTER USER 'root'@'localhost' IDENTIFIED BY '{}'; CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '{}'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;", server.password, server.password))
            .output()
            .expect("run mariadb");
        assert!(
            st.status.success(),
            "setting the root password failed: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        // Over TCP, the server on the port must be the one with our data.
        let seen = server.sql("mysql", "SELECT @@datadir");
        assert_eq!(
            Path::new(seen.trim_end_matches('/')),
            data,
            "the server on port {} is another one",
            server.port
        );
        server
    }

    /// A URL without the password (tests pass it through the URL or not).
    pub fn url(&self, db: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{db}", self.port)
    }

    /// The same URL with the password in it.
    pub fn url_with_password(&self, db: &str) -> String {
        format!("mysql://root:{}@127.0.0.1:{}/{db}", self.password, self.port)
    }

    /// Runs SQL with the client; returns batch output, panics on error.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.try_sql(db, sql).unwrap_or_else(|e| panic!("mariadb {sql:?}: {e}"))
    }

    /// Runs SQL with the client: batch output, or what the client said.
    pub fn try_sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new("mariadb")
            .arg("--no-defaults")
            .args(["-h127.0.0.1", "-uroot", "--batch", "--skip-column-names"])
            .arg(format!("-P{}", self.port))
            .arg(format!("--database={db}"))
            .env("MYSQL_PWD", &self.password)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().expect("piped").write_all(sql.as_bytes())?;
                c.wait_with_output()
            })
            .expect("run mariadb");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Waits until `condition` (a SQL expression) is 1, so that tests order
    /// concurrent steps by what the server reports, not by sleeps.
    pub fn wait_until(&self, condition: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.sql("mysql", &format!("SELECT {condition}")) != "1" {
            assert!(Instant::now() < deadline, "waited 60 s for {condition}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A dump for comparing before and after (no dates, no auto-increment
    /// noise beyond what the data implies).
    pub fn dump_text(&self, db: &str) -> String {
        let out = Command::new("mariadb-dump")
            .arg("--no-defaults")
            .args([
                "-h127.0.0.1",
                "-uroot",
                "--skip-dump-date",
                "--routines",
                "--triggers",
                "--events",
                "--hex-blob",
            ])
            .arg(format!("-P{}", self.port))
            .arg(db)
            .env("MYSQL_PWD", &self.password)
            .output()
            .expect("run mariadb-dump");
        assert!(out.status.success(), "mariadb-dump: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A client session that runs `sql` in a transaction and holds on (the
    /// transaction open, its locks held) until the returned guard drops.
    /// Returns once `sql` has run: the session is then asleep inside it.
    pub fn hold(&self, sql: &str) -> MyHold<'_> {
        let marker = format!("kura_hold_{}", rand::random::<u32>());
        let mut child = Command::new("mariadb")
            .arg("--no-defaults")
            .args(["-h127.0.0.1", "-uroot", "--batch"])
            .arg(format!("-P{}", self.port))
            .env("MYSQL_PWD", &self.password)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run mariadb");
        // The whole script at once, stdin then closed: the client runs it
        // to the end, which is the long sleep.
        let script = format!("BEGIN;\n{sql};\nSELECT SLEEP(600) AS {marker};\n");
        child.stdin.take().expect("piped").write_all(script.as_bytes()).expect("write to mariadb");
        let guard = MyHold { server: self, client: Some(ServerProcess(child)), marker };
        self.wait_until(&format!(
            "EXISTS (SELECT 1 FROM information_schema.PROCESSLIST WHERE INFO LIKE '%{}%' AND STATE = 'User sleep')",
            guard.marker
        ));
        guard
    }

    /// Stops the server at once, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }
}

/// A session holding a transaction open; dropping it ends the session on
/// the server too (a query asleep in SLEEP() would not notice its client
/// is gone).
pub struct MyHold<'a> {
    server: &'a MariaDb,
    client: Option<ServerProcess>,
    marker: String,
}

impl Drop for MyHold<'_> {
    fn drop(&mut self) {
        drop(self.client.take());
        let ids = self.server.try_sql(
            "mysql",
            &format!(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE '%{}%' AND ID <> CONNECTION_ID()",
                self.marker
            ),
        );
        for id in ids.unwrap_or_default().lines().filter(|l| !l.is_empty()) {
            let _ = self.server.try_sql("mysql", &format!("KILL {id}"));
        }
    }
}
