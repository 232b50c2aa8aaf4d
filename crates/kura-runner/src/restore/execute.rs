//! Carrying a plan out: the hooks (post_restore always runs), the restore
//! of each kind through its source, a stop signal, and the target's rule
//! for its kept copies.
use kura_policy::TargetKind;

use super::plan::{file_filters, pg_tables_in_place};
use super::{RestorePlan, RestoreReport, RestoreRequest, Restored};
use crate::event::Event;
use crate::{hooks, Context, RunError};

/// Set to the name of a signal when the caller wants the restore stopped
/// (SIGINT, SIGTERM). Every step leaves the live copy old or new, as after
/// a kill, and post_restore still runs.
pub type Stop = tokio::sync::watch::Receiver<Option<&'static str>>;

async fn stopped(mut stop: Stop) -> &'static str {
    // The guard `wait_for` returns is let go before anything else is
    // awaited, so that a restore can run on a spawned task.
    let signal = stop.wait_for(|s| s.is_some()).await.map(|s| s.expect("waited for a signal"));
    match signal {
        Ok(name) => name,
        // Nobody can stop this restore any more.
        Err(_) => std::future::pending().await,
    }
}

/// Runs the hooks and the restore; the post hook runs even on failure.
pub async fn execute(
    ctx: &Context,
    plan: RestorePlan,
    req: &RestoreRequest,
    stop: Stop,
) -> Result<RestoreReport, RunError> {
    let t = plan.target.clone();
    let (id, sink) = (plan.id, ctx.sink.as_ref());
    let (pre, post) = if req.runs_hooks() { (&t.pre_restore, &t.post_restore) } else { (&None, &None) };
    if let Some(h) = pre {
        // A signal that arrives while pre_restore runs still stops the
        // restore before it starts.
        if let Err(e) = hooks::run(sink, "pre_restore", h) {
            if let Some(post) = post {
                let _ = hooks::run(sink, "post_restore", post);
            }
            return Err(e.context("nothing was restored"));
        }
    }
    // While it reads, a session keeps a concurrent prune from deleting
    // what it reads, even when retention forgets the snapshot meanwhile
    // (format.md §13).
    let session = crate::hold(ctx, &plan.repo, "restore").await;
    // A stop already asked for wins: the restore does not begin.
    let result = tokio::select! {
        biased;
        signal = stopped(stop) => Err(RunError::Interrupted { signal }),
        r = restore_kind(ctx, plan, req) => r,
    };
    if let Some(s) = session {
        s.finish().await;
    }
    let post = post.as_ref().map(|h| hooks::run(sink, "post_restore", h));
    let restored = result?;
    let mut kept_removed = Vec::new();
    if req.into.is_none() {
        match crate::kept::apply_policy(ctx, &t) {
            Ok(gone) => kept_removed = gone,
            Err(e) => sink.event(Event::Warning { target: t.name.clone(), message: e.to_string() }),
        }
    }
    if let Some(Err(e)) = post {
        return Err(e.context("restored, but"));
    }
    Ok(RestoreReport { target: t.name.clone(), snapshot: id, restored, kept_removed })
}

/// Why a component restore stopped, and how far it got.
#[derive(Debug)]
pub struct ComponentFailure {
    pub target: String,
    pub error: RunError,
    /// The targets restored before it.
    pub done: Vec<RestoreReport>,
    /// The targets not attempted.
    pub left: Vec<String>,
}

/// Carries out a component's plans one after the other; the first failure
/// stops the rest.
pub async fn execute_component(
    ctx: &Context,
    plans: Vec<RestorePlan>,
    req: &RestoreRequest,
    stop: Stop,
) -> Result<Vec<RestoreReport>, ComponentFailure> {
    let names: Vec<String> = plans.iter().map(|p| p.target.name.clone()).collect();
    let mut done = Vec::new();
    for (i, p) in plans.into_iter().enumerate() {
        match execute(ctx, p, req, stop.clone()).await {
            Ok(r) => done.push(r),
            Err(error) => {
                return Err(ComponentFailure {
                    target: names[i].clone(),
                    error,
                    done,
                    left: names[i + 1..].to_vec(),
                })
            }
        }
    }
    Ok(done)
}

/// The restore itself, by kind of target.
async fn restore_kind(
    ctx: &Context,
    plan: RestorePlan,
    req: &RestoreRequest,
) -> Result<Vec<Restored>, RunError> {
    let RestorePlan {
        target: t,
        repo,
        snapshot: snap,
        keep_old,
        dests,
        pg_dumps,
        object_opts,
        mut object_plan,
        ..
    } = plan;
    // Each part is announced as it is done: a later one may still fail.
    let emit = |r: Restored| {
        ctx.sink.event(Event::Restored { target: t.name.clone(), restored: r.clone() });
        r
    };
    match &t.kind {
        TargetKind::Sqlite(_) => {
            let name = kura_sources::sqlite::database_file(&snap.paths).unwrap_or_default();
            let r = kura_sources::sqlite::restore(&repo, snap.tree, name, &dests[0], keep_old).await?;
            Ok(vec![emit(Restored::Sqlite {
                path: r.path,
                bytes: r.bytes,
                kept: r.kept,
                integrity_check: "ok",
            })])
        }
        TargetKind::Files(f) => {
            if let Some(dir) = &req.into {
                let opts = kura_repo::restore::RestoreOptions {
                    include: f.paths.iter().map(|p| p.display().to_string()).collect(),
                    owners: ctx.root,
                    sample: req.sample,
                    ..Default::default()
                };
                let rep =
                    kura_repo::restore::restore(&repo, snap.tree, dir, &opts, Default::default()).await?;
                if !rep.failed.is_empty() {
                    return Err(RunError::EntriesFailed { failed: rep.failed });
                }
                return Ok(vec![emit(Restored::Copy {
                    path: dir.clone(),
                    files: rep.files,
                    bytes: rep.bytes,
                    sampled_out: rep.sampled_out,
                    sampled_out_bytes: rep.sampled_out_bytes,
                })]);
            }
            let filters = file_filters(f, ctx.clock.now())?;
            let how = kura_sources::files::InPlace {
                keep_old,
                owners: ctx.root,
                mirror: req.mirror,
                filters: &filters,
            };
            let rs = kura_sources::files::restore_in_place(&repo, snap.tree, &f.paths, &how).await?;
            Ok(rs
                .into_iter()
                .map(|r| {
                    emit(Restored::Tree {
                        path: r.path,
                        files: r.files,
                        bytes: r.bytes,
                        kept: r.kept,
                        changes: r.counts,
                    })
                })
                .collect())
        }
        TargetKind::Postgres(pg) => {
            let base = kura_sources::postgres::PgUrl::parse(&pg.url)?;
            let into = req.into.as_ref().map(|p| p.display().to_string());
            let mut out = Vec::new();
            // One database after the other; each is swapped only once its
            // own restore succeeded, and a failure stops the rest.
            let tables = pg_tables_in_place(req, pg)?;
            for name in &pg_dumps {
                let url = base.with_db(name.trim_end_matches(".pgdump"));
                let r = if tables.is_empty() || into.is_some() {
                    let how = kura_sources::postgres::PgRestore {
                        into: into.as_deref(),
                        tables: &req.tables,
                        keep_old,
                        no_owner: req.no_owner,
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
                        req.lock_timeout,
                    )
                    .await?
                };
                out.push(emit(Restored::Postgres {
                    database: r.database,
                    bytes: r.bytes,
                    kept: r.kept,
                    sessions_ended: r.sessions_ended,
                    warnings: r.warnings,
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
                req.into.as_deref(),
            )
            .await?;
            Ok(vec![emit(Restored::Command { bytes: r.bytes, file: r.file })])
        }
        TargetKind::Mysql(my) => {
            let into = req.into.as_ref().map(|p| p.display().to_string());
            let how = kura_sources::mysql::MyRestore {
                into: into.as_deref(),
                tables: &req.tables,
                keep_old,
                lock_timeout: req.lock_timeout,
                step: &req.step,
                journal_key: &crate::journal_key(ctx)?,
            };
            let r = kura_sources::mysql::restore(&repo, snap.tree, &snap.paths, &my.url, &how).await?;
            Ok(vec![emit(Restored::Mysql {
                database: r.database,
                tables: r.tables,
                bytes: r.bytes,
                kept: r.kept,
                events_disabled: r.events_disabled,
            })])
        }
        TargetKind::ObjectStore(_) => {
            let (dest, keep, _) = object_plan.take().expect("planned before");
            let r = kura_sources::object_store::restore(
                &repo,
                snap.tree,
                dest,
                keep.map(|(s, _)| s),
                &object_opts,
            )
            .await?;
            Ok(vec![emit(Restored::Objects {
                written: r.written,
                replaced: r.replaced,
                skipped: r.skipped,
                bytes: r.bytes,
                kept: r.kept,
                warnings: r.warnings,
            })])
        }
        other => Err(RunError::Unsupported(format!(
            "restoring {} targets is not supported yet",
            other.type_name()
        ))),
    }
}
