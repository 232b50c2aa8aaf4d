//! PostgreSQL restore: a whole database through a fresh one and a rename
//! swap, or chosen tables' rows in place in one transaction.
use super::*;

/// Restores a dump made by [`backup`]: into a fresh database created as
/// the dumped one was (encoding, locale), with the dump's owners, grants,
/// comment and settings, checked, then swapped with the live one (or left
/// under `into`, the live one untouched).
pub async fn restore(
    repo: &Repository,
    tree: Id,
    name: &str,
    url: &PgUrl,
    how: &PgRestore<'_>,
) -> Result<PgRestored, SourceError> {
    let PgRestore { into, tables, keep_old, no_owner } = *how;
    let admin = url.with_db("postgres");
    let stamp = crate::db::kept_stamp(repo.now().into());
    let fresh = match into {
        Some(db) => db.to_string(),
        None => format!("{}_kura_restore_{stamp}_{:04x}", url.dbname, rand::random::<u16>()),
    };
    let exists = |db: &str| super::exists(&url.with_db(db));
    if into.is_none() {
        // Restores killed midway leave their fresh database behind: only
        // ever a partial copy, never swapped in. One still in use by a
        // running restore refuses to be dropped.
        let pattern = format!("{}\\_kura\\_restore\\_%", crate::kept::like_escape(&url.dbname));
        let stale = psql(
            &admin,
            &format!("SELECT datname FROM pg_database WHERE datname LIKE {}", quote_literal(&pattern)),
        )?;
        for db in stale.lines().filter(|l| !l.is_empty()) {
            if psql(&admin, &format!("DROP DATABASE IF EXISTS {}", quote_ident(db))).is_ok() {
                tracing::info!(database = db, "dropped the partial copy of an interrupted restore");
            }
        }
    }
    if exists(&fresh)? {
        return Err(SourceError::Refused(format!(
            "database {fresh} already exists; restore never writes into an existing database (drop it or choose another --into)"
        )));
    }
    let level = DatabaseLevel::read(repo, tree, name, url).await?;
    if !no_owner {
        let missing = level.roles_missing(&admin)?;
        if !missing.is_empty() {
            return Err(SourceError::MissingRoles { database: url.dbname.clone(), roles: missing });
        }
    }
    let mut warnings = Vec::new();
    let plain = format!("CREATE DATABASE {}", quote_ident(&fresh));
    match &level.create_with {
        Some(with) => {
            if let Err(e) = psql(&admin, &format!("{plain} WITH {with}")) {
                // Another server may lack the dumped locale; the data still
                // comes back, and the user is told.
                warnings
                    .push(format!("created with this server's default encoding and locale, not {with}: {e}"));
                psql(&admin, &format!("{plain} TEMPLATE template0"))?;
            }
        }
        None => {
            psql(&admin, &format!("{plain} TEMPLATE template0"))?;
        }
    }
    let target = url.with_db(&fresh);
    let parts = read_parts(repo, tree, name).await?;
    let restored: Result<u64, SourceError> = async {
        if tables.is_empty() {
            // The whole database: rows and indexes by several sessions.
            let files: Vec<String> = parts
                .iter()
                .flat_map(|(dir, parts)| parts.parts.iter().map(move |p| format!("{dir}/{}", p.file)))
                .collect();
            return super::load::whole(repo, tree, name, &files, &target, no_owner).await;
        }
        let table_args: Vec<String> =
            tables.iter().flat_map(|t| ["--table".to_string(), t.clone()]).collect();
        let Some((dir, parts)) = parts else {
            return pg_restore_file(repo, tree, name, &target, &table_args, no_owner).await;
        };
        // A dump in parts: the schema, every row, then indexes and
        // constraints, built once over all of them.
        let with = |section: &str| {
            let mut a = table_args.clone();
            a.push(format!("--section={section}"));
            a
        };
        let mut bytes = pg_restore_file(repo, tree, name, &target, &with("pre-data"), no_owner).await?;
        bytes += pg_restore_file(repo, tree, name, &target, &with("data"), no_owner).await?;
        for p in parts.parts.iter().filter(|p| tables.iter().any(|t| same_table(t, &p.table))) {
            bytes +=
                pg_restore_file(repo, tree, &format!("{dir}/{}", p.file), &target, &[], no_owner).await?;
        }
        bytes += pg_restore_file(repo, tree, name, &target, &with("post-data"), no_owner).await?;
        Ok(bytes)
    }
    .await;
    // The database's own owner, grants, comment and settings, as dumped,
    // while it still has its scratch name: the application never sees it
    // without them.
    if restored.is_ok() {
        for stmt in level.statements_for(&fresh, !no_owner) {
            if let Err(e) = psql(&admin, &stmt) {
                warnings.push(format!("{}: {e}", stmt.lines().next().unwrap_or_default()));
            }
        }
    }
    let bytes = match restored {
        Ok(b) => b,
        Err(e) => {
            let _ = psql(&admin, &format!("DROP DATABASE IF EXISTS {}", quote_ident(&fresh)));
            return Err(SourceError::Refused(format!(
                "{e}; the live database {} was not touched",
                url.dbname
            )));
        }
    };
    if into.is_some() {
        return Ok(PgRestored { database: fresh, bytes, kept: None, sessions_ended: 0, warnings });
    }
    // The swap: the live database is renamed aside and the fresh one takes
    // its name, both in one transaction, so no instant exists without a
    // database under the live name. Sessions on the live database must go
    // first (a rename needs it); an application that reconnects at once
    // gets another try.
    let live = &url.dbname;
    // Unique, like the `.bak` names of files: a second restore within the
    // minute keeps its own copy.
    let bak = kept_name(&admin, "pg_database", "datname", &format!("{live}_bak_{stamp}"))?;
    let had_live = exists(live)?;
    let swap = if had_live {
        format!(
            "BEGIN; ALTER DATABASE {} RENAME TO {}; ALTER DATABASE {} RENAME TO {}; COMMIT;",
            quote_ident(live),
            quote_ident(&bak),
            quote_ident(&fresh),
            quote_ident(live)
        )
    } else {
        format!("ALTER DATABASE {} RENAME TO {}", quote_ident(&fresh), quote_ident(live))
    };
    let mut attempt = 0;
    let mut sessions_ended = 0;
    loop {
        let ended = psql(
            &admin,
            &format!(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid()",
                quote_literal(live)
            ),
        )?;
        sessions_ended += ended.parse::<u64>().unwrap_or(0);
        match psql(&admin, &swap) {
            Ok(_) => break,
            Err(e) if attempt < 4 && e.to_string().contains("being accessed by other users") => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            Err(e) => {
                return Err(SourceError::Refused(format!(
                    "{e}; nothing was swapped: database {live} is as it was, and the restored copy is database {fresh}"
                )))
            }
        }
    }
    let kept = if had_live && !keep_old {
        psql(&admin, &format!("DROP DATABASE {}", quote_ident(&bak)))?;
        None
    } else {
        had_live.then_some(bak)
    };
    if sessions_ended > 0 {
        tracing::info!(database = %live, sessions = sessions_ended, "ended sessions on the live database for the swap");
    }
    Ok(PgRestored { database: live.clone(), bytes, kept, sessions_ended, warnings })
}

/// Feeds one archive of the snapshot to pg_restore into `target`, every
/// blob verified before pg_restore reads it.
pub(super) async fn pg_restore_file(
    repo: &Repository,
    tree: Id,
    file: &str,
    target: &PgUrl,
    args: &[String],
    no_owner: bool,
) -> Result<u64, SourceError> {
    let mut cmd = target.command("pg_restore")?;
    cmd.args(["--exit-on-error", "--dbname", &target.url]).args(args);
    if no_owner {
        cmd.args(["--no-owner", "--no-acl"]);
    }
    let Fed { dumped, status, stderr, .. } = feed(cmd, "pg_restore", repo, tree, &[file.to_string()]).await?;
    if !status.success() {
        return Err(SourceError::Refused(format!(
            "pg_restore of {file} failed ({status}): {}",
            stderr.trim()
        )));
    }
    match dumped {
        Ok(bytes) => Ok(bytes),
        Err(e) if stopped_reading(&e) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Whether feeding an archive failed only because pg_restore stopped
/// reading it: restoring some sections or tables, it stops once past them.
/// What it did read was verified; its exit status says whether it worked.
pub(super) fn stopped_reading(e: &kura_repo::RepoError) -> bool {
    matches!(e, kura_repo::RepoError::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
}

/// The parts manifest beside `DB.pgdump`, if the dump was made in parts.
async fn read_parts(repo: &Repository, tree: Id, name: &str) -> Result<Option<(String, Parts)>, SourceError> {
    let dir = format!("{}.parts", name.trim_end_matches(".pgdump"));
    let mut json = Vec::new();
    match kura_repo::restore::dump(repo, tree, &format!("{dir}/{PARTS}"), &mut json).await {
        Ok(_) => {}
        Err(kura_repo::RepoError::PathNotInSnapshot { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let parts: Parts = serde_json::from_slice(&json)
        .map_err(|e| SourceError::Refused(format!("{dir}/{PARTS} is not readable: {e}")))?;
    if parts.version != 1 {
        return Err(SourceError::Refused(format!(
            "{dir}/{PARTS} has version {}, newer than this kura",
            parts.version
        )));
    }
    Ok(Some((dir, parts)))
}

/// Whether a table as the user names it (`events`, `public.events`) is the
/// part's `schema.table`.
fn same_table(given: &str, part: &str) -> bool {
    let unquote = |s: &str| s.replace('"', "");
    let (given, part) = (unquote(given), unquote(part));
    given == part || part.split_once('.').is_some_and(|(_, name)| name == given)
}

/// Replaces the rows of chosen tables of the live database with the
/// snapshot's, in one transaction: the old rows are copied into a schema
/// `kura_bak_YYYYMMDD_HHMM` first, and COMMIT is sent only after every blob
/// of the dump was verified and pg_restore finished, so a failure anywhere
/// leaves the live database as it was. The tables' definitions, indexes,
/// views and foreign keys stay; their owned sequences are set back too.
pub async fn restore_tables_in_place(
    repo: &Repository,
    tree: Id,
    name: &str,
    url: &PgUrl,
    tables: &[String],
    keep_old: bool,
    lock_timeout: std::time::Duration,
) -> Result<PgRestored, SourceError> {
    let stamp = crate::db::kept_stamp(repo.now().into());
    // Unique, like every kept copy: a second restore within the minute
    // keeps its own.
    let bak = kept_name(url, "pg_namespace", "nspname", &format!("kura_bak_{stamp}"))?;
    // A session holding the tables makes the restore give up, the
    // transaction rolled back, instead of queueing every query behind it.
    let mut script = format!("BEGIN;\nSET LOCAL lock_timeout = '{}ms';\n", lock_timeout.as_millis().max(1));
    let mut selected: Vec<String> = Vec::new();
    let superuser = psql(url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")? == "t";
    if superuser {
        // Foreign keys and user triggers stay quiet while rows are swapped,
        // as pg_restore --disable-triggers would have them.
        script.push_str("SET LOCAL session_replication_role = replica;\n");
    }
    if keep_old {
        script.push_str(&format!("CREATE SCHEMA {};\n", quote_ident(&bak)));
    }
    for t in tables {
        let regclass = psql(url, &format!("SELECT to_regclass({})::oid", quote_literal(t)))?;
        if regclass.is_empty() {
            return Err(SourceError::Refused(format!(
                "table {t} does not exist in database {}; restore it with --into a scratch database, or restore the whole database",
                url.dbname
            )));
        }
        let qualified = psql(
            url,
            &format!("SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = {regclass}"),
        )?;
        let relname = psql(url, &format!("SELECT relname FROM pg_class WHERE oid = {regclass}"))?;
        if keep_old {
            script.push_str(&format!(
                "CREATE TABLE {}.{} AS TABLE {qualified};\n",
                quote_ident(&bak),
                quote_ident(&relname)
            ));
        }
        script.push_str(&format!("DELETE FROM {qualified};\n"));
        selected.push(relname);
        let owned = psql(
            url,
            &format!("SELECT s.relname FROM pg_class s JOIN pg_depend d ON d.objid = s.oid WHERE s.relkind = 'S' AND d.refobjid = {regclass} AND d.deptype IN ('a', 'i')"),
        )?;
        selected.extend(owned.lines().filter(|l| !l.is_empty()).map(str::to_string));
    }

    // The rows come from the main dump, and from the parts holding a
    // chosen table when the dump was made in parts (format.md §11.1).
    let mut sources: Vec<(String, Vec<String>)> =
        vec![(name.to_string(), selected.iter().flat_map(|t| ["--table".to_string(), t.clone()]).collect())];
    if let Some((dir, parts)) = read_parts(repo, tree, name).await? {
        for p in parts.parts.iter().filter(|p| tables.iter().any(|t| same_table(t, &p.table))) {
            sources.push((format!("{dir}/{}", p.file), Vec::new()));
        }
    }
    let mut restorers = Vec::new();
    for (file, args) in &sources {
        let mut child = url
            .command("pg_restore")?
            .args(["--data-only", "--file", "-"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| SourceError::Refused(format!("cannot start pg_restore: {e}")))?;
        let err = stderr_tail(child.stderr.take().expect("piped"));
        restorers.push((file.clone(), child, err));
    }
    let mut psql_child = url
        .command("psql")?
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &url.url])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SourceError::Refused(format!("cannot start psql: {e}")))?;
    let psql_err = stderr_tail(psql_child.stderr.take().expect("piped"));
    let mut sql_in = psql_child.stdin.take().expect("piped");
    let mut outputs: Vec<_> = restorers.iter_mut().map(|(_, c, _)| c.stdout.take().expect("piped")).collect();
    // pg_restore's SQL flows to psql after our prefix, one archive after
    // the other; COMMIT is added below only when everything succeeded.
    let pump = std::thread::spawn(move || -> std::io::Result<std::process::ChildStdin> {
        use std::io::Write;
        sql_in.write_all(script.as_bytes())?;
        for out in &mut outputs {
            std::io::copy(out, &mut sql_in)?;
        }
        Ok(sql_in)
    });
    let mut failure = None;
    let mut bytes = 0u64;
    for (file, mut child, err) in restorers {
        let mut archive = child.stdin.take().expect("piped");
        let dumped = if failure.is_none() {
            kura_repo::restore::dump(repo, tree, &file, &mut archive).await.map(|n| bytes += n)
        } else {
            Ok(())
        };
        drop(archive);
        let status = child.wait().map_err(|e| SourceError::Refused(e.to_string()))?;
        if failure.is_none() {
            failure = match (dumped, status.success()) {
                (Err(e), true) if stopped_reading(&e) => None,
                (Err(e), _) => Some(e.to_string()),
                (_, false) => Some(format!(
                    "pg_restore of {file} failed ({status}): {}",
                    err.join().unwrap_or_default().trim()
                )),
                _ => None,
            };
        }
    }
    let pumped = pump.join().map_err(|_| SourceError::Refused("the SQL pump panicked".into()))?;
    if let (None, Err(e)) = (&failure, &pumped) {
        failure = Some(format!("psql stopped reading: {e}"));
    }
    let committed = match (failure, pumped) {
        (None, Ok(mut sql_in)) => {
            use std::io::Write;
            let sent = sql_in.write_all(b"COMMIT;\n");
            drop(sql_in);
            let status = psql_child.wait().map_err(|e| SourceError::Refused(e.to_string()))?;
            let err = psql_err.join().unwrap_or_default();
            match (sent, status.success()) {
                (Ok(()), true) => Ok(()),
                _ => Err(format!("psql failed ({status}): {}", err.trim())),
            }
        }
        (failure, pumped) => {
            // Without COMMIT the transaction dies with the session: psql
            // gets the end of its input and exits, cleanly unless it had
            // stopped on an error (a lock timeout, say); then everything
            // after it failed for that reason, and its message is the
            // cause. Waiting for it, not peeking, tells the two apart.
            drop(pumped);
            let stopped = psql_child.wait().map(|st| !st.success()).unwrap_or(false);
            let err = psql_err.join().unwrap_or_default();
            match failure {
                Some(f) if !stopped || err.trim().is_empty() => Err(f),
                _ => Err(format!("psql failed: {}", err.trim())),
            }
        }
    };
    if let Err(e) = committed {
        return Err(SourceError::Refused(format!(
            "{e}; the transaction was rolled back and database {} was not changed",
            url.dbname
        )));
    }
    Ok(PgRestored {
        database: url.dbname.clone(),
        bytes,
        kept: keep_old.then_some(format!("schema {bak}")),
        sessions_ended: 0,
        warnings: Vec::new(),
    })
}
