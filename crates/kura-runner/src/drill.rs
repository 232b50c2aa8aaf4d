//! Restore drills: each target's newest snapshot restored into a scratch
//! place by the same path a real restore takes (`restore::plan` and
//! `execute` with `into`), checked, timed, and removed. The time measured
//! is the restore time a disaster would take: the real RTO.
//!
//! A drill never touches live data, never runs restore hooks and needs no
//! confirmation. Scratch places are named before they are made in
//! `STATE_DIR/drills/pending`, so a drill killed midway leaves nothing the
//! next one does not remove; one drill runs at a time on a machine
//! (`STATE_DIR/drill.lock`).
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};
use kura_policy::{Config, Plan, Target, TargetKind};
use kura_sources::catalogue::Catalogue;
use kura_sources::drill::Scratch;
use serde::Serialize;

use crate::restore::{self, RestoreRequest, Restored, Stop};
use crate::{Context, Repos, RunError, Selector};

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetDrill {
    pub target: String,
    /// One database of a PostgreSQL target of several, each drilled alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    pub snapshot: Option<String>,
    /// Seconds from the start of the restore to a checked copy.
    pub seconds: f64,
    pub bytes: u64,
    pub files: u64,
    pub checks: Vec<Check>,
    /// Why it failed: the restore's error, or the first failed check.
    pub error: Option<String>,
}

impl TargetDrill {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub plan: Option<String>,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub targets: Vec<TargetDrill>,
    /// Scratch copies of earlier, interrupted drills removed first.
    pub swept: Vec<String>,
}

impl DrillReport {
    pub fn ok(&self) -> bool {
        self.targets.iter().all(TargetDrill::ok)
    }

    pub fn status(&self) -> &'static str {
        if self.ok() {
            "ok"
        } else {
            "failed"
        }
    }
}

/// The scratch places this machine's drills made and have not removed,
/// one per line: `path <path>`, `postgres <url>`, `mysql <database> <url>`.
fn pending_file(state_dir: &Path) -> PathBuf {
    state_dir.join("drills").join("pending")
}

fn encode(s: &Scratch) -> String {
    match s {
        Scratch::Path(p) => format!("path {}", p.display()),
        Scratch::Postgres(u) => format!("postgres {}", u.url),
        Scratch::Mysql { url, database } => format!("mysql {database} {url}"),
    }
}

fn decode(line: &str) -> Option<Scratch> {
    let (kind, rest) = line.split_once(' ')?;
    match kind {
        "path" => Some(Scratch::Path(PathBuf::from(rest))),
        "postgres" => kura_sources::postgres::PgUrl::parse(rest).ok().map(Scratch::Postgres),
        "mysql" => rest.split_once(' ').map(|(d, u)| Scratch::Mysql { url: u.into(), database: d.into() }),
        _ => None,
    }
}

fn note_pending(state_dir: &Path, s: &Scratch, add: bool) -> Result<(), RunError> {
    let path = pending_file(state_dir);
    let io = |e| RunError::from(kura_repo::RepoError::io(&path, e));
    let mut lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let line = encode(s);
    lines.retain(|l| *l != line);
    if add {
        lines.push(line);
    }
    // Written beside and renamed: a kill never leaves half a list.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, lines.join("\n") + "\n").map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// Removes what interrupted drills left: the scratch places they named,
/// and anything else in the drills folder (a restore's own temporary file
/// beside its scratch copy), which only drills use, and only under the
/// lock the caller holds.
fn sweep(state_dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(pending_file(state_dir)).unwrap_or_default();
    let mut swept = Vec::new();
    let dir = state_dir.join("drills");
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if e.file_name() == "pending" {
            continue;
        }
        let listed =
            text.lines().any(|l| decode(l).is_some_and(|s| matches!(&s, Scratch::Path(p) if *p == e.path())));
        if listed {
            continue;
        }
        let p = e.path();
        let gone = if e.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        match gone {
            Ok(()) => swept.push(p.display().to_string()),
            Err(err) => tracing::warn!("cannot remove {}: {err}", p.display()),
        }
    }
    for line in text.lines().filter(|l| !l.is_empty()) {
        let Some(s) = decode(line) else { continue };
        match kura_sources::drill::remove(&s) {
            Ok(()) => {
                let _ = note_pending(state_dir, &s, false);
                swept.push(scratch_name(&s));
            }
            Err(e) => tracing::warn!("cannot remove an interrupted drill's copy {}: {e}", scratch_name(&s)),
        }
    }
    swept
}

fn scratch_name(s: &Scratch) -> String {
    match s {
        Scratch::Path(p) => p.display().to_string(),
        Scratch::Postgres(u) => u.dbname.clone(),
        Scratch::Mysql { database, .. } => database.clone(),
    }
}

fn rand_seed() -> [u8; 32] {
    *kura_format::Id::random().as_bytes()
}

/// The target as its drill sees it: with `drill_server`, the same
/// database on the scratch server (its host, port and credentials).
fn on_drill_server(t: &Target) -> Target {
    let Some(server) = &t.drill_server else { return t.clone() };
    let mut t = t.clone();
    match &mut t.kind {
        TargetKind::Postgres(pg) => pg.url = with_database(server, &pg.url),
        TargetKind::Mysql(my) => my.url = with_database(server, &my.url),
        _ => {}
    }
    t
}

/// `server`'s scheme, credentials, host and query with the database of
/// `url`.
fn with_database(server: &str, url: &str) -> String {
    let path_of = |u: &str| -> (String, String, String) {
        let (scheme, rest) = u.split_once("://").unwrap_or(("", u));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (db, query) = match path.split_once('?') {
            Some((d, q)) => (d.to_string(), format!("?{q}")),
            None => (path.to_string(), String::new()),
        };
        (format!("{scheme}://{authority}"), db, query)
    };
    let (base, _, query) = path_of(server);
    let (_, db, _) = path_of(url);
    format!("{base}/{db}{query}")
}

/// Where a target's drill restores to, by kind; `None` for kinds a drill
/// cannot restore beside the live copy.
fn scratch_for(t: &Target, dir: &Path, stamp: &str) -> Result<Scratch, String> {
    let name = format!("{}_kura_drill_{stamp}", t.name);
    Ok(match &t.kind {
        // An object store's snapshot is restored into a local folder,
        // which the storage layer treats as a store like any other.
        TargetKind::Files(_)
        | TargetKind::Sqlite(_)
        | TargetKind::Command(_)
        | TargetKind::ObjectStore(_) => Scratch::Path(dir.join(format!("{stamp}-{}", t.name))),
        TargetKind::Postgres(pg) => {
            let url = kura_sources::postgres::PgUrl::parse(&pg.url).map_err(|e| e.to_string())?;
            Scratch::Postgres(url.with_db(&name))
        }
        TargetKind::Mysql(my) => Scratch::Mysql { url: my.url.clone(), database: name },
        _ => {
            return Err(format!(
                "{} targets are not drilled yet (restore one --into a scratch place by hand)",
                t.kind.type_name()
            ))
        }
    })
}

/// The databases of a target to drill one by one: those of its newest
/// snapshot for a PostgreSQL target of several, else the target whole
/// (`None`).
async fn databases_to_drill(
    ctx: &Context,
    repos: &Repos,
    cfg: &Config,
    plan: Option<&Plan>,
    t: &Target,
) -> Result<Vec<Option<String>>, RunError> {
    let TargetKind::Postgres(pg) = &t.kind else { return Ok(vec![None]) };
    if pg.databases.is_empty() {
        return Ok(vec![None]);
    }
    let req = RestoreRequest { plan: plan.cloned(), ..Default::default() };
    let repo = req.repository(ctx, repos, cfg, t).await?;
    let (_, snap) = crate::select::pick(&repo, t, &Selector::Latest, req.plan_name()).await?;
    Ok(snap.paths.iter().filter_map(|p| p.strip_suffix(".pgdump")).map(|d| Some(d.to_string())).collect())
}

/// Drills `targets` (of `plan`, when given): one after the other, each
/// removed before the next starts.
pub async fn drill(
    ctx: &Context,
    repos: &Repos,
    cfg: &Config,
    plan: Option<&Plan>,
    targets: &[Target],
    stop: Stop,
    step: &kura_sources::Step,
) -> Result<DrillReport, RunError> {
    let state_dir = ctx.state_dir.as_path();
    crate::history::make_state_dir(state_dir)?;
    let dir = state_dir.join("drills");
    crate::history::make_state_dir(&dir)?;
    // ".drill": a name no plan can have (plan names have no dots).
    let _lock = crate::plan::PlanLock::acquire(state_dir, ".drill", ctx)?;
    let started = ctx.clock.now();
    let swept = sweep(state_dir);
    let mut out = Vec::new();
    let mut units = Vec::new();
    for t in targets {
        let t = on_drill_server(t);
        match databases_to_drill(ctx, repos, cfg, plan, &t).await {
            Ok(dbs) => units.extend(dbs.into_iter().map(|db| (t.clone(), db))),
            Err(e) => out.push(TargetDrill {
                target: t.name.clone(),
                database: None,
                snapshot: None,
                seconds: 0.0,
                bytes: 0,
                files: 0,
                checks: Vec::new(),
                error: Some(e.to_string()),
            }),
        }
    }
    for (t, database) in &units {
        let stamp =
            format!("{}_{}", started.format("%Y%m%d_%H%M%S"), &kura_format::Id::random().to_hex()[..4]);
        let mut result = TargetDrill {
            target: t.name.clone(),
            database: database.clone(),
            snapshot: None,
            seconds: 0.0,
            bytes: 0,
            files: 0,
            checks: Vec::new(),
            error: None,
        };
        let scratch = match scratch_for(t, &dir, &stamp) {
            Ok(s) => s,
            Err(why) => {
                result.error = Some(why);
                out.push(result);
                continue;
            }
        };
        note_pending(state_dir, &scratch, true)?;
        let clock = Instant::now();
        let done = drill_one(ctx, repos, cfg, plan, t, (&scratch, step), stop.clone(), &mut result).await;
        result.seconds = clock.elapsed().as_secs_f64();
        if let Err(e) = done {
            result.error = Some(e.to_string());
        } else if let Some(c) = result.checks.iter().find(|c| !c.ok) {
            result.error = Some(format!("check failed: {} ({})", c.what, c.detail));
        }
        match kura_sources::drill::remove(&scratch) {
            Ok(()) => note_pending(state_dir, &scratch, false)?,
            Err(e) => {
                tracing::warn!(target_name = %t.name, "cannot remove the drill's copy {}: {e}", scratch_name(&scratch))
            }
        }
        out.push(result);
    }
    Ok(DrillReport {
        plan: plan.map(|p| p.name.clone()),
        started,
        finished: ctx.clock.now(),
        targets: out,
        swept,
    })
}

/// The catalogue the snapshot's dump was counted into at backup time
/// (format.md §11.4); `None` for a snapshot made before kura kept one.
async fn catalogue_of(
    p: &restore::RestorePlan,
    database: Option<&str>,
) -> Result<Option<Catalogue>, RunError> {
    let name = match &p.target.kind {
        TargetKind::Postgres(pg) => kura_sources::postgres::catalogue_file(
            match database {
                Some(db) => db.to_string(),
                None => kura_sources::postgres::PgUrl::parse(&pg.url).map_err(RunError::from)?.dbname,
            }
            .as_str(),
        ),
        TargetKind::Mysql(_) => kura_sources::mysql::CATALOGUE_FILE.to_string(),
        TargetKind::Sqlite(_) => kura_sources::sqlite::CATALOGUE_FILE.to_string(),
        _ => return Ok(None),
    };
    if !p.snapshot.paths.contains(&name) {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    kura_repo::restore::dump(&p.repo, p.snapshot.tree, &name, &mut bytes).await?;
    Ok(Some(Catalogue::from_json(&bytes)?))
}

#[allow(clippy::too_many_arguments)]
async fn drill_one(
    ctx: &Context,
    repos: &Repos,
    cfg: &Config,
    plan: Option<&Plan>,
    t: &Target,
    (scratch, step): (&Scratch, &kura_sources::Step),
    stop: Stop,
    result: &mut TargetDrill,
) -> Result<(), RunError> {
    let into = PathBuf::from(scratch_name(scratch));
    let req = RestoreRequest {
        into: Some(into),
        database: result.database.clone(),
        plan: plan.cloned(),
        hooks: false,
        // A scratch server has none of the live one's roles.
        no_owner: t.drill_server.is_some(),
        // A fresh choice each drill: over many drills, every file.
        sample: t.sample.map(|share| kura_repo::restore::Sample { share, seed: rand_seed() }),
        ..Default::default()
    };
    let p = restore::plan(ctx, repos, cfg, t, &Selector::Latest, &req).await?;
    result.snapshot = Some(p.id.to_hex());
    let (want_files, want_bytes) = (p.snapshot.summary.files, p.snapshot.summary.bytes);
    let want_objects = p.objects.as_ref().map(|o| (o.written.len() as u64, o.bytes));
    let catalogue = catalogue_of(&p, result.database.as_deref()).await?;
    let report = restore::execute(ctx, p, &req, stop).await?;
    step.reached("drill-restored");
    let mut left_out = (0, 0);
    for r in &report.restored {
        match r {
            Restored::Copy { files, bytes, sampled_out, sampled_out_bytes, .. } => {
                result.files += files;
                result.bytes += bytes;
                left_out = (*sampled_out, *sampled_out_bytes);
            }
            Restored::Objects { written, bytes, .. } => {
                result.files += written.len() as u64;
                result.bytes += bytes;
            }
            Restored::Sqlite { bytes, integrity_check, .. } => {
                result.bytes += bytes;
                result.checks.push(Check {
                    what: "PRAGMA integrity_check".into(),
                    ok: *integrity_check == "ok",
                    detail: integrity_check.to_string(),
                });
            }
            Restored::Postgres { bytes, .. }
            | Restored::Mysql { bytes, .. }
            | Restored::Command { bytes, .. } => result.bytes += bytes,
            _ => {}
        }
    }
    let sampled = |n: u64| match t.sample {
        Some(share) => format!(" (a {}% sample of {n})", share * 100.0),
        None => String::new(),
    };
    if let TargetKind::Files(_) = t.kind {
        // Every blob was authenticated as it was written; the count and
        // size say nothing was left out but what the sample left.
        let whole = result.files + left_out.0 == want_files && result.bytes + left_out.1 == want_bytes;
        result.checks.push(Check {
            what: "every file restored and verified".into(),
            ok: whole,
            detail: format!(
                "{} of {} files, {} of {} bytes{}",
                result.files,
                want_files - left_out.0,
                result.bytes,
                want_bytes - left_out.1,
                sampled(want_files)
            ),
        });
    }
    if let (TargetKind::ObjectStore(_), Some((objects, bytes))) = (&t.kind, want_objects) {
        // Each object was read back from the scratch store as written.
        result.checks.push(Check {
            what: "every object restored and read back".into(),
            ok: result.files == objects && result.bytes == bytes,
            detail: format!(
                "{} of {objects} objects, {} of {bytes} bytes{}",
                result.files,
                result.bytes,
                // Less the manifest, the snapshot's files are its objects.
                sampled(want_files.saturating_sub(1))
            ),
        });
    }
    if matches!(t.kind, TargetKind::Sqlite(_) | TargetKind::Postgres(_) | TargetKind::Mysql(_)) {
        let s = scratch.clone();
        let checks = t.checks.clone();
        let found = tokio::task::spawn_blocking(move || {
            let objects = kura_sources::drill::objects(&s);
            let measured = catalogue.map(|c| {
                let m = kura_sources::drill::measure(&s, &c);
                (c, m)
            });
            let answers: Vec<_> =
                checks.iter().map(|c| (c.clone(), kura_sources::drill::check(&s, c))).collect();
            (objects, measured, answers)
        })
        .await
        .map_err(|e| RunError::usage(e.to_string()))?;
        let (objects, measured, answers) = found;
        // Without a catalogue (a snapshot older than them), a copy with
        // no objects at all is the most a drill can tell.
        let had_catalogue = measured.is_some();
        match measured {
            Some((want, Ok(got))) => {
                let wrong = kura_sources::drill::differences(&want, &got);
                let what = if want.complete {
                    "rows per table and schema objects as backed up"
                } else {
                    "schema objects as backed up (rows were not counted at backup)"
                };
                let detail = if wrong.is_empty() {
                    format!(
                        "{} tables, {} rows, {} objects",
                        want.rows.len(),
                        want.rows.values().sum::<u64>(),
                        want.objects.values().sum::<u64>()
                    )
                } else {
                    wrong.join("; ")
                };
                result.checks.push(Check { what: what.into(), ok: wrong.is_empty(), detail });
            }
            Some((_, Err(e))) => result.checks.push(Check {
                what: "rows per table and schema objects as backed up".into(),
                ok: false,
                detail: e.to_string(),
            }),
            None => {}
        }
        match objects {
            _ if had_catalogue => {}
            Ok(n) => result.checks.push(Check {
                what: "the schema's objects are there".into(),
                ok: n > 0,
                detail: format!("{n} tables, views, routines and triggers"),
            }),
            Err(e) => result.checks.push(Check {
                what: "the schema's objects are there".into(),
                ok: false,
                detail: e.to_string(),
            }),
        }
        for (sql, answer) in answers {
            result.checks.push(match answer {
                Ok((ok, said)) => Check { what: sql, ok, detail: format!("answered {said:?}") },
                Err(e) => Check { what: sql, ok: false, detail: e.to_string() },
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drill_server_keeps_its_credentials_and_takes_the_database() {
        assert_eq!(
            with_database(
                "postgres://drill:pw@scratch:5433/postgres?sslmode=require",
                "postgres://app@live/shop"
            ),
            "postgres://drill:pw@scratch:5433/shop?sslmode=require"
        );
        assert_eq!(
            with_database("mysql://root@10.0.0.9", "mysql://app:x@db:3306/shop?charset=utf8"),
            "mysql://root@10.0.0.9/shop"
        );
    }
}
