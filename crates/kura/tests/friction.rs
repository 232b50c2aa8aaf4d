//! The runbooks' setups without friction (issue 13), through the real binary.
mod common;

use common::*;

#[test]
fn warnings_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("ok"), b"ok").unwrap();
    // A file that cannot be read: a WARN line on stderr.
    let out = k.run(&["backup", src.to_str().unwrap(), "/proc/self/mem"]);
    let e = stderr(&out);
    assert!(e.contains("WARN"), "{e}");
    assert!(!e.contains('\u{1b}'), "no escape codes for cron mail or the journal: {e:?}");
}

#[test]
fn snapshots_of_an_unknown_target_is_an_error_listing_the_configured_ones() {
    let mut k = Kura::new();
    config(&mut k, "[target.exports]\ntype = \"files\"\npaths = [\"/etc/hostname\"]\n");
    k.init();
    let out = k.run(&["snapshots", "--target", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no target named \"nosuch\" (configured: exports)"), "{}", stderr(&out));
}

#[test]
fn init_takes_the_password_file_from_kura_toml() {
    let k = Kura::new();
    let pw = k.path("pw");
    std::fs::write(&pw, b"from the config\n").unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let cfg = k.path("kura.toml");
    std::fs::write(
        &cfg,
        format!("[repository.main]\nurl = \"{}\"\npassword_file = \"{}\"\n", k.repo, pw.display()),
    )
    .unwrap();
    let init = k
        .cmd(&["init"])
        .env_remove("KURA_PASSWORD")
        .env_remove("KURA_REPOSITORY")
        .env("KURA_CONFIG", &cfg)
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", stderr(&init));
    // The repository opens with that password, and not with another.
    let ok = k.cmd(&["snapshots"]).env("KURA_PASSWORD", "from the config").output().unwrap();
    assert!(ok.status.success(), "{}", stderr(&ok));
    let wrong = k.cmd(&["snapshots"]).output().unwrap();
    assert_eq!(wrong.status.code(), Some(11));
}

#[test]
fn two_repositories_in_one_config_each_target_uses_its_own() {
    let mut k = Kura::new();
    let (primary, offsite) = (k.path("primary-store"), k.path("offsite-store"));
    let data = k.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), b"hello").unwrap();
    let cfg = k.path("kura.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository.primary]\nurl = \"{}\"\n\n[repository.offsite]\nurl = \"{}\"\n\n\
             [target.app]\ntype = \"files\"\npaths = [\"{}\"]\nrepository = \"primary\"\n\n\
             [target.exports]\ntype = \"files\"\npaths = [\"{}\"]\nrepository = \"offsite\"\n",
            primary.display(),
            offsite.display(),
            data.display(),
            data.display()
        ),
    )
    .unwrap();
    k.env.push(("KURA_CONFIG".into(), cfg.display().to_string()));
    // KURA_REPOSITORY (set for every test) must not override a target's own.
    let cwd = k.path("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let run = |args: &[&str]| k.cmd(args).env_remove("KURA_REPOSITORY").current_dir(&cwd).output().unwrap();

    // A bare word that no config names is an error, and creates nothing.
    let bad = run(&["init", "--repo", "primry"]);
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("primry") && stderr(&bad).contains("./primry"), "{}", stderr(&bad));
    assert!(!cwd.join("primry").exists(), "no stray directory");
    // `kura init --repository NAME` creates that one; `kura init` the rest.
    let one = run(&["init", "--repository", "offsite"]);
    assert!(one.status.success(), "{}", stderr(&one));
    assert!(offsite.join("config").exists() && !primary.exists());
    let rest = run(&["init"]);
    assert!(rest.status.success(), "{}", stderr(&rest));
    let said = String::from_utf8_lossy(&rest.stdout).into_owned();
    assert!(said.contains("repository offsite exists") && said.contains("created repository"), "{said}");
    assert!(primary.join("config").exists());

    // Each target backs up into, and lists from, its own repository.
    let b = run(&["backup", "--target", "app", "--target", "exports"]);
    assert!(b.status.success(), "{}", stderr(&b));
    let snaps = |args: &[&str]| -> serde_json::Value {
        let o = run(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    assert_eq!(snaps(&["--json", "snapshots", "--target", "exports"]).as_array().unwrap().len(), 1);
    let in_primary = snaps(&["--json", "snapshots", "--repo", "primary"]);
    assert_eq!(in_primary.as_array().unwrap().len(), 1);
    assert_eq!(in_primary[0]["target"], "app");
    let in_offsite = snaps(&["--json", "snapshots", "--repo", "offsite"]);
    assert_eq!(in_offsite[0]["target"], "exports");
    // Without a name, a command says which repositories there are.
    let which = run(&["snapshots"]);
    assert_eq!(which.status.code(), Some(1));
    assert!(stderr(&which).contains("several repositories (offsite, primary)"), "{}", stderr(&which));
}

#[test]
fn an_unset_variable_stops_only_what_uses_it() {
    let mut k = Kura::new();
    let data = k.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), b"x").unwrap();
    config(
        &mut k,
        &format!(
            "[target.files]\ntype = \"files\"\npaths = [\"{}\"]\n\n\
             [target.db]\ntype = \"postgres\"\nurl = \"postgres://app:${{KURA_TEST_DB_PASSWORD}}@127.0.0.1/shop\"\n",
            data.display()
        ),
    );
    k.init();
    // The unrelated target backs up, lists and restores.
    k.ok(&["backup", "--target", "files"]);
    assert_eq!(k.json(&["snapshots", "--target", "files"]).as_array().unwrap().len(), 1);
    k.ok(&["restore", "--target", "files", "--dry-run"]);
    // The one that uses it says which variable, and where.
    for args in [
        &["backup", "--target", "db"][..],
        &["restore", "--target", "db", "--yes"],
        &["restore", "--component", "database", "--yes"],
    ] {
        let out = k.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains("target.db.url: environment variable KURA_TEST_DB_PASSWORD is not set"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // --component data does not involve it.
    k.ok(&["restore", "--component", "data", "--dry-run"]);
}

#[test]
fn at_takes_the_runbooks_time_formats_and_says_what_is_there() {
    let mut k = Kura::new();
    let data = k.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), b"x").unwrap();
    config(&mut k, &format!("[target.files]\ntype = \"files\"\npaths = [\"{}\"]\n", data.display()));
    k.init();
    k.ok(&["backup", "--target", "files"]);
    let stamp = (chrono::Local::now() + chrono::Duration::minutes(1)).format("%Y%m%d-%H%M%S").to_string();
    for at in [stamp.as_str(), "now", "today", "0m ago"] {
        k.ok(&["restore", "--target", "files", "--at", at, "--dry-run"]);
    }
    // Before the first backup: none, and the message says what there is.
    let out = k.run(&["restore", "--target", "files", "--at", "20251005-023000", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(
        e.contains("was taken by 20251005-023000 (2025-10-05 02:30:00)") && e.contains("the earliest is"),
        "{e}"
    );
    let out = k.run(&["restore", "--component", "data", "--at", "yesterday", "--dry-run"]);
    assert!(stderr(&out).contains("the earliest is"), "{}", stderr(&out));
    let out = k.run(&["restore", "--target", "files", "--at", "last tuesday", "--dry-run"]);
    assert!(stderr(&out).contains("20251005-023000, today, yesterday"), "{}", stderr(&out));
}

#[test]
fn hooks_obey_quiet_and_the_log_format() {
    let mut k = Kura::new();
    let db = k.path("app.db");
    rusqlite::Connection::open(&db).unwrap().execute_batch("CREATE TABLE t(x);").unwrap();
    config(
        &mut k,
        &format!(
            "[target.registry]\ntype = \"sqlite\"\npath = \"{}\"\npre_restore = \"echo stopping the service; echo to stderr >&2\"\npost_restore = \"echo started\"\n",
            db.display()
        ),
    );
    k.init();
    k.ok(&["backup", "--target", "registry"]);
    // Plain: the hooks' lines are there, named.
    let out = k.run(&["restore", "--target", "registry", "--yes"]);
    assert!(out.status.success());
    let e = stderr(&out);
    assert!(e.contains("pre_restore: stopping the service") && e.contains("pre_restore: to stderr"), "{e}");
    // -q: nothing at all, on either stream.
    let out = k.run(&["-q", "restore", "--target", "registry", "--yes"]);
    assert!(out.status.success());
    assert_eq!(
        (stderr(&out), String::from_utf8_lossy(&out.stdout).into_owned()),
        (String::new(), String::new())
    );
    // --log-format json: every line on stderr is a JSON object.
    let out = k.run(&["--log-format", "json", "restore", "--target", "registry", "--yes"]);
    assert!(out.status.success());
    let e = stderr(&out);
    assert!(e.contains("stopping the service"), "{e}");
    for line in e.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line:?}"));
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
    // --json carries what the text says: the hooks, the kept copies, the
    // integrity check.
    let plan = k.json(&["restore", "--target", "registry", "--dry-run"]);
    assert_eq!(plan["hooks"]["pre_restore"], "echo stopping the service; echo to stderr >&2", "{plan}");
    assert_eq!(plan["hooks"]["run"], true, "{plan}");
    assert_eq!(plan["keep_old"], true, "{plan}");
    assert!(
        plan["plan"].as_array().unwrap().iter().any(|l| l.as_str().unwrap().contains("kept copies")),
        "{plan}"
    );
    let done = k.json(&["restore", "--target", "registry", "--yes"]);
    assert_eq!(done["restored"][0]["integrity_check"], "ok", "{done}");
    // A failing hook's last words are in the error.
    let mut k2 = Kura::with_repo(&k.repo, vec![]);
    config(
        &mut k2,
        &format!("[target.registry]\ntype = \"sqlite\"\npath = \"{}\"\npre_restore = \"echo cannot stop it; exit 3\"\n", db.display()),
    );
    let out = k2.run(&["-q", "restore", "--target", "registry", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("it said: cannot stop it"), "{}", stderr(&out));
}

#[test]
fn help_shows_a_commands_own_options_first_and_compression_only_where_it_writes() {
    let k = Kura::new();
    let help = k.ok(&["snapshots", "--help"]);
    let (own, globals) = help.split_once("Global options:").expect("a heading of their own");
    assert!(own.contains("--host") && own.contains("--target"), "{help}");
    assert!(!own.contains("--password-file") && globals.contains("--password-file"), "{help}");
    assert!(!help.contains("--compression"), "{help}");
    assert_eq!(k.run(&["snapshots", "--compression", "fast"]).status.code(), Some(2));
    for writes in ["backup", "prune"] {
        let help = k.ok(&[writes, "--help"]);
        assert!(help.split_once("Global options:").unwrap().0.contains("--compression"), "{writes}: {help}");
    }
}
