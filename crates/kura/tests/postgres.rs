//! PostgreSQL targets against a real server: a realistic schema backed up
//! with pg_dump streamed into the repository, damaged, restored through a
//! fresh database and a rename swap, and compared dump to dump.
mod common;

use common::*;
use kura_testkit::PgServer;

const SCHEMA: &str = r#"
CREATE TABLE users(id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE, created timestamptz DEFAULT now());
CREATE TABLE orders(id bigserial PRIMARY KEY, user_id int REFERENCES users(id), total_cents int CHECK (total_cents >= 0), note text, blob bytea);
CREATE INDEX orders_user ON orders(user_id);
CREATE VIEW big_spenders AS SELECT u.name, sum(o.total_cents) AS spent FROM users u JOIN orders o ON o.user_id = u.id GROUP BY u.name;
CREATE TABLE audit(id serial, what text);
CREATE FUNCTION log_order() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO audit(what) VALUES ('order ' || NEW.id); RETURN NEW; END $$;
CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION log_order();
INSERT INTO users(name, email) SELECT 'ユーザー ' || g || ' Zoë', 'u' || g || '@example.org' FROM generate_series(1, 500) g;
INSERT INTO orders(user_id, total_cents, note, blob) SELECT 1 + g % 500, g * 7 % 10000, 'order nº ' || g, decode(md5(g::text), 'hex') FROM generate_series(1, 3000) g;
INSERT INTO orders(user_id, total_cents, note, blob) VALUES (1, 1, 'large', decode(repeat(md5('x'), 40000), 'hex'));
"#;

fn setup() -> (PgServer, Kura) {
    let pg = PgServer::start();
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql("shop", SCHEMA);
    let mut k = Kura::new();
    let cfg = k.path("kura.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository.main]\nurl = \"{}\"\n\n[target.app_db]\ntype = \"postgres\"\nurl = \"{}\"\n",
            k.repo,
            pg.url("shop")
        ),
    )
    .unwrap();
    k.env.push(("KURA_CONFIG".into(), cfg.display().to_string()));
    k.env.push(("PGPASSWORD".into(), pg.password.clone()));
    k.init();
    (pg, k)
}

#[test]
fn postgres_round_trip_through_a_swap() {
    let (pg, k) = setup();
    let before = pg.dump_text("shop");
    let run = k.json(&["backup", "--target", "app_db"]);
    assert_eq!(run["targets"][0]["ok"], true, "{run}");
    let snaps = k.json(&["snapshots", "--target", "app_db"]);
    assert_eq!(snaps[0]["source"], "postgres");
    assert_eq!(snaps[0]["paths"][0], "shop.pgdump");
    assert_eq!(snaps[0]["paths"][1], "shop.catalogue.json", "what the dump held, counted as it streamed");
    assert_eq!(snaps[0]["paths"][2], "globals.sql", "roles and tablespaces are captured beside the dump");
    let globals = k.cmd(&["dump", "latest", "globals.sql"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&globals.stdout).contains("CREATE ROLE postgres"),
        "{}",
        String::from_utf8_lossy(&globals.stdout)
    );

    // The target's whole dump, one command, is an archive pg_restore reads.
    let whole = k.cmd(&["dump", "--target", "app_db"]).output().unwrap();
    assert!(whole.status.success(), "{}", stderr(&whole));
    pg.psql("postgres", "CREATE DATABASE shop_piped");
    let mut restore = std::process::Command::new(pg.tool("pg_restore"))
        .args(["--no-owner", "-d", &pg.url("shop_piped")])
        .env("PGPASSWORD", &pg.password)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(restore.stdin.as_mut().unwrap(), &whole.stdout).unwrap();
    drop(restore.stdin.take());
    assert!(restore.wait().unwrap().success());
    assert_eq!(pg.dump_text("shop_piped"), before, "the piped dump makes the same database");

    // A second run (day-2 dedup on realistic sizes is measured by the
    // benchmark, not here: this dump is a single chunk or two).
    pg.psql("shop", "INSERT INTO users(name, email) VALUES ('new', 'new@example.org')");
    let second = k.json(&["backup", "--target", "app_db"]);
    assert_eq!(second["targets"][0]["ok"], true, "{second}");

    // Damage, then restore the first snapshot in place.
    pg.psql("shop", "DROP VIEW big_spenders; DROP TABLE orders; UPDATE users SET name = 'oops'");
    let first = snaps[0]["id"].as_str().unwrap();
    k.ok(&["restore", "--target", "app_db", "--snapshot", &first[..8], "--yes"]);
    assert_eq!(pg.dump_text("shop"), before, "the restored database equals the original, dump for dump");
    assert_eq!(pg.psql("shop", "SELECT count(*) FROM orders"), "3001");
    assert_eq!(pg.psql("shop", "SELECT last_value FROM orders_id_seq"), "3001");
    // The damaged database was kept aside, not lost.
    let kept = pg.psql("postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'shop_bak_%'");
    assert!(!kept.is_empty());
    assert_eq!(pg.psql(&kept, "SELECT count(*) FROM users WHERE name = 'oops'"), "501");

    // --into a new database leaves the live one alone; --table picks one table.
    k.ok(&["restore", "--target", "app_db", "--yes", "--into", "shop_check"]);
    assert_eq!(pg.psql("shop_check", "SELECT count(*) FROM users"), "501");
    k.ok(&["restore", "--target", "app_db", "--yes", "--into", "shop_users", "--table", "users"]);
    assert_eq!(pg.psql("shop_users", "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), "1");
    let refused = k.run(&["restore", "--target", "app_db", "--yes", "--into", "shop_check"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("already exists"), "{}", stderr(&refused));
}

#[test]
fn postgres_failures_are_clear_and_record_nothing() {
    let (pg, k) = setup();
    let wrong = k.cmd(&["backup", "--target", "app_db"]).env("PGPASSWORD", "wrong").output().unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    assert!(stderr(&wrong).contains("password authentication failed"), "{}", stderr(&wrong));

    let missing =
        k.cmd(&["backup", "--target", "app_db"]).env("KURA_PG_BINDIR", "/nonexistent").output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("apt-get install postgresql-client"), "{}", stderr(&missing));

    // pg_dump itself failing (a table it may not read) vetoes the snapshot.
    pg.psql("shop", "CREATE ROLE reader LOGIN PASSWORD 'Rd-s3cret-9'; GRANT CONNECT ON DATABASE shop TO reader; GRANT SELECT ON users TO reader");
    let cfg = k.path("reader.toml");
    std::fs::write(&cfg, format!("[repository.main]\nurl = \"{}\"\n\n[target.app_db]\ntype = \"postgres\"\nurl = \"postgres://reader:Rd-s3cret-9@127.0.0.1:{}/shop\"\n", k.repo, pg.port)).unwrap();
    let denied = k
        .cmd(&["backup", "--target", "app_db"])
        .env("KURA_CONFIG", &cfg)
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    assert_eq!(denied.status.code(), Some(1), "{}", stderr(&denied));
    assert!(
        stderr(&denied).contains("pg_dump of shop failed") && stderr(&denied).contains("permission denied"),
        "{}",
        stderr(&denied)
    );
    assert!(
        k.json(&["snapshots"]).as_array().unwrap().is_empty(),
        "no snapshot was recorded for any failure"
    );
    assert!(!stderr(&denied).contains("Rd-s3cret-9"), "the URL's password never reaches messages");

    // With the reader allowed to read everything, the backup succeeds; the
    // password appears nowhere in the output, the snapshot or the repository.
    pg.psql(
        "shop",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader; GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO reader",
    );
    let ok = k
        .cmd(&["backup", "--target", "app_db", "--json", "-vv"])
        .env("KURA_CONFIG", &cfg)
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(
        !stderr(&ok).contains("Rd-s3cret-9") && !String::from_utf8_lossy(&ok.stdout).contains("Rd-s3cret-9")
    );
    let snaps = serde_json::to_string(&k.json(&["snapshots"])).unwrap();
    assert!(!snaps.contains("Rd-s3cret-9"), "{snaps}");
    assert_secret_absent(std::path::Path::new(&k.repo), "Rd-s3cret-9");

    // libpq's other form, `?password=`, is taken out of the URL the same
    // way: never in a process's arguments, a message or the repository.
    let q = k.path("reader-query.toml");
    std::fs::write(&q, format!("[repository.main]\nurl = \"{}\"\n\n[target.app_db]\ntype = \"postgres\"\nurl = \"postgres://reader@127.0.0.1:{}/shop?password=Rd-s3cret-9\"\n", k.repo, pg.port)).unwrap();
    let lock = pg.hold("shop", "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE");
    let child = k
        .cmd(&["backup", "--target", "app_db"])
        .env("KURA_CONFIG", &q)
        .env_remove("PGPASSWORD")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // While pg_dump waits on the lock, no process shows the password.
    pg.wait_until(
        "postgres",
        "EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'pg_dump' AND wait_event_type = 'Lock')",
    );
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(!text.contains("Rd-s3cret-9"), "password in argv: {text}");
    }
    drop(lock);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("Rd-s3cret-9"));
    assert_secret_absent(std::path::Path::new(&k.repo), "Rd-s3cret-9");
}

#[test]
fn postgres_single_table_restore_in_place_is_one_transaction() {
    let (pg, k) = setup();
    let sum = "SELECT md5(string_agg(id || name || email, ',' ORDER BY id)) FROM users";
    let users_before = pg.psql("shop", sum);
    k.ok(&["backup", "--target", "app_db"]);
    pg.psql("shop", "UPDATE users SET name = 'x' WHERE id <= 10; INSERT INTO users(name, email) VALUES ('late', 'late@example.org')");
    pg.psql("shop", "INSERT INTO orders(user_id, total_cents, note) VALUES (2, 42, 'after the backup')");
    let orders_now =
        pg.psql("shop", "SELECT md5(string_agg(id || ':' || total_cents, ',' ORDER BY id)) FROM orders");
    let audit_now = pg.psql("shop", "SELECT count(*) FROM audit");

    // A constraint the snapshot's rows break: the restore fails inside its
    // transaction and nothing changes.
    pg.psql("shop", "ALTER TABLE users ADD CONSTRAINT short_names CHECK (length(name) < 3) NOT VALID");
    let failed = k.run(&["restore", "--target", "app_db", "--table", "users", "--yes"]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(stderr(&failed).contains("rolled back"), "{}", stderr(&failed));
    assert_eq!(
        pg.psql("shop", "SELECT count(*) FROM users WHERE name = 'x'"),
        "10",
        "the live table is unchanged"
    );
    pg.psql("shop", "ALTER TABLE users DROP CONSTRAINT short_names");

    k.ok(&["restore", "--target", "app_db", "--table", "users", "--yes"]);
    assert_eq!(pg.psql("shop", sum), users_before, "users is back as it was");
    assert_eq!(pg.psql("shop", "SELECT last_value FROM users_id_seq"), "500", "its sequence too");
    assert_eq!(
        pg.psql("shop", "SELECT md5(string_agg(id || ':' || total_cents, ',' ORDER BY id)) FROM orders"),
        orders_now,
        "orders was not touched"
    );
    assert_eq!(pg.psql("shop", "SELECT count(*) FROM audit"), audit_now, "no trigger fired");
    assert_eq!(pg.psql("shop", "SELECT count(*) FROM big_spenders"), "500", "the view still reads the table");
    let kept = pg.psql("shop", "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'kura_bak_%'");
    assert_eq!(pg.psql("shop", &format!("SELECT count(*) FROM {kept}.users WHERE name = 'x'")), "10");

    pg.psql("shop", "DROP TABLE audit");
    let gone = k.run(&["restore", "--target", "app_db", "--table", "audit", "--yes"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(stderr(&gone).contains("does not exist in database shop"), "{}", stderr(&gone));
}

#[test]
fn every_database_of_a_server_in_one_snapshot() {
    let (pg, mut k) = setup();
    pg.psql("postgres", "CREATE DATABASE crm");
    pg.psql("crm", "CREATE TABLE contacts(id serial PRIMARY KEY, name text); INSERT INTO contacts(name) SELECT 'c' || g FROM generate_series(1, 50) g;");
    let cfg = k.path("kura-all.toml");
    std::fs::write(
        &cfg,
        format!(
            // Written out as host/port/user/database instead of a URL.
            "[repository.main]\nurl = \"{}\"\n\n[target.server]\ntype = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\ndatabase = \"postgres\"\ndatabases = [\"*\"]\n",
            k.repo,
            pg.port
        ),
    )
    .unwrap();
    k.env.retain(|(n, _)| n != "KURA_CONFIG");
    k.env.push(("KURA_CONFIG".into(), cfg.display().to_string()));
    let (shop, crm) = (pg.dump_text("shop"), pg.dump_text("crm"));
    let run = k.json(&["backup", "--target", "server"]);
    assert_eq!(run["targets"][0]["ok"], true, "{run}");
    let snaps = k.json(&["snapshots", "--target", "server"]);
    let paths: Vec<&str> =
        snaps[0]["paths"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "crm.pgdump",
            "crm.catalogue.json",
            "postgres.pgdump",
            "postgres.catalogue.json",
            "shop.pgdump",
            "shop.catalogue.json",
            "globals.sql"
        ]
    );

    // A drill restores and checks each database on its own.
    let r = k.json(&["drill", "--target", "server"]);
    let dbs: Vec<&str> =
        r[0]["targets"].as_array().unwrap().iter().map(|t| t["database"].as_str().unwrap()).collect();
    assert_eq!(dbs, ["crm", "postgres", "shop"], "{r}");
    assert!(r[0]["targets"].as_array().unwrap().iter().all(|t| t["error"].is_null()), "{r}");
    assert_eq!(
        r[0]["targets"][0]["checks"][0]["detail"], "1 tables, 50 rows, 2 objects",
        "a table and its serial sequence: {r}"
    );
    assert_eq!(
        pg.psql("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE '%kura\\_drill%'"),
        "0"
    );

    // --into needs one database named.
    let refused = k.run(&["restore", "--target", "server", "--into", "x", "--yes"]);
    assert!(stderr(&refused).contains("--database"), "{}", stderr(&refused));
    k.ok(&["restore", "--target", "server", "--database", "crm", "--into", "crm_check", "--yes"]);
    assert_eq!(pg.psql("crm_check", "SELECT count(*) FROM contacts"), "50");

    // Damage two databases; one restore brings both back, each swapped.
    pg.psql("crm", "DELETE FROM contacts");
    pg.psql("shop", "DROP TABLE orders CASCADE");
    k.ok(&["restore", "--target", "server", "--database", "crm", "--yes"]);
    assert_eq!(pg.dump_text("crm"), crm);
    assert_ne!(pg.dump_text("shop"), shop, "--database left shop alone");
    k.ok(&["restore", "--target", "server", "--database", "shop", "--yes"]);
    assert_eq!(pg.dump_text("shop"), shop);
    let kept = pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'crm_bak_%' OR datname LIKE 'shop_bak_%'",
    );
    assert_eq!(kept, "2", "both damaged databases were kept aside");
}

#[test]
fn a_server_gone_mid_dump_fails_the_backup_and_records_nothing() {
    let (pg, k) = setup();
    k.ok(&["backup", "--target", "app_db"]);
    // pg_dump will wait on this lock; meanwhile the server goes away.
    let lock = pg.hold("shop", "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE");
    let child = k
        .cmd(&["backup", "--target", "app_db"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    pg.wait_until(
        "postgres",
        "EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'pg_dump' AND wait_event_type = 'Lock')",
    );
    pg.kill();
    let out = child.wait_with_output().unwrap();
    drop(lock);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("pg_dump of shop failed") && e.contains("no snapshot was saved"), "{e}");
    assert_eq!(k.snapshot_ids().len(), 1, "only the snapshot from before the outage");
    let v = k.json(&["verify", "--read-data"]);
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn parallel_dump_in_parts_is_one_consistent_snapshot() {
    let (pg, mut k) = setup();
    pg.psql(
        "shop",
        "CREATE TABLE events(id bigserial PRIMARY KEY, user_id int NOT NULL REFERENCES users(id), body text);
         INSERT INTO events(user_id, body) SELECT 1 + g % 500, md5(g::text) || repeat(' lorem ipsum', 10) FROM generate_series(1, 250000) g;
         ANALYZE events;",
    );
    // (ANALYZE, as autovacuum would soon: the plan reads the planner's page
    // counts, which take no lock.)
    let cfg = k.path("kura-par.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository.main]\nurl = \"{}\"\n\n[target.app_db]\ntype = \"postgres\"\nurl = \"{}\"\njobs = 3\n",
            k.repo,
            pg.url("shop")
        ),
    )
    .unwrap();
    k.env.retain(|(n, _)| n != "KURA_CONFIG");
    k.env.push(("KURA_CONFIG".into(), cfg.display().to_string()));

    // A writer adds a user and an event that points at it, in one
    // transaction, all through the backup: parts dumped from different
    // moments would hold events whose user is missing.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let written = std::sync::atomic::AtomicUsize::new(0);
    let run = std::thread::scope(|s| {
        s.spawn(|| {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                pg.psql("shop", &format!("BEGIN; INSERT INTO users(name, email) VALUES ('w{n}', 'w{n}@example.org'); INSERT INTO events(user_id, body) VALUES (currval('users_id_seq'), 'w{n}'); COMMIT;"));
                n += 1;
                written.store(n, std::sync::atomic::Ordering::Relaxed);
            }
        });
        // The writer is committing before the backup starts.
        while written.load(std::sync::atomic::Ordering::Relaxed) < 2 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let run = k.run(&["backup", "--target", "app_db", "--json"]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        run
    });
    assert!(run.status.success(), "{}\n{}", stderr(&run), String::from_utf8_lossy(&run.stdout));
    let ls = k.ok(&["ls", "latest"]);
    assert!(ls.contains("/shop.parts/000.pgdump") && ls.contains("/shop.parts/parts.json"), "{ls}");

    // Into a scratch database: the foreign key is rebuilt over all rows.
    k.ok(&["restore", "--target", "app_db", "--into", "shop_check", "--yes"]);
    let orphans = pg.psql(
        "shop_check",
        "SELECT count(*) FROM events e LEFT JOIN users u ON u.id = e.user_id WHERE u.id IS NULL",
    );
    assert_eq!(orphans, "0");
    let events = pg.psql("shop_check", "SELECT count(*) FROM events");
    let users = pg.psql("shop_check", "SELECT count(*) FROM users");
    assert_eq!(
        events.parse::<i64>().unwrap() - 250000,
        users.parse::<i64>().unwrap() - 500,
        "one event per new user"
    );
    assert!(pg.psql("shop_check", "SELECT count(*) FROM pg_indexes WHERE tablename = 'events'") == "1");

    // One table in place, from its part.
    pg.psql("shop", "DELETE FROM events WHERE id % 2 = 0");
    k.ok(&["restore", "--target", "app_db", "--table", "events", "--yes"]);
    assert_eq!(pg.psql("shop", "SELECT count(*) FROM events"), events);

    // The whole database, swapped in.
    pg.psql("shop", "DROP TABLE events");
    k.ok(&["restore", "--target", "app_db", "--yes"]);
    assert_eq!(pg.dump_text("shop"), pg.dump_text("shop_check"));

    // Without `jobs`, the large table is still a part of its own (dumped
    // after the rest), and the restore still equals the original.
    let one = k.path("kura-one.toml");
    std::fs::write(
        &one,
        format!(
            "[repository.main]\nurl = \"{}\"\n\n[target.app_db]\ntype = \"postgres\"\nurl = \"{}\"\n",
            k.repo,
            pg.url("shop")
        ),
    )
    .unwrap();
    let out = k.cmd(&["backup", "--target", "app_db"]).env("KURA_CONFIG", &one).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let ls = k.ok(&["ls", "latest"]);
    assert!(ls.contains("/shop.parts/000.pgdump"), "{ls}");
    let out = k
        .cmd(&["restore", "--target", "app_db", "--into", "shop_one", "--yes"])
        .env("KURA_CONFIG", &one)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(pg.dump_text("shop_one"), pg.dump_text("shop"));
}

#[test]
fn killed_restores_always_leave_a_live_database() {
    let (pg, k) = setup();
    k.ok(&["backup", "--target", "app_db"]);
    let mut rand = rng(0x5DEECE66D);
    let mut killed = 0;
    for trial in 0..8 {
        pg.psql("shop", &format!("UPDATE users SET name = 'damaged {trial}' WHERE id = 1"));
        // From just after the start to past the end of a typical restore.
        let out = kill_after(k.cmd(&["restore", "--target", "app_db", "--yes"]), 10 + trial * 60 + rand(40));
        if out.status.code().is_none() {
            killed += 1;
        }
        // Old or restored, the live name always holds a whole database.
        let name = pg.psql("shop", "SELECT name FROM users WHERE id = 1");
        assert!(name == format!("damaged {trial}") || name.ends_with("Zoë"), "trial {trial}: {name}");
        assert_eq!(pg.psql("shop", "SELECT count(*) FROM orders"), "3001", "trial {trial}");
    }
    // The next restore works at once, and sweeps what the kills left.
    k.ok(&["restore", "--target", "app_db", "--yes", "--no-keep-old"]);
    assert!(pg.psql("shop", "SELECT name FROM users WHERE id = 1").ends_with("Zoë"));
    let left = pg
        .psql("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'shop\\_kura\\_restore\\_%'");
    assert_eq!(left, "0", "partial copies of killed restores are swept");
    eprintln!("{killed} of 8 restores killed midway");
    assert!(killed > 0, "no restore was interrupted: the test proved nothing");
}

#[test]
fn a_partial_target_restores_only_its_own_tables_in_place() {
    let (pg, mut k) = setup();
    let cfg = k.path("kura-partial.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository.main]\nurl = \"{}\"\n\n[target.app_db]\ntype = \"postgres\"\nurl = \"{}\"\n\n[target.orders_only]\ntype = \"postgres\"\nurl = \"{}\"\ntables = [\"orders\"]\n\n[target.no_audit]\ntype = \"postgres\"\nurl = \"{}\"\nexclude_tables = [\"audit\"]\n",
            k.repo,
            pg.url("shop"),
            pg.url("shop"),
            pg.url("shop")
        ),
    )
    .unwrap();
    k.env.retain(|(n, _)| n != "KURA_CONFIG");
    k.env.push(("KURA_CONFIG".into(), cfg.display().to_string()));
    k.ok(&["backup", "--target", "app_db", "--target", "orders_only", "--target", "no_audit"]);
    // Damage the orders; meanwhile the application adds a user.
    pg.psql("shop", "DELETE FROM orders WHERE id % 3 = 0");
    pg.psql("shop", "INSERT INTO users(name, email) VALUES ('after the backup', 'late@example.org')");
    let plan = k.ok(&["restore", "--target", "orders_only", "--dry-run"]);
    assert!(plan.contains("replace the rows of table(s) orders") && plan.contains("nothing else"), "{plan}");
    k.ok(&["restore", "--target", "orders_only", "--yes"]);
    assert_eq!(pg.psql("shop", "SELECT count(*) FROM orders"), "3001", "the orders are back");
    assert_eq!(
        pg.psql("shop", "SELECT count(*) FROM users WHERE email = 'late@example.org'"),
        "1",
        "a table the target does not hold is untouched"
    );
    assert_eq!(
        pg.psql("shop", "SELECT count(*) FROM pg_database WHERE datname LIKE 'shop_bak_%'"),
        "0",
        "no swap"
    );
    // A target that leaves tables out cannot replace the whole database.
    let refused = k.run(&["restore", "--target", "no_audit", "--yes"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("exclude_tables"), "{}", stderr(&refused));
    assert_eq!(pg.psql("shop", "SELECT count(*) FROM users WHERE email = 'late@example.org'"), "1");
    // --component database plans every database target first: the refusal
    // comes before anything is touched.
    let comp = k.run(&["restore", "--component", "database", "--yes"]);
    assert_eq!(comp.status.code(), Some(1), "{}", stderr(&comp));
    assert_eq!(pg.psql("shop", "SELECT count(*) FROM users WHERE email = 'late@example.org'"), "1");
    // A session holding the table: the restore gives up at --lock-timeout,
    // rolled back, instead of queueing the application behind it.
    pg.psql("shop", "DELETE FROM orders WHERE id % 5 = 0");
    let held = pg.hold("shop", "LOCK TABLE orders IN SHARE MODE");
    let blocked = k.run(&["restore", "--target", "orders_only", "--yes", "--lock-timeout", "2s"]);
    assert_eq!(blocked.status.code(), Some(1));
    assert!(stderr(&blocked).contains("lock timeout"), "{}", stderr(&blocked));
    drop(held);
    assert_eq!(pg.psql("shop", "SELECT count(*) FROM orders"), "2401", "rolled back: nothing changed");
    k.ok(&["restore", "--target", "orders_only", "--yes"]);
    assert_eq!(pg.psql("shop", "SELECT count(*) FROM orders"), "3001");
}

/// The seed runbook's setup: an application role owns the database and its
/// schema, a read-only role may connect, the database has its own settings,
/// comment and locale. A superuser backs it up and restores it.
const APP_SETUP: [&str; 3] = [
    "CREATE ROLE app LOGIN PASSWORD 'app-pw'; CREATE ROLE reader LOGIN PASSWORD 'reader-pw'",
    "CREATE DATABASE shop OWNER app ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    "ALTER DATABASE shop SET search_path = app, public; ALTER DATABASE shop SET work_mem = '8MB'; \
     REVOKE CONNECT, TEMPORARY ON DATABASE shop FROM PUBLIC; GRANT CONNECT ON DATABASE shop TO reader; \
     COMMENT ON DATABASE shop IS 'the shop''s data'; ALTER ROLE reader IN DATABASE shop SET statement_timeout = '5s'",
];
const APP_SCHEMA: &str = "CREATE SCHEMA app; CREATE TABLE app.users(id serial PRIMARY KEY, name text); \
    CREATE TABLE app.orders(id serial PRIMARY KEY, user_id int REFERENCES app.users(id), cents int); \
    ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO reader; GRANT USAGE ON SCHEMA app TO reader; \
    GRANT SELECT ON ALL TABLES IN SCHEMA app TO reader; \
    INSERT INTO app.users(name) SELECT 'u' || g FROM generate_series(1, 50) g; \
    INSERT INTO app.orders(user_id, cents) SELECT 1 + g % 50, g FROM generate_series(1, 200) g";

/// Everything about database shop the application depends on beyond its rows.
fn access_of(pg: &PgServer) -> String {
    let db = pg.psql(
        "postgres",
        "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype, datacl, \
         shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'shop'",
    );
    let settings = pg.psql(
        "postgres",
        "SELECT coalesce(setrole::regrole::text, '-'), setconfig FROM pg_db_role_setting \
         WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = 'shop') ORDER BY 1",
    );
    let inside = pg.psql(
        "shop",
        "SELECT string_agg(format('%s %s %s', c.relname, pg_get_userbyid(c.relowner), c.relacl), '; ' ORDER BY c.relname) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'app'",
    );
    let schema =
        pg.psql("shop", "SELECT pg_get_userbyid(nspowner), nspacl FROM pg_namespace WHERE nspname = 'app'");
    let defaults = pg.psql("shop", "SELECT pg_get_userbyid(defaclrole), defaclacl FROM pg_default_acl");
    format!("{db}\n{settings}\n{inside}\n{schema}\n{defaults}")
}

/// The application and its reader at work, as they would after a restore.
fn app_works(pg: &PgServer) {
    let n = pg.psql_as("app", "app-pw", "shop", "INSERT INTO users(name) VALUES ('after') RETURNING id");
    assert!(n.is_ok(), "the app role writes its table (search_path from the database settings): {n:?}");
    let n = pg.psql_as("app", "app-pw", "shop", "UPDATE app.orders SET cents = cents + 1 WHERE id = 1");
    assert!(n.is_ok(), "{n:?}");
    let r = pg.psql_as("reader", "reader-pw", "shop", "SELECT count(*) FROM app.orders");
    assert_eq!(r.as_deref(), Ok("200"), "the reader reads");
    let r = pg.psql_as("reader", "reader-pw", "shop", "DELETE FROM app.orders");
    assert!(r.unwrap_err().contains("permission denied"), "and only reads");
    let r = pg.psql_as("reader", "reader-pw", "shop", "SHOW statement_timeout");
    assert_eq!(r.as_deref(), Ok("5s"), "the per-role database setting holds");
}

#[test]
fn a_restore_by_a_superuser_keeps_owners_grants_and_database_settings() {
    let pg = PgServer::start();
    for sql in APP_SETUP {
        pg.psql("postgres", sql);
    }
    pg.psql_as("app", "app-pw", "shop", APP_SCHEMA).unwrap();
    app_works(&pg);
    let (before, rows) = (access_of(&pg), pg.dump_text("shop"));
    let mut k = Kura::new();
    config(&mut k, &format!("[target.app_db]\ntype = \"postgres\"\nurl = \"{}\"\n", pg.url("shop")));
    k.env.push(("PGPASSWORD".into(), pg.password.clone()));
    k.init();
    k.ok(&["backup", "--target", "app_db"]);

    // An application session is connected: the plan says it will be ended,
    // the restore says it was.
    {
        let _app = pg.hold("shop", "SELECT count(*) FROM app.users");
        let plan = k.ok(&["restore", "--target", "app_db", "--dry-run"]);
        assert!(plan.contains("the 1 session(s) connected to it now will be ended at the swap"), "{plan}");
        let out = k.ok(&["restore", "--target", "app_db", "--yes"]);
        assert!(out.contains("ended 1 session(s) on database shop"), "{out}");
    }
    assert_eq!(access_of(&pg), before, "owner, grants, settings and comment as they were");
    assert_eq!(pg.dump_text("shop"), rows);
    app_works(&pg);

    // The disaster case: the database is gone. The restore recreates it
    // with its owner, locale and settings.
    pg.psql("postgres", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'shop'");
    pg.psql("postgres", "DROP DATABASE shop");
    let plan = k.ok(&["restore", "--target", "app_db", "--dry-run"]);
    assert!(plan.contains("database shop does not exist"), "{plan}");
    let out = k.ok(&["restore", "--target", "app_db", "--yes"]);
    assert!(!out.contains("session"), "{out}");
    assert_eq!(access_of(&pg), before, "a dropped database comes back as it was");
    assert_eq!(pg.dump_text("shop"), rows);
    app_works(&pg);

    // A user that cannot act as the dump's roles is refused before anything
    // is touched, and told how to go on; --no-owner restores as that user.
    pg.psql("postgres", "CREATE ROLE outsider LOGIN CREATEDB PASSWORD 'out-pw'");
    let mut out_k = Kura::with_repo(&k.repo, vec![("PGPASSWORD".into(), "out-pw".into())]);
    let url2 = pg.url("shop").replace("postgres@", "outsider@");
    config(&mut out_k, &format!("[target.app_db]\ntype = \"postgres\"\nurl = \"{url2}\"\n"));
    let refused = out_k.run(&["restore", "--target", "app_db", "--yes", "--into", "shop_copy"]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("role(s) app") && stderr(&refused).contains("--no-owner"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM pg_database WHERE datname = 'shop_copy'"), "0");
    out_k.ok(&["restore", "--target", "app_db", "--yes", "--into", "shop_copy", "--no-owner"]);
    assert_eq!(pg.psql("shop_copy", "SELECT count(*) FROM app.orders"), "200");
    assert_eq!(
        pg.psql("shop_copy", "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'app'"),
        "outsider"
    );

    // The restore over the live database kept the old one; `kura kept`
    // lists it with its size and removes it.
    let kept = k.json(&["kept", "list", "--target", "app_db"]);
    let kept = kept.as_array().unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0]["name"].as_str().unwrap().starts_with("database shop_bak_"), "{kept:?}");
    assert!(kept[0]["bytes"].as_u64().unwrap() > 1_000_000, "{kept:?}");
    k.ok(&["kept", "clean", "--target", "app_db", "--keep-last", "0", "--yes"]);
    assert_eq!(
        pg.psql("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'shop\\_bak\\_%'"),
        "0"
    );
    app_works(&pg);
}

#[test]
fn a_drill_restores_into_a_scratch_database_checks_it_and_drops_it() {
    let (pg, k) = setup();
    std::fs::write(
        k.path("kura.toml"),
        format!(
            "[repository.main]\nurl = \"{}\"\n\n[target.app_db]\ntype = \"postgres\"\nurl = \"{}\"\n\
             checks = [\"SELECT count(*) = 500 FROM users\", \"SELECT count(*) > 3000 FROM orders\"]\n\
             [plan.nightly]\nschedule = \"0 3 * * *\"\ntargets = [\"app_db\"]\n",
            k.repo,
            pg.url("shop")
        ),
    )
    .unwrap();
    // Every kind of object the catalogue counts, and an extension's
    // functions, which are the extension's and not the dump's.
    pg.psql(
        "shop",
        "CREATE TABLE ident(id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text); \
         INSERT INTO ident(v) SELECT 'line ' || g || E'\\nnext' FROM generate_series(1, 7) g; \
         CREATE TABLE \"Odd.Name\"(v text); INSERT INTO \"Odd.Name\" VALUES (''), ('\\.'), (NULL); \
         CREATE MATERIALIZED VIEW spend AS SELECT count(*) FROM orders; \
         CREATE PROCEDURE noop() LANGUAGE sql AS 'SELECT 1'; \
         CREATE AGGREGATE total(int) (SFUNC = int4pl, STYPE = int); \
         CREATE EXTENSION IF NOT EXISTS pgcrypto;",
    );
    k.ok(&["run", "nightly"]);
    let before = pg.dump_text("shop");
    let scratch = "SELECT count(*) FROM pg_database WHERE datname LIKE '%kura\\_drill%'";
    let r = k.json(&["drill", "--plan", "nightly"]);
    let t = &r[0]["targets"][0];
    assert!(t["error"].is_null(), "{r}");
    let checks = t["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 3, "the catalogue and the two checks: {r}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{r}");
    // Counted from the dump as it streamed: 500 users, 3001 orders, 3001
    // audit rows (the trigger), 7 + 3 in the new tables; 5 tables, a view,
    // a materialized view, 4 sequences, a function, a procedure, an
    // aggregate and a trigger, none of pgcrypto's.
    assert_eq!(checks[0]["detail"], "5 tables, 6512 rows, 15 objects", "{r}");

    // A restore that loses rows or objects: the drill's copy is damaged
    // between its restore and its checks, and the drill names each loss.
    let gate = k.path("gate");
    let drill = k.gated(&["drill", "--plan", "nightly"], "drill-restored", &gate);
    let copy = pg.psql("postgres", "SELECT datname FROM pg_database WHERE datname LIKE '%kura\\_drill%'");
    pg.psql(&copy, "ALTER TABLE orders DISABLE TRIGGER USER; DELETE FROM orders WHERE id % 1000 = 0; DROP TRIGGER orders_audit ON orders; DROP VIEW big_spenders");
    std::fs::write(&gate, b"").unwrap();
    let out = drill.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = stderr(&out);
    for want in [
        "table public.orders: 2998 rows restored, 3001 backed up",
        "0 trigger(s) restored, 1 backed up",
        "0 view(s) restored, 1 backed up",
    ] {
        assert!(said.contains(want), "{want}: {said}");
    }
    assert_eq!(pg.psql("postgres", scratch), "0", "the damaged copy is dropped");
    assert_eq!(pg.psql("postgres", scratch), "0", "the scratch database is dropped");
    assert_same_text(&pg.dump_text("shop"), &before, "a drill never touches the live database");

    // Rows lost in the live database and backed up so: the drill says so.
    pg.psql("shop", "DELETE FROM orders WHERE id > 100");
    k.ok(&["run", "nightly"]);
    let out = k.cmd(&["drill", "--plan", "nightly"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("check failed: SELECT count(*) > 3000 FROM orders (answered \"f\")"),
        "{}",
        stderr(&out)
    );
    assert_eq!(pg.psql("postgres", scratch), "0", "dropped after a failure too");
}

/// `drill_server`: the drill restores into a scratch database on another
/// server (without the live server's roles), so it takes nothing from the
/// production server but the reads of the backup itself.
#[test]
fn a_drill_can_restore_on_a_scratch_server() {
    let (pg, k) = setup();
    let scratch_pg = PgServer::start();
    std::fs::write(
        k.path("kura.toml"),
        format!(
            "[repository.main]\nurl = \"{}\"\n\n[target.app_db]\ntype = \"postgres\"\nurl = \"{}\"\n\
             drill_server = \"{}\"\nchecks = [\"SELECT count(*) = 500 FROM users\"]\n",
            k.repo,
            pg.url("shop"),
            scratch_pg.url("postgres")
        ),
    )
    .unwrap();
    pg.psql("postgres", "CREATE ROLE shop_owner LOGIN; ALTER DATABASE shop OWNER TO shop_owner");
    pg.psql("shop", "ALTER TABLE users OWNER TO shop_owner");
    k.ok(&["backup", "--target", "app_db"]);
    let gate = k.path("gate");
    let drill = k.gated(&["drill", "--target", "app_db", "--json"], "drill-restored", &gate);
    let copies = "SELECT count(*) FROM pg_database WHERE datname LIKE '%kura\\_drill%'";
    assert_eq!(scratch_pg.psql("postgres", copies), "1", "the copy is on the scratch server");
    assert_eq!(pg.psql("postgres", copies), "0", "and not on the live one");
    std::fs::write(&gate, b"").unwrap();
    let out = drill.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = r[0]["targets"][0]["checks"].as_array().unwrap().clone();
    assert!(checks.len() == 2 && checks.iter().all(|c| c["ok"] == true), "{r}");
    assert_eq!(scratch_pg.psql("postgres", copies), "0", "removed");
}

#[test]
fn doctor_checks_the_servers_credentials_and_tools() {
    let (_pg, k) = setup();
    let line = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.contains("target app_db"))
            .unwrap_or_default()
            .to_string()
    };
    let good = k.cmd(&["doctor"]).output().unwrap();
    assert!(
        line(&good).starts_with("OK    target app_db: connected to PostgreSQL"),
        "{}",
        String::from_utf8_lossy(&good.stdout)
    );
    let wrong = k.cmd(&["doctor"]).env("PGPASSWORD", "wrong").output().unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        line(&wrong).starts_with("FAIL  target app_db:")
            && line(&wrong).contains("password authentication failed"),
        "{}",
        line(&wrong)
    );
    let missing = k.cmd(&["doctor"]).env("KURA_PG_BINDIR", "/nonexistent").output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    let text = String::from_utf8_lossy(&missing.stdout);
    assert!(
        text.contains("FAIL  target app_db:") && text.contains("apt-get install postgresql-client"),
        "{text}"
    );
}
