//! Monitoring through the real binary: `kura health` and the daemon's
//! `/health`, `/health/PLAN` and `/metrics` (behind a bearer token), read
//! from the run history; the metrics checked by `promtool` and scraped by
//! a real Prometheus.
mod common;

use std::time::Duration;

use common::*;
use kura_testkit::{closed_port, http, reserve_port, Prometheus, Pushgateway};

const TOKEN: &str = "s3cret-monitor-token";

/// A running `kura serve`, killed if the test ends early.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "waited {secs}s for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

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

    let _daemon = Daemon(
        k.cmd(&["serve"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
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
    ] {
        assert!(metrics.contains(want), "{want} missing from\n{metrics}");
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
