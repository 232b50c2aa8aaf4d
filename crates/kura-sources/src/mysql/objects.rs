//! A database's objects between the fresh copy and the live one: table
//! definitions, triggers, views, routines and events recreated with the
//! session settings they were made with, and the swap itself (the whole
//! database in one RENAME TABLE, or chosen tables replaced in place).
use super::journal::{Journal, Phase};
use super::*;
use crate::Step;

/// A trigger, view, routine or event, as the statement that recreates it.
pub(super) struct Definition {
    pub(super) name: String,
    /// Statements that give the session the settings the object was
    /// created with (character set, sql_mode, time zone): the server
    /// records them with the object, and a dump compares them.
    pub(super) session: String,
    pub(super) create: String,
}

/// The session settings of a SHOW CREATE row, given the columns holding
/// sql_mode, time_zone and character_set_client (collation_connection is
/// the column after it).
pub(super) fn session_of(
    row: &[String],
    sql_mode: Option<usize>,
    time_zone: Option<usize>,
    charset: usize,
) -> String {
    let mut s = String::new();
    if let (Some(cs), Some(coll)) = (row.get(charset), row.get(charset + 1)) {
        s.push_str(&format!("SET NAMES {cs} COLLATE {coll};\n"));
    }
    if let Some(mode) = sql_mode.and_then(|i| row.get(i)) {
        s.push_str(&format!("SET SESSION sql_mode = {};\n", quote_literal(mode)));
    }
    if let Some(tz) = time_zone.and_then(|i| row.get(i)) {
        s.push_str(&format!("SET SESSION time_zone = {};\n", quote_literal(tz)));
    }
    s
}

/// What lives in one database, as far as moving tables goes.
pub(super) struct Objects {
    /// Base tables (and sequences): what RENAME TABLE moves.
    pub(super) tables: Vec<String>,
    pub(super) views: Vec<Definition>,
    pub(super) triggers: Vec<Definition>,
}

pub(super) fn definitions(conn: &Conn, db: &str) -> Result<Objects, SourceError> {
    let mut tables = Vec::new();
    let mut views = Vec::new();
    for row in conn.query(&format!(
        "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} ORDER BY TABLE_NAME",
        quote_literal(db)
    ))? {
        let [name, kind] = &row[..] else { continue };
        if kind == "VIEW" {
            let r = conn.query(&format!("SHOW CREATE VIEW {}.{}", quote_ident(db), quote_ident(name)))?;
            let r = r.first().cloned().unwrap_or_default();
            views.push(Definition {
                name: name.clone(),
                session: session_of(&r, None, None, 2),
                create: r.get(1).cloned().unwrap_or_default(),
            });
        } else {
            tables.push(name.clone());
        }
    }
    let mut triggers = Vec::new();
    for row in conn.query(&format!(
        "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {} ORDER BY ACTION_ORDER",
        quote_literal(db)
    ))? {
        let name = row[0].clone();
        let r = conn.query(&format!("SHOW CREATE TRIGGER {}.{}", quote_ident(db), quote_ident(&name)))?;
        let r = r.first().cloned().unwrap_or_default();
        triggers.push(Definition {
            name,
            session: session_of(&r, Some(1), None, 3),
            create: r.get(2).cloned().unwrap_or_default(),
        });
    }
    Ok(Objects { tables, views, triggers })
}

/// Recreates triggers and views in `db`; views are retried until those
/// that read other views find them.
pub(super) fn recreate(
    conn: &Conn,
    from: &str,
    db: &str,
    views: &[Definition],
    triggers: &[Definition],
) -> Result<(), SourceError> {
    let qualified = format!("{}.", quote_ident(from));
    let target = format!("{}.", quote_ident(db));
    let mut pending: Vec<&Definition> = views.iter().collect();
    while !pending.is_empty() {
        let mut failed = Vec::new();
        let mut last = None;
        for v in &pending {
            let sql = format!("{}{};", v.session, v.create.replace(&qualified, &target));
            if let Err(e) = conn.exec(Some(db), &sql) {
                failed.push(*v);
                last = Some(e);
            }
        }
        if failed.len() == pending.len() {
            return Err(last.expect("a failure"));
        }
        pending = failed;
    }
    for t in triggers {
        let script = format!("{}DELIMITER ;;\n{} ;;\nDELIMITER ;\n", t.session, t.create);
        conn.exec(Some(db), &script)
            .map_err(|e| SourceError::Refused(format!("recreating trigger {} in {db}: {e}", t.name)))?;
    }
    Ok(())
}

/// Routines and events, as statements that recreate them.
pub(super) fn programs(conn: &Conn, db: &str) -> Result<Vec<Definition>, SourceError> {
    let mut out = Vec::new();
    for row in conn.query(&format!(
        "SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {}",
        quote_literal(db)
    ))? {
        let r =
            conn.query(&format!("SHOW CREATE {} {}.{}", row[0], quote_ident(db), quote_ident(&row[1])))?;
        let r = r.first().cloned().unwrap_or_default();
        out.push(Definition {
            name: format!("{} {}", row[0], quote_ident(&row[1])),
            session: session_of(&r, Some(1), None, 3),
            create: r.get(2).cloned().unwrap_or_default(),
        });
    }
    for row in conn.query(&format!(
        "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {}",
        quote_literal(db)
    ))? {
        let r = conn.query(&format!("SHOW CREATE EVENT {}.{}", quote_ident(db), quote_ident(&row[0])))?;
        let r = r.first().cloned().unwrap_or_default();
        out.push(Definition {
            name: format!("EVENT {}", quote_ident(&row[0])),
            session: session_of(&r, Some(1), Some(2), 4),
            create: r.get(3).cloned().unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Moves routines and events from one database to another.
pub(super) fn move_programs(conn: &Conn, from: &str, to: &str) -> Result<(), SourceError> {
    for p in programs(conn, from)? {
        let (kind, name) = p.name.split_once(' ').unwrap_or((&p.name, ""));
        let script = format!(
            "DROP {kind} IF EXISTS {name};\n{}DELIMITER ;;\n{} ;;\nDELIMITER ;\n",
            p.session, p.create
        );
        conn.exec(Some(to), &script)
            .map_err(|e| SourceError::Refused(format!("moving {} to {to}: {e}", p.name)))?;
        conn.exec(Some(from), &format!("DROP {}", p.name))?;
    }
    Ok(())
}

/// Whole-database swap: the live tables go to `bak`, the fresh ones take
/// their place, in one atomic RENAME TABLE. The journal, written first,
/// holds every definition dropped on the way, so a swap interrupted at any
/// statement is undone or finished by [`super::journal::recover`].
pub(super) fn swap_databases(conn: &Conn, j: &Journal, limit: u64, step: &Step) -> Result<(), SourceError> {
    // Bounded, in case a session took a lock since the wait: a RENAME
    // queued behind it would stall every new query on those tables.
    let mut drops = format!("SET SESSION lock_wait_timeout = {limit};\n");
    for (db, defs) in [(&j.live, &j.live_defs), (&j.fresh, &j.fresh_defs)] {
        for t in defs.triggers.iter() {
            drops.push_str(&format!("DROP TRIGGER {}.{};\n", quote_ident(db), quote_ident(&t.name)));
        }
        for v in defs.views.iter() {
            drops.push_str(&format!("DROP VIEW {}.{};\n", quote_ident(db), quote_ident(&v.name)));
        }
    }
    conn.exec(None, &drops)?;
    step.reached("mysql-dropped");
    let mut renames = Vec::new();
    for t in &j.live_defs.tables {
        renames.push(format!(
            "{}.{} TO {}.{}",
            quote_ident(&j.live),
            quote_ident(t),
            quote_ident(&j.bak),
            quote_ident(t)
        ));
    }
    for t in &j.fresh_defs.tables {
        renames.push(format!(
            "{}.{} TO {}.{}",
            quote_ident(&j.fresh),
            quote_ident(t),
            quote_ident(&j.live),
            quote_ident(t)
        ));
    }
    if !renames.is_empty() {
        let rename = format!("SET SESSION lock_wait_timeout = {limit};\nRENAME TABLE {}", renames.join(", "));
        if let Err(e) = conn.exec(None, &rename) {
            // Nothing moved: put the dropped definitions back where they were.
            let _ = replace_definitions(conn, &j.live, &j.live, &j.live_defs);
            let _ = replace_definitions(conn, &j.fresh, &j.fresh, &j.fresh_defs);
            return Err(e);
        }
    }
    step.reached("mysql-renamed");
    finish_swap(conn, j, step)
}

/// The rest of a swap once the tables have moved: each side's triggers and
/// views recreated where its tables now are, then routines and events
/// (the live ones to `bak` first, which the journal records, so that a
/// rerun never mistakes the fresh ones for them). Safe to run again.
pub(super) fn finish_swap(conn: &Conn, j: &Journal, step: &Step) -> Result<(), SourceError> {
    replace_definitions(conn, &j.live, &j.bak, &j.live_defs)?;
    replace_definitions(conn, &j.fresh, &j.live, &j.fresh_defs)?;
    if j.phase < Phase::ProgramsAside {
        move_programs(conn, &j.live, &j.bak)?;
        j.set_phase(conn, Phase::ProgramsAside)?;
        step.reached("mysql-programs");
    }
    move_programs(conn, &j.fresh, &j.live)
}

/// Drops the triggers and views `defs` names in `db` if they are there,
/// then recreates them from their definitions in `from`.
pub(super) fn replace_definitions(
    conn: &Conn,
    from: &str,
    db: &str,
    defs: &Objects,
) -> Result<(), SourceError> {
    let mut drops = String::new();
    for t in &defs.triggers {
        drops.push_str(&format!("DROP TRIGGER IF EXISTS {}.{};\n", quote_ident(db), quote_ident(&t.name)));
    }
    for v in &defs.views {
        drops.push_str(&format!("DROP VIEW IF EXISTS {}.{};\n", quote_ident(db), quote_ident(&v.name)));
    }
    if !drops.is_empty() {
        conn.exec(None, &drops)?;
    }
    recreate(conn, from, db, &defs.views, &defs.triggers)
}

/// Keeps a copy of each chosen live table (its rows and columns; not its
/// foreign keys, which would tie the copy to the live database).
pub(super) fn copy_tables_aside(
    conn: &Conn,
    live: &str,
    bak: &str,
    objects: &[String],
) -> Result<(), SourceError> {
    let Objects { tables, views, .. } = definitions(conn, live)?;
    for t in objects {
        if tables.contains(t) {
            let (l, b) = (
                format!("{}.{}", quote_ident(live), quote_ident(t)),
                format!("{}.{}", quote_ident(bak), quote_ident(t)),
            );
            conn.exec(None, &format!("CREATE TABLE {b} LIKE {l};\nINSERT INTO {b} SELECT * FROM {l};"))?;
        } else if let Some(v) = views.iter().find(|v| &v.name == t) {
            recreate(conn, live, bak, std::slice::from_ref(v), &[])?;
        }
    }
    Ok(())
}

/// Replaces the chosen tables of the live database with those loaded into
/// `fresh`: the dump's own statements (DROP, CREATE, INSERT, triggers) run
/// again, now in the live database, so foreign keys resolve there.
pub(super) fn replace_in_place(
    conn: &Conn,
    fresh: &str,
    live: &str,
    objects: &[String],
    limit: u64,
) -> Result<(), SourceError> {
    let mut script = format!("SET FOREIGN_KEY_CHECKS = 0;\nSET SESSION lock_wait_timeout = {limit};\n");
    let Objects { tables, views, triggers } = definitions(conn, fresh)?;
    for t in objects.iter().filter(|t| tables.contains(t)) {
        let (l, f) = (
            format!("{}.{}", quote_ident(live), quote_ident(t)),
            format!("{}.{}", quote_ident(fresh), quote_ident(t)),
        );
        let create = conn.query(&format!("SHOW CREATE TABLE {f}"))?;
        let create = create.first().and_then(|r| r.get(1)).cloned().unwrap_or_default();
        script
            .push_str(&format!("DROP TABLE IF EXISTS {l};\n{create};\nINSERT INTO {l} SELECT * FROM {f};\n"));
    }
    conn.exec(Some(live), &script)?;
    let views: Vec<Definition> = views.into_iter().filter(|v| objects.contains(&v.name)).collect();
    for v in &views {
        conn.exec(None, &format!("DROP VIEW IF EXISTS {}.{}", quote_ident(live), quote_ident(&v.name)))?;
    }
    recreate(conn, fresh, live, &views, &triggers)
}
