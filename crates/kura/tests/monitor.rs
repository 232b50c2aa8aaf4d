//! Monitoring through the real binary: `kura health` and the daemon's
//! `/health`, `/health/PLAN` and `/metrics` (behind a bearer token), read
//! from the run history; the metrics checked by `promtool` and scraped by
//! a real Prometheus.
mod common;

use std::time::Duration;

use common::*;
use kura_testkit::{closed_port, http, reserve_port, Prometheus, Pushgateway};

const TOKEN: &str = "s3cret-monitor-token";

/// Status code and body of a GET.
fn get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let reply = http(port, "GET", path, &auth).expect("connect to kura serve");
    let code = reply.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn health_turns_unhealthy_exactly_when_a_backup_goes_stale_and_prometheus_scrapes_the_metrics() {
    let mut k = Kura::new();
    let conf = k.path("etc");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("app.conf"), b"workers = 4\n").unwrap();
    std::fs::write(conf.join("big.bin"), noise(200_000, 3)).unwrap();
    let token_file = k.path("monitor.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let lease = reserve_port();
    let port = lease.port;
    config(
        &mut k,
        &format!(
            "[target.configs]\ntype = \"files\"\npaths = [\"{}\"]\n\
             [plan.daily]\nschedule = \"0 2 * * *\"\ntargets = [\"configs\"]\nmax_age = \"1h\"\n\
             [plan.weekly]\nschedule = \"0 3 * * 0\"\ntargets = [\"configs\"]\n\
             [monitor]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n",
            conf.display(),
            token_file.display()
        ),
    );
    k.init();

    // Nothing has run: unhealthy, on the command line too.
    let out = k.cmd(&["health", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let h = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(h["status"], "unhealthy");
    assert_eq!(h["plans"]["daily"]["reasons"][0], "no backup yet");
    // The weekly plan's limit follows its schedule: 1.25 weeks.
    assert_eq!(h["plans"]["weekly"]["max_age_seconds"], 7 * 86_400 * 5 / 4);

    let _daemon = Daemon::quiet(&k);
    wait_for("the monitor to listen", 30, || http(port, "GET", "/", "").is_ok());
    // Without the token, or with a wrong one: 401 and no detail.
    for token in [None, Some("wrong")] {
        let (code, body) = get(port, "/health", token);
        assert_eq!(code, 401, "{body}");
        assert!(!body.contains("daily"), "no detail without the token: {body}");
    }
    let (code, body) = get(port, "/health", Some(TOKEN));
    assert_eq!(code, 503, "{body}");
    assert_eq!(json(&body)["plans"]["daily"]["reasons"][0], "no backup yet");
    assert_eq!(get(port, "/health/nope", Some(TOKEN)).0, 404);
    let post = http(port, "POST", "/health", &format!("Authorization: Bearer {TOKEN}\r\n")).unwrap();
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");

    // A run from cron, beside the daemon: the daily plan is healthy, the
    // whole is not until the weekly one has run too.
    k.ok(&["run", "daily"]);
    let (code, body) = get(port, "/health/daily", Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    let h = json(&body);
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["backup_count"], 1);
    assert_eq!(h["latest_size"], 200_000 + 12, "the run's bytes: {body}");
    assert!(h["last_backup"].is_string() && h["age_seconds"].as_i64().unwrap() < 60, "{body}");
    assert_eq!(get(port, "/health", Some(TOKEN)).0, 503, "the weekly plan has not run");
    k.ok(&["run", "weekly"]);
    assert_eq!(get(port, "/health", Some(TOKEN)).0, 200);

    // Stale exactly past the limit (1h): the same answer on the command
    // line, with a clock moved forward.
    let health_at = |secs: i64| {
        k.cmd(&["health", "--plan", "daily"])
            .env("KURA_TEST_CLOCK_OFFSET_SECS", secs.to_string())
            .output()
            .unwrap()
    };
    assert_eq!(health_at(3_300).status.code(), Some(0));
    let stale = health_at(3_900);
    assert_eq!(stale.status.code(), Some(1));
    let said = String::from_utf8_lossy(&stale.stdout);
    assert!(said.contains("the last successful backup is 1h 5m old (limit 1h)"), "{said}");

    // The metrics pass promtool's lint and say what the history says.
    let (code, metrics) = get(port, "/metrics", Some(TOKEN));
    assert_eq!(code, 200);
    let lint = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .output_with_stdin(&metrics);
    assert!(lint.0.success(), "promtool check metrics: {}\n{metrics}", lint.1);
    for want in [
        "kura_backup_success_total{plan=\"daily\"} 1",
        "kura_backup_failures_total{plan=\"daily\"} 0",
        "kura_health_status{plan=\"daily\"} 1",
        "kura_run_in_progress{plan=\"daily\"} 0",
        "kura_backup_read_bytes{plan=\"daily\",target=\"configs\",repository=\"main\"} 200012",
        "kura_backup_files{plan=\"daily\",target=\"configs\",repository=\"main\"} 2",
        "kura_repository_stored_bytes{repository=\"main\"} ",
        "kura_alerts_open{level=\"critical\"} 0",
    ] {
        assert!(metrics.contains(want), "{want} missing from\n{metrics}");
    }

    // The shipped alert rules and dashboard: valid, their unit tests pass,
    // and every metric they name is one kura serves.
    let contrib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib");
    for args in
        [&["check", "rules", "prometheus-alerts.yml"][..], &["test", "rules", "prometheus-alerts.test.yml"]]
    {
        let out = std::process::Command::new("promtool").args(args).current_dir(&contrib).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
    }
    for file in ["prometheus-alerts.yml", "grafana-dashboard.json"] {
        let text = std::fs::read_to_string(contrib.join(file)).unwrap();
        if file.ends_with(".json") {
            serde_json::from_str::<serde_json::Value>(&text).expect("the dashboard is JSON");
        }
        let mut rest = text.as_str();
        while let Some(i) = rest.find("kura_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            rest = &rest[i + name.len()..];
            if name == "kura_" {
                continue;
            }
            assert!(
                metrics.contains(&format!("# TYPE {name} ")),
                "{file} names {name}, which kura does not serve"
            );
        }
    }

    // A run stuck holding the plan's lock for longer than the limit.
    let lock = k.path("state/plan-daily.lock");
    let since = chrono::Utc::now() - chrono::Duration::hours(2);
    std::fs::write(&lock, format!("pid 1 since {}\n", since.format("%Y-%m-%d %H:%M:%S UTC"))).unwrap();
    let mut holder = std::process::Command::new("flock")
        .args(["-n", "-o", lock.to_str().unwrap(), "sleep", "60"])
        .spawn()
        .unwrap();
    wait_for("the lock to be held", 10, || {
        get(port, "/metrics", Some(TOKEN)).1.contains("kura_run_in_progress{plan=\"daily\"} 1")
    });
    let (code, body) = get(port, "/health/daily", Some(TOKEN));
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("a run has been going since"), "{body}");
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(get(port, "/health/daily", Some(TOKEN)).0, 200, "the lock is free again");

    // A real Prometheus scrapes it with the token.
    let prom = Prometheus::start(&format!("127.0.0.1:{port}"), &token_file);
    wait_for("Prometheus to scrape kura", 60, || {
        prom.query("kura_backup_success_total{plan=\"weekly\"}").contains("\"1\"]")
    });
    let up = prom.query("up{job=\"kura\"}");
    assert!(up.contains("\"1\"]"), "{up}");
    drop(lease);
}

#[test]
fn kura_run_pushes_its_metrics_to_a_pushgateway_and_a_textfile_and_an_outage_fails_no_backup() {
    let gateway = Pushgateway::start();
    let mut k = Kura::new();
    let conf = k.path("etc");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("app.conf"), b"workers = 4\n").unwrap();
    let textfile = k.path("kura.prom");
    let setup = |k: &mut Kura, port: u16| {
        config(
            k,
            &format!(
                "[target.configs]\ntype = \"files\"\npaths = [\"{}\"]\n\
                 [plan.daily]\nschedule = \"0 2 * * *\"\ntargets = [\"configs\"]\n\
                 [monitor]\npushgateway = \"http://127.0.0.1:{port}\"\npushgateway_job = \"backups\"\ntextfile = \"{}\"\n",
                conf.display(),
                textfile.display()
            ),
        )
    };
    setup(&mut k, gateway.port);
    k.init();
    k.ok(&["run", "daily"]);
    let pushed = gateway.metrics();
    let line = pushed
        .lines()
        .find(|l| l.starts_with("kura_backup_success_total{") && l.contains("plan=\"daily\""))
        .unwrap_or_else(|| panic!("no pushed kura_backup_success_total in\n{pushed}"));
    assert!(line.contains("job=\"backups\"") && line.ends_with(" 1"), "{line}");
    let text = std::fs::read_to_string(&textfile).unwrap();
    assert!(text.contains("kura_backup_success_total{plan=\"daily\"} 1"), "{text}");
    let lint = std::process::Command::new("promtool").args(["check", "metrics"]).output_with_stdin(&text);
    assert!(lint.0.success(), "{}", lint.1);

    // The gateway is gone: the backup still succeeds, the run says why
    // its metrics did not go out, and the textfile is still written.
    let closed = closed_port();
    setup(&mut k, closed.port);
    let out = k.cmd(&["run", "daily"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("pushgateway http://127.0.0.1:"), "{}", stderr(&out));
    let text = std::fs::read_to_string(&textfile).unwrap();
    assert!(text.contains("kura_backup_success_total{plan=\"daily\"} 2"), "{text}");
}

trait OutputWithStdin {
    fn output_with_stdin(&mut self, input: &str) -> (std::process::ExitStatus, String);
}

impl OutputWithStdin for std::process::Command {
    fn output_with_stdin(&mut self, input: &str) -> (std::process::ExitStatus, String) {
        use std::io::Write;
        let mut child = self
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start");
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status,
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    }
}

/// A tree of `n` compressible text files under `dir`.
fn text_tree(dir: &std::path::Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let line = format!("row {i}: the quick brown fox jumps over the lazy dog\n");
        std::fs::write(dir.join(format!("doc-{i:03}.txt")), line.repeat(400 + i)).unwrap();
    }
}

/// Every file under `dir` overwritten in place with random bytes of its
/// size, as ransomware encrypting in place would leave it.
fn encrypt_in_place(dir: &std::path::Path) {
    for (i, e) in std::fs::read_dir(dir).unwrap().flatten().enumerate() {
        let len = e.metadata().unwrap().len() as usize;
        std::fs::write(e.path(), noise(len, 1000 + i as u64)).unwrap();
    }
}

#[test]
fn notifications_tell_a_problem_once_remind_while_it_lasts_and_tell_its_end() {
    let hooks = kura_testkit::Receiver::start();
    let mail = kura_testkit::SmtpServer::start();
    let mut k = Kura::new();
    let data = k.path("data");
    text_tree(&data, 30);
    let missing = k.path("gone");
    let write_config = |k: &mut Kura, path: &std::path::Path| {
        config(
            k,
            &format!(
                "[target.data]\ntype = \"files\"\npaths = [\"{}\"]\n\
                 [plan.daily]\nschedule = \"0 2 * * *\"\ntargets = [\"data\"]\n\
                 [alerts]\nremind_every = \"1h\"\n\
                 [notify.slack]\ntype = \"slack\"\nurl = \"{}\"\n\
                 [notify.hook]\ntype = \"webhook\"\nurl = \"{}\"\nlevels = [\"critical\", \"warning\", \"info\"]\n\
                 body = '{{\"text\": \"{{{{status}}}} {{{{level}}}} {{{{plan}}}}: {{{{summary}}}}\", \"host\": \"{{{{host}}}}\"}}'\n\
                 [notify.mail]\ntype = \"email\"\nsmtp = \"smtp://{}:{}@localhost:{}\"\nfrom = \"kura@example.org\"\nto = [\"ops@example.org\"]\n\
                 [notify.ping]\ntype = \"ping\"\nurl = \"{}\"\n\
                 [notify.broken]\ntype = \"webhook\"\nurl = \"{}\"\n",
                path.display(),
                hooks.url("/slack/T0/B0/secret"),
                hooks.url("/hook"),
                kura_testkit::SMTP_USER,
                kura_testkit::SMTP_PASSWORD,
                mail.port,
                hooks.url("/ping/5c1b0d3e"),
                hooks.url("/down"),
            ),
        );
    };
    write_config(&mut k, &data);
    // The SMTP server's own certificate, trusted for STARTTLS.
    k.env.push(("SSL_CERT_FILE".into(), mail.cert().display().to_string()));
    hooks.fail("/down", 503);
    k.init();

    // A good first run: pings paired by their run id, nothing to tell.
    k.ok(&["run", "daily"]);
    let pings = hooks.on("/ping/");
    assert_eq!(pings.len(), 2, "{pings:?}");
    assert!(pings[0].path.starts_with("/ping/5c1b0d3e/start?rid="), "{pings:?}");
    let rid = pings[0].path.split("rid=").nth(1).unwrap().to_string();
    assert_eq!(pings[1].path, format!("/ping/5c1b0d3e?rid={rid}"));
    assert!(hooks.on("/slack/").is_empty());

    // The target's directory is gone: the run fails. One critical message
    // on every channel that takes it, and a /fail ping with the error.
    write_config(&mut k, &missing);
    let out = k.cmd(&["run", "daily"]).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    let slack = hooks.on("/slack/");
    assert_eq!(slack.len(), 1, "{slack:?}: {}", stderr(&out));
    let text = serde_json::from_str::<serde_json::Value>(&slack[0].body).unwrap()["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        text.starts_with("[CRITICAL] kura on ") && text.contains("the last run of daily failed"),
        "{text}"
    );
    let hook = hooks.on("/hook");
    let last: serde_json::Value = serde_json::from_str(&hook.last().unwrap().body).unwrap();
    assert!(
        last["text"].as_str().unwrap().starts_with("failed critical daily: the last run of daily failed"),
        "{last}"
    );
    let fail = hooks.on("/ping/5c1b0d3e/fail");
    assert_eq!(fail.len(), 1);
    assert!(fail[0].body.contains("data"), "the ping carries the error: {}", fail[0].body);
    let mails = mail.messages();
    assert_eq!(mails.len(), 1, "{mails:?} {}", k.json(&["status"]));
    assert!(mails[0].contains("X-Auth: True") && mails[0].contains("X-TLS: True"), "{}", mails[0]);
    assert!(
        mails[0].contains("Subject: [CRITICAL] kura on") && mails[0].contains("the last run of daily failed")
    );
    // The broken channel's failure is recorded, the run's exit code is
    // the backup's own.
    let status = k.json(&["status"]);
    assert!(status["undelivered"].as_array().unwrap().iter().any(|u| u["channel"] == "broken"), "{status}");
    assert_eq!(status["alerts"][0]["key"], "failed:daily", "{status}");

    // Failing again: the same problem, not told again within the hour...
    k.cmd(&["run", "daily"]).output().unwrap();
    assert_eq!(hooks.on("/slack/").len(), 1);
    // ...but reminded once it has lasted an hour.
    k.cmd(&["run", "daily"]).env("KURA_TEST_CLOCK_OFFSET_SECS", "3700").output().unwrap();
    let slack = hooks.on("/slack/");
    assert_eq!(slack.len(), 2, "{slack:?}");
    assert!(slack[1].body.contains("[STILL CRITICAL]"), "{}", slack[1].body);

    // Back: one recovery message; info (the run's size) only where asked.
    // (On the clock the reminder ran on, so that runs stay in order.)
    k.env.push(("KURA_TEST_CLOCK_OFFSET_SECS".into(), "3700".into()));
    write_config(&mut k, &data);
    k.ok(&["run", "daily"]);
    let slack = hooks.on("/slack/");
    assert_eq!(slack.len(), 3, "{slack:?}");
    assert!(slack[2].body.contains("[RESOLVED]"), "{}", slack[2].body);
    let hook = hooks.on("/hook");
    assert!(hook.iter().any(|h| h.body.contains("success info daily: daily saved 1 target(s)")), "{hook:?}");
    assert_eq!(mail.messages().len(), 3, "critical, its reminder, its recovery");
    assert!(k.json(&["status"])["alerts"].as_array().unwrap().is_empty());

    // An ordinary day: two files edited. Nothing to say beyond info.
    std::fs::write(data.join("doc-001.txt"), b"edited\n").unwrap();
    std::fs::write(data.join("doc-002.txt"), b"edited too\n").unwrap();
    k.ok(&["run", "daily"]);
    assert_eq!(hooks.on("/slack/").len(), 3, "an ordinary change raises nothing");

    // Every file encrypted in place: the canary names the target.
    encrypt_in_place(&data);
    k.ok(&["run", "daily"]);
    let slack = hooks.on("/slack/");
    assert_eq!(slack.len(), 4, "{slack:?}");
    assert!(
        slack[3].body.contains("possible ransomware") && slack[3].body.contains("files of data changed"),
        "{}",
        slack[3].body
    );

    // Most of the data deleted: the size warning.
    for i in 0..25 {
        std::fs::remove_file(data.join(format!("doc-{i:03}.txt"))).unwrap();
    }
    k.ok(&["run", "daily"]);
    let slack = hooks.on("/slack/");
    assert!(
        slack.iter().any(|s| s.body.contains("[WARNING]") && s.body.contains("the backup of data read")),
        "{slack:?}"
    );
}

#[test]
fn the_daemon_tells_of_a_backup_going_stale_once_and_of_its_end() {
    let hooks = kura_testkit::Receiver::start();
    let mut k = Kura::new();
    let data = k.path("data");
    text_tree(&data, 3);
    config(
        &mut k,
        &format!(
            "[target.data]\ntype = \"files\"\npaths = [\"{}\"]\n\
             [plan.daily]\nschedule = \"0 2 * * *\"\ntargets = [\"data\"]\ndrill = \"*/2 * * * * *\"\n\
             [alerts]\nalert_after = \"3s\"\ncheck_every = \"1s\"\n\
             [notify.hook]\ntype = \"webhook\"\nurl = \"{}\"\n",
            data.display(),
            hooks.url("/hook")
        ),
    );
    k.init();
    k.ok(&["run", "daily"]);
    let _daemon = Daemon::quiet(&k);
    let got = hooks.wait_for("/hook", 1, 30);
    assert_eq!(got.len(), 1, "{got:?}");
    let m: serde_json::Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!((m["status"].as_str(), m["level"].as_str()), (Some("firing"), Some("critical")), "{m}");
    assert!(m["summary"].as_str().unwrap().starts_with("no successful backup of daily for"), "{m}");
    // Checked every second, told once.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(hooks.on("/hook").len(), 1);
    // Its drill schedule: drills run and are recorded.
    wait_for("a scheduled drill", 30, || !k.json(&["status"])["plans"]["daily"]["last_good_drill"].is_null());
    k.ok(&["run", "daily"]);
    let got = hooks.wait_for("/hook", 2, 30);
    let m: serde_json::Value = serde_json::from_str(&got[1].body).unwrap();
    assert_eq!(m["status"], "resolved", "{m}");
}

#[test]
fn report_measures_each_repository_projects_its_cost_and_quota_and_budget_warn() {
    let hooks = kura_testkit::Receiver::start();
    let k = {
        let mut k = Kura::new();
        let data = k.path("data");
        text_tree(&data, 12);
        let cfg = k.path("kura.toml");
        std::fs::write(
            &cfg,
            format!(
                "[repository.main]\nurl = \"{}\"\nprice_per_gb_month = 2000.0\nquota = \"1kB\"\n\
                 [target.data]\ntype = \"files\"\npaths = [\"{}\"]\n\
                 [plan.daily]\nschedule = \"0 2 * * *\"\ntargets = [\"data\"]\n\
                 [alerts]\nbudget = 0.01\nmin_free = \"1000TB\"\n\
                 [notify.hook]\ntype = \"webhook\"\nurl = \"{}\"\n",
                k.repo,
                data.display(),
                hooks.url("/hook")
            ),
        )
        .unwrap();
        k.env.push(("KURA_CONFIG".into(), cfg.display().to_string()));
        k.init();
        k
    };
    k.ok(&["run", "daily"]);
    std::fs::write(k.path("data/doc-000.txt"), b"changed\n").unwrap();
    k.ok(&["run", "daily"]);

    // The repository's size is its packs' bytes, measured after each run.
    let packs: u64 = files_under(&std::path::Path::new(&k.repo).join("data"))
        .iter()
        .map(|p| p.metadata().unwrap().len())
        .sum();
    let r = k.json(&["report"]);
    let main = &r["repositories"][0];
    assert_eq!(main["repository"], "main");
    assert_eq!(main["stored_bytes"], packs, "{r}");
    let cost = main["monthly_cost"].as_f64().unwrap();
    assert!((cost - packs as f64 / 1e9 * 2000.0).abs() < 1e-9, "{r}");
    let daily = &r["plans"][0];
    assert_eq!((daily["runs"].as_u64(), daily["succeeded"].as_u64()), (Some(2), Some(2)), "{r}");
    assert_eq!(daily["success_rate"], 1.0);
    let t = &daily["targets"][0];
    assert_eq!(t["target"], "data");
    assert!(t["dedup_ratio"].as_f64().unwrap() > 1.5, "the second run found most data there: {r}");
    assert!(t["compression_ratio"].as_f64().unwrap() > 2.0, "text compresses: {r}");

    let md = k.ok(&["report", "--format", "markdown"]);
    assert!(md.contains("| main | ") && md.contains("### daily"), "{md}");
    let html_path = k.path("report.html");
    k.ok(&["report", "--format", "html", "--output", html_path.to_str().unwrap()]);
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(
        html.starts_with("<!doctype html>") && html.matches("<svg").count() == 4,
        "one chart for the repository, three for the plan"
    );
    for external in ["<script", "src=", "href=", "@import"] {
        assert!(!html.contains(external), "the report is self-contained: {external}");
    }

    // Above its quota and the budget: one warning each, once.
    let hook = hooks.on("/hook");
    let said: Vec<String> = hook.iter().map(|h| h.body.clone()).collect();
    assert_eq!(said.iter().filter(|b| b.contains("above its quota of 1.0 kB")).count(), 1, "{said:?}");
    assert_eq!(said.iter().filter(|b| b.contains("above the budget of 0.01")).count(), 1, "{said:?}");
    // A disk that cannot hold the next backups: critical.
    assert!(
        said.iter().any(|b| b.contains("free on its disk, below 1000.0 TB") && b.contains("critical")),
        "{said:?}"
    );
}

/// `sample = "20%"`: a drill of a large files target restores and checks
/// about a fifth of its files (chosen afresh each drill) and accounts for
/// the rest.
#[test]
fn a_sampled_drill_restores_a_share_of_the_files() {
    let mut k = Kura::new();
    let data = k.path("data");
    text_tree(&data, 100);
    config(
        &mut k,
        &format!("[target.docs]\ntype = \"files\"\npaths = [\"{}\"]\nsample = \"20%\"\n", data.display()),
    );
    k.init();
    k.ok(&["backup", "--target", "docs"]);
    for _ in 0..2 {
        let r = k.json(&["drill", "--target", "docs"]);
        let t = &r[0]["targets"][0];
        assert!(t["error"].is_null(), "{r}");
        let c = &t["checks"][0];
        assert_eq!(
            (c["what"].as_str(), c["ok"].as_bool()),
            (Some("every file restored and verified"), Some(true)),
            "{r}"
        );
        let n = t["files"].as_u64().unwrap();
        assert!((5..=40).contains(&n), "about a fifth of 100: {r}");
        let detail = c["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(&format!("{n} of {n} files")) && detail.ends_with("(a 20% sample of 100)"),
            "{r}"
        );
    }
    let drills = k.path("state/drills");
    assert!(std::fs::read_dir(&drills).unwrap().flatten().all(|e| e.file_name() == "pending"), "removed");
}

#[test]
fn a_drill_restores_checks_times_and_removes_its_copy_and_a_failing_one_says_why() {
    let hooks = kura_testkit::Receiver::start();
    let mut k = Kura::new();
    let data = k.path("data");
    text_tree(&data, 20);
    std::fs::write(data.join("big.bin"), noise(8_000_000, 7)).unwrap();
    let db = k.path("app.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50) INSERT INTO users(name) SELECT 'u' || i FROM n;").unwrap();
    drop(c);
    let write = |k: &mut Kura, check: &str| {
        config(
            k,
            &format!(
                "[target.data]\ntype = \"files\"\npaths = [\"{}\"]\n\
                 [target.app_db]\ntype = \"sqlite\"\npath = \"{}\"\nchecks = [\"SELECT count(*) >= 50 FROM users\", \"{check}\"]\n\
                 rpo = \"30m\"\nrto = \"1h\"\n\
                 [plan.daily]\nschedule = \"0 2 * * *\"\ntargets = [\"data\", \"app_db\"]\nrpo = \"1h\"\nrto = \"0s\"\n\
                 [notify.hook]\ntype = \"webhook\"\nurl = \"{}\"\n",
                data.display(),
                db.display(),
                hooks.url("/hook")
            ),
        )
    };
    write(&mut k, "SELECT count(*) = 50 FROM users");
    k.init();
    k.ok(&["run", "daily"]);
    let drills = k.path("state/drills");

    let r = k.json(&["drill", "--plan", "daily"]);
    let targets = r[0]["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "{r}");
    for t in targets {
        assert!(t["error"].is_null(), "{r}");
        assert!(t["seconds"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(targets[0]["files"], 21, "every file of the snapshot: {r}");
    let checks: Vec<&str> =
        targets[1]["checks"].as_array().unwrap().iter().map(|c| c["what"].as_str().unwrap()).collect();
    assert_eq!(
        checks,
        [
            "PRAGMA integrity_check",
            "rows per table and schema objects as backed up",
            "SELECT count(*) >= 50 FROM users",
            "SELECT count(*) = 50 FROM users"
        ]
    );
    assert_eq!(targets[1]["checks"][1]["detail"], "1 tables, 50 rows, 1 objects", "{r}");
    let left: Vec<_> = std::fs::read_dir(&drills)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "pending")
        .collect();
    assert!(left.is_empty(), "the scratch copies are gone: {left:?}");
    let status = k.json(&["status"]);
    let drill = &status["plans"]["daily"]["last_good_drill"];
    assert!(drill["seconds"].as_f64().unwrap() > 0.0, "the measured restore time is kept: {status}");
    // Objectives: the backup is within its RPO; no restore takes 0 s, so
    // the RTO is missed, and a warning says by how much.
    let o = &status["plans"]["daily"]["objectives"];
    assert_eq!((o["rpo_seconds"].as_i64(), o["rpo_met"].as_bool()), (Some(3600), Some(true)), "{status}");
    assert_eq!((o["rto_seconds"].as_i64(), o["rto_met"].as_bool()), (Some(0), Some(false)), "{status}");
    assert!(
        hooks.on("/hook").iter().any(|h| h.body.contains("above its RTO of 0s")),
        "{:?}",
        hooks.on("/hook")
    );
    let later = k.cmd(&["status", "--json"]).env("KURA_TEST_CLOCK_OFFSET_SECS", "7200").output().unwrap();
    let later: serde_json::Value = serde_json::from_slice(&later.stdout).unwrap();
    assert_eq!(
        later["plans"]["daily"]["objectives"]["rpo_met"], false,
        "two hours on, the RPO of 1h is missed"
    );
    // The database's own objectives: met now, its RPO of 30m missed later.
    let own = &status["plans"]["daily"]["targets"]["app_db"];
    assert_eq!((own["rpo_met"].as_bool(), own["rto_met"].as_bool()), (Some(true), Some(true)), "{status}");
    assert_eq!(later["plans"]["daily"]["targets"]["app_db"]["rpo_met"], false, "{later}");
    let reasons = later["plans"]["daily"]["reasons"].to_string();
    assert!(
        reasons.contains("target app_db: the last successful backup is 2h")
            && reasons.contains("(its RPO 30m)"),
        "{reasons}"
    );

    // A check that fails: exit 1, the check named, a critical alert.
    write(&mut k, "SELECT count(*) > 1000 FROM users");
    let out = k.cmd(&["drill", "--plan", "daily"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .contains("FAIL  app_db: check failed: SELECT count(*) > 1000 FROM users (answered \"0\")"),
        "{}",
        stderr(&out)
    );
    let hook = hooks.on("/hook");
    assert!(
        hook.iter()
            .any(|h| h.body.contains("the restore drill of daily failed") && h.body.contains("critical")),
        "{hook:?}"
    );
    assert!(
        std::fs::read_dir(&drills).unwrap().flatten().all(|e| e.file_name() == "pending"),
        "removed after a failure too"
    );

    // A damaged pack: the drill fails on it and says so.
    write(&mut k, "SELECT count(*) = 50 FROM users");
    let packs = files_under(&std::path::Path::new(&k.repo).join("data"));
    let biggest = packs.iter().max_by_key(|p| p.metadata().unwrap().len()).unwrap();
    let mut bytes = std::fs::read(biggest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(biggest, bytes).unwrap();
    let out = k.cmd(&["drill", "--target", "data"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("FAIL  data:"), "{}", stderr(&out));

    // Killed midway: the next drill removes what it left.
    let mut killed = false;
    // Stopped at the test gate once its copy is restored: no race with
    // the clock.
    let gate = k.path("gate");
    let mut drill = k.gated(&["drill", "--target", "app_db", "--target", "data"], "drill-restored", &gate);
    drill.kill().unwrap();
    drill.wait().unwrap();
    if std::fs::read_dir(&drills).unwrap().flatten().any(|e| e.file_name() != "pending") {
        killed = true;
    }
    assert!(killed, "no drill was caught with its copy in place: the test proved nothing");
    let out = k.cmd(&["drill", "--target", "app_db"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("left by an interrupted drill"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(std::fs::read_dir(&drills).unwrap().flatten().all(|e| e.file_name() == "pending"));
}
