//! The config parser against every kind of mistake, and the examples users
//! copy.
use super::values::expand;
use super::*;

fn env(k: &str) -> Option<String> {
    (k == "APP_DIR").then(|| "/srv/app".to_string())
}

const GOOD: &str = r#"
[repository.main]
url = "/var/backups/kura"
password_file = "/etc/kura/password"

[target.registry]

type = "sqlite"
path = "${APP_DIR}/data/app.db"
pre_restore = "systemctl stop app"
post_restore = "systemctl start app"

[target.logs]

type = "files"
paths = ["${APP_DIR}/logs"]
exclude = ["*.tmp"]
changed_within = "24h"
"#;

#[test]
fn parses_targets_with_env_expansion() {
    let c = Config::parse(GOOD, &env).unwrap();
    let reg = c.target("registry").unwrap();
    assert_eq!(reg.repository, "main");
    assert_eq!(reg.kind, TargetKind::Sqlite(SqliteTarget { path: "/srv/app/data/app.db".into() }));
    assert_eq!(reg.pre_restore.as_deref(), Some("systemctl stop app"));
    match &c.target("logs").unwrap().kind {
        TargetKind::Files(f) => assert_eq!(f.changed_within, Some(Duration::from_secs(86400))),
        other => panic!("{other:?}"),
    }
}

/// The configuration README.md shows is one kura reads.
#[test]
fn the_readme_example_parses() {
    let readme = include_str!("../../../../README.md");
    let start = readme.find("```toml\n").expect("a toml block") + 8;
    let text = &readme[start..start + readme[start..].find("```").expect("its end")];
    let env = |_: &str| Some("value".to_string());
    let cfg = Config::parse(text, &env).unwrap_or_else(|e| panic!("README's example: {e}"));
    assert_eq!(cfg.repositories["offsite"].s3.storage_class.as_deref(), Some("STANDARD_IA"));
    assert_eq!(cfg.targets["registry"].kept.last, Some(3));
    for name in cfg.targets.keys() {
        assert!(cfg.target(name).is_ok(), "{name}");
    }
}

#[test]
fn every_mistake_names_its_place() {
    let cases: &[(&str, &str)] = &[
        ("[target.x]\ntype = \"sqlite\"\npth = \"/a\"\n", "target.x: unknown field `pth`"),
        ("[target.x]\ntype = \"oracle\"\n", "target.x.type: unknown target type \"oracle\""),
        ("[target.x]\npath = \"/a\"\n", "target.x: missing `type`"),
        ("[target.x]\ntype = \"files\"\npaths = [\"/a\"]\nchanged_within = \"soon\"\n", "\"soon\" is not a duration"),
        ("[targets.x]\n", "targets: unknown section"),
        ("[repository.a]\nurl = \"/a\"\n[repository.b]\nurl = \"/b\"\n[target.x]\ntype = \"sqlite\"\npath = \"/a\"\n", "target.x.repository: no repository named \"main\""),
        ("[target.x\n", "kura.toml:"),
        ("[target.x]\ntype = \"sqlite\"\npath = \"/a\"\ncomponent = \"db\"\n", "target.x.component: unknown component \"db\" (known: database, configs, data, logs)"),
        ("[target.x]\ntype = \"postgres\"\nurl = \"postgres://h/a\"\ndatabases = [\"*\"]\ntables = [\"t\"]\n", "target.x.tables: table lists apply to one database"),
        ("[target.x]\ntype = \"postgres\"\nurl = \"postgres://h/a\"\ndatabases = [\"*\", \"b\"]\n", "target.x.databases: names databases"),
        ("[target.x]\ntype = \"object_store\"\nurl = \"\"\n", "target.x.url: must name a bucket prefix"),
        ("[target.x]\ntype = \"object_store\"\nurl = \"s3://b\"\nkeys = 1\n", "target.x: unknown field `keys`"),
        ("[target.x]\ntype = \"object_store\"\nurl = \"s3://b\"\nkey_date = \"%H\"\n", "target.x.key_date: \"%H\" is not a date format"),
        ("[target.x]\ntype = \"object_store\"\nurl = \"s3://b\"\nkey_date = \"%Q\"\n", "target.x.key_date"),
    ];
    for (text, want) in cases {
        let err = Config::parse(text, &env).unwrap_err().to_string();
        assert!(err.contains(want), "{text:?}: got {err:?}, want {want:?}");
    }
    let err = Config::parse(GOOD, &env).unwrap().target("nope").unwrap_err().to_string();
    assert_eq!(err, "no target named \"nope\" (configured: logs, registry)");
    assert_eq!(
        parse_duration("0000000010342869041953112064h").unwrap_err(),
        "\"0000000010342869041953112064h\" is longer than a hundred years"
    );
    assert_eq!(parse_duration("36600d"), Ok(Duration::from_secs(36600 * 86400)));
    assert!(parse_duration("36601d").is_err());
    // An unset variable is an error where it is used, not before.
    let text =
        "[target.x]\ntype = \"sqlite\"\npath = \"${NOPE}/a\"\n[target.y]\ntype = \"sqlite\"\npath = \"/b\"\n";
    let cfg = Config::parse(text, &env).unwrap();
    assert!(cfg.target("y").is_ok());
    assert_eq!(
        cfg.target("x").unwrap_err().to_string(),
        "target.x.path: environment variable NOPE is not set"
    );
}

#[test]
fn compression_choices() {
    assert_eq!(parse_compression("auto"), Ok(None));
    assert_eq!(parse_compression("off"), Ok(Some(0)));
    assert_eq!(parse_compression("fast"), Ok(Some(1)));
    assert_eq!(parse_compression("max"), Ok(Some(19)));
    assert_eq!(parse_compression("7"), Ok(Some(7)));
    for bad in ["0", "23", "-1", "turbo", ""] {
        assert!(parse_compression(bad).is_err(), "{bad}");
    }
    let err = Config::parse("[repository.main]\nurl = \"/r\"\ncompression = \"turbo\"\n", &env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "repository.main.compression: \"turbo\" is not a compression (use auto, off, fast, max, or a level from 1 to 22)"
    );
}

#[test]
fn literal_secrets_are_found_and_references_are_not() {
    let text = r#"
[repository.main]
url = "s3://bucket/kura"
password_file = "/etc/kura/password"

[target.shop]

type = "mysql"
url = "mysql://app:hunter2@db:3306/shop"

[target.env]

type = "mysql"
url = "mysql://app:${SHOP_PW}@db/shop"

[target.nopw]

type = "postgres"
url = "postgres://app@db/shop"

[target.query]

type = "postgres"
url = "postgres://app@db/shop?sslmode=require&password=hunter3"

[target.cmd]

type = "command"
command = "dump"
api_token = "abc123"

[monitor]
pushgateway = "http://ops:gw-pw@127.0.0.1:9091"

[notify.slack]
type = "slack"
url = "https://hooks.slack.com/services/T0/B0/abcdef"

[notify.hook]
type = "webhook"
url = "${HOOK_URL}"

[notify.mail]
type = "email"
smtp = "smtp://kura:mail-pw@mail.example.org:587"
from = "kura@example.org"
to = ["ops@example.org"]

[notify.plain]
type = "webhook"
url = "https://example.org/kura?sig=f00d&x=1"
"#;
    assert_eq!(
        literal_secrets(text),
        vec![
            "monitor.pushgateway",
            "notify.mail.smtp",
            "notify.plain.url",
            "notify.slack.url",
            "target.cmd.api_token",
            "target.query.url",
            "target.shop.url"
        ]
    );
    // An ordinary query parameter is not a secret.
    assert!(literal_secrets("[target.t]\nurl = \"postgres://db/shop?sslmode=require&monkey=1\"\n").is_empty());
    assert!(literal_secrets("not [ toml").is_empty());
}

#[test]
fn postgres_from_host_port_user_database() {
    let c = Config::parse(
        "[target.a]\ntype = \"postgres\"\nhost = \"db.internal\"\nport = 5433\nuser = \"app\"\ndatabase = \"shop\"\n\n[target.b]\ntype = \"postgres\"\nhost = \"/run/postgresql\"\ndatabase = \"my db\"\n",
        &env,
    )
    .unwrap();
    let url = |n: &str| match &c.target(n).unwrap().kind {
        TargetKind::Postgres(p) => p.url.clone(),
        _ => unreachable!(),
    };
    assert_eq!(url("a"), "postgres://app@db.internal:5433/shop");
    assert_eq!(url("b"), "postgres:///my%20db?host=%2Frun%2Fpostgresql");
    let err =
        Config::parse("[target.a]\ntype = \"postgres\"\nurl = \"postgres://h/x\"\nhost = \"h\"\n", &env)
            .unwrap_err();
    assert!(
        err.to_string().contains("target.a.url: give url, or host/port/user/database, not both"),
        "{err}"
    );
}

#[test]
fn dollar_escape_keeps_a_literal() {
    assert_eq!(expand("a$${b}", "p", &env).unwrap(), "a${b}");
}

#[test]
fn plans_parse_and_their_mistakes_name_their_place() {
    let base = "[repository.main]\nurl = \"/r\"\n[target.app_db]\ntype = \"sqlite\"\npath = \"/a.db\"\n[target.logs]\ntype = \"files\"\npaths = [\"/var/log/app\"]\n";
    let cfg = Config::parse(
        &format!("{base}[plan.daily]\nschedule = \"0 2 * * *\"\ntargets = [\"app_db\", \"logs\"]\nkeep = {{ daily = 7, within = \"2d\" }}\nprune = true\n"),
        &env,
    )
    .unwrap();
    let p = &cfg.plans["daily"];
    assert_eq!(p.targets, ["app_db", "logs"]);
    assert_eq!(p.keep.daily, Some(7));
    assert_eq!(p.keep.within, Some(chrono::Duration::days(2)));
    assert!(p.prune);
    assert_eq!(p.schedule.text(), "0 2 * * *");
    for (plan, says) in [
        ("schedule = \"0 2 * *\"\ntargets = [\"app_db\"]\n", "plan.p.schedule: \"0 2 * *\" has 4 fields"),
        ("schedule = \"0 25 * * *\"\ntargets = [\"app_db\"]\n", "plan.p.schedule: hour: 25 is outside 0-23"),
        (
            "schedule = \"0 2 * * *\"\ntargets = [\"nope\"]\n",
            "plan.p.targets: no target named \"nope\" (configured: app_db, logs)",
        ),
        ("schedule = \"0 2 * * *\"\ntargets = []\n", "plan.p.targets: names no target"),
        ("targets = [\"app_db\"]\n", "plan.p: missing `schedule`"),
        (
            "schedule = \"0 2 * * *\"\ntargets = [\"app_db\"]\nkeep = {}\n",
            "plan.p.keep: keeps nothing but the newest snapshot",
        ),
        (
            "schedule = \"0 2 * * *\"\ntargets = [\"app_db\"]\nkeep = { daily = 0 }\n",
            "plan.p.keep.daily: must be a whole number, 1 or more",
        ),
        (
            "schedule = \"0 2 * * *\"\ntargets = [\"app_db\"]\nkeep = { fortnightly = 2 }\n",
            "plan.p.keep.fortnightly: unknown rule",
        ),
        (
            "schedule = \"0 2 * * *\"\ntargets = [\"app_db\"]\ncopy_to = [\"offsite\"]\n",
            "plan.p.copy_to: no repository named \"offsite\" (configured: main)",
        ),
        (
            "schedule = \"0 2 * * *\"\ntargets = [\"app_db\"]\nrepository = \"main\"\ncopy_to = [\"main\"]\n",
            "plan.p.copy_to: names \"main\", a repository the plan writes to",
        ),
        (
            "schedule = \"0 2 * * *\"\ntargets = [\"app_db\"]\ncatch_up = 1\n",
            "plan.p.catch_up: must be true or false",
        ),
        ("schedule = \"0 2 * * *\"\ntargets = [\"app_db\"]\nevery = 1\n", "plan.p.every: unknown key"),
        (
            "schedule = \"0 2 * * *\"\ntargets = [\"app_db\"]\ntimezone = \"Mars/Olympus\"\n",
            "plan.p.timezone: unknown time zone \"Mars/Olympus\"",
        ),
        (
            "schedule = \"0 2 * * *\"\ntargets = [\"app_db\"]\ntimezone = \"../../etc/passwd\"\n",
            "plan.p.timezone: \"../../etc/passwd\" is not a time zone name",
        ),
    ] {
        let err = Config::parse(&format!("{base}[plan.p]\n{plan}"), &env).unwrap_err().to_string();
        assert!(err.contains(says), "{plan}: {err}");
    }
    let err = Config::parse(
        &format!("{base}[plan.\"../../etc/x\"]\nschedule = \"0 2 * * *\"\ntargets = [\"app_db\"]\n"),
        &env,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("a plan's name is letters, digits, - and _ only"), "{err}");
}

#[test]
fn check_lists_every_problem_with_its_line_and_column() {
    let text = r#"[repository.main]
url = "/r"
[repository.offsite]
url = "${OFFSITE_URL}"

[target.app_db]
type = "sqlite"
path = "/a.db"
[target.logs]
type = "files"
paths = ["/var/log/app"]
changed_within = "7 days"
[target.typo]
type = "sqlite"
pathh = "/b.db"

[plan.daily]
schedule = "0 25 * * *"
targets = ["app_db"]
[plan.weekly]
schedule = "0 3 * * SUN"
targets = ["app_db", "logs"]
[plan.other]
schedule = "0 5 * * *"
targets = ["nope"]
[plan.nightly]
schedule = "0 3 * * *"
targets = ["app_db"]
copy_to = ["offsite"]
[plan.quiet]
schedule = "0 4 * * *"
targets = ["app_db"]
keep = {}
"#;
    let now = chrono::NaiveDate::from_ymd_opt(2026, 12, 2).unwrap().and_hms_opt(12, 0, 0).unwrap();
    let problems = check(text, "kura.toml", &env, now);
    let lines: Vec<String> = problems
        .iter()
        .map(|p| {
            let (line, col, place) =
                (p.line.unwrap_or(0), p.column.unwrap_or(0), p.place.as_deref().unwrap_or("-"));
            format!("{line}:{col} {:?} {place}: {}", p.severity, p.message)
        })
        .collect();
    let want = [
        "4:1 Error repository.offsite.url: environment variable OFFSITE_URL is not set",
        "12:1 Error target.logs.changed_within: \"7 days\" is not a duration",
        "15:1 Error unknown field `pathh`",
        "18:1 Error hour: 25 is outside 0-23",
        "21:1 Warning plans nightly and weekly both back up app_db at 2026-12-06 03:00",
        "25:1 Error no target named \"nope\"",
        "33:1 Error keeps nothing but the newest snapshot",
    ];
    assert_eq!(problems.len(), want.len(), "{lines:#?}");
    for (got, want) in lines.iter().zip(want) {
        let (at, what) = want.split_once(' ').unwrap();
        assert!(
            got.starts_with(at) && got.contains(what.split_once(' ').unwrap().1),
            "{got} / {want}\n{lines:#?}"
        );
    }
    // The first problem is what loading reports; a config without
    // problems checks clean.
    assert!(Config::parse(text, &env).is_err());
    let clean = "[repository.main]\nurl = \"/r\"\n[target.a]\ntype = \"sqlite\"\npath = \"/a.db\"\n";
    assert!(check(clean, "kura.toml", &env, now).is_empty());
    let broken = check("[plan\nx = 1\n", "kura.toml", &env, now);
    assert_eq!(broken.len(), 1);
    assert_eq!(broken[0].line, Some(1), "{broken:?}");
}

#[test]
fn drill_samples_and_scratch_servers_are_checked() {
    let parse =
        |t: &str| Config::parse(&format!("[repository.main]\nurl = \"/r\"\n[target.x]\n{t}"), &|_| None);
    let c = parse("type = \"files\"\npaths = [\"/d\"]\nsample = \"12.5%\"\n").unwrap();
    assert_eq!(c.targets["x"].sample, Some(0.125));
    let c = parse("type = \"command\"\nbackup = \"cat x\"\nchunk_size = \"64KiB\"\n").unwrap();
    assert_eq!(c.targets["x"].chunk_size, Some(64 << 10));
    for (t, want) in [
        ("type = \"files\"\npaths = [\"/d\"]\nsample = \"0%\"\n", "target.x.sample"),
        ("type = \"files\"\npaths = [\"/d\"]\nsample = \"ten\"\n", "target.x.sample"),
        ("type = \"sqlite\"\npath = \"/a.db\"\nsample = \"10%\"\n", "files and object_store targets only"),
        (
            "type = \"postgres\"\nurl = \"postgres://a@h/db\"\ndrill_server = \"mysql://h/x\"\n",
            "target.x.drill_server",
        ),
        (
            "type = \"sqlite\"\npath = \"/a.db\"\ndrill_server = \"postgres://h/x\"\n",
            "postgres and mysql targets only",
        ),
        ("type = \"sqlite\"\npath = \"/a.db\"\nchunk_size = \"48KiB\"\n", "target.x.chunk_size"),
        ("type = \"sqlite\"\npath = \"/a.db\"\nchunk_size = \"8MiB\"\n", "power of two from 4KiB to 4MiB"),
    ] {
        let e = parse(t).unwrap_err().to_string();
        assert!(e.contains(want), "{t}: {e}");
    }
    let c =
        parse("type = \"mysql\"\nurl = \"mysql://a@h/shop\"\ndrill_server = \"mysql://d@scratch:3307/x\"\n")
            .unwrap();
    assert_eq!(c.targets["x"].drill_server.as_deref(), Some("mysql://d@scratch:3307/x"));
}
