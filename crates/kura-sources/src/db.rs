//! What the PostgreSQL and MySQL/MariaDB sources share: finding a client
//! program (pinned by an environment variable, else on PATH and in the
//! places a distribution keeps versioned ones), and the stamp kept copies
//! are named with.
use std::path::PathBuf;

use crate::SourceError;

/// Where a database's client programs are looked for.
pub(crate) struct Tools {
    /// Set, it pins the one directory to use (and is how tests take a
    /// client away).
    pub bindir_env: &'static str,
    /// Searched after PATH, in order.
    pub extra_dirs: fn() -> Vec<PathBuf>,
    /// How to install the client, for the error.
    pub install: &'static str,
}

impl Tools {
    /// The first of `names` found (a client's names in preference order:
    /// `mariadb-dump` before `mysqldump`), or an error saying how to
    /// install it.
    pub fn find(&self, names: &[&str]) -> Result<PathBuf, SourceError> {
        let wanted = names.join(" or ");
        if let Some(dir) = std::env::var_os(self.bindir_env) {
            let dir = PathBuf::from(dir);
            return names.iter().map(|n| dir.join(n)).find(|p| p.is_file()).ok_or_else(|| {
                SourceError::Refused(format!(
                    "{wanted} not found in {} ({}): {}",
                    self.bindir_env,
                    dir.display(),
                    self.install
                ))
            });
        }
        let mut dirs: Vec<PathBuf> =
            std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
        dirs.extend((self.extra_dirs)());
        names
            .iter()
            .find_map(|n| dirs.iter().map(|d| d.join(n)).find(|p| p.is_file()))
            .ok_or_else(|| SourceError::Refused(format!("{wanted} not found: {}", self.install)))
    }
}

/// `20261202_0230`: the time in the names of kept databases and schemas
/// (`shop_bak_20261202_0230`), local like the rest of what users read.
pub(crate) fn kept_stamp(now: chrono::DateTime<chrono::Local>) -> String {
    now.format("%Y%m%d_%H%M").to_string()
}
