//! The restore plan: what a restore of one target will do, worked out
//! before anything is touched.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Local, Utc};
use kura_format::snapshot::Snapshot;
use kura_format::Id;
use kura_policy::{Config, Target, TargetKind};
use kura_repo::Repository;
use kura_sources::object_store::RestoreOptions as ObjectOptions;

use super::{RestorePlan, RestoreRequest};
use crate::units::{human_bytes, human_duration, kept_summary};
use crate::{Context, Repos, RunError, Selector};

/// Plans the restore of `target` from the snapshot `selector` names.
pub async fn plan(
    ctx: &Context,
    repos: &Repos,
    cfg: &Config,
    target: &Target,
    selector: &Selector,
    req: &RestoreRequest,
) -> Result<RestorePlan, RunError> {
    let object_opts = flag_options(req, target)?;
    let repo = req.repository(ctx, repos, cfg, target).await?;
    let (id, snap) = crate::select::pick(&repo, target, selector, req.plan_name()).await?;
    prepare(ctx, req, target, repo, id, snap, object_opts).await
}

/// Every target of a component, planned as of one run.
pub struct ComponentPlan {
    pub run: Id,
    pub time: DateTime<Utc>,
    pub plans: Vec<RestorePlan>,
}

impl ComponentPlan {
    /// Whether a plan's snapshot belongs to the run (else it is the
    /// target's newest before it: the run did not include the target).
    pub fn from_run(&self, p: &RestorePlan) -> bool {
        p.snapshot.run == Some(self.run)
    }
}

/// Every target of `component` (or `all`), as of one run: the newest run
/// with any of them (at or before the selector's time, or the run it
/// names); a target that run did not include comes from its newest
/// snapshot before it.
pub async fn plan_component(
    ctx: &Context,
    repos: &Repos,
    cfg: &Config,
    component: &str,
    selector: &Selector,
    req: &RestoreRequest,
) -> Result<ComponentPlan, RunError> {
    let single = req.into.is_some()
        || !req.tables.is_empty()
        || req.database.is_some()
        || matches!(selector, Selector::Id(_))
        || !req.include.is_empty()
        || req.start.is_some()
        || req.end.is_some()
        || req.force
        || req.overwrite;
    if single {
        return Err(RunError::usage_hint(
            "--into, --table, --database, --snapshot, --include, --start, --end and --force restore one target",
            "use --target NAME with them",
        ));
    }
    // A target of the component whose settings cannot be resolved now
    // stops the restore before anything is touched: restoring the rest
    // would pass for the whole component.
    if let Some(u) = cfg.unresolved.iter().find(|u| {
        u.section == "target" && (component == "all" || u.component.as_deref().is_none_or(|c| c == component))
    }) {
        return Err(RunError::usage_hint(
            format!("target {}: {}", u.name, u.error),
            "set the variable, or restore the other targets one by one with --target",
        ));
    }
    let chosen: Vec<&Target> = cfg
        .targets
        .values()
        .filter(|t| component == "all" || t.component == component)
        .filter(|t| req.plan.as_ref().is_none_or(|p| p.targets.contains(&t.name)))
        .collect();
    if chosen.is_empty() {
        let mut known: Vec<&str> = cfg.targets.values().map(|t| t.component.as_str()).collect();
        known.sort();
        known.dedup();
        return Err(RunError::usage_hint(
            format!("no target belongs to component {component:?}"),
            format!("configured components: {}, or all", known.join(", ")),
        ));
    }
    let mut found = Vec::new();
    for t in &chosen {
        let repo = req.repository(ctx, repos, cfg, t).await?;
        let snaps = crate::select::snapshots_of(&repo, t, req.plan_name()).await?;
        found.push((*t, repo, snaps));
    }
    let lists: Vec<&[(Id, Snapshot)]> = found.iter().map(|(_, _, s)| s.as_slice()).collect();
    let (run, time) = crate::select::run_of(component, selector, &lists)?;
    let mut plans = Vec::new();
    for (t, repo, snaps) in found {
        let object_opts = flag_options(req, t)?;
        let (id, snap) = snaps
            .iter()
            .rev()
            .find(|(_, s)| s.run == Some(run))
            .or_else(|| snaps.iter().rev().find(|(_, s)| s.time <= time))
            .cloned()
            .ok_or_else(|| {
                RunError::usage_hint(
                    format!("target {} has no snapshot as of run {}", t.name, run.short()),
                    "back it up, or restore the others with --target",
                )
            })?;
        plans.push(prepare(ctx, req, t, repo, id, snap, object_opts).await?);
    }
    Ok(ComponentPlan { run, time, plans })
}

/// Refuses requests that do not fit the target, before anything is
/// opened, and turns the object-store ones into options.
fn flag_options(req: &RestoreRequest, t: &Target) -> Result<ObjectOptions, RunError> {
    if !req.tables.is_empty() && !matches!(t.kind, TargetKind::Postgres(_) | TargetKind::Mysql(_)) {
        return Err(RunError::usage("--table applies to database targets"));
    }
    if let (TargetKind::Command(c), None) = (&t.kind, &req.into) {
        if c.restore.is_none() {
            return Err(RunError::usage_hint(
                format!("target {} has no `restore` command", t.name),
                "add restore = \"…\" to the target, or use --into FILE to write the output to a file",
            ));
        }
    }
    let objects = matches!(t.kind, TargetKind::ObjectStore(_));
    if req.overwrite || (!req.include.is_empty() && !objects) {
        return Err(RunError::usage_hint(
            "--include and --overwrite are for directory restores (kura restore SNAPSHOT --target DIR)",
            "an object_store target takes --include KEY_PREFIX",
        ));
    }
    if (req.start.is_some() || req.end.is_some() || req.force) && !objects {
        return Err(RunError::usage("--start, --end and --force apply to object_store targets"));
    }
    Ok(ObjectOptions {
        include: req.include.clone(),
        start: req.start,
        end: req.end,
        force: req.force,
        dry_run: false,
        key_date: match &t.kind {
            TargetKind::ObjectStore(o) => o.key_date.clone(),
            _ => None,
        },
        sample: match &t.kind {
            TargetKind::ObjectStore(_) => req.sample,
            _ => None,
        },
    })
}

/// The tables a PostgreSQL restore in place replaces, none meaning the
/// whole database: those asked for, else those of a target that backs up
/// only some tables. A partial dump restored as a whole database would drop
/// every table it does not hold from the live database.
pub(crate) fn pg_tables_in_place(
    req: &RestoreRequest,
    pg: &kura_policy::PostgresTarget,
) -> Result<Vec<String>, RunError> {
    if !req.tables.is_empty() || req.into.is_some() {
        return Ok(req.tables.clone());
    }
    if !pg.exclude_tables.is_empty() {
        return Err(RunError::usage_hint(
            "this target leaves tables out (exclude_tables), so its snapshots cannot replace the whole live database",
            "restore chosen tables in place with --table T, or the whole dump --into a new database",
        ));
    }
    Ok(pg.tables.clone())
}

/// What a files target's backup leaves out, which a restore in place leaves
/// alone.
pub(crate) fn file_filters(
    f: &kura_policy::FilesTarget,
    now: chrono::DateTime<Utc>,
) -> Result<kura_sources::files::Filters, RunError> {
    Ok(kura_sources::files::Filters {
        excludes: kura_repo::backup::Excludes::new(&f.exclude)?,
        changed_within: f.changed_within,
        now,
    })
}

fn size_now(p: &Path) -> String {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => "a directory".into(),
        Ok(m) => human_bytes(m.len()),
        Err(_) => "absent".into(),
    }
}

async fn prepare(
    ctx: &Context,
    req: &RestoreRequest,
    t: &Target,
    repo: Arc<Repository>,
    id: Id,
    snap: Snapshot,
    object_opts: ObjectOptions,
) -> Result<RestorePlan, RunError> {
    let keep_old = req.keep_old;

    // A PostgreSQL snapshot holds one dump per database.
    let mut pg_dumps: Vec<String> = snap.paths.iter().filter(|p| p.ends_with(".pgdump")).cloned().collect();
    if let Some(db) = &req.database {
        if !matches!(t.kind, TargetKind::Postgres(_)) {
            return Err(RunError::usage("--database applies to postgres targets"));
        }
        let want = format!("{db}.pgdump");
        if !pg_dumps.contains(&want) {
            return Err(RunError::usage(format!(
                "snapshot {} holds no database {db} (it holds {})",
                id.short(),
                pg_dumps.iter().map(|n| n.trim_end_matches(".pgdump")).collect::<Vec<_>>().join(", ")
            )));
        }
        pg_dumps = vec![want];
    }
    if matches!(t.kind, TargetKind::Postgres(_))
        && pg_dumps.len() > 1
        && (req.into.is_some() || !req.tables.is_empty())
    {
        return Err(RunError::usage_hint(
            format!(
                "snapshot {} holds {} databases; --into and --table restore one",
                id.short(),
                pg_dumps.len()
            ),
            "choose it with --database NAME",
        ));
    }
    if let TargetKind::Postgres(pg) = &t.kind {
        pg_tables_in_place(req, pg)?;
    }
    // A files target in place: what will be overwritten, added, moved aside.
    let files_counts = match (&t.kind, &req.into) {
        (TargetKind::Files(f), None) => Some(
            kura_sources::files::plan_in_place(
                &repo,
                snap.tree,
                &f.paths,
                req.mirror,
                &file_filters(f, ctx.clock.now())?,
            )
            .await?,
        ),
        _ => None,
    };
    if req.mirror && files_counts.is_none() {
        return Err(RunError::usage("--mirror applies to files targets restored in place"));
    }
    let dests = destinations(req, t, &pg_dumps)?;
    // An object restore's plan needs the manifest and the destination's
    // listing: what will be written, what is already there.
    let mut object_plan = None;
    if let TargetKind::ObjectStore(o) = &t.kind {
        let dest = crate::object_store(o, &dests[0].display().to_string(), &ctx.retry)?;
        let keep = if req.force && keep_old {
            let at = kura_sources::object_store::kept_location(
                &dests[0].display().to_string(),
                ctx.clock.now().with_timezone(&Local),
            );
            Some((crate::object_store(o, &at, &ctx.retry)?, at))
        } else {
            None
        };
        let dry = ObjectOptions { dry_run: true, ..object_opts.clone() };
        let p = kura_sources::object_store::restore(&repo, snap.tree, dest.clone(), None, &dry).await?;
        object_plan = Some((dest, keep, p));
    }
    let mut steps = Vec::new();
    for d in &dests {
        steps.push(step(req, t, &snap, d, object_plan.as_ref())?);
    }
    if let Some(c) = &files_counts {
        steps.push(format!(
            "overwrite {} entries and add {}; {} the snapshot lacks {}",
            c.overwritten,
            c.added,
            c.moved_aside + c.left_alone,
            if req.mirror {
                format!(
                    "(--mirror): move {} aside into the kept copy, leave alone {} the target's filters leave out",
                    c.moved_aside, c.left_alone
                )
            } else {
                "are left alone (--mirror moves them aside)".to_string()
            }
        ));
    }
    if req.into.is_none() {
        if let Some(line) = kept_step(t, keep_old) {
            steps.push(line);
        }
    }
    let objects = object_plan.as_ref().map(|(_, _, o)| o.clone());
    Ok(RestorePlan {
        target: t.clone(),
        repo,
        id,
        snapshot: snap,
        keep_old,
        dests,
        steps,
        objects,
        pg_dumps,
        object_opts,
        object_plan,
    })
}

/// Where each part of the restore goes: paths, or database names.
fn destinations(req: &RestoreRequest, t: &Target, pg_dumps: &[String]) -> Result<Vec<PathBuf>, RunError> {
    Ok(match &t.kind {
        TargetKind::Sqlite(s) => vec![req.into.clone().unwrap_or_else(|| s.path.clone())],
        TargetKind::Files(f) => match &req.into {
            Some(dir) => vec![dir.clone()],
            None => f.paths.clone(),
        },
        TargetKind::Postgres(_) => match &req.into {
            Some(into) => vec![into.clone()],
            None => pg_dumps.iter().map(|n| PathBuf::from(n.trim_end_matches(".pgdump"))).collect(),
        },
        TargetKind::Command(c) => {
            vec![req.into.clone().unwrap_or_else(|| PathBuf::from(c.restore.clone().unwrap_or_default()))]
        }
        TargetKind::Mysql(my) => {
            let u = kura_sources::mysql::MyUrl::parse(&my.url)?;
            vec![PathBuf::from(req.into.clone().map(|p| p.display().to_string()).unwrap_or(u.dbname))]
        }
        TargetKind::ObjectStore(o) => vec![req.into.clone().unwrap_or_else(|| PathBuf::from(&o.url))],
        other => {
            return Err(RunError::Unsupported(format!(
                "restoring {} targets is not supported yet",
                other.type_name()
            )))
        }
    })
}

/// One destination's step, in words.
fn step(
    req: &RestoreRequest,
    t: &Target,
    snap: &Snapshot,
    d: &Path,
    object_plan: Option<&super::ObjectPlan>,
) -> Result<String, RunError> {
    Ok(match (&t.kind, &req.into) {
        (TargetKind::ObjectStore(_), _) => {
            let (_, keep, p) = object_plan.expect("planned before the steps");
            let mut s =
                format!("write {} object(s) ({}) into {}", p.written.len(), human_bytes(p.bytes), d.display());
            if !p.replaced.is_empty() {
                s += &format!(
                    ", replacing {} that exist{}",
                    p.replaced.len(),
                    match keep {
                        Some((_, at)) => format!(" (the old ones kept in {at})"),
                        None => " (the old ones are not kept)".into(),
                    }
                );
            }
            if !p.skipped.is_empty() {
                s += &format!("; skip {} already there (--force replaces them)", p.skipped.len());
            }
            // The keys themselves, so a dry run can be checked.
            const SHOWN: usize = 20;
            for key in p.written.iter().chain(&p.replaced).take(SHOWN) {
                s += &format!("\n    {key}");
            }
            let more = (p.written.len() + p.replaced.len()).saturating_sub(SHOWN);
            if more > 0 {
                s += &format!("\n    … and {more} more (--json lists them all)");
            }
            s
        }
        (TargetKind::Files(_), Some(_)) => format!("restore into {} (the live paths are not touched)", d.display()),
        (TargetKind::Postgres(_) | TargetKind::Mysql(_), Some(_)) => {
            format!("restore into the new database {} (the live database is not touched)", d.display())
        }
        (TargetKind::Postgres(pg), None) if !pg_tables_in_place(req, pg)?.is_empty() => format!(
            "replace the rows of table(s) {} in database {} in one transaction, and nothing else (the old rows kept in schema kura_bak_YYYYMMDD_HHMM)",
            pg_tables_in_place(req, pg)?.join(", "),
            d.display()
        ),
        (TargetKind::Postgres(pg), None) => {
            let url = kura_sources::postgres::PgUrl::parse(&pg.url)?.with_db(&d.display().to_string());
            pg_swap_step(&url)?
        }
        (TargetKind::Command(_), Some(_)) => format!("write the stored output to the new file {}", d.display()),
        (TargetKind::Command(_), None) => format!(
            "verify every blob, then pipe the stored output ({}) into `{}`",
            human_bytes(snap.summary.bytes),
            d.display()
        ),
        (TargetKind::Mysql(_), None) if !req.tables.is_empty() => format!(
            "restore table(s) {} into a fresh database, check, then replace them in database {} (the old ones kept in {}_bak_YYYYMMDD_HHMM)",
            req.tables.join(", "),
            d.display(),
            d.display()
        ),
        (TargetKind::Mysql(_), None) => format!(
            "restore into a fresh database, then swap its tables with database {} (the old ones kept in {}_bak_YYYYMMDD_HHMM)",
            d.display(),
            d.display()
        ),
        (TargetKind::Files(_), None) => {
            format!("write the snapshot's entries over {} (now {})", d.display(), size_now(d))
        }
        _ => format!("replace {} (now {})", d.display(), size_now(d)),
    })
}

/// Copies of earlier restores pile up unless someone looks: how many there
/// are, and which will stay. A server that cannot be asked now fails the
/// restore itself, with its own message.
fn kept_step(t: &Target, keep_old: bool) -> Option<String> {
    let kept = crate::kept::of_target(t).ok()?;
    if kept.is_empty() && !keep_old {
        return None;
    }
    let rule = match (t.kept.last, t.kept.within) {
        (None, None) => "`kura kept clean` removes them".to_string(),
        (last, within) => format!(
            "after the restore only {} stay (kept_last / kept_within)",
            [
                last.map(|n| format!("the newest {n}")),
                within.map(|d| format!("those younger than {}", human_duration(d))),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" and ")
        ),
    };
    Some(format!("{} of this target exist now (`kura kept list` shows them); {rule}", kept_summary(&kept)))
}

/// What a whole-database swap will do to the live database as it is now.
fn pg_swap_step(url: &kura_sources::postgres::PgUrl) -> Result<String, RunError> {
    let db = &url.dbname;
    if !kura_sources::postgres::exists(url)? {
        return Ok(format!(
            "database {db} does not exist: restore into a fresh database and give it the name {db}, with the backup's owner, encoding and settings"
        ));
    }
    let mut s = format!(
        "restore into a fresh database with the backup's owner, grants and settings, then swap it with database {db} (kept as {db}_bak_YYYYMMDD_HHMM)"
    );
    match kura_sources::postgres::sessions(url)? {
        0 => s += "; no session is connected to it now",
        n => s += &format!("; the {n} session(s) connected to it now will be ended at the swap"),
    }
    Ok(s)
}
