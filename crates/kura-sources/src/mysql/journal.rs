//! The journal of a swap. Neither a whole-database swap nor an in-place
//! table replacement is one statement: triggers and views cannot cross
//! databases, so they are dropped before the RENAME and recreated after
//! it, and routines and events move one by one. A kill -9 between two of
//! those statements must not lose a definition, so before the first of
//! them the restore writes everything it will drop into a table of its
//! scratch database. The next kura to touch the live database (a restore
//! or a backup of it) finds that table in a scratch database whose lock is
//! free, and undoes or finishes the swap: undoes it if the RENAME had not
//! happened (a RENAME is atomic, so the fresh tables are either all still
//! in the scratch database or all gone), finishes it otherwise.
//!
//! Recovery runs the journal's SQL with the restoring user's rights, often
//! root's, and a database user granted `app%` could create
//! `app_kura_restore_x` and a journal in it. So every journal carries a
//! keyed BLAKE3 MAC over all it says and the name of its database, with a
//! key that never leaves this machine's state directory; a journal
//! without a valid MAC is reported and left untouched, never replayed and
//! never dropped (it may be the only record of a real swap made with
//! another state directory).
use super::objects::{finish_swap, replace_definitions, replace_in_place, Definition, Objects};
use super::restore::{disable_events, enable_events};
use super::*;

/// Inside the scratch database; the restore's own tables were listed
/// before it was made, so the RENAME never moves it.
const TABLE: &str = "_kura_swap_journal";
const VERSION: &str = "2";

/// The key that signs swap journals: 32 random bytes in a file of this
/// machine's state directory, readable by its owner only.
#[derive(Clone)]
pub struct JournalKey {
    key: [u8; 32],
    path: std::path::PathBuf,
}

impl std::fmt::Debug for JournalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JournalKey({})", self.path.display())
    }
}

impl JournalKey {
    /// Reads the key at `path`, making it first if there is none. Two
    /// processes making it at once agree: each writes a private temporary
    /// file and links it into place, and the loser reads the winner's.
    pub fn load_or_create(path: &std::path::Path) -> Result<JournalKey, SourceError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        let refuse =
            |why: String| SourceError::Refused(format!("the swap journal key {}: {why}", path.display()));
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mode = std::fs::metadata(path).map_err(|e| refuse(e.to_string()))?.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(refuse(format!(
                        "readable or writable by others (mode {:o}); run chmod 600 on it",
                        mode & 0o777
                    )));
                }
                let mut key = [0u8; 32];
                hex_decode(text.trim(), &mut key).ok_or_else(|| refuse("not 64 hex digits".into()))?;
                return Ok(JournalKey { key, path: path.to_path_buf() });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(refuse(e.to_string())),
        }
        let dir = path.parent().ok_or_else(|| refuse("no parent directory".into()))?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| refuse(format!("cannot create its directory: {e}")))?;
        let key: [u8; 32] = rand::random();
        let text: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = dir.join(format!(".{}.{}", rand::random::<u64>(), std::process::id()));
        let written = (|| {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            std::io::Write::write_all(&mut f, format!("{text}\n").as_bytes())?;
            f.sync_all()?;
            std::fs::hard_link(&tmp, path)
        })();
        let _ = std::fs::remove_file(&tmp);
        match written {
            Ok(()) => Ok(JournalKey { key, path: path.to_path_buf() }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => JournalKey::load_or_create(path),
            Err(e) => Err(refuse(format!("cannot write it: {e}"))),
        }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

fn hex_decode(text: &str, out: &mut [u8; 32]) -> Option<()> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(())
}

/// How far a swap got, as far as the journal needs to know: whether the
/// RENAME happened is read from the tables themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Phase {
    /// Nothing of the live database changed yet, beyond the drops of a
    /// whole swap (which the RENAME's absence says to undo).
    Begun,
    /// Partial: the live tables are copied into `bak`; replacing them in
    /// place may start (and may be started again).
    Copied,
    /// Whole: the live routines and events are in `bak`; what routines
    /// and events the live database holds now came from the fresh copy.
    ProgramsAside,
    /// All done; running any of it again would undo the application's
    /// writes since.
    Done,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Begun => "begun",
            Phase::Copied => "copied",
            Phase::ProgramsAside => "programs-aside",
            Phase::Done => "done",
        }
    }

    fn parse(s: &str) -> Option<Phase> {
        [Phase::Begun, Phase::Copied, Phase::ProgramsAside, Phase::Done].into_iter().find(|p| p.name() == s)
    }
}

pub(super) struct Journal {
    pub(super) live: String,
    pub(super) bak: String,
    pub(super) fresh: String,
    /// A whole-database swap, or chosen tables replaced in place.
    pub(super) whole: bool,
    pub(super) phase: Phase,
    pub(super) live_defs: Objects,
    pub(super) fresh_defs: Objects,
    /// Partial: the tables and views replaced.
    pub(super) objects: Vec<String>,
    /// Events enabled in the dump, disabled in the scratch copy: enabled
    /// again once in the live database.
    pub(super) events: Vec<String>,
    pub(super) key: JournalKey,
}

type Row = [String; 4];

fn row(kind: &str, name: &str, session: &str, body: &str) -> Row {
    [kind.to_string(), name.to_string(), session.to_string(), body.to_string()]
}

fn sql_row(r: &Row) -> String {
    format!("({})", r.iter().map(|f| quote_literal(f)).collect::<Vec<_>>().join(", "))
}

impl Journal {
    /// Everything the journal says, in a fixed order: what is written and
    /// what the MAC covers. Reading a journal back and listing its rows
    /// again gives the same list, so a changed row changes the MAC.
    fn rows(&self, phase: Phase) -> Vec<Row> {
        let mut rows = vec![
            row("version", VERSION, "", ""),
            row("live", &self.live, "", ""),
            row("bak", &self.bak, "", ""),
            row("mode", if self.whole { "whole" } else { "partial" }, "", ""),
            row("phase", phase.name(), "", ""),
        ];
        for (side, defs) in [("live", &self.live_defs), ("fresh", &self.fresh_defs)] {
            rows.extend(defs.tables.iter().map(|t| row(&format!("{side}-table"), t, "", "")));
            for (what, list) in [("view", &defs.views), ("trigger", &defs.triggers)] {
                rows.extend(
                    list.iter().map(|d| row(&format!("{side}-{what}"), &d.name, &d.session, &d.create)),
                );
            }
        }
        rows.extend(self.objects.iter().map(|o| row("object", o, "", "")));
        rows.extend(self.events.iter().map(|e| row("event", e, "", "")));
        rows
    }

    /// Bound to the scratch database's name, so a journal copied into
    /// another scratch database is not taken for that one's.
    fn mac(&self, phase: Phase) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.key.key);
        for field in std::iter::once(&self.fresh).chain(self.rows(phase).iter().flatten()) {
            h.update(&(field.len() as u64).to_le_bytes());
            h.update(field.as_bytes());
        }
        h.finalize().to_hex().to_string()
    }

    /// Written in one statement: it is there whole or not at all.
    pub(super) fn write(&self, conn: &Conn) -> Result<(), SourceError> {
        let mut rows: Vec<String> = self.rows(self.phase).iter().map(sql_row).collect();
        rows.push(sql_row(&row("mac", &self.mac(self.phase), "", "")));
        let sql = format!(
            "SET NAMES utf8mb4;\nCREATE TABLE {t} (seq INT AUTO_INCREMENT PRIMARY KEY, kind VARCHAR(32) NOT NULL, \
             name LONGTEXT NOT NULL, session LONGTEXT NOT NULL, body LONGTEXT NOT NULL) \
             ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;\n\
             INSERT INTO {t} (kind, name, session, body) VALUES {};",
            rows.join(",\n"),
            t = quote_ident(TABLE),
        );
        conn.exec(Some(&self.fresh), &sql)
    }

    /// The phase and the MAC change in one statement.
    pub(super) fn set_phase(&self, conn: &Conn, phase: Phase) -> Result<(), SourceError> {
        conn.exec(
            None,
            &format!(
                "UPDATE {}.{} SET name = CASE kind WHEN 'phase' THEN {} ELSE {} END WHERE kind IN ('phase', 'mac')",
                quote_ident(&self.fresh),
                quote_ident(TABLE),
                quote_literal(phase.name()),
                quote_literal(&self.mac(phase)),
            ),
        )
    }

    /// The journal in scratch database `fresh`, if there is one; an error
    /// if it is not one this machine's key signed.
    fn read(conn: &Conn, fresh: &str, key: &JournalKey) -> Result<Option<Journal>, SourceError> {
        let there = conn.query(&format!(
            "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
            quote_literal(fresh),
            quote_literal(TABLE)
        ))?;
        if there.is_empty() {
            return Ok(None);
        }
        let rows = conn.query(&format!(
            "SET NAMES utf8mb4;\nSELECT kind, name, session, body FROM {}.{} ORDER BY seq",
            quote_ident(fresh),
            quote_ident(TABLE)
        ))?;
        let bad = |why: String| SourceError::Refused(format!("the swap journal in database {fresh}: {why}"));
        let empty = || Objects { tables: Vec::new(), views: Vec::new(), triggers: Vec::new() };
        let mut j = Journal {
            live: String::new(),
            bak: String::new(),
            fresh: fresh.to_string(),
            whole: true,
            phase: Phase::Begun,
            live_defs: empty(),
            fresh_defs: empty(),
            objects: Vec::new(),
            events: Vec::new(),
            key: key.clone(),
        };
        let mut version = None;
        let mut mac = None;
        for r in rows {
            let [kind, name, session, body] = &r[..] else {
                return Err(bad(format!("a row of {} fields", r.len())));
            };
            let def = || Definition { name: name.clone(), session: session.clone(), create: body.clone() };
            match kind.as_str() {
                "version" => version = Some(name.clone()),
                "mac" => mac = Some(name.clone()),
                "live" => j.live = name.clone(),
                "bak" => j.bak = name.clone(),
                "mode" => j.whole = name == "whole",
                "phase" => {
                    j.phase = Phase::parse(name).ok_or_else(|| bad(format!("unknown phase {name}")))?
                }
                "live-table" => j.live_defs.tables.push(name.clone()),
                "fresh-table" => j.fresh_defs.tables.push(name.clone()),
                "live-view" => j.live_defs.views.push(def()),
                "fresh-view" => j.fresh_defs.views.push(def()),
                "live-trigger" => j.live_defs.triggers.push(def()),
                "fresh-trigger" => j.fresh_defs.triggers.push(def()),
                "object" => j.objects.push(name.clone()),
                "event" => j.events.push(name.clone()),
                other => return Err(bad(format!("unknown row kind {other}"))),
            }
        }
        let signed = mac.is_some_and(|m| {
            // Compared as hashes: blake3's equality takes constant time.
            blake3::Hash::from_hex(&m)
                .is_ok_and(|m| blake3::Hash::from_hex(j.mac(j.phase)).is_ok_and(|w| w == m))
        });
        if !signed {
            return Err(bad(format!(
                "it is not signed with this machine's key ({}): it was not written by a kura restore here, \
                 or by one with another state directory (KURA_STATE_DIR); it is left as it is, \
                 not replayed and not dropped",
                key.path().display()
            )));
        }
        if version.as_deref() != Some(VERSION) {
            return Err(bad(format!("version {version:?}, this kura reads {VERSION}")));
        }
        if j.live.is_empty() || j.bak.is_empty() {
            return Err(bad("no live or kept database named".into()));
        }
        Ok(Some(j))
    }
}

/// What [`recover`] did with one scratch database.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Recovered {
    /// No journal: a partial load, dropped.
    Dropped,
    /// The swap had not happened: the live database is as it was.
    Undone,
    /// The swap had happened: finished; the replaced tables are in `bak`.
    Finished { bak: String },
}

/// Undoes or finishes the swap recorded in scratch database `fresh`, then
/// drops it. The caller holds the scratch database's lock.
pub(super) fn recover(conn: &Conn, fresh: &str, key: &JournalKey) -> Result<Recovered, SourceError> {
    wait_for_statements_on(conn, fresh)?;
    let Some(j) = Journal::read(conn, fresh, key)? else {
        drop_database(conn, fresh)?;
        return Ok(Recovered::Dropped);
    };
    let outcome = match (j.whole, j.phase) {
        (_, Phase::Done) => Recovered::Finished { bak: j.bak.clone() },
        (true, _) => {
            let left = conn.query(&format!(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_NAME <> {}",
                quote_literal(fresh),
                quote_literal(TABLE)
            ))?;
            let renamed = !j.fresh_defs.tables.iter().any(|t| left.iter().any(|r| r.first() == Some(t)));
            if renamed {
                finish_swap(conn, &j, &crate::Step::default())?;
                disable_events(conn, &j.bak)?;
                enable_events(conn, &j.live, &j.events)?;
                Recovered::Finished { bak: j.bak.clone() }
            } else {
                replace_definitions(conn, &j.live, &j.live, &j.live_defs)?;
                // Made by this restore for what it would replace; nothing
                // was.
                drop_database(conn, &j.bak)?;
                Recovered::Undone
            }
        }
        (false, Phase::Begun) => {
            // At most copies of live tables that were never replaced.
            drop_database(conn, &j.bak)?;
            Recovered::Undone
        }
        (false, _) => {
            replace_in_place(conn, fresh, &j.live, &j.objects, 60)?;
            Recovered::Finished { bak: j.bak.clone() }
        }
    };
    j.set_phase(conn, Phase::Done)?;
    drop_database(conn, fresh)?;
    Ok(outcome)
}

fn drop_database(conn: &Conn, db: &str) -> Result<(), SourceError> {
    conn.exec(None, &format!("DROP DATABASE IF EXISTS {}", quote_ident(db)))
}

/// A killed kura's client may still be running its last statement on the
/// server (a RENAME waiting for a lock, say); the journal is only read
/// once nothing names the scratch database any more.
fn wait_for_statements_on(conn: &Conn, db: &str) -> Result<(), SourceError> {
    let pattern = format!("%{}%", crate::kept::like_escape(db));
    let sql = format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() \
         AND COMMAND NOT IN ('Sleep', 'Daemon') AND INFO LIKE {}",
        quote_literal(&pattern)
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let n = conn.query(&sql)?;
        if n.first().and_then(|r| r.first()).is_some_and(|v| v == "0") {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(SourceError::Refused(format!(
                "a statement on database {db} has been running for a minute; it is left for the next run"
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
