//! Carrying a plan out: the hooks (post_restore always runs), the restore
//! of each kind, and SIGINT/SIGTERM.
use super::*;

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

/// Runs the hooks and the restore; the post hook runs even on failure.
pub(super) async fn execute(
    g: &Global,
    a: &RestoreArgs,
    p: Prepared<'_>,
) -> Result<Vec<serde_json::Value>, Failure> {
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
                        owners: crate::commands::euid() == 0,
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
                    owners: crate::commands::euid() == 0,
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
        if let Err(f) = crate::commands::kept::apply_policy(g, t) {
            tracing::warn!("{}", f.message);
        }
    }
    if let Some(Err(f)) = post {
        return Err(f.context("restored, but"));
    }
    Ok(restored)
}
