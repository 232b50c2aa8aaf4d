//! MySQL/MariaDB targets against a real MariaDB server: a realistic schema
//! dumped with --single-transaction and split per table as it streams,
//! damaged, restored whole through a fresh database and an atomic table
//! swap, restored one table at a time, and compared dump to dump.
mod common;

use std::time::{Duration, Instant};

use common::*;
use kura_testkit::MariaDb;

const SCHEMA: &str = r#"
CREATE TABLE users(id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL, email VARCHAR(200) UNIQUE, created TIMESTAMP NOT NULL DEFAULT '2026-01-02 03:04:05') ENGINE=InnoDB;
CREATE TABLE orders(id BIGINT AUTO_INCREMENT PRIMARY KEY, user_id INT NOT NULL, total_cents INT NOT NULL CHECK (total_cents >= 0), note TEXT, KEY orders_user(user_id), CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users(id)) ENGINE=InnoDB;
CREATE TABLE audit(id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(200)) ENGINE=InnoDB;
CREATE TABLE events(id BIGINT AUTO_INCREMENT PRIMARY KEY, kind VARCHAR(20), payload JSON, body TEXT, attachment LONGBLOB) ENGINE=InnoDB;
CREATE VIEW big_spenders AS SELECT u.name, SUM(o.total_cents) AS spent FROM users u JOIN orders o ON o.user_id = u.id GROUP BY u.name;
CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW INSERT INTO audit(what) VALUES (CONCAT('order ', NEW.id));
CREATE FUNCTION euros(c INT) RETURNS DECIMAL(10,2) DETERMINISTIC RETURN c / 100;
CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DO DELETE FROM audit WHERE id < 0;
INSERT INTO users(name, email) SELECT CONCAT('ユーザー ', seq, ' Zoë'), CONCAT('u', seq, '@example.org') FROM seq_1_to_500;
INSERT INTO orders(user_id, total_cents, note) SELECT 1 + seq % 500, seq * 7 % 10000, CONCAT('order nº ', seq, ' -- Table structure for table `x`\n second line') FROM seq_1_to_3000;
INSERT INTO events(kind, payload, body, attachment) SELECT 'signup', JSON_OBJECT('user', seq, 'plan', IF(seq % 3 = 0, 'pro', 'free')), REPEAT(MD5(seq), 5), NULL FROM seq_1_to_2000;
INSERT INTO events(kind, body, attachment) VALUES ('upload', 'large', RANDOM_BYTES(1024));
UPDATE events SET attachment = REPEAT(attachment, 2048) WHERE kind = 'upload';
"#;

fn setup() -> (MariaDb, Kura) {
    let db = MariaDb::start();
    db.sql("mysql", "CREATE DATABASE shop CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci");
    db.sql("shop", &format!("DELIMITER ;;\n{}", SCHEMA.replace(";\n", ";;\n")));
    let mut k = Kura::new();
    let cfg = k.path("kura.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository.main]\nurl = \"{}\"\n\n[target.shop_db]\ntype = \"mysql\"\nurl = \"{}\"\n",
            k.repo,
            db.url_with_password("shop")
        ),
    )
    .unwrap();
    k.env.push(("KURA_CONFIG".into(), cfg.display().to_string()));
    k.init();
    (db, k)
}

/// A config whose target has the wrong password (never in messages).
fn wrong_password_config(k: &Kura, db: &MariaDb) -> std::path::PathBuf {
    let cfg = k.path("wrong.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository.main]\nurl = \"{}\"\n\n[target.shop_db]\ntype = \"mysql\"\nurl = \"mysql://root:Wr0ng-pw-77@127.0.0.1:{}/shop\"\n",
            k.repo, db.port
        ),
    )
    .unwrap();
    cfg
}

fn kept_db(db: &MariaDb) -> String {
    let kept = db.sql(
        "mysql",
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'shop\\_bak\\_%'",
    );
    assert!(!kept.is_empty(), "the replaced tables are kept");
    kept
}

#[test]
fn mysql_round_trip_through_a_swap() {
    let (db, k) = setup();
    let before = db.dump_text("shop");
    let checksum = db.sql("shop", "CHECKSUM TABLE users, orders, events");
    let next_id = "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'shop' AND TABLE_NAME = 'orders'";
    let next_before = db.sql("shop", next_id);
    let run = k.json(&["backup", "--target", "shop_db"]);
    assert_eq!(run["targets"][0]["ok"], true, "{run}");
    assert_secret_absent(std::path::Path::new(&k.repo), &db.password);

    let snaps = k.json(&["snapshots", "--target", "shop_db"]);
    assert_eq!(snaps[0]["source"], "mysql");
    let paths: Vec<String> =
        snaps[0]["paths"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
    assert_eq!(paths[0], "database.json");
    for want in ["header", "table-orders", "table-users", "view-big_spenders", "routines", "events", "footer"]
    {
        assert!(paths.iter().any(|p| p.contains(want)), "{want} missing from {paths:?}");
    }
    // The parts in order are the dump itself: piping them to the client
    // by hand works without kura.
    let orders = paths.iter().find(|p| p.contains("table-orders")).unwrap();
    // The whole dump, in order, is one command: piped to the client it
    // makes the same database.
    let whole = k.cmd(&["dump", "--target", "shop_db"]).output().unwrap();
    assert!(whole.status.success(), "{}", stderr(&whole));
    db.sql("mysql", "CREATE DATABASE shop_piped CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci");
    db.sql("shop_piped", &String::from_utf8(whole.stdout).unwrap());
    assert_eq!(
        db.sql("shop_piped", "CHECKSUM TABLE users, orders, events").replace("shop_piped.", "shop."),
        checksum
    );
    let part = k.ok(&["dump", "latest", orders]);
    assert!(part.contains("CREATE TABLE `orders`") && part.contains("TRIGGER orders_audit"), "{part}");
    assert!(!part.contains("CREATE TABLE `users`"), "one table per part");

    // Damage, then restore the snapshot in place.
    db.sql(
        "shop",
        "DROP VIEW big_spenders; DROP TABLE orders; UPDATE users SET name = 'oops'; DROP FUNCTION euros;",
    );
    let out = k.ok(&["restore", "--target", "shop_db", "--yes"]);
    assert!(out.contains("restored database shop"), "{out}");
    assert_same_text(&db.dump_text("shop"), &before, "the restored database, dump for dump");
    assert_eq!(db.sql("shop", "CHECKSUM TABLE users, orders, events"), checksum);
    assert_eq!(db.sql("shop", "SELECT euros(250)"), "2.50");
    assert_eq!(db.sql("shop", next_id), next_before, "auto-increment counters come back");
    db.sql("shop", "INSERT INTO orders(user_id, total_cents) VALUES (1, 5)");
    let id = db.sql("shop", "SELECT MAX(id) FROM orders");
    assert_eq!(id, next_before);
    assert_eq!(
        db.sql("shop", "SELECT what FROM audit ORDER BY id DESC LIMIT 1"),
        format!("order {id}"),
        "the trigger is live"
    );
    let kept = kept_db(&db);
    assert_eq!(
        db.sql(&kept, "SELECT COUNT(*) FROM users WHERE name = 'oops'"),
        "500",
        "the damaged copy is kept aside"
    );
    assert_eq!(
        db.sql("mysql", "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'shop\\_kura\\_restore%'"),
        "0",
        "no scratch database is left behind"
    );

    // --into a new database leaves the live one alone, and refuses an
    // existing one.
    k.ok(&["restore", "--target", "shop_db", "--yes", "--into", "shop_check"]);
    assert_eq!(db.sql("shop_check", "SELECT COUNT(*) FROM orders"), "3000");
    assert_eq!(db.sql("shop", "SELECT COUNT(*) FROM orders"), "3001");
    let refused = k.run(&["restore", "--target", "shop_db", "--yes", "--into", "shop_check"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("already exists"), "{}", stderr(&refused));
    // A second restore within the same minute keeps its own copy aside.
    k.ok(&["restore", "--target", "shop_db", "--yes"]);
    assert_eq!(
        db.sql(
            "mysql",
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'shop\\_bak\\_%'"
        ),
        "2",
        "each restore's old copy has a name of its own"
    );
    assert_same_text(&db.dump_text("shop"), &before, "the second restore, dump for dump");
}

#[test]
fn mysql_single_table_restore_touches_only_that_table() {
    let (db, k) = setup();
    let users_before = db.sql("shop", "CHECKSUM TABLE users");
    k.ok(&["backup", "--target", "shop_db"]);
    db.sql("shop", "UPDATE users SET name = 'changed' WHERE id <= 10; INSERT INTO orders(user_id, total_cents) VALUES (2, 42);");
    let orders_now = db.sql("shop", "CHECKSUM TABLE orders");

    let dry = k.ok(&["restore", "--target", "shop_db", "--table", "users", "--dry-run"]);
    assert!(dry.contains("restore table(s) users"), "{dry}");
    assert_eq!(
        db.sql("shop", "SELECT COUNT(*) FROM users WHERE name = 'changed'"),
        "10",
        "--dry-run changes nothing"
    );

    k.ok(&["restore", "--target", "shop_db", "--table", "users", "--yes"]);
    assert_eq!(db.sql("shop", "CHECKSUM TABLE users"), users_before, "users is back as it was");
    assert_eq!(db.sql("shop", "CHECKSUM TABLE orders"), orders_now, "orders was not touched");
    // The foreign key from orders still points at the live users table.
    let fk = db.sql(
        "shop",
        "SELECT REFERENCED_TABLE_SCHEMA FROM information_schema.KEY_COLUMN_USAGE WHERE CONSTRAINT_NAME = 'orders_user_fk'",
    );
    assert_eq!(fk, "shop");
    let kept = kept_db(&db);
    assert_eq!(db.sql(&kept, "SELECT COUNT(*) FROM users WHERE name = 'changed'"), "10");

    let missing = k.run(&["restore", "--target", "shop_db", "--table", "nope", "--yes"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("table nope is not in this snapshot"), "{}", stderr(&missing));
}

#[test]
fn mysql_failures_are_clear_and_record_nothing() {
    let (mut db, k) = setup();
    let cfg = wrong_password_config(&k, &db);
    let wrong = k.cmd(&["backup", "--target", "shop_db"]).env("KURA_CONFIG", &cfg).output().unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    assert!(stderr(&wrong).contains("Access denied"), "{}", stderr(&wrong));
    assert!(!stderr(&wrong).contains("Wr0ng-pw-77"), "the password never reaches messages");

    let missing =
        k.cmd(&["backup", "--target", "shop_db"]).env("KURA_MYSQL_BINDIR", "/nonexistent").output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("apt-get install mariadb-client"), "{}", stderr(&missing));

    // The server goes away mid-dump: a session holds a write lock on
    // `orders`, so the dump stops there; then the server dies.
    let mut locker = std::process::Command::new("mariadb")
        .args(["--no-defaults", "-h127.0.0.1", "-uroot", "--database=shop"])
        .arg(format!("-P{}", db.port))
        .arg("-e")
        .arg("LOCK TABLES orders WRITE; SELECT SLEEP(60);")
        .env("MYSQL_PWD", &db.password)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    db.wait_until(
        "(SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(60)%') > 0",
    );
    let backup =
        k.cmd(&["backup", "--target", "shop_db"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // While the dump waits, no process shows the password in its arguments.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut saw_dump = false;
    while Instant::now() < deadline && !saw_dump {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            assert!(!text.contains(&db.password), "password in argv: {text}");
            saw_dump |= text.contains("mariadb-dump") && text.contains("--single-transaction");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(saw_dump, "the dump started");
    db.wait_until(
        "(SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE STATE LIKE 'Waiting for table%') > 0",
    );
    db.kill();
    let _ = locker.kill();
    let _ = locker.wait();
    let out = backup.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("mariadb-dump failed"), "{}", stderr(&out));
    assert!(stderr(&out).contains("no snapshot was saved"), "{}", stderr(&out));
    assert!(
        k.json(&["snapshots"]).as_array().unwrap().is_empty(),
        "no snapshot was recorded for any failure"
    );
}

#[test]
fn killed_restores_always_leave_whole_tables() {
    let (db, k) = setup();
    k.ok(&["backup", "--target", "shop_db"]);
    let mut rand = rng(0x9E37_79B9_7F4A_7C15);
    let mut killed = 0;
    let scratch =
        "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'shop\\_kura\\_restore\\_%'";
    for trial in 0..8u64 {
        // Damage two tables; a swap is all or nothing, so either both are
        // still damaged or both restored.
        db.sql(
            "shop",
            &format!(
                "UPDATE users SET name = 'damaged {trial}' WHERE id = 1; DELETE FROM orders WHERE id = {};",
                trial + 1
            ),
        );
        let out = kill_after(
            k.cmd(&["restore", "--target", "shop_db", "--yes", "--no-keep-old"]),
            20 + trial * 150 + rand(80),
        );
        if out.status.code().is_none() {
            killed += 1;
        }
        // A killed kura's client may still be finishing its statement;
        // both tables are then read in one statement, one state.
        wait_quiet(&db);
        let both =
            db.sql("shop", "SELECT (SELECT name FROM users WHERE id = 1), (SELECT COUNT(*) FROM orders)");
        let (name, orders) = both.split_once('\t').unwrap();
        let (name, orders) = (name.to_string(), orders.to_string());
        let restored = name.ends_with("Zoë");
        assert!(restored || name == format!("damaged {trial}"), "trial {trial}: {name}");
        assert_eq!(
            restored,
            orders == "3000",
            "trial {trial}: users and orders from one state ({name}, {orders})"
        );
        let tables = db.sql(
            "shop",
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'shop' AND TABLE_TYPE = 'BASE TABLE'",
        );
        assert_eq!(tables, "4", "trial {trial}: every table is there");
    }
    // A scratch database whose restore still runs (its lock held by a live
    // session) is left alone by the sweep.
    let running = "shop_kura_restore_19990101_0000_beef";
    db.sql("mysql", &format!("CREATE DATABASE {running}"));
    let mut holder = std::process::Command::new("mariadb")
        .arg("--no-defaults")
        .args(["-h127.0.0.1", "-uroot", "--batch", "--skip-column-names", "--unbuffered"])
        .arg(format!("-P{}", db.port))
        .env("MYSQL_PWD", &db.password)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_holder = holder.stdin.take().unwrap();
    use std::io::{BufRead, Write};
    writeln!(to_holder, "SELECT GET_LOCK('{}', 0);", scratch_lock(running)).unwrap();
    let mut line = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "1", "the test holds the running restore's lock");
    k.ok(&["restore", "--target", "shop_db", "--yes", "--no-keep-old"]);
    assert_eq!(db.sql("mysql", scratch), "1", "only the running restore's scratch database is left");
    holder.kill().unwrap();
    holder.wait().unwrap();
    // Once its session is gone, the next restore drops it too.
    k.ok(&["restore", "--target", "shop_db", "--yes", "--no-keep-old"]);
    assert!(db.sql("shop", "SELECT name FROM users WHERE id = 1").ends_with("Zoë"));
    assert_eq!(db.sql("shop", "SELECT COUNT(*) FROM orders"), "3000");
    assert_eq!(db.sql("mysql", scratch), "0", "partial copies of killed restores are swept");
    assert_programs_whole(&db, "shop");
    eprintln!("{killed} of 8 restores killed midway");
    assert!(killed > 0, "no restore was interrupted: the test proved nothing");
}

/// Waits until no other session runs a statement or holds a connection:
/// what a killed kura left running has ended.
fn wait_quiet(db: &MariaDb) {
    db.wait_until(
        "(SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND COMMAND NOT IN ('Daemon')) = 0",
    );
}

/// The schema's trigger, view, function and enabled event are all there.
fn assert_programs_whole(db: &MariaDb, schema: &str) {
    let count = |what: &str, col: &str| {
        db.sql("mysql", &format!("SELECT COUNT(*) FROM information_schema.{what} WHERE {col} = '{schema}'"))
    };
    assert_eq!(count("TRIGGERS", "TRIGGER_SCHEMA"), "1", "{schema}: the trigger");
    assert_eq!(count("VIEWS", "TABLE_SCHEMA"), "1", "{schema}: the view");
    assert_eq!(count("ROUTINES", "ROUTINE_SCHEMA"), "1", "{schema}: the function");
    assert_eq!(count("EVENTS", "EVENT_SCHEMA"), "1", "{schema}: the event");
}

/// A restore killed between any two statements of its swap (whole, or
/// chosen tables in place) is undone if its tables had not moved, finished
/// if they had, by the next kura to back the database up: no trigger,
/// view, routine or event is lost either way, and nothing is half-done.
#[test]
fn a_swap_killed_between_any_two_statements_is_undone_or_finished() {
    let (db, k) = setup();
    k.ok(&["backup", "--target", "shop_db"]);
    // Each recovery is followed by a backup of the damaged state: every
    // restore takes this first one.
    let good = k.json(&["snapshots"])[0]["id"].as_str().unwrap().to_string();
    let scratch =
        "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'shop\\_kura\\_restore\\_%'";
    let kept = "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'shop\\_bak\\_%'";
    let cases: [(&str, &[&str], bool); 6] = [
        ("mysql-journal", &[], false),
        ("mysql-dropped", &[], false),
        ("mysql-renamed", &[], true),
        ("mysql-programs", &[], true),
        ("mysql-journal", &["--table", "users"], false),
        ("mysql-copied", &["--table", "users"], true),
    ];
    for (i, (step, extra, finished)) in cases.into_iter().enumerate() {
        db.sql("shop", &format!("UPDATE users SET name = 'damaged {i}' WHERE id = 1"));
        let kept_before = db.sql("mysql", kept);
        let gate = k.path(&format!("gate-{i}"));
        let mut cmd = k.cmd(&["restore", "--target", "shop_db", "--snapshot", &good, "--yes"]);
        cmd.args(extra).env("KURA_TEST_STEP_GATE", format!("{step}:{}", gate.display()));
        let mut child =
            cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !gate.with_extension("waiting").exists() {
            assert!(Instant::now() < deadline, "{step}: the restore never reached the step");
            assert!(child.try_wait().unwrap().is_none(), "{step}: the restore ended before the step");
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        wait_quiet(&db);
        assert_eq!(
            db.sql("mysql", scratch),
            "1",
            "{step}: the interrupted restore's scratch database is left"
        );

        // The next backup finds the journal and finishes or undoes the swap
        // before it dumps.
        let out = k.cmd(&["backup", "--target", "shop_db"]).output().unwrap();
        assert!(out.status.success(), "{step}: {}", stderr(&out));
        let said = stderr(&out);
        assert!(
            said.contains(if finished { "now finished" } else { "is as it was" }),
            "{step}: the recovery is reported: {said}"
        );
        assert_eq!(db.sql("mysql", scratch), "0", "{step}: the scratch database is gone");
        assert_programs_whole(&db, "shop");
        let name = db.sql("shop", "SELECT name FROM users WHERE id = 1");
        assert_eq!(name.ends_with("Zoë"), finished, "{step}: {name}");
        assert_eq!(db.sql("shop", "SELECT COUNT(*) FROM orders"), "3000", "{step}");
        assert_eq!(
            db.sql("shop", "SELECT STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = 'shop'"),
            "ENABLED",
            "{step}: the live event runs"
        );
        if finished && extra.is_empty() {
            let bak = db.sql(
                "mysql",
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'shop\\_bak\\_%' ORDER BY SCHEMA_NAME DESC LIMIT 1",
            );
            assert_programs_whole(&db, &bak);
            assert_eq!(db.sql(&bak, "SELECT name FROM users WHERE id = 1"), format!("damaged {i}"));
            assert_eq!(event_status(&db, &bak), "DISABLED", "{step}: the kept copy's event is off");
        }
        if finished {
            assert_ne!(db.sql("mysql", kept), kept_before, "{step}: the replaced tables are kept");
        } else {
            assert_eq!(db.sql("mysql", kept), kept_before, "{step}: nothing was replaced, nothing is kept");
        }
    }
    // The dump the last backup made holds everything: a restore of it is
    // whole.
    k.ok(&["restore", "--target", "shop_db", "--yes"]);
    assert_programs_whole(&db, "shop");
}

/// Recovery runs a journal's SQL with the restoring user's rights, so a
/// journal must be one this machine's kura signed: a tampered one (a
/// trigger body that would run other SQL, a "kept" database name that
/// would be dropped), or one read with another state directory's key, is
/// reported and left alone; the genuine one, put back, is replayed.
#[test]
fn a_tampered_or_foreign_swap_journal_is_never_replayed() {
    let (db, k) = setup();
    k.ok(&["backup", "--target", "shop_db"]);
    let good = k.json(&["snapshots"])[0]["id"].as_str().unwrap().to_string();
    db.sql("mysql", "CREATE DATABASE victim; CREATE TABLE victim.precious (x INT); INSERT INTO victim.precious VALUES (7)");
    let gate = k.path("gate");
    let mut child = k
        .cmd(&["restore", "--target", "shop_db", "--snapshot", &good, "--yes"])
        .env("KURA_TEST_STEP_GATE", format!("mysql-dropped:{}", gate.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_at_gate(&mut child, &gate);
    child.kill().unwrap();
    child.wait().unwrap();
    wait_quiet(&db);
    let scratch = db.sql(
        "mysql",
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'shop\\_kura\\_restore\\_%'",
    );
    let journal = format!("`{scratch}`._kura_swap_journal");
    let triggers = "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'shop'";
    assert_eq!(db.sql("mysql", triggers), "0", "the swap had dropped the live trigger");
    db.sql("mysql", &format!("CREATE DATABASE keep; CREATE TABLE keep.j AS SELECT * FROM {journal}"));

    let tamper = [
        format!(
            "UPDATE {journal} SET body = CONCAT(body, ';\nCREATE TABLE shop.pwned (x INT)') WHERE kind = 'live-trigger'"
        ),
        format!("UPDATE {journal} SET name = 'victim' WHERE kind = 'bak'"),
    ];
    for (i, sql) in tamper.iter().enumerate() {
        db.sql("mysql", sql);
        let out = k.cmd(&["backup", "--target", "shop_db"]).output().unwrap();
        assert!(out.status.success(), "{i}: the backup itself still runs: {}", stderr(&out));
        let said = stderr(&out);
        assert!(said.contains("not signed with this machine's key"), "{i}: {said}");
        assert_eq!(
            db.sql("mysql", &format!("SELECT COUNT(*) FROM {journal}")),
            db.sql("mysql", "SELECT COUNT(*) FROM keep.j"),
            "{i}: the journal is left as it is"
        );
        assert_eq!(
            db.sql("victim", "SELECT x FROM precious"),
            "7",
            "{i}: nothing named by the journal was dropped"
        );
        assert_eq!(
            db.sql("mysql", "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_NAME = 'pwned'"),
            "0",
            "{i}: the journal's SQL never ran"
        );
        db.sql("mysql", &format!("DELETE FROM {journal}; INSERT INTO {journal} SELECT * FROM keep.j"));
    }

    // Genuine, but this kura has another state directory: another key.
    let other = k.path("other-state");
    let out = k.cmd(&["backup", "--target", "shop_db"]).env("KURA_STATE_DIR", &other).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("another state directory"), "{}", stderr(&out));
    assert_eq!(db.sql("mysql", triggers), "0", "not replayed with another key");

    // The genuine journal with its own key: the swap is undone.
    let out = k.cmd(&["backup", "--target", "shop_db"]).output().unwrap();
    assert!(stderr(&out).contains("is as it was"), "{}", stderr(&out));
    assert_programs_whole(&db, "shop");
    assert_eq!(db.sql("victim", "SELECT x FROM precious"), "7");
    db.sql("mysql", "DROP DATABASE keep; DROP DATABASE victim");
}

/// The lock name kura holds on a scratch database while restoring into it
/// (FNV-1a of the name, as in kura_sources::mysql).
fn scratch_lock(db: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in db.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("kura-restore-{h:016x}")
}

fn event_status(db: &MariaDb, schema: &str) -> String {
    db.sql(
        "mysql",
        &format!("SELECT STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '{schema}' AND EVENT_NAME = 'nightly'"),
    )
}

#[test]
fn a_dropped_database_is_recreated_with_its_charset_and_the_copies_events_stay_off() {
    let (db, k) = setup();
    let before = db.dump_text("shop");
    k.ok(&["backup", "--target", "shop_db"]);
    // The disaster: the database is gone.
    db.sql("mysql", "DROP DATABASE shop");
    k.ok(&["restore", "--target", "shop_db", "--yes"]);
    assert_same_text(&db.dump_text("shop"), &before, "the dropped database, dump for dump");
    assert_eq!(
        db.sql(
            "mysql",
            "SELECT CONCAT(DEFAULT_CHARACTER_SET_NAME, ' ', DEFAULT_COLLATION_NAME) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'shop'"
        ),
        "utf8mb4 utf8mb4_unicode_ci"
    );
    assert_eq!(event_status(&db, "shop"), "ENABLED", "the live database's event runs again");

    // A restore over the live database: the kept copy's event is off, the
    // live one's on; a copy restored --into a scratch database is off too.
    let out = k.ok(&["restore", "--target", "shop_db", "--yes"]);
    let kept = kept_db(&db);
    assert!(out.contains("events disabled in the kept copy: nightly"), "{out}");
    assert_eq!(event_status(&db, &kept), "DISABLED", "a kept copy runs no events");
    assert_eq!(event_status(&db, "shop"), "ENABLED");
    k.ok(&["restore", "--target", "shop_db", "--yes", "--into", "shop_drill"]);
    assert_eq!(event_status(&db, "shop_drill"), "DISABLED", "a scratch copy runs no events");
    assert_same_text(&db.dump_text("shop"), &before, "the live database after both");
    let listed = k.json(&["kept", "list", "--target", "shop_db"]);
    assert_eq!(listed[0]["name"], format!("database {kept}"), "{listed}");
    k.ok(&["kept", "clean", "--target", "shop_db", "--keep-last", "0", "--yes"]);
    assert!(k.json(&["kept", "list"]).as_array().unwrap().is_empty());
    assert_eq!(
        db.sql(
            "mysql",
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'shop\\_bak\\_%'"
        ),
        "0"
    );
}

#[test]
fn a_restore_waits_for_locks_only_as_long_as_allowed_and_changes_nothing() {
    let (db, k) = setup();
    k.ok(&["backup", "--target", "shop_db"]);
    db.sql("shop", "UPDATE users SET name = 'after the backup' WHERE id = 1");
    let before = db.dump_text("shop");
    // The application inside a transaction that read the orders: it holds
    // a metadata lock on them until it ends.
    let holder = db.hold("SELECT COUNT(*) FROM shop.orders");
    let started = Instant::now();
    let out = k.run(&["restore", "--target", "shop_db", "--yes", "--lock-timeout", "3s"]);
    let waited = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("waiting for other sessions to release database shop's tables"), "{err}");
    assert!(err.contains("gave up after") && err.contains("a transaction open for"), "{err}");
    assert!(err.contains("--lock-timeout"), "the hint names the flag: {err}");
    assert!(waited >= Duration::from_secs(3) && waited < Duration::from_secs(60), "{waited:?}");
    assert_same_text(&db.dump_text("shop"), &before, "nothing changed, triggers and views included");
    assert_eq!(
        db.sql("mysql", "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'shop\\_kura\\_restore%'"),
        "0",
        "the scratch copy is dropped"
    );
    // The same with one table.
    let out =
        k.run(&["restore", "--target", "shop_db", "--yes", "--table", "orders", "--lock-timeout", "2s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_same_text(&db.dump_text("shop"), &before, "a table restore changed nothing either");
    // Once the transaction ends, the restore goes through.
    drop(holder);
    k.ok(&["restore", "--target", "shop_db", "--yes", "--lock-timeout", "30s"]);
    assert!(db.sql("shop", "SELECT name FROM users WHERE id = 1").ends_with("Zoë"));
}

#[test]
fn a_drill_restores_into_a_scratch_database_checks_it_and_drops_it() {
    let (db, k) = setup();
    std::fs::write(
        k.path("kura.toml"),
        format!(
            "[repository.main]\nurl = \"{}\"\n\n[target.shop_db]\ntype = \"mysql\"\nurl = \"{}\"\n\
             checks = [\"SELECT count(*) = 3000 FROM orders\", \"SELECT count(*) FROM big_spenders\"]\n\
             [plan.nightly]\nschedule = \"0 3 * * *\"\ntargets = [\"shop_db\"]\n",
            k.repo,
            db.url_with_password("shop")
        ),
    )
    .unwrap();
    k.ok(&["run", "nightly"]);
    let before = db.dump_text("shop");
    let scratch = "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE '%kura\\_drill%'";
    let r = k.json(&["drill", "--plan", "nightly"]);
    let t = &r[0]["targets"][0];
    assert!(t["error"].is_null(), "{r}");
    assert!(t["checks"].as_array().unwrap().iter().all(|c| c["ok"] == true), "{r}");
    assert_eq!(db.sql("mysql", scratch), "0", "the scratch database is dropped");
    assert_same_text(&db.dump_text("shop"), &before, "a drill never touches the live database");
    // Counted from the dump as it streamed: 500 users, 3000 orders, 3000
    // audit rows, 2001 events; 4 tables, a view, a function, a trigger and
    // an event.
    let catalogue = &t["checks"][0];
    assert_eq!(catalogue["what"], "rows per table and schema objects as backed up", "{r}");
    assert_eq!(catalogue["detail"], "4 tables, 8501 rows, 8 objects", "{r}");

    // Killed with -9 after its restore: the copy is left, and the next
    // drill removes it first.
    let gate = k.path("gate");
    let mut drill = k.gated(&["drill", "--plan", "nightly"], "drill-restored", &gate);
    drill.kill().unwrap();
    drill.wait().unwrap();
    assert_eq!(db.sql("mysql", scratch), "1", "the killed drill's copy is left");

    // A restore that loses rows and objects (the copy damaged between its
    // restore and its checks): the drill names each loss, and removed the
    // killed drill's copy first.
    let drill = k.gated(&["drill", "--plan", "nightly"], "drill-restored", &gate);
    assert_eq!(db.sql("mysql", scratch), "1", "the leftover is gone, this drill's copy is there");
    let copy = db.sql(
        "mysql",
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE '%kura\\_drill%'",
    );
    db.sql(&copy, "DROP TRIGGER orders_audit; DELETE FROM audit WHERE id <= 2");
    std::fs::write(&gate, b"").unwrap();
    let out = drill.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    for want in [
        "left by an interrupted drill",
        "table audit: 2998 rows restored, 3000 backed up",
        "0 trigger(s) restored, 1 backed up",
    ] {
        assert!(said.contains(want), "{want}: {said}");
    }
    std::fs::remove_file(&gate).unwrap();
    assert_eq!(db.sql("mysql", scratch), "0", "the damaged copy is dropped");

    db.sql("shop", "DELETE FROM orders WHERE id > 10");
    k.ok(&["run", "nightly"]);
    let out = k.cmd(&["drill", "--plan", "nightly"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("check failed: SELECT count(*) = 3000 FROM orders (answered \"0\")"),
        "{}",
        stderr(&out)
    );
    assert_eq!(db.sql("mysql", scratch), "0", "dropped after a failure too");
}

#[test]
fn doctor_checks_the_servers_credentials_and_tools() {
    let (db, k) = setup();
    let line = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.contains("target shop_db"))
            .unwrap_or_default()
            .to_string()
    };
    let good = k.cmd(&["doctor"]).output().unwrap();
    assert!(
        line(&good).starts_with("OK    target shop_db: connected to"),
        "{}",
        String::from_utf8_lossy(&good.stdout)
    );
    let cfg = wrong_password_config(&k, &db);
    let wrong = k.cmd(&["doctor"]).env("KURA_CONFIG", &cfg).output().unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        line(&wrong).starts_with("FAIL  target shop_db:") && line(&wrong).contains("Access denied"),
        "{}",
        line(&wrong)
    );
    let missing = k.cmd(&["doctor"]).env("KURA_MYSQL_BINDIR", "/nonexistent").output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stdout).contains("apt-get install mariadb-client"));
}

/// Tables load in several clients at once; foreign keys in a circle, a
/// child of both, and triggers and a view across them must not make the
/// clients wait for each other forever, and the copy equals the original.
#[test]
fn tables_with_foreign_keys_in_a_circle_load_side_by_side() {
    let (db, k) = setup();
    db.sql(
        "shop",
        "CREATE TABLE teams(id INT PRIMARY KEY, lead_id INT NULL, name VARCHAR(50)) ENGINE=InnoDB;
         CREATE TABLE people(id INT PRIMARY KEY, team_id INT NOT NULL, name VARCHAR(50), KEY(team_id)) ENGINE=InnoDB;
         CREATE TABLE shifts(id INT PRIMARY KEY, team_id INT NOT NULL, person_id INT NOT NULL, note TEXT, KEY(team_id), KEY(person_id)) ENGINE=InnoDB;
         SET FOREIGN_KEY_CHECKS = 0;
         INSERT INTO teams SELECT seq, 1 + (seq * 7) % 20000, CONCAT('team ', seq) FROM seq_1_to_2000;
         INSERT INTO people SELECT seq, 1 + seq % 2000, CONCAT('person ', seq) FROM seq_1_to_20000;
         INSERT INTO shifts SELECT seq, 1 + seq % 2000, 1 + seq % 20000, REPEAT('x', 200) FROM seq_1_to_40000;
         SET FOREIGN_KEY_CHECKS = 1;
         ALTER TABLE teams ADD CONSTRAINT teams_lead FOREIGN KEY (lead_id) REFERENCES people(id);
         ALTER TABLE people ADD CONSTRAINT people_team FOREIGN KEY (team_id) REFERENCES teams(id);
         ALTER TABLE shifts ADD CONSTRAINT shifts_team FOREIGN KEY (team_id) REFERENCES teams(id),
           ADD CONSTRAINT shifts_person FOREIGN KEY (person_id) REFERENCES people(id);
         CREATE TRIGGER shifts_audit AFTER INSERT ON shifts FOR EACH ROW INSERT INTO audit(what) VALUES (CONCAT('shift ', NEW.id));
         CREATE VIEW staffing AS SELECT t.name, COUNT(*) AS n FROM teams t JOIN people p ON p.team_id = t.id GROUP BY t.name;",
    );
    let before = db.dump_text("shop");
    k.ok(&["backup", "--target", "shop_db"]);
    for round in 0..3 {
        let out = k.run(&["restore", "--target", "shop_db", "--yes", "--no-keep-old"]);
        assert!(out.status.success(), "round {round}: {}", stderr(&out));
        assert_eq!(db.dump_text("shop"), before, "round {round}: the restored database equals the original");
    }
    assert_eq!(db.sql("shop", "SELECT COUNT(*) FROM staffing").trim(), "2000");
}

/// A client command hidden in a dump: a table named with a newline and a
/// command after it put the command at the start of a line of its own in
/// the comments of older dump tools, and dumps from before MariaDB's fix do
/// not turn the client's sandbox on. Here the dump tool is the real one
/// behind a filter that makes it such a dump (its sandbox line dropped, a
/// `\!` line planted before the first table). Loading it must never run the
/// command: the client runs in its sandbox, refuses the line, the restore
/// fails with the client's reason, and the live database is untouched.
#[test]
fn a_client_command_hidden_in_a_dump_never_runs_at_restore() {
    let (db, k) = setup();
    let planted = k.path("pwned");
    let bindir = k.path("old-tools");
    std::fs::create_dir_all(&bindir).unwrap();
    let real = |tool: &str| {
        let out =
            std::process::Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let dump = bindir.join("mariadb-dump");
    std::fs::write(
        &dump,
        format!(
            "#!/bin/sh\n{} \"$@\" | sed -e '/enable the sandbox mode/d' -e '0,/^-- Table structure/s||\\\\! touch {}\\n&|'\n",
            real("mariadb-dump"),
            planted.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&dump, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(real("mariadb"), bindir.join("mariadb")).unwrap();
    let out = k.cmd(&["backup", "--target", "shop_db"]).env("KURA_MYSQL_BINDIR", &bindir).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!planted.exists(), "the backup ran nothing");
    let before = db.dump_text("shop");
    let out = k.run(&["restore", "--target", "shop_db", "--yes", "--no-keep-old"]);
    assert!(!planted.exists(), "the client ran a command from the dump");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Not allowed in the sandbox mode (the dump holds a client command"),
        "{}",
        stderr(&out)
    );
    assert_eq!(db.dump_text("shop"), before, "the live database is untouched");
}
