//! `kura doctor`: what would stop the first scheduled run, found before it
//! runs. Each check says OK, WARN or FAIL, what it saw, and what to do.
//! Nothing is changed but a probe written and removed in each repository
//! (a session object, which every kura already writes and ignores).
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use chrono::{DateTime, Utc};
use kura_policy::{Config, Plan, Target, TargetKind};
use serde::Serialize;

use crate::units::human_bytes;
use crate::{Context, RepoSpec, Repos};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub verdict: Verdict,
    /// What was checked (`repository main`, `target app_db`).
    pub check: String,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

fn finding(
    verdict: Verdict,
    check: impl Into<String>,
    detail: impl Into<String>,
    hint: Option<&str>,
) -> Finding {
    Finding { verdict, check: check.into(), detail: detail.into(), hint: hint.map(str::to_string) }
}

/// A file holding a secret should be its owner's alone.
pub fn secret_file(check: &str, path: &Path) -> Finding {
    match std::fs::metadata(path) {
        Err(e) => finding(
            Verdict::Fail,
            check,
            format!("{}: {e}", path.display()),
            Some("create it, or fix the path"),
        ),
        Ok(m) if m.permissions().mode() & 0o077 != 0 => finding(
            Verdict::Warn,
            check,
            format!("{} is readable by others (mode {:o})", path.display(), m.permissions().mode() & 0o777),
            Some("chmod 600 it"),
        ),
        Ok(_) => finding(Verdict::Ok, check, format!("{} is its owner's alone", path.display()), None),
    }
}

/// Every check that needs the repositories, the servers or the history.
pub async fn examine(ctx: &Context, repos: &Repos, cfg: &Config, state_dir: &Path) -> Vec<Finding> {
    let mut out = Vec::new();
    for (name, r) in &cfg.repositories {
        if let Some(p) = &r.password_file {
            out.push(secret_file(&format!("password file of {name}"), p));
        }
        out.push(repository(repos, cfg, name, ctx).await);
        if let Some(f) = free_space(cfg, name, &r.url, state_dir) {
            out.push(f);
        }
    }
    for t in cfg.targets.values() {
        let t = t.clone();
        let found = tokio::task::spawn_blocking(move || target(&t)).await;
        out.extend(found.unwrap_or_default());
    }
    for t in cfg.targets.values() {
        for (which, hook) in [("pre_restore", &t.pre_restore), ("post_restore", &t.post_restore)] {
            if let Some(h) = hook {
                out.push(hook_check(&format!("{which} hook of {}", t.name), h));
            }
        }
    }
    for p in cfg.plans.values() {
        out.push(schedule(p, ctx.clock.now()));
        if let Some(f) = retention(p, ctx.clock.now()) {
            out.push(f);
        }
    }
    out
}

/// Opens the repository with its password, then writes, reads back and
/// removes a probe.
async fn repository(repos: &Repos, cfg: &Config, name: &str, ctx: &Context) -> Finding {
    let check = format!("repository {name}");
    let spec = match RepoSpec::configured(cfg, name, ctx.retry.clone()) {
        Ok(s) => s,
        Err(e) => return finding(Verdict::Fail, check, e.to_string(), e.hint().as_deref()),
    };
    let repo = match repos.open(&spec).await {
        Ok(r) => r,
        Err(e) => return finding(Verdict::Fail, check, e.to_string(), e.hint().as_deref()),
    };
    let probe = async {
        let guard = kura_repo::SessionGuard::start(&repo, "doctor", &ctx.hostname).await?;
        let listed = repo.store().list(kura_format::paths::SESSIONS).await;
        guard.finish().await;
        let listed = listed?;
        // The storage's clock, as the time it gave the probe just written.
        let stamped = listed.iter().filter_map(|m| m.modified).max();
        Ok::<_, kura_repo::RepoError>((listed.len(), stamped))
    };
    let r = &cfg.repositories[name];
    let sse = r.s3.sse.clone().or_else(|| query_param(&r.url, "sse"));
    match probe.await {
        Ok((n, stamped)) if n > 0 => {
            let mut said = "opened with its password; wrote, read back and removed a probe".to_string();
            if let Some(sse) = sse {
                said += &format!(" with server-side encryption {sse}, which the storage accepted");
            }
            let skew = stamped.map(|t| ctx.clock.now().timestamp() - t);
            let off = |s: i64| {
                format!(
                    "this machine's clock is {} {} the storage's",
                    human_secs(s.abs()),
                    if s > 0 { "ahead of" } else { "behind" }
                )
            };
            match skew {
                Some(s) if s.abs() > CLOCK_FAIL => finding(
                    Verdict::Fail,
                    check,
                    format!("{said}; but {}", off(s)),
                    Some(
                        "prune's safety margins and every snapshot's time assume clocks within minutes \
                         of each other: sync this machine's clock (NTP, systemd-timesyncd)",
                    ),
                ),
                Some(s) if s.abs() > CLOCK_WARN => finding(
                    Verdict::Warn,
                    check,
                    format!("{said}; {}", off(s)),
                    Some("sync this machine's clock (NTP, systemd-timesyncd)"),
                ),
                Some(s) => finding(
                    Verdict::Ok,
                    check,
                    format!("{said}; clocks agree within {}", human_secs(s.abs().max(1))),
                    None,
                ),
                None => finding(Verdict::Ok, check, said, None),
            }
        }
        Ok(_) => finding(
            Verdict::Fail,
            check,
            "a probe it wrote could not be listed back",
            Some("the storage accepts writes it does not show: check its consistency settings"),
        ),
        Err(e) => finding(
            Verdict::Fail,
            check,
            format!("opened, but refuses writes: {e}"),
            Some("backups need write, list and delete permission on the repository"),
        ),
    }
}

/// How far this machine's clock may be from the storage's: a warning past
/// a few minutes, a failure past an hour (what the prune tests cover).
const CLOCK_WARN: i64 = 5 * 60;
const CLOCK_FAIL: i64 = 60 * 60;

fn human_secs(s: i64) -> String {
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

fn query_param(url: &str, key: &str) -> Option<String> {
    let (_, q) = url.split_once('?')?;
    q.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v.to_string()))
}

/// A local repository's free space against what its newest runs added.
fn free_space(cfg: &Config, name: &str, url: &str, state_dir: &Path) -> Option<Finding> {
    let Ok(kura_store::StoreUrl::Local(path)) = kura_store::StoreUrl::parse(url) else { return None };
    let dir = Path::new(&path).ancestors().find(|p| p.exists())?.to_path_buf();
    let fs = rustix::fs::statvfs(&dir).ok()?;
    let free = fs.f_bavail.saturating_mul(fs.f_frsize);
    // What one round of each plan writing here stored last time.
    let history = crate::history::History::open(&state_dir.join("history.db")).ok()?;
    let mut need: u64 = 0;
    for p in cfg.plans.values() {
        let writes_here = p.repository.as_deref() == Some(name)
            || (p.repository.is_none()
                && p.targets.iter().any(|t| cfg.targets.get(t).is_some_and(|t| t.repository == name)));
        if !writes_here {
            continue;
        }
        let runs = history.list(Some(&p.name), 20).ok()?;
        if let Some(last) =
            runs.iter().find(|e| e.kind == "backup" && (e.status == "ok" || e.status == "warnings"))
        {
            need += last.targets.iter().map(|t| t.bytes_stored.max(0) as u64).sum::<u64>();
        }
    }
    let check = format!("free space for {name}");
    let text = format!(
        "{} free at {}; the last runs writing here stored {}",
        human_bytes(free),
        dir.display(),
        human_bytes(need)
    );
    Some(if free < need {
        finding(
            Verdict::Fail,
            check,
            text,
            Some("free space, or move the repository: the next backup would not fit"),
        )
    } else {
        finding(Verdict::Ok, check, text, None)
    })
}

/// The source: its tools, its credentials, its files.
fn target(t: &Target) -> Vec<Finding> {
    let check = format!("target {}", t.name);
    let fail = |e: kura_sources::SourceError| finding(Verdict::Fail, check.clone(), e.to_string(), e.hint());
    vec![match &t.kind {
        TargetKind::Postgres(pg) => match kura_sources::postgres::PgUrl::parse(&pg.url)
            .and_then(|u| kura_sources::postgres::preflight(&u))
        {
            Ok(major) => finding(
                Verdict::Ok,
                check,
                format!("connected to PostgreSQL {major}; pg_dump can dump it"),
                None,
            ),
            Err(e) => fail(e),
        },
        TargetKind::Mysql(my) => {
            let checked = kura_sources::mysql::MyUrl::parse(&my.url)
                .and_then(kura_sources::mysql::Conn::new)
                .and_then(|c| kura_sources::mysql::preflight(&c, &my.tables));
            match checked {
                Ok(info) => finding(
                    Verdict::Ok,
                    check,
                    format!(
                        "connected to {}; database {} is there; the dump tool is found",
                        info.server, info.database
                    ),
                    None,
                ),
                Err(e) => fail(e),
            }
        }
        TargetKind::Sqlite(s) => {
            match rusqlite::Connection::open_with_flags(&s.path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .and_then(|c| c.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)))
            {
                Ok(n) => finding(
                    Verdict::Ok,
                    check,
                    format!("{} opens; {n} schema objects", s.path.display()),
                    None,
                ),
                Err(e) => finding(
                    Verdict::Fail,
                    check,
                    format!("{}: {e}", s.path.display()),
                    Some("the path must name the application's SQLite database file"),
                ),
            }
        }
        TargetKind::Files(f) => {
            let missing: Vec<String> =
                f.paths.iter().filter(|p| !p.exists()).map(|p| p.display().to_string()).collect();
            if missing.is_empty() {
                finding(Verdict::Ok, check, format!("{} path(s) there", f.paths.len()), None)
            } else {
                finding(
                    Verdict::Fail,
                    check,
                    format!("missing: {}", missing.join(", ")),
                    Some("fix the paths, or create them"),
                )
            }
        }
        other => finding(
            Verdict::Ok,
            check,
            format!("{} target: nothing to check before it runs", other.type_name()),
            None,
        ),
    }]
}

/// A hook's program is found and executable.
fn hook_check(check: &str, hook: &str) -> Finding {
    let program = hook.split_whitespace().next().unwrap_or_default();
    let found = if program.contains('/') {
        Some(std::path::PathBuf::from(program))
    } else {
        std::env::var_os("PATH")
            .and_then(|p| std::env::split_paths(&p).map(|d| d.join(program)).find(|c| c.is_file()))
    };
    match found {
        Some(p) if p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0) => {
            finding(Verdict::Ok, check, format!("{} is executable", p.display()), None)
        }
        // A shell builtin or a construct the shell resolves: not judged.
        _ if ["cd", "test", "[", "true", "false", "echo", "exit"].contains(&program) => {
            finding(Verdict::Ok, check, format!("{program} is a shell builtin"), None)
        }
        _ => finding(
            Verdict::Fail,
            check,
            format!("{program} is not an executable found on PATH"),
            Some("install it, fix the path, or chmod +x it"),
        ),
    }
}

fn schedule(p: &Plan, now: DateTime<Utc>) -> Finding {
    let mut at = now;
    let mut next = Vec::new();
    for _ in 0..3 {
        match p.schedule.next_after(p.zone.local(at)) {
            Some(t) => {
                next.push(t.format("%Y-%m-%d %H:%M").to_string());
                at = p.zone.instant(t);
            }
            None => break,
        }
    }
    let check = format!("schedule of plan {}", p.name);
    if next.is_empty() {
        return finding(
            Verdict::Fail,
            check,
            format!("{:?} never fires", p.schedule.text()),
            Some("fix the cron fields"),
        );
    }
    finding(Verdict::Ok, check, format!("{} next: {}", p.schedule.text(), next.join(", ")), None)
}

/// A retention of `within` alone keeps nothing once the newest snapshot is
/// older than it: a plan that runs less often than that would forget all.
fn retention(p: &Plan, now: DateTime<Utc>) -> Option<Finding> {
    let k = &p.keep;
    let counts = [k.last, k.hourly, k.daily, k.weekly, k.monthly, k.yearly];
    let within = k.within?;
    if counts.iter().any(Option::is_some) {
        return None;
    }
    let gap = p.longest_gap(now)?;
    let check = format!("retention of plan {}", p.name);
    Some(if gap > within {
        finding(
            Verdict::Fail,
            check,
            format!(
                "keeps only what is younger than {}h, but the plan runs as seldom as every {}h: retention could forget every snapshot",
                within.num_hours(),
                gap.num_hours()
            ),
            Some("add last = 1 (or daily = 7) to keep, or lengthen within"),
        )
    } else {
        finding(Verdict::Ok, check, "always keeps at least the newest snapshot", None)
    })
}
