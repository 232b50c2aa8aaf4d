//! `kura restore --target NAME`: restore a configured target in place,
//! safely. The plan is printed first; a terminal asks for confirmation
//! unless --yes; every blob is verified before anything live is touched; the
//! new copy is written beside the live one, checked, and swapped in, with
//! the old copy kept. The post_restore hook runs even when the restore fails.
//!
//! `kura restore --component database|configs|data|logs|all` restores every
//! target of that component as of one run: the plans are printed together,
//! confirmed once, and carried out one target after the other.
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Local, Utc};
use kura_format::snapshot::Snapshot;
use kura_format::Id;
use kura_policy::{Config, Target, TargetKind};
use kura_repo::Repository;
use kura_sources::object_store::{ObjectsRestored, RestoreOptions as ObjectOptions};
use kura_store::Store;

use crate::cli::{Global, RestoreArgs};
use crate::output::{human_bytes, note, print_json, say, Failure};

mod execute;
mod plan;
use execute::execute;
use plan::{hooks_json, prepare, show_plan};

fn parse_at(s: &str) -> Result<DateTime<Utc>, Failure> {
    crate::when::parse(s, super::clock().now().with_timezone(&Local), false).ok_or_else(|| {
        Failure::new(format!("--at {s:?} is not a date or time")).hint(format!("use {}", crate::when::FORMS))
    })
}

/// A date or time as seconds since the epoch; a bare day means its first
/// second, or with `end_of_day` its last.
fn parse_day(s: &str, end_of_day: bool) -> Result<i64, Failure> {
    crate::when::parse(s, super::clock().now().with_timezone(&Local), !end_of_day)
        .map(|t| t.timestamp())
        .ok_or_else(|| {
            Failure::new(format!("{s:?} is not a date or time")).hint(format!("use {}", crate::when::FORMS))
        })
}

/// "the earliest is 2025-10-05 02:30 (run 9c3e1a2b)", for when nothing is
/// as old as asked.
fn earliest_note(snaps: &[(Id, Snapshot)]) -> String {
    match snaps.iter().min_by_key(|(_, s)| s.time) {
        Some((id, s)) => format!(
            "the earliest is {} ({})",
            s.time.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S"),
            s.run.map(|r| format!("run {}", r.short())).unwrap_or_else(|| format!("snapshot {}", id.short()))
        ),
        None => "there is none yet".to_string(),
    }
}

fn select(a: &RestoreArgs, target: &str, mine: Vec<(Id, Snapshot)>) -> Result<(Id, Snapshot), Failure> {
    let none = |what: String| {
        Failure::new(format!("no snapshot of target {target} {what}"))
            .hint(format!("`kura snapshots --target {target}` lists them"))
    };
    if let Some(p) = &a.from {
        let p = p.to_ascii_lowercase();
        return mine
            .into_iter()
            .find(|(id, _)| id.to_hex().starts_with(&p))
            .ok_or_else(|| none(format!("has id {p}")));
    }
    if let Some(r) = &a.run {
        let r = r.to_ascii_lowercase();
        return mine
            .into_iter()
            .rev()
            .find(|(_, s)| s.run.is_some_and(|run| run.to_hex().starts_with(&r)))
            .ok_or_else(|| none(format!("belongs to run {r}")));
    }
    if let Some(at) = &a.at {
        let t = parse_at(at)?;
        let note = earliest_note(&mine);
        return mine.into_iter().rev().find(|(_, s)| s.time <= t).ok_or_else(|| {
            Failure::new(format!(
                "no snapshot of target {target} was taken by {at} ({}); {note}",
                t.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S")
            ))
            .hint(format!("`kura snapshots --target {target}` lists them"))
        });
    }
    mine.into_iter().last().ok_or_else(|| none("exists yet".into()))
}

/// Whether a restore touches live data: in place, or `--into` something
/// that already exists (a file, a non-empty folder). A copy into a new place
/// asks nothing and runs no hooks: a monthly test restore must never stop
/// production.
fn touches_live(a: &RestoreArgs) -> bool {
    match &a.into {
        None => true,
        Some(p) => match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => std::fs::read_dir(p).map(|mut d| d.next().is_some()).unwrap_or(true),
            Ok(_) => true,
            Err(_) => false,
        },
    }
}

/// Whether the target's hooks run: always in place; with --into only when
/// asked (--hooks).
fn runs_hooks(a: &RestoreArgs) -> bool {
    a.into.is_none() || a.hooks
}

fn confirm(g: &Global, a: &RestoreArgs) -> Result<(), Failure> {
    if a.yes || !touches_live(a) {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() || g.json {
        let what = match &a.into {
            None => "refusing to restore in place without confirmation".to_string(),
            Some(p) => format!("refusing to write over {}, which exists, without confirmation", p.display()),
        };
        return Err(Failure::new(what).hint("pass --yes, or --dry-run to see the plan"));
    }
    eprint!("proceed? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).map_err(|e| Failure::new(e.to_string()))?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        return Err(Failure::new("restore cancelled; nothing was changed"));
    }
    Ok(())
}

/// Refuses flags that do not fit the target, before anything is opened,
/// and turns the object-store ones into options (unused by other targets).
fn flag_options(a: &RestoreArgs, t: &Target) -> Result<ObjectOptions, Failure> {
    if !a.tables.is_empty() && !matches!(t.kind, TargetKind::Postgres(_) | TargetKind::Mysql(_)) {
        return Err(Failure::new("--table applies to database targets"));
    }
    if let (TargetKind::Command(c), None) = (&t.kind, &a.into) {
        if c.restore.is_none() {
            return Err(Failure::new(format!("target {} has no `restore` command", t.name)).hint(
                "add restore = \"…\" to the target, or use --into FILE to write the output to a file",
            ));
        }
    }
    let objects = matches!(t.kind, TargetKind::ObjectStore(_));
    if a.overwrite || (!a.include.is_empty() && !objects) {
        return Err(Failure::new(
            "--include and --overwrite are for directory restores (kura restore SNAPSHOT --target DIR)",
        )
        .hint("an object_store target takes --include KEY_PREFIX"));
    }
    if (a.start.is_some() || a.end.is_some() || a.force) && !objects {
        return Err(Failure::new("--start, --end and --force apply to object_store targets"));
    }
    Ok(ObjectOptions {
        include: a.include.clone(),
        start: a.start.as_deref().map(|s| parse_day(s, false)).transpose()?,
        end: a.end.as_deref().map(|s| parse_day(s, true)).transpose()?,
        force: a.force,
        dry_run: false,
        key_date: match &t.kind {
            TargetKind::ObjectStore(o) => o.key_date.clone(),
            _ => None,
        },
    })
}

type ObjectPlan = (Arc<dyn Store>, Option<(Arc<dyn Store>, String)>, ObjectsRestored);

/// One target's restore, planned: everything needed to show it and do it.
struct Prepared<'c> {
    t: &'c Target,
    repo: Arc<Repository>,
    id: Id,
    snap: Snapshot,
    keep_old: bool,
    dests: Vec<PathBuf>,
    pg_dumps: Vec<String>,
    object_opts: ObjectOptions,
    object_plan: Option<ObjectPlan>,
    plan: Vec<String>,
}

/// The tables a PostgreSQL restore in place replaces, none meaning the
/// whole database: those named with --table, else those of a target that
/// backs up only some tables. A partial dump restored as a whole database
/// would drop every table it does not hold from the live database.
fn pg_tables_in_place(a: &RestoreArgs, pg: &kura_policy::PostgresTarget) -> Result<Vec<String>, Failure> {
    if !a.tables.is_empty() || a.into.is_some() {
        return Ok(a.tables.clone());
    }
    if !pg.exclude_tables.is_empty() {
        return Err(Failure::new(
            "this target leaves tables out (exclude_tables), so its snapshots cannot replace the whole live database",
        )
        .hint("restore chosen tables in place with --table T, or the whole dump --into a new database"));
    }
    Ok(pg.tables.clone())
}

/// What a files target's backup leaves out, which a restore in place leaves
/// alone.
fn file_filters(f: &kura_policy::FilesTarget) -> Result<kura_sources::files::Filters, Failure> {
    Ok(kura_sources::files::Filters {
        excludes: kura_repo::backup::Excludes::new(&f.exclude)?,
        changed_within: f.changed_within,
    })
}

pub async fn snapshots_of(repo: &Repository, t: &Target) -> Result<Vec<(Id, Snapshot)>, Failure> {
    Ok(snapshots_and_damage(repo, t).await?.0)
}

/// A target's snapshots, and the repository's unreadable ones (whose target
/// cannot be known).
async fn snapshots_and_damage(
    repo: &Repository,
    t: &Target,
) -> Result<(Vec<(Id, Snapshot)>, Vec<(Id, kura_repo::RepoError)>), Failure> {
    let (all, bad) = repo.snapshots().await?;
    Ok((all.into_iter().filter(|(_, s)| s.target.as_deref() == Some(t.name.as_str())).collect(), bad))
}

pub async fn run(g: &Global, a: &RestoreArgs) -> Result<u8, Failure> {
    let cfg = super::require_config(g)?;
    if let Some(c) = &a.component {
        return run_component(g, a, &cfg, c).await;
    }
    let name = a.target.as_deref().ok_or_else(|| {
        Failure::new("restore needs --target NAME or --component C").hint("`kura restore --help` shows both")
    })?;
    let t: &Target = super::find_target(&cfg, name)?;
    let object_opts = flag_options(a, t)?;
    let repo = super::open_repo_for(g, &cfg, t).await?;
    let (mine, bad) = snapshots_and_damage(&repo, t).await?;
    if a.from.is_none() && a.run.is_none() && a.at.is_none() {
        // The newest: never an older one in silence.
        repo.refuse_newer_damage(mine.last().map(|(_, s)| s.time), &bad).await?;
    }
    let (id, snap) = select(a, &t.name, mine)?;
    let p = prepare(a, t, repo, id, snap, object_opts).await?;
    show_plan(g, a, &p);
    if a.dry_run {
        if g.json {
            print_json(&serde_json::json!({
                "target": t.name, "snapshot": p.id, "plan": p.plan, "hooks": hooks_json(a, &p),
                "keep_old": p.keep_old, "dry_run": true,
                "objects": p.object_plan.as_ref().map(|(_, _, o)| serde_json::json!({
                    "write": o.written, "replace": o.replaced, "skip": o.skipped,
                })),
            }));
        }
        return Ok(0);
    }
    confirm(g, a)?;
    let id = p.id;
    let restored = execute(g, a, p).await?;
    if g.json {
        print_json(&serde_json::json!({ "target": t.name, "snapshot": id, "restored": restored }));
    }
    Ok(if warned(&restored) { crate::output::code::PARTIAL_BACKUP } else { 0 })
}

/// Whether a restore's results carry warnings (exit 3).
fn warned(restored: &[serde_json::Value]) -> bool {
    restored.iter().any(|r| r["warnings"].as_array().is_some_and(|w| !w.is_empty()))
}

/// Every target of a component (or all), as of one run: the newest run
/// with any of them (at or before --at, or the one --run names); a target
/// that run did not include comes from its newest snapshot before it.
async fn run_component(g: &Global, a: &RestoreArgs, cfg: &Config, component: &str) -> Result<u8, Failure> {
    if a.target.is_some() {
        return Err(Failure::new("give --target or --component, not both"));
    }
    let single = a.into.is_some()
        || !a.tables.is_empty()
        || a.database.is_some()
        || a.from.is_some()
        || !a.include.is_empty()
        || a.start.is_some()
        || a.end.is_some()
        || a.force
        || a.overwrite;
    if single {
        return Err(Failure::new(
            "--into, --table, --database, --snapshot, --include, --start, --end and --force restore one target",
        )
        .hint("use --target NAME with them"));
    }
    // A target of the component whose settings cannot be resolved now
    // stops the restore before anything is touched: restoring the rest
    // would pass for the whole component.
    if let Some(u) = cfg.unresolved.iter().find(|u| {
        u.section == "target" && (component == "all" || u.component.as_deref().is_none_or(|c| c == component))
    }) {
        return Err(Failure::new(format!("target {}: {}", u.name, u.error))
            .hint("set the variable, or restore the other targets one by one with --target"));
    }
    let chosen: Vec<&Target> =
        cfg.targets.values().filter(|t| component == "all" || t.component == component).collect();
    if chosen.is_empty() {
        let mut known: Vec<&str> = cfg.targets.values().map(|t| t.component.as_str()).collect();
        known.sort();
        known.dedup();
        return Err(Failure::new(format!("no target belongs to component {component:?}"))
            .hint(format!("configured components: {}, or all", known.join(", "))));
    }
    let mut repos: HashMap<&str, Arc<Repository>> = HashMap::new();
    let mut found = Vec::new();
    for t in &chosen {
        let repo = match repos.get(t.repository.as_str()) {
            Some(r) => r.clone(),
            None => {
                let r = super::open_repo_for(g, cfg, t).await?;
                repos.insert(t.repository.as_str(), r.clone());
                r
            }
        };
        let snaps = snapshots_of(&repo, t).await?;
        found.push((*t, repo, snaps));
    }
    // The run: the newest one that matches.
    let at = a.at.as_deref().map(parse_at).transpose()?;
    let want = a.run.as_deref().map(str::to_ascii_lowercase);
    let (run, time) = found
        .iter()
        .flat_map(|(_, _, snaps)| snaps.iter())
        .filter_map(|(_, s)| s.run.map(|r| (r, s.time)))
        .filter(|(r, t)| {
            want.as_ref().is_none_or(|w| r.to_hex().starts_with(w)) && at.is_none_or(|at| *t <= at)
        })
        .max_by_key(|(_, t)| *t)
        .ok_or_else(|| {
            let all: Vec<(Id, Snapshot)> = found.iter().flat_map(|(_, _, s)| s.iter().cloned()).collect();
            Failure::new(format!("no run of component {component} matches; {}", earliest_note(&all)))
                .hint("`kura snapshots` lists runs and their targets")
        })?;
    let mut prepared = Vec::new();
    for (t, repo, snaps) in found {
        let object_opts = flag_options(a, t)?;
        let pick = snaps
            .iter()
            .rev()
            .find(|(_, s)| s.run == Some(run))
            .or_else(|| snaps.iter().rev().find(|(_, s)| s.time <= time))
            .cloned()
            .ok_or_else(|| {
                Failure::new(format!("target {} has no snapshot as of run {}", t.name, run.short()))
                    .hint("back it up, or restore the others with --target")
            })?;
        prepared.push(prepare(a, t, repo, pick.0, pick.1, object_opts).await?);
    }
    say(g, format!("restoring component {component} as of run {}:", run.short()));
    for p in &prepared {
        show_plan(g, a, p);
        if p.snap.run != Some(run) {
            say(g, "  (this target was not in that run: its newest snapshot before it)");
        }
    }
    if a.dry_run {
        if g.json {
            let plans: Vec<_> = prepared
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "target": p.t.name, "snapshot": p.id, "plan": p.plan, "hooks": hooks_json(a, p),
                        "keep_old": p.keep_old, "from_run": p.snap.run == Some(run),
                    })
                })
                .collect();
            print_json(&serde_json::json!({ "run": run, "targets": plans, "dry_run": true }));
        }
        return Ok(0);
    }
    confirm(g, a)?;
    let mut done = Vec::new();
    let names: Vec<String> = prepared.iter().map(|p| p.t.name.clone()).collect();
    for (i, p) in prepared.into_iter().enumerate() {
        let (name, id) = (p.t.name.clone(), p.id);
        match execute(g, a, p).await {
            Ok(r) => done.push(serde_json::json!({ "target": name, "snapshot": id, "restored": r })),
            Err(f) => {
                let left = &names[i + 1..];
                let mut f = f.context(format!("target {name}"));
                let restored: Vec<_> = done.iter().filter_map(|d| d["target"].as_str()).collect();
                if !restored.is_empty() && f.code == crate::output::code::FAILED {
                    // Some targets were restored: not the same as nothing.
                    f = f.with_code(crate::output::code::PARTIAL);
                }
                f.hint = Some(format!(
                    "restored before it: {}; not attempted: {}",
                    if restored.is_empty() { "none".into() } else { restored.join(", ") },
                    if left.is_empty() { "none".into() } else { left.join(", ") }
                ));
                return Err(f);
            }
        }
    }
    if g.json {
        print_json(&serde_json::json!({ "run": run, "targets": done }));
    }
    let any_warned = done.iter().any(|d| d["restored"].as_array().is_some_and(|r| warned(r)));
    Ok(if any_warned { crate::output::code::PARTIAL_BACKUP } else { 0 })
}
