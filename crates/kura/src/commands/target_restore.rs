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

fn size_now(p: &std::path::Path) -> String {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => "a directory".into(),
        Ok(m) => human_bytes(m.len()),
        Err(_) => "absent".into(),
    }
}

/// SIGINT and SIGTERM, caught from the moment this exists: one that
/// arrives while pre_restore runs still stops the restore before it starts,
/// and post_restore still runs.
struct Interrupt(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl Interrupt {
    fn catch() -> Interrupt {
        use tokio::signal::unix::{signal, SignalKind};
        Interrupt(signal(SignalKind::interrupt()).ok().zip(signal(SignalKind::terminate()).ok()))
    }

    /// Resolves on the first signal, with its name.
    async fn wait(&mut self) -> &'static str {
        let Some((int, term)) = &mut self.0 else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    }
}

/// Runs a hook under `sh -c`. Its output goes through [`note`] line by
/// line (so `-q` and `--log-format` apply to it too), and the last lines
/// are quoted if it fails.
fn hook(g: &Global, name: &str, cmd: &str) -> Result<(), Failure> {
    use std::io::BufRead;
    note(g, &format!("running {name} hook: {cmd}"));
    let mut child = std::process::Command::new("sh")
        .args(["-c", cmd])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Failure::new(format!("{name} hook could not start: {e}")))?;
    let (out, err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let tail = std::sync::Mutex::new(std::collections::VecDeque::new());
    let relay = |r: Box<dyn std::io::Read + Send>| {
        for line in std::io::BufReader::new(r).lines().map_while(Result::ok) {
            note(g, &format!("{name}: {line}"));
            let mut t = tail.lock().expect("tail lock");
            t.push_back(line);
            if t.len() > 10 {
                t.pop_front();
            }
        }
    };
    std::thread::scope(|s| {
        s.spawn(|| relay(Box::new(out)));
        s.spawn(|| relay(Box::new(err)));
    });
    let status = child.wait().map_err(|e| Failure::new(format!("{name} hook: {e}")))?;
    if !status.success() {
        let tail = tail.into_inner().expect("tail lock");
        let said = if tail.is_empty() {
            String::new()
        } else {
            format!("; it said: {}", tail.into_iter().collect::<Vec<_>>().join(" / "))
        };
        return Err(Failure::new(format!("{name} hook `{cmd}` failed ({status}){said}")));
    }
    Ok(())
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

async fn prepare<'c>(
    a: &RestoreArgs,
    t: &'c Target,
    repo: Arc<Repository>,
    id: Id,
    snap: Snapshot,
    object_opts: ObjectOptions,
) -> Result<Prepared<'c>, Failure> {
    let keep_old = !a.no_keep_old;

    // A PostgreSQL snapshot holds one dump per database.
    let mut pg_dumps: Vec<String> = snap.paths.iter().filter(|p| p.ends_with(".pgdump")).cloned().collect();
    if let Some(db) = &a.database {
        if !matches!(t.kind, TargetKind::Postgres(_)) {
            return Err(Failure::new("--database applies to postgres targets"));
        }
        let want = format!("{db}.pgdump");
        if !pg_dumps.contains(&want) {
            return Err(Failure::new(format!(
                "snapshot {} holds no database {db} (it holds {})",
                id.short(),
                pg_dumps.iter().map(|n| n.trim_end_matches(".pgdump")).collect::<Vec<_>>().join(", ")
            )));
        }
        pg_dumps = vec![want];
    }
    if matches!(t.kind, TargetKind::Postgres(_))
        && pg_dumps.len() > 1
        && (a.into.is_some() || !a.tables.is_empty())
    {
        return Err(Failure::new(format!(
            "snapshot {} holds {} databases; --into and --table restore one",
            id.short(),
            pg_dumps.len()
        ))
        .hint("choose it with --database NAME"));
    }
    if let TargetKind::Postgres(pg) = &t.kind {
        pg_tables_in_place(a, pg)?;
    }
    let mut plan = Vec::new();
    // A files target in place: what will be overwritten, added, moved aside.
    let files_counts = match (&t.kind, &a.into) {
        (TargetKind::Files(f), None) => Some(
            kura_sources::files::plan_in_place(&repo, snap.tree, &f.paths, a.mirror, &file_filters(f)?)
                .await?,
        ),
        _ => None,
    };
    if a.mirror && files_counts.is_none() {
        return Err(Failure::new("--mirror applies to files targets restored in place"));
    }
    let dests: Vec<PathBuf> = match &t.kind {
        TargetKind::Sqlite(s) => vec![a.into.clone().unwrap_or_else(|| s.path.clone())],
        TargetKind::Files(f) => match &a.into {
            Some(dir) => vec![dir.clone()],
            None => f.paths.clone(),
        },
        TargetKind::Postgres(_) => match &a.into {
            Some(into) => vec![into.clone()],
            None => pg_dumps.iter().map(|n| PathBuf::from(n.trim_end_matches(".pgdump"))).collect(),
        },
        TargetKind::Command(c) => {
            vec![a.into.clone().unwrap_or_else(|| PathBuf::from(c.restore.clone().unwrap_or_default()))]
        }
        TargetKind::Mysql(my) => {
            let u = kura_sources::mysql::MyUrl::parse(&my.url)?;
            vec![PathBuf::from(a.into.clone().map(|p| p.display().to_string()).unwrap_or(u.dbname))]
        }
        TargetKind::ObjectStore(o) => {
            vec![a.into.clone().unwrap_or_else(|| PathBuf::from(&o.url))]
        }
        other => {
            return Err(Failure::new(format!("restoring {} targets is not supported yet", other.type_name())))
        }
    };
    // An object restore's plan needs the manifest and the destination's
    // listing: what will be written, what is already there.
    let mut object_plan = None;
    if let TargetKind::ObjectStore(o) = &t.kind {
        let dest = super::object_store(o, &dests[0].display().to_string())?;
        let keep = if a.force && keep_old {
            let at = kura_sources::object_store::kept_location(
                &dests[0].display().to_string(),
                super::clock().now().with_timezone(&Local),
            );
            Some((super::object_store(o, &at)?, at))
        } else {
            None
        };
        let dry = ObjectOptions { dry_run: true, ..object_opts.clone() };
        let p = kura_sources::object_store::restore(&repo, snap.tree, dest.clone(), None, &dry).await?;
        object_plan = Some((dest, keep, p));
    }
    for d in &dests {
        let action = match (&t.kind, &a.into) {
            (TargetKind::ObjectStore(_), _) => {
                let (_, keep, p) = object_plan.as_ref().expect("planned above");
                let mut s = format!(
                    "write {} object(s) ({}) into {}",
                    p.written.len(),
                    human_bytes(p.bytes),
                    d.display()
                );
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
            (TargetKind::Files(_), Some(_)) => {
                format!("restore into {} (the live paths are not touched)", d.display())
            }
            (TargetKind::Postgres(_) | TargetKind::Mysql(_), Some(_)) => {
                format!("restore into the new database {} (the live database is not touched)", d.display())
            }
            (TargetKind::Postgres(pg), None) if !pg_tables_in_place(a, pg)?.is_empty() => format!(
                "replace the rows of table(s) {} in database {} in one transaction, and nothing else (the old rows kept in schema kura_bak_YYYYMMDD_HHMM)",
                pg_tables_in_place(a, pg)?.join(", "),
                d.display()
            ),

            (TargetKind::Postgres(pg), None) => {
                let url = kura_sources::postgres::PgUrl::parse(&pg.url)?.with_db(&d.display().to_string());
                pg_swap_plan(&url)?
            }
            (TargetKind::Command(_), Some(_)) => {
                format!("write the stored output to the new file {}", d.display())
            }
            (TargetKind::Command(_), None) => format!(
                "verify every blob, then pipe the stored output ({}) into `{}`",
                human_bytes(snap.summary.bytes),
                d.display()
            ),
            (TargetKind::Mysql(_), None) if !a.tables.is_empty() => format!(
                "restore table(s) {} into a fresh database, check, then replace them in database {} (the old ones kept in {}_bak_YYYYMMDD_HHMM)",
                a.tables.join(", "),
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
        };
        plan.push(action);
    }
    if let Some(c) = &files_counts {
        plan.push(format!(
            "overwrite {} entries and add {}; {} the snapshot lacks {}",
            c.overwritten,
            c.added,
            c.moved_aside + c.left_alone,
            if a.mirror {
                format!(
                    "(--mirror): move {} aside into the kept copy, leave alone {} the target's filters leave out",
                    c.moved_aside, c.left_alone
                )
            } else {
                "are left alone (--mirror moves them aside)".to_string()
            }
        ));
    }
    if a.into.is_none() {
        // Copies of earlier restores pile up unless someone looks: say how
        // many there are (a server that cannot be asked now fails the
        // restore itself, with its own message).
        if let Ok(kept) = super::kept::of_target(t) {
            if !kept.is_empty() || keep_old {
                let rule = match (t.kept.last, t.kept.within) {
                    (None, None) => "`kura kept clean` removes them".to_string(),
                    (last, within) => format!(
                        "after the restore only {} stay (kept_last / kept_within)",
                        [
                            last.map(|n| format!("the newest {n}")),
                            within.map(|d| format!("those younger than {}", humantime(d))),
                        ]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" and ")
                    ),
                };
                plan.push(format!(
                    "{} of this target exist now (`kura kept list` shows them); {rule}",
                    super::kept::summary(&kept)
                ));
            }
        }
    }
    Ok(Prepared { t, repo, id, snap, keep_old, dests, pg_dumps, object_opts, object_plan, plan })
}

/// `7d`, `12h`, `30m`: a duration as a user writes it.
fn humantime(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// What a whole-database swap will do to the live database as it is now.
fn pg_swap_plan(url: &kura_sources::postgres::PgUrl) -> Result<String, Failure> {
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

/// The hooks a restore would run, for `--json`: what the text plan says.
fn hooks_json(a: &RestoreArgs, p: &Prepared) -> serde_json::Value {
    serde_json::json!({
        "run": runs_hooks(a),
        "pre_restore": p.t.pre_restore,
        "post_restore": p.t.post_restore,
    })
}

fn show_plan(g: &Global, a: &RestoreArgs, p: &Prepared) {
    let (t, snap) = (p.t, &p.snap);
    let taken = snap.time.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S");
    say(g, format!("restore plan for target {} ({}):", t.name, t.kind.type_name()));
    say(
        g,
        format!(
            "  from snapshot {} taken {taken} on {} ({})",
            p.id.short(),
            snap.hostname,
            human_bytes(snap.summary.bytes)
        ),
    );
    for line in &p.plan {
        say(g, format!("  {line}"));
    }
    if p.keep_old && a.into.is_none() && matches!(t.kind, TargetKind::Sqlite(_) | TargetKind::Files(_)) {
        say(g, "  the replaced copy is kept as NAME.bak-YYYYMMDD_HHMM beside it");
    }
    if runs_hooks(a) {
        if let Some(h) = &t.pre_restore {
            say(g, format!("  before: {h}"));
        }
        if let Some(h) = &t.post_restore {
            say(g, format!("  after: {h} (also after a failure or an interruption)"));
        }
    } else if t.pre_restore.is_some() || t.post_restore.is_some() {
        say(g, "  hooks: not run for a copy beside the live data (--hooks runs them)");
    }
}

/// Whether a restore's results carry warnings (exit 3).
fn warned(restored: &[serde_json::Value]) -> bool {
    restored.iter().any(|r| r["warnings"].as_array().is_some_and(|w| !w.is_empty()))
}

/// Runs the hooks and the restore; the post hook runs even on failure.
async fn execute(g: &Global, a: &RestoreArgs, p: Prepared<'_>) -> Result<Vec<serde_json::Value>, Failure> {
    let Prepared { t, repo, snap, keep_old, dests, pg_dumps, object_opts, mut object_plan, .. } = p;
    let (pre, post) = if runs_hooks(a) { (&t.pre_restore, &t.post_restore) } else { (&None, &None) };
    let mut interrupt = Interrupt::catch();
    if let Some(h) = pre {
        if let Err(f) = hook(g, "pre_restore", h) {
            if let Some(post) = post {
                let _ = hook(g, "post_restore", post);
            }
            return Err(f.context("nothing was restored"));
        }
    }
    let work = async {
        match &t.kind {
            TargetKind::Sqlite(_) => {
                let name = snap.paths.first().cloned().unwrap_or_default();
                let r = kura_sources::sqlite::restore(&repo, snap.tree, &name, &dests[0], keep_old).await?;
                say(
                    g,
                    format!("restored {} ({}); integrity_check ok", r.path.display(), human_bytes(r.bytes)),
                );
                if let Some(k) = &r.kept {
                    say(g, format!("previous copy kept as {}", k.display()));
                }
                Ok(vec![serde_json::json!({
                    "path": r.path, "bytes": r.bytes, "kept": r.kept, "integrity_check": "ok",
                })])
            }
            TargetKind::Files(f) => {
                if let Some(dir) = &a.into {
                    let opts = kura_repo::restore::RestoreOptions {
                        include: f.paths.iter().map(|p| p.display().to_string()).collect(),
                        owners: super::euid() == 0,
                        ..Default::default()
                    };
                    let rep =
                        kura_repo::restore::restore(&repo, snap.tree, dir, &opts, Default::default()).await?;
                    if !rep.failed.is_empty() {
                        return Err(Failure::new(format!(
                            "{} entries could not be restored: {:?}",
                            rep.failed.len(),
                            rep.failed
                        )));
                    }
                    say(g, format!("restored {} files into {}", rep.files, dir.display()));
                    return Ok(vec![
                        serde_json::json!({ "path": dir, "files": rep.files, "bytes": rep.bytes }),
                    ]);
                }
                let filters = file_filters(f)?;
                let how = kura_sources::files::InPlace {
                    keep_old,
                    owners: super::euid() == 0,
                    mirror: a.mirror,
                    filters: &filters,
                };
                let rs = kura_sources::files::restore_in_place(&repo, snap.tree, &f.paths, &how).await?;
                let mut out = Vec::new();
                for r in rs {
                    let c = &r.counts;
                    say(
                        g,
                        format!(
                            "restored {} ({} files, {}): {} overwritten, {} added, {} moved aside",
                            r.path.display(),
                            r.files,
                            human_bytes(r.bytes),
                            c.overwritten,
                            c.added,
                            c.moved_aside
                        ),
                    );
                    if let Some(k) = &r.kept {
                        say(g, format!("what was replaced is kept in {}", k.display()));
                    }
                    out.push(serde_json::json!({
                        "path": r.path, "files": r.files, "bytes": r.bytes, "kept": r.kept, "changes": r.counts,
                    }));
                }
                Ok(out)
            }
            TargetKind::Postgres(pg) => {
                let base = kura_sources::postgres::PgUrl::parse(&pg.url)?;
                let into = a.into.as_ref().map(|p| p.display().to_string());
                let mut out = Vec::new();
                // One database after the other; each is swapped only once
                // its own restore succeeded, and a failure stops the rest.
                let tables = pg_tables_in_place(a, pg)?;
                for name in &pg_dumps {
                    let url = base.with_db(name.trim_end_matches(".pgdump"));
                    let r = if tables.is_empty() || into.is_some() {
                        let how = kura_sources::postgres::PgRestore {
                            into: into.as_deref(),
                            tables: &a.tables,
                            keep_old,
                            no_owner: a.no_owner,
                        };
                        kura_sources::postgres::restore(&repo, snap.tree, name, &url, &how).await?
                    } else {
                        kura_sources::postgres::restore_tables_in_place(
                            &repo,
                            snap.tree,
                            name,
                            &url,
                            &tables,
                            keep_old,
                            a.lock_timeout,
                        )
                        .await?
                    };
                    if r.sessions_ended > 0 {
                        say(
                            g,
                            format!(
                                "ended {} session(s) on database {} for the swap",
                                r.sessions_ended, r.database
                            ),
                        );
                    }
                    say(g, format!("restored database {} ({} of dump)", r.database, human_bytes(r.bytes)));
                    if let Some(k) = &r.kept {
                        say(g, format!("previous copy kept as {k}"));
                    }
                    for w in &r.warnings {
                        tracing::warn!("database {}: not carried over: {w}", r.database);
                    }
                    out.push(serde_json::json!({
                        "database": r.database, "bytes": r.bytes, "kept": r.kept,
                        "sessions_ended": r.sessions_ended, "warnings": r.warnings,
                    }));
                }
                Ok(out)
            }
            TargetKind::Command(c) => {
                let name = snap.paths.first().cloned().unwrap_or_default();
                let r = kura_sources::command::restore(
                    &repo,
                    snap.tree,
                    &name,
                    c.restore.as_deref(),
                    a.into.as_deref(),
                )
                .await?;
                match &r.file {
                    Some(f) => say(g, format!("wrote {} ({})", f.display(), human_bytes(r.bytes))),
                    None => say(g, format!("restore command read {}", human_bytes(r.bytes))),
                }
                Ok(vec![serde_json::json!({ "bytes": r.bytes, "file": r.file })])
            }
            TargetKind::Mysql(my) => {
                let into = a.into.as_ref().map(|p| p.display().to_string());
                let how = kura_sources::mysql::MyRestore {
                    into: into.as_deref(),
                    tables: &a.tables,
                    keep_old,
                    lock_timeout: a.lock_timeout,
                };
                let r = kura_sources::mysql::restore(&repo, snap.tree, &snap.paths, &my.url, &how).await?;
                say(
                    g,
                    format!(
                        "restored database {} ({} tables, {} of dump)",
                        r.database,
                        r.tables.len(),
                        human_bytes(r.bytes)
                    ),
                );
                if let Some(k) = &r.kept {
                    say(g, format!("previous tables kept in database {k}"));
                }
                if !r.events_disabled.is_empty() {
                    let place = if r.kept.is_some() { "the kept copy" } else { "this copy" };
                    say(g, format!("events disabled in {place}: {}", r.events_disabled.join(", ")));
                }
                Ok(vec![serde_json::json!({
                    "database": r.database, "tables": r.tables, "bytes": r.bytes, "kept": r.kept,
                    "events_disabled": r.events_disabled,
                })])
            }
            TargetKind::ObjectStore(_) => {
                let (dest, keep, _) = object_plan.take().expect("planned above");
                let r = kura_sources::object_store::restore(
                    &repo,
                    snap.tree,
                    dest,
                    keep.map(|(s, _)| s),
                    &object_opts,
                )
                .await?;
                say(g, format!(
                    "wrote {} object(s), replaced {}, skipped {} already there ({}); each read back and compared",
                    r.written.len(),
                    r.replaced.len(),
                    r.skipped.len(),
                    human_bytes(r.bytes)
                ));
                if let Some(k) = &r.kept {
                    say(g, format!("replaced objects kept in {k}"));
                }
                for w in &r.warnings {
                    tracing::warn!("{w}");
                }
                Ok(vec![serde_json::json!({
                    "written": r.written, "replaced": r.replaced, "skipped": r.skipped,
                    "bytes": r.bytes, "kept": r.kept, "warnings": r.warnings,
                })])
            }
            other => {
                Err(Failure::new(format!("restoring {} targets is not supported yet", other.type_name())))
            }
        }
    };
    // SIGINT or SIGTERM stops the restore where it is (every step leaves the
    // live copy old or new, as after a kill), and post_restore still runs:
    // a service stopped by pre_restore is never left stopped.
    let result: Result<Vec<serde_json::Value>, Failure> = tokio::select! {
        r = work => r,
        sig = interrupt.wait() => Err(Failure::new(format!(
            "interrupted by {sig}: the restore stopped; the live copy is whole, old or new"
        ))
        .with_code(130)),
    };
    let post = post.as_ref().map(|h| hook(g, "post_restore", h));
    let restored = result?;
    if a.into.is_none() {
        if let Err(f) = super::kept::apply_policy(g, t) {
            tracing::warn!("{}", f.message);
        }
    }
    if let Some(Err(f)) = post {
        return Err(f.context("restored, but"));
    }
    Ok(restored)
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
