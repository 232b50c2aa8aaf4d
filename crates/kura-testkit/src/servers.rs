use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on loopback (racy by nature, good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// A server process that is killed and reaped when the fixture goes away.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Looks a name up in a fixture's environment list.
fn lookup(env: Vec<(String, String)>) -> impl Fn(&str) -> Option<String> {
    move |k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        // A connect to a free port in the ephemeral range can succeed by
        // connecting to itself (TCP simultaneous open): that is not the
        // server listening.
        if let Ok(c) = TcpStream::connect(("127.0.0.1", port)) {
            if c.local_addr().ok() != c.peer_addr().ok() {
                return;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status} before listening on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on 127.0.0.1:{port} within 30 s");
}

fn require(program: &str, install: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    if !found {
        panic!("{program} not found on PATH: install it with `{install}` (./scripts/test does this)");
    }
}

/// A raw HTTP/1.1 request, enough to set a test server up without pulling an
/// HTTP client into the test kit.
fn http(port: u16, method: &str, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to test server");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// moto's S3 server (`pip install 'moto[server]'`), which enforces
/// create-only-if-absent writes. Data lives in memory and dies with it.
pub struct MotoServer {
    _child: ServerProcess,
    pub port: u16,
}

impl MotoServer {
    pub fn start() -> MotoServer {
        require("moto_server", "pip install 'moto[server]'");
        let port = free_port();
        let mut child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        wait_for_port(port, "moto_server", &mut child);
        MotoServer { _child: ServerProcess(child), port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (moto accepts unsigned requests).
    pub fn create_bucket(&self, name: &str) {
        let reply = http(self.port, "PUT", &format!("/{name}"));
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

fn find_program(program: &str) -> Option<std::path::PathBuf> {
    let mut dirs: Vec<std::path::PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    // Where ./scripts/test installs npm packages.
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(std::path::Path::new(&home).join(".cache/kura-test/node_modules/.bin"));
    }
    dirs.into_iter().map(|d| d.join(program)).find(|p| p.is_file())
}

/// Azurite's blob service (`npm install azurite`), which enforces
/// conditional creates like Azure does.
pub struct AzuriteServer {
    _child: ServerProcess,
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
        let port = free_port();
        let mut child = Command::new(program)
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port.to_string(),
                "--disableTelemetry",
                "--silent",
            ])
            .arg("--location")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start azurite-blob");
        wait_for_port(port, "azurite-blob", &mut child);
        AzuriteServer { _child: ServerProcess(child), port, _dir: dir }
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
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to azurite");
        write!(
            s,
            "PUT /{AZURITE_ACCOUNT}/{name}?restype=container HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nx-ms-date: {date}\r\nx-ms-version: {version}\r\nAuthorization: SharedKey {AZURITE_ACCOUNT}:{sig}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
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

/// gcp-storage-emulator (`pip install gcp-storage-emulator`). It does not
/// enforce preconditions and has no multipart uploads, so the conformance
/// suite skips exactly those checks for it (see `Capabilities`).
pub struct GcsEmulator {
    _child: ServerProcess,
    pub port: u16,
}

impl GcsEmulator {
    pub fn start(bucket: &str) -> GcsEmulator {
        let program = find_program("gcp-storage-emulator").unwrap_or_else(|| {
            panic!("gcp-storage-emulator not found: install it with `pip install gcp-storage-emulator` (./scripts/test does)")
        });
        let port = free_port();
        let mut child = Command::new(program)
            .args([
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--in-memory",
                "--default-bucket",
                bucket,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gcp-storage-emulator");
        wait_for_port(port, "gcp-storage-emulator", &mut child);
        GcsEmulator { _child: ServerProcess(child), port }
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

/// A throwaway PostgreSQL cluster on 127.0.0.1 (`apt-get install postgresql`),
/// password authentication only.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    pub port: u16,
    pub password: String,
}

fn as_postgres(cmd: &std::path::Path) -> Command {
    // initdb refuses to run as root: run the server as the postgres user.
    if std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
    {
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
                let mut v: Vec<_> = rd.flatten().map(|e| e.path().join("bin")).filter(|p| p.join("initdb").is_file()).collect();
                v.sort();
                v.pop()
            })
            .unwrap_or_else(|| panic!("PostgreSQL server not found: install it with `apt-get install postgresql` (./scripts/test does)"));
        let dir = tempfile::tempdir().expect("tempdir");
        let password = "kura-test-password".to_string();
        std::fs::write(dir.path().join("pw"), &password).unwrap();
        std::fs::create_dir(dir.path().join("sock")).unwrap();
        let _ = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status();
        let data = dir.path().join("data");
        let st = as_postgres(&bin.join("initdb"))
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
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run initdb");
        assert!(st.success(), "initdb failed");
        let port = free_port();
        let opts = format!(
            "-k {} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.path().join("sock").display()
        );
        let st = as_postgres(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-w", "-o", &opts, "-l"])
            .arg(dir.path().join("log"))
            .arg("start")
            .stdout(Stdio::null())
            .status()
            .expect("run pg_ctl");
        assert!(
            st.success(),
            "pg_ctl start failed: {}",
            std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
        );
        PgServer { dir, bin, port, password }
    }

    /// A URL without the password (tests pass it as PGPASSWORD).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL through psql; returns unaligned output, panics on error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", &self.url(db), "-c", sql])
            .env("PGPASSWORD", &self.password)
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
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
}

impl PgServer {
    /// A psql session that runs `sql` and then holds on (its transaction
    /// open) until the returned guard drops.
    pub fn hold(&self, db: &str, sql: &str) -> impl Drop {
        let child = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-d", &self.url(db), "-c", &format!("BEGIN; {sql}; SELECT pg_sleep(600);")])
            .env("PGPASSWORD", &self.password)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run psql");
        ServerProcess(child)
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

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A throwaway MariaDB server on 127.0.0.1 (`apt-get install mariadb-server`),
/// its data in a temp dir, root with a password over TCP.
pub struct MariaDb {
    dir: tempfile::TempDir,
    child: ServerProcess,
    pub port: u16,
    pub password: String,
}

impl MariaDb {
    pub fn start() -> MariaDb {
        require("mariadb-install-db", "apt-get install mariadb-server");
        require("mariadb", "apt-get install mariadb-client");
        let mariadbd = ["/usr/sbin/mariadbd", "/usr/sbin/mysqld"]
            .into_iter()
            .find(|p| std::path::Path::new(p).is_file())
            .unwrap_or_else(|| panic!("mariadbd not found: install it with `apt-get install mariadb-server` (./scripts/test does)"));
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
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("log")).expect("log file");
        let mut child = Command::new(mariadbd)
            .arg("--no-defaults")
            .arg(format!("--user={user}"))
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!("--port={port}"))
            .args(["--bind-address=127.0.0.1", "--skip-log-bin", "--innodb-flush-log-at-trx-commit=0"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mariadbd");
        wait_for_port(port, "mariadbd", &mut child);
        let password = "kura-test-Pa55".to_string();
        let server = MariaDb { dir, child: ServerProcess(child), port, password };
        // Fresh installs let root in through the socket without a password;
        // give it one for TCP, as a real deployment would.
        let st = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", server.dir.path().join("sock").display()))
            .args(["-uroot", "-e"])
            .arg(format!("ALTER USER 'root'@'localhost' IDENTIFIED BY '{}'; CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '{}'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;", server.password, server.password))
            .output()
            .expect("run mariadb");
        assert!(
            st.status.success(),
            "setting the root password failed: {}",
            String::from_utf8_lossy(&st.stderr)
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
        assert!(out.status.success(), "mariadb {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
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

    /// Stops the server at once, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}
