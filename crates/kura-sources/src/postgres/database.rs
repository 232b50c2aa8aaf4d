//! What a dump says about its database itself, outside every schema: how it
//! was created (encoding, locale), its owner, comment, settings
//! (`ALTER DATABASE … SET`, `ALTER ROLE … IN DATABASE … SET`) and who may
//! connect (`GRANT/REVOKE CONNECT`).
//!
//! pg_dump stores these in the archive, but pg_restore emits them only with
//! `--create`, under the dumped name, and a restore into a fresh database
//! with a scratch name would lose them all: the application would come
//! back to a database owned by whoever ran the restore, open to every role,
//! without its settings. Here they are read from the archive's table of
//! contents alone (pg_restore stops reading once past it) and applied to
//! the fresh database before it takes the live name.
use std::collections::BTreeSet;
use std::io::Write;

use kura_format::Id;
use kura_repo::Repository;

use super::restore::stopped_reading;
use super::{quote_ident, quote_literal, PgUrl};
use crate::child::{feed_for_output, Fed};
use crate::SourceError;

/// The database-level part of one dump.
#[derive(Debug, Default)]
pub(super) struct DatabaseLevel {
    /// What follows the name in the dump's `CREATE DATABASE`, from `WITH`
    /// on: template, encoding, locale.
    pub create_with: Option<String>,
    /// Statements naming the database, each as pg_restore wrote it.
    statements: Vec<Statement>,
    /// The database name as the statements spell it (quoted or bare).
    name_token: String,
    /// Every role that owns something in the dump.
    pub owners: BTreeSet<String>,
}

#[derive(Debug)]
struct Statement {
    sql: String,
    /// Owner, grants, and per-role settings: what needs the dump's roles.
    needs_roles: bool,
}

impl DatabaseLevel {
    /// Reads the database-level entries of dump `name` in snapshot `tree`.
    pub async fn read(repo: &Repository, tree: Id, name: &str, url: &PgUrl) -> Result<Self, SourceError> {
        let toc = run(repo, tree, name, url, &["--create", "--list"]).await?;
        let mut level = DatabaseLevel::default();
        let mut wanted = String::new();
        for line in toc.lines().filter(|l| !l.starts_with(';') && !l.trim().is_empty()) {
            // `ID; TABLEOID OID DESC SCHEMA NAME OWNER`: the owner is the
            // last word (pg_restore prints names unquoted). Entries without
            // one (an extension, its comment) end in a space: nothing after
            // it is theirs, and the word before it is a name.
            if let Some((_, owner)) = line.rsplit_once(' ') {
                if !owner.is_empty() && line.split_whitespace().count() >= 6 {
                    level.owners.insert(owner.to_string());
                }
            }
            let rest = line.splitn(4, ' ').nth(3).unwrap_or("");
            if ["DATABASE ", "COMMENT - DATABASE ", "ACL - DATABASE "].iter().any(|p| rest.starts_with(p)) {
                wanted.push_str(line);
                wanted.push('\n');
            }
        }
        if wanted.is_empty() {
            return Ok(level);
        }
        let mut list =
            tempfile::NamedTempFile::new().map_err(|e| SourceError::io(std::env::temp_dir(), e))?;
        list.write_all(wanted.as_bytes()).map_err(|e| SourceError::io(list.path(), e))?;
        let listed = list.path().display().to_string();
        let sql = run(repo, tree, name, url, &["--create", "--use-list", &listed, "--file", "-"]).await?;
        for stmt in statements(&sql) {
            let upper = stmt.to_ascii_uppercase();
            if upper.starts_with("SET ") || upper.starts_with("SELECT PG_CATALOG.SET_CONFIG") {
                continue;
            }
            if let Some(rest) = stmt.strip_prefix("CREATE DATABASE ") {
                let (token, after) = split_ident(rest);
                level.name_token = token.to_string();
                level.create_with =
                    after.trim().trim_end_matches(';').strip_prefix("WITH ").map(|w| w.trim().to_string());
                continue;
            }
            let needs_roles = upper.starts_with("GRANT ")
                || upper.starts_with("REVOKE ")
                || upper.starts_with("ALTER ROLE ")
                || (upper.starts_with("ALTER DATABASE ") && upper.contains(" OWNER TO "));
            level.statements.push(Statement { sql: stmt, needs_roles });
        }
        Ok(level)
    }

    /// The statements, made to name database `db` instead of the dumped
    /// one; without the dump's roles only the comment and settings.
    pub fn statements_for(&self, db: &str, with_roles: bool) -> Vec<String> {
        let from = format!("DATABASE {}", self.name_token);
        let to = format!("DATABASE {}", quote_ident(db));
        self.statements
            .iter()
            .filter(|s| with_roles || !s.needs_roles)
            .map(|s| rename_first(&s.sql, &from, &to))
            .collect()
    }

    /// The owners that do not exist here, or that `url`'s user cannot act
    /// as (a superuser can act as any).
    pub fn roles_missing(&self, url: &PgUrl) -> Result<Vec<String>, SourceError> {
        if self.owners.is_empty() {
            return Ok(Vec::new());
        }
        let list = self.owners.iter().map(|o| quote_literal(o)).collect::<Vec<_>>().join(", ");
        let out = super::psql(
            url,
            &format!(
                "SELECT r FROM unnest(ARRAY[{list}]::text[]) r WHERE NOT EXISTS (SELECT 1 FROM pg_roles o \
                 WHERE o.rolname = r AND ((SELECT rolsuper FROM pg_roles WHERE rolname = current_user) \
                 OR pg_has_role(current_user, o.oid, 'MEMBER'))) ORDER BY 1"
            ),
        )?;
        Ok(out.lines().filter(|l| !l.is_empty()).map(str::to_string).collect())
    }
}

/// Runs pg_restore over dump `name` and returns what it printed.
async fn run(
    repo: &Repository,
    tree: Id,
    name: &str,
    url: &PgUrl,
    args: &[&str],
) -> Result<String, SourceError> {
    let mut cmd = url.command("pg_restore")?;
    cmd.args(args);
    let Fed { dumped, status, stderr, stdout } =
        feed_for_output(cmd, "pg_restore", repo, tree, &[name.to_string()]).await?;
    if !status.success() {
        return Err(SourceError::Refused(format!(
            "pg_restore could not read the table of contents of {name} ({status}): {}",
            stderr.trim()
        )));
    }
    match dumped {
        Ok(_) => {}
        Err(e) if stopped_reading(&e) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// Splits `"na""me" WITH …` or `name WITH …` after the identifier.
fn split_ident(s: &str) -> (&str, &str) {
    if let Some(body) = s.strip_prefix('"') {
        let mut i = 0;
        let b = body.as_bytes();
        while i < b.len() {
            if b[i] == b'"' {
                if b.get(i + 1) == Some(&b'"') {
                    i += 2;
                    continue;
                }
                return s.split_at(i + 2);
            }
            i += 1;
        }
        (s, "")
    } else {
        let end = s.find(|c: char| c.is_whitespace() || c == ';').unwrap_or(s.len());
        s.split_at(end)
    }
}

/// Replaces the first `from` that stands as a whole name (followed by a
/// space, `;` or the end): the first is the statement's subject, before
/// any literal that might spell the same words.
fn rename_first(sql: &str, from: &str, to: &str) -> String {
    let mut at = 0;
    while let Some(i) = sql[at..].find(from) {
        let start = at + i;
        let end = start + from.len();
        if sql[end..].chars().next().is_none_or(|c| c.is_whitespace() || c == ';') {
            return format!("{}{to}{}", &sql[..start], &sql[end..]);
        }
        at = end;
    }
    sql.to_string()
}

/// SQL as pg_restore prints it, cut into statements: `;` ends one outside
/// quotes, `--` comments and psql's backslash commands are dropped.
fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = sql.chars().peekable();
    let (mut single, mut double) = (false, false);
    while let Some(c) = chars.next() {
        if !single && !double {
            if c == '-' && chars.peek() == Some(&'-') {
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
                continue;
            }
            if c == '\\' && cur.trim().is_empty() {
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
                continue;
            }
            if c == ';' {
                let s = cur.trim().to_string();
                if !s.is_empty() {
                    out.push(format!("{s};"));
                }
                cur.clear();
                continue;
            }
        }
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            _ => {}
        }
        cur.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_cut_outside_quotes_only() {
        let sql = "-- a comment; with a semicolon\n\\connect shop\nCOMMENT ON DATABASE shop IS 'it''s; two\nlines';\n\
                   ALTER DATABASE \"we;ird\" SET x TO 'y';\n\\unrestrict abc\n";
        assert_eq!(
            statements(sql),
            vec![
                "COMMENT ON DATABASE shop IS 'it''s; two\nlines';",
                "ALTER DATABASE \"we;ird\" SET x TO 'y';"
            ]
        );
    }

    #[test]
    fn the_database_is_renamed_where_it_is_the_subject() {
        assert_eq!(
            rename_first("COMMENT ON DATABASE shop IS 'DATABASE shop';", "DATABASE shop", "DATABASE \"new\""),
            "COMMENT ON DATABASE \"new\" IS 'DATABASE shop';"
        );
        assert_eq!(
            rename_first("GRANT CONNECT ON DATABASE shopping TO a; ", "DATABASE shop", "DATABASE x"),
            "GRANT CONNECT ON DATABASE shopping TO a; "
        );
        assert_eq!(
            rename_first("ALTER DATABASE shop SET a TO 'b';", "DATABASE shop", "DATABASE x"),
            "ALTER DATABASE x SET a TO 'b';"
        );
    }

    #[test]
    fn identifiers_split_quoted_or_bare() {
        assert_eq!(split_ident("shop WITH TEMPLATE = template0;"), ("shop", " WITH TEMPLATE = template0;"));
        assert_eq!(split_ident("\"My \"\"Shop\" WITH x"), ("\"My \"\"Shop\"", " WITH x"));
    }
}
