//! The disaster-recovery plan, generated from the config and the run
//! history, so it is as true as they are: what is backed up, from where,
//! to which repositories, when and for how long; the objectives with the
//! last measured values; where the secrets live (never the secrets); and
//! the exact commands for each scenario, in the order to run them.
use std::fmt::Write;
use std::path::Path;

use chrono::{DateTime, Utc};
use kura_policy::{Config, Target, TargetKind, COMPONENTS};

use crate::health::human;
use crate::MonitorError;

/// A URL with its userinfo and query (where keys and tokens go) removed.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let rest = rest.split('?').next().unwrap_or(rest);
    let rest = match rest.split_once('@') {
        Some((_, host)) if !rest.split('/').next().unwrap_or("").is_empty() => host,
        _ => rest,
    };
    format!("{scheme}://{rest}")
}

/// A command's program alone: its arguments may carry a token.
fn program(command: &str) -> String {
    let first = command.split_whitespace().next().unwrap_or("");
    format!("`{}`", first.rsplit('/').next().unwrap_or(first))
}

fn source(t: &Target) -> String {
    match &t.kind {
        TargetKind::Sqlite(s) => s.path.display().to_string(),
        TargetKind::Postgres(p) => redact(&p.url),
        TargetKind::Mysql(m) => redact(&m.url),
        TargetKind::Files(f) => {
            f.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        }
        TargetKind::ObjectStore(o) => redact(&o.url),
        // The command may carry credentials: kura.toml shows it.
        TargetKind::Command(c) => format!("the output of its command, saved as {}", c.name),
        _ => "-".into(),
    }
}

/// The plan as Markdown. `config` is the path the commands name, so that
/// they run as printed from any directory.
pub fn markdown(
    cfg: &Config,
    config: &Path,
    state_dir: &Path,
    now: DateTime<Utc>,
    host: &str,
) -> Result<String, MonitorError> {
    let health = crate::assess(cfg, state_dir, None, now).ok();
    let k = format!("kura --config {}", config.display());
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# Disaster-recovery plan: {host}\n\nGenerated {} from {} by `kura drp`. It is only as current as that \
         file: generate it again after every change.\n",
        now.format("%Y-%m-%d %H:%M UTC"),
        config.display()
    );
    let _ = writeln!(
        o,
        "## What is backed up\n\n| target | type | component | from | repository |\n|---|---|---|---|---|"
    );
    for t in cfg.targets.values() {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} |",
            t.name,
            t.kind.type_name(),
            t.component,
            source(t),
            if t.repository.is_empty() { "(its plan's)" } else { &t.repository }
        );
    }
    let _ = writeln!(o, "\n## Repositories\n\n| repository | where | its password |\n|---|---|---|");
    for (name, r) in &cfg.repositories {
        let pw = match (&r.password_file, &r.password_command) {
            (Some(f), _) => format!("in the file {}", f.display()),
            (None, Some(c)) => format!("printed by its password_command ({})", program(c)),
            (None, None) => "from KURA_PASSWORD, or asked for".into(),
        };
        let _ = writeln!(o, "| {name} | {} | {pw} |", redact(&r.url));
    }
    let _ = writeln!(
        o,
        "\n## Schedules, retention and objectives\n\n| plan | schedule | targets | keeps | copies to | RPO | RTO | last good backup | last drill |\n|---|---|---|---|---|---|---|---|---|"
    );
    for p in cfg.plans.values() {
        let h = health.as_ref().and_then(|h| h.plans.get(&p.name));
        let keep = {
            let k = &p.keep;
            let mut parts = Vec::new();
            for (n, v) in [
                ("last", k.last),
                ("hourly", k.hourly),
                ("daily", k.daily),
                ("weekly", k.weekly),
                ("monthly", k.monthly),
                ("yearly", k.yearly),
            ] {
                if let Some(v) = v {
                    parts.push(format!("{v} {n}"));
                }
            }
            if let Some(w) = k.within {
                parts.push(format!("all within {}", human(w)));
            }
            if parts.is_empty() {
                "everything".to_string()
            } else {
                parts.join(", ")
            }
        };
        let dur = |d: Option<std::time::Duration>| {
            d.and_then(|d| chrono::Duration::from_std(d).ok()).map(human).unwrap_or_else(|| "-".into())
        };
        let last = h
            .and_then(|h| h.last_backup)
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|| "none recorded".into());
        let drill = h
            .and_then(|h| h.last_good_drill.as_ref())
            .map(|d| format!("{} (restored in {:.1}s)", d.finished.format("%Y-%m-%d"), d.seconds))
            .unwrap_or_else(|| "never".into());
        let _ = writeln!(
            o,
            "| {} | `{}` | {} | {keep} | {} | {} | {} | {last} | {drill} |",
            p.name,
            p.schedule.text(),
            p.targets.join(", "),
            if p.copy_to.is_empty() { "-".into() } else { p.copy_to.join(", ") },
            dur(p.rpo),
            dur(p.rto)
        );
    }
    let _ = writeln!(
        o,
        "\n## Where the secrets live\n\nThis plan names no secret. To restore you need kura.toml and each repository's password:\n"
    );
    for (name, r) in &cfg.repositories {
        let at = match (&r.password_file, &r.password_command) {
            (Some(f), _) => format!("the file {} (keep a copy off this machine)", f.display()),
            (None, Some(_)) => format!(
                "what repository.{name}.password_command in kura.toml prints (keep whatever it reads from available off this machine)"
            ),
            (None, None) => "the KURA_PASSWORD the backups ran with (keep a copy off this machine)".into(),
        };
        let _ = writeln!(o, "- repository **{name}**: {at}");
    }
    for t in cfg.targets.values() {
        let how = match &t.kind {
            TargetKind::Postgres(_) => Some("its URL in kura.toml, or PGPASSWORD / ~/.pgpass"),
            TargetKind::Mysql(_) => Some("its URL in kura.toml"),
            TargetKind::ObjectStore(_) => {
                Some("its keys in kura.toml or the AWS_/AZURE_/GOOGLE_ environment")
            }
            _ => None,
        };
        if let Some(how) = how {
            let _ = writeln!(o, "- target **{}** credentials: {how}", t.name);
        }
    }

    let _ = writeln!(o, "\n## Scenarios\n");
    let databases: Vec<&Target> = cfg.targets.values().filter(|t| t.component == "database").collect();
    let _ = writeln!(
        o,
        "### 1. A database is gone or damaged as a whole\n\nEach restore loads into a fresh copy, checks it, swaps it in and keeps the old one \
         beside it (`kura kept list`); its pre_restore and post_restore hooks run around it.\n"
    );
    for t in &databases {
        let _ = writeln!(
            o,
            "```sh\n{k} restore --target {} --dry-run\n{k} restore --target {} --yes\n```",
            t.name, t.name
        );
        if let Some(h) = &t.pre_restore {
            let _ = writeln!(o, "(runs `{h}` first)");
        }
        if let Some(h) = &t.post_restore {
            let _ = writeln!(o, "(runs `{h}` after)");
        }
    }
    if databases.is_empty() {
        let _ = writeln!(o, "No database targets are configured.");
    }
    let tabled: Vec<&&Target> =
        databases.iter().filter(|t| !matches!(t.kind, TargetKind::Sqlite(_))).collect();
    let _ = writeln!(o, "\n### 2. One table is damaged\n\nOnly that table is replaced; the rest of the database stays as it is now.\n");
    for t in &tabled {
        let _ = writeln!(o, "```sh\n{k} restore --target {} --table TABLE --yes\n```", t.name);
    }
    if tabled.is_empty() {
        let _ = writeln!(o, "No PostgreSQL or MySQL targets are configured (SQLite restores whole).");
    }
    let _ = writeln!(
        o,
        "\n### 3. The server is lost: a new one has only kura.toml and the passwords\n\n\
         Install kura, put kura.toml at {} and each repository's password where it is named above \
         (chmod 600), install the database servers and clients, then, in this order \
         (components: {}):\n",
        config.display(),
        COMPONENTS.join(", ")
    );
    let _ = writeln!(
        o,
        "```sh\n{k} snapshots\n{k} restore --component all --yes\n{k} history rebuild\n{k} doctor\n```"
    );
    let _ = writeln!(
        o,
        "\n### 4. Proving it works\n\n```sh\n{k} drill --all\n```\n\nRestores each target's newest snapshot into a scratch place, checks it, \
         measures the time and removes it; nothing live is touched."
    );
    Ok(o)
}
