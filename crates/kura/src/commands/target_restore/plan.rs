//! The restore plan: what a restore of one target will do, worked out
//! before anything is touched, and shown.
use super::*;

fn size_now(p: &std::path::Path) -> String {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => "a directory".into(),
        Ok(m) => human_bytes(m.len()),
        Err(_) => "absent".into(),
    }
}

pub(super) async fn prepare<'c>(
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
        let dest = crate::commands::object_store(o, &dests[0].display().to_string())?;
        let keep = if a.force && keep_old {
            let at = kura_sources::object_store::kept_location(
                &dests[0].display().to_string(),
                crate::commands::clock().now().with_timezone(&Local),
            );
            Some((crate::commands::object_store(o, &at)?, at))
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
        if let Ok(kept) = crate::commands::kept::of_target(t) {
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
                    crate::commands::kept::summary(&kept)
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
pub(super) fn hooks_json(a: &RestoreArgs, p: &Prepared) -> serde_json::Value {
    serde_json::json!({
        "run": runs_hooks(a),
        "pre_restore": p.t.pre_restore,
        "post_restore": p.t.post_restore,
    })
}

pub(super) fn show_plan(g: &Global, a: &RestoreArgs, p: &Prepared) {
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
