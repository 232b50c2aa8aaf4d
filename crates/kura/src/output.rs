//! Errors as the user sees them, exit codes, logging and JSON output.
use std::fmt::Display;

use kura_repo::RepoError;
use serde::Serialize;

use crate::cli::Global;

/// Writes a line to standard output. A closed stdout (`kura … | head`) must
/// never abort a backup or a restore midway, so write errors are ignored
/// (Rust ignores SIGPIPE; `println!` would panic on EPIPE instead).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}
pub(crate) use outln;

/// The same for standard error, which may be a closed pipe too.
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}
pub(crate) use errln;

/// Exit codes (documented in README.md).
pub mod code {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    /// Done, with warnings: a backup saved although some source files could
    /// not be read or changed while read; a restore that left out entries on
    /// purpose (sockets, device nodes without root), or a database restored
    /// without some of its database-level settings.
    pub const PARTIAL_BACKUP: u8 = 3;
    /// verify found damage, or restore could not restore some files because
    /// the repository's copy is damaged.
    pub const DAMAGE: u8 = 4;
    /// Partly done: some entries could not be written here (a permission, a
    /// full disk, something in the way), the rest was restored.
    pub const PARTIAL: u8 = 5;
    pub const NO_REPOSITORY: u8 = 10;
    pub const WRONG_PASSWORD: u8 = 11;
    pub const BUSY: u8 = 12;
}

#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
    pub hint: Option<String>,
}

impl Failure {
    pub fn new(message: impl Display) -> Failure {
        Failure { code: code::FAILED, message: message.to_string(), hint: None }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }

    pub fn code(f: &Failure) -> u8 {
        f.code
    }

    /// Adds what was being done to the message.
    pub fn with_code(mut self, code: u8) -> Failure {
        self.code = code;
        self
    }

    pub fn context(mut self, what: impl Display) -> Failure {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl From<RepoError> for Failure {
    fn from(e: RepoError) -> Failure {
        let code = match &e {
            RepoError::NotARepository { .. } => code::NO_REPOSITORY,
            RepoError::WrongPassword { .. } | RepoError::NoKeys { .. } => code::WRONG_PASSWORD,
            RepoError::PruneRunning { .. } => code::BUSY,
            RepoError::DamagedSnapshot { .. } | RepoError::MissingBlob { .. } => code::DAMAGE,
            // An object of the repository that does not open or decode:
            // damage, as README's exit codes say, not a usage failure.
            RepoError::Format(
                kura_format::FormatError::Unauthentic { what }
                | kura_format::FormatError::Corrupt { what, .. },
            ) if what.ends_with("blob")
                || matches!(*what, "tree" | "index" | "snapshot" | "pack header" | "object manifest") =>
            {
                code::DAMAGE
            }
            _ => code::FAILED,
        };
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let s_text = s.to_string();
            if !message.contains(&s_text) {
                message = format!("{message}: {s_text}");
            }
            source = s.source();
        }
        Failure { code, hint: repo_hint(&e).map(String::from), message }
    }
}

/// A next step after a repository error, in the command line's words.
fn repo_hint(e: &RepoError) -> Option<&'static str> {
    use kura_format::FormatError;
    use kura_store::ErrorKind;
    Some(match e {
        RepoError::NotARepository { .. } => {
            "create one with `kura init`, or check --repo / KURA_REPOSITORY"
        }
        RepoError::AlreadyInitialized { .. } => "use the existing repository, or choose another location",
        RepoError::WrongPassword { .. } => {
            "check the password source (KURA_PASSWORD, --password-file or --password-command)"
        }
        RepoError::SnapshotNotFound(_) => "`kura snapshots` lists them",
        RepoError::AmbiguousId { .. } => "type more characters of the id",
        RepoError::TargetNotEmpty(_) => "choose an empty directory, or pass --overwrite",
        RepoError::TargetInterrupted(_) => {
            "run the restore again with --overwrite (it rewrites every file), or remove the directory"
        }
        RepoError::PruneRunning { .. } => "wait for it; a prune that died is taken over after 5 minutes",
        RepoError::SessionLapsed => "check the connection to the repository and run the backup again",
        RepoError::Format(FormatError::UnsupportedVersion { .. }) => {
            "upgrade kura to open this repository"
        }
        RepoError::Format(
            FormatError::Unauthentic { what: "index" } | FormatError::Corrupt { what: "index", .. },
        ) => "`kura repair index` rebuilds the index from the packs' own headers; `kura verify` shows what else is affected",
        RepoError::Format(FormatError::Unauthentic { .. } | FormatError::Corrupt { .. }) => {
            "run `kura verify --read-data` to see what is affected"
        }
        RepoError::MissingBlob { .. } => {
            "`kura verify` shows which snapshots lost data; `kura repair index` helps if only the index is damaged"
        }
        RepoError::DamagedSnapshot { .. } => {
            "name the snapshot to restore (`kura snapshots` lists the readable ones), or `kura verify` \
             and then `kura forget` the damaged one"
        }
        RepoError::TreeTooDeep { .. } | RepoError::TooManyEntries { .. } => {
            "`kura verify` names such snapshots; restore an older one, or forget this one"
        }
        RepoError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
            "free space on that filesystem (packs are assembled in a local repository's data/ folder, \
             and for a remote one in TMPDIR), or move it"
        }
        RepoError::Store(e) => match e.kind {
            ErrorKind::NoSpace => "free space at the repository, or move it",
            ErrorKind::PermissionDenied => "check the credentials and the permissions of the repository",
            ErrorKind::Transient => "the storage did not answer well; the command is safe to run again",
            ErrorKind::Config => "check the repository URL and the environment variables it needs",
            _ => return None,
        },
        _ => return None,
    })
}

impl From<kura_sources::SourceError> for Failure {
    fn from(e: kura_sources::SourceError) -> Failure {
        match e {
            kura_sources::SourceError::Repo(r) => r.into(),
            e @ kura_sources::SourceError::MissingRoles { .. } => Failure::new(e.to_string()).hint(
                "create the roles first (the snapshot holds them: `kura dump SNAPSHOT globals.sql | psql -d postgres`), \
                 or restore with --no-owner to give every object to the restoring user and grant nothing",
            ),
            e @ kura_sources::SourceError::LockTimeout { .. } => Failure::new(e.to_string())
                .hint("let those sessions finish (or end them), or wait longer with --lock-timeout, e.g. --lock-timeout 15m"),
            other => Failure {
                code: code::FAILED,
                hint: other.hint().map(String::from),
                message: other.to_string(),
            },
        }
    }
}

impl From<kura_runner::RunError> for Failure {
    fn from(e: kura_runner::RunError) -> Failure {
        use kura_runner::RunError as E;
        match e {
            E::Repo(e) => e.into(),
            E::Source(e) => e.into(),
            E::Config(e) => Failure::new(e).hint("`kura.toml` names the repositories and targets"),
            E::WrongPassword { from, source } => Failure::from(source).hint(format!(
                "{from}; sources are tried in this order: --password-file, --password-command, KURA_PASSWORD, \
                 KURA_PASSWORD_FILE, KURA_PASSWORD_COMMAND, then the repository's password_file or \
                 password_command in kura.toml"
            )),
            E::Interrupted { .. } => Failure::new(e).with_code(130),
            E::PlanRunning { .. } => Failure::new(e)
                .hint("a scheduler that starts the next run before this one ends: space the runs, or let `kura serve` schedule them")
                .with_code(code::BUSY),
            E::Context { context, source } => Failure::from(*source).context(context),
            other => Failure { code: code::FAILED, hint: other.hint(), message: other.to_string() },
        }
    }
}

impl From<kura_store::StoreError> for Failure {
    fn from(e: kura_store::StoreError) -> Failure {
        RepoError::from(e).into()
    }
}

pub fn report_failure(g: &Global, f: &Failure) {
    if g.json {
        print_json(&serde_json::json!({ "error": f.message, "hint": f.hint, "exit_code": f.code }));
    }
    crate::output::errln!("kura: {}", f.message);
    if let Some(h) = &f.hint {
        crate::output::errln!("hint: {h}");
    }
}

pub fn print_json<T: Serialize>(value: &T) {
    crate::output::outln!("{}", serde_json::to_string_pretty(value).expect("JSON output serializes"));
}

/// A line about work under way that is not a result (a hook starting, a
/// hook's own output): on stderr, as a log line in `--log-format`, and
/// nothing with `--quiet`. Everything of the kind goes through here.
pub fn note(g: &Global, line: &str) {
    if g.quiet {
        return;
    }
    if g.log_format == "json" {
        crate::output::errln!(
            "{}",
            serde_json::json!({
                "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "level": "INFO",
                "fields": { "message": line },
                "target": "kura",
            })
        );
    } else {
        crate::output::errln!("{line}");
    }
}

/// Prints a line unless --quiet or --json.
pub fn say(g: &Global, line: impl Display) {
    if !g.quiet && !g.json {
        crate::output::outln!("{line}");
    }
}

/// `daemon`: the log is the output (kura serve), so runs are logged at
/// info by default.
pub fn init_logging(g: &Global, daemon: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (g.quiet, g.verbose) {
        (true, _) => "error",
        (false, 0) if daemon => "info",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("KURA_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only on a terminal, and never with NO_COLOR (no-color.org):
    // cron mail and the journal must not fill with escape codes.
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    match (g.log_format.as_str(), daemon) {
        ("json", _) => builder.json().init(),
        // The journal and log files want times on a daemon's lines.
        (_, true) => builder.with_target(false).init(),
        _ => builder.with_target(false).without_time().init(),
    }
}

pub use kura_runner::units::human_bytes;
