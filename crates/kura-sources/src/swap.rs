//! Putting a restored copy in place of a live one.
//!
//! The new copy is built in a locked temporary [`Scratch`] in the same
//! directory as the live path, so renames are atomic and never copy data,
//! and a killed restore's scratch copy is swept by the next one
//! ([`sweep_leftovers`]). A lone live path trades places with the new copy
//! in one atomic exchange; a path with companion files (a SQLite
//! database's `-wal` and `-shm`, when SQLite cannot write into it itself)
//! is renamed aside with them, then the new copy is renamed in, and a
//! failed second step undoes the first.
use std::path::{Path, PathBuf};

use crate::SourceError;

/// `NAME.bak-YYYYMMDD_HHMM`, made unique with a suffix above every one
/// taken if needed.
pub fn backup_name(live: &Path, now: chrono::DateTime<chrono::Local>) -> PathBuf {
    let name = live.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let base = format!("{name}.bak-{}", now.format("%Y%m%d_%H%M"));
    let dir = live.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let siblings: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    live.with_file_name(crate::kept::next_name(&base, '-', siblings.iter().map(String::as_str)))
}

pub struct Swap {
    /// Where the old copy went, if there was one and it was kept.
    pub kept: Option<PathBuf>,
}

impl Swap {
    /// Replaces `live` (and `live` + each suffix in `companions`) by `new`.
    ///
    /// When `live` exists and has no companions on disk, the two trade
    /// places in one atomic exchange (renameat2 RENAME_EXCHANGE), so a
    /// crash at any instant leaves `live` holding either the old or the new
    /// copy, never nothing. Otherwise (companions, or a filesystem without
    /// exchange) the old copy and its companions are renamed aside first.
    pub fn replace(
        new: &Path,
        live: &Path,
        companions: &[&str],
        keep_old: bool,
        now: chrono::DateTime<chrono::Local>,
    ) -> Result<Swap, SourceError> {
        let bak = backup_name(live, now);
        let lone = live.symlink_metadata().is_ok()
            && companions.iter().all(|c| with_suffix(live, c).symlink_metadata().is_err());
        if lone {
            use rustix::fs::{renameat_with, RenameFlags, CWD};
            // When the old copy is kept, the new one first takes the `.bak`
            // name, and the exchange then puts the old copy there: it is
            // never under a temporary name, which a later restore's sweep
            // of leftovers would remove. Killed between the two steps, the
            // live path still holds the old copy and the `.bak` name a whole
            // checked copy of the snapshot.
            let staged = if keep_old {
                std::fs::rename(new, &bak).map_err(|e| SourceError::io(&bak, e))?;
                bak.clone()
            } else {
                new.to_path_buf()
            };
            match renameat_with(CWD, &staged, CWD, live, RenameFlags::EXCHANGE) {
                Ok(()) => {
                    sync_parent(live);
                    if keep_old {
                        return Ok(Swap { kept: Some(bak) });
                    }
                    // `new` now names the old copy.
                    if let Err(e) = remove_any(new) {
                        tracing::warn!(path = %new.display(), error = %e, "could not remove the old copy");
                    }
                    return Ok(Swap { kept: None });
                }
                Err(e) => {
                    if staged != new {
                        std::fs::rename(&staged, new).map_err(|e| SourceError::io(new, e))?;
                    }
                    if ![rustix::io::Errno::INVAL, rustix::io::Errno::NOSYS, rustix::io::Errno::OPNOTSUPP]
                        .contains(&e)
                    {
                        return Err(SourceError::io(live, std::io::Error::from(e)));
                    }
                }
            }
        }
        let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
        let undo = |moved: &[(PathBuf, PathBuf)]| {
            for (from, to) in moved.iter().rev() {
                let _ = std::fs::rename(to, from);
            }
        };
        let mut pairs = vec![(live.to_path_buf(), bak.clone())];
        for c in companions {
            pairs.push((with_suffix(live, c), with_suffix(&bak, c)));
        }
        for (from, to) in pairs {
            if from.symlink_metadata().is_ok() {
                if let Err(e) = std::fs::rename(&from, &to) {
                    undo(&moved);
                    return Err(SourceError::io(&from, e));
                }
                moved.push((from, to));
            }
        }
        if let Err(e) = std::fs::rename(new, live) {
            undo(&moved);
            return Err(SourceError::io(live, e));
        }
        sync_parent(live);
        let had_old = moved.iter().any(|(from, _)| from == live);
        if !keep_old {
            for (_, to) in &moved {
                if let Err(e) = remove_any(to) {
                    tracing::warn!(path = %to.display(), error = %e, "could not remove the old copy");
                }
            }
            return Ok(Swap { kept: None });
        }
        Ok(Swap { kept: had_old.then_some(bak) })
    }
}

fn remove_any(p: &Path) -> std::io::Result<()> {
    if p.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    }
}

pub(crate) fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn sync_parent(p: &Path) {
    if let Some(d) = p.parent() {
        if let Ok(f) = std::fs::File::open(d) {
            let _ = f.sync_all();
        }
    }
}

/// The start of the temporary names beside `live`.
fn scratch_prefix(live: &Path) -> String {
    let name = live.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    format!(".{name}.kura-restore-")
}

/// A temporary name beside `live`, for the new copy.
pub(crate) fn temp_beside(live: &Path) -> PathBuf {
    live.with_file_name(format!("{}{:08x}", scratch_prefix(live), rand::random::<u32>()))
}

/// A restore's temporary copy beside the live path (a file or a folder),
/// under an exclusive `flock` for as long as this value lives. The kernel
/// drops the lock when the process dies, so a later restore tells a killed
/// run's leftover (lock free: removed) from a running one's (lock held:
/// left alone). Without this, every killed restore would leave a whole
/// copy of the data behind for good.
pub(crate) struct Scratch {
    pub path: PathBuf,
    _lock: std::fs::File,
}

impl Scratch {
    /// Creates an empty file; the returned handle writes it.
    pub fn file(live: &Path) -> Result<(Scratch, std::fs::File), SourceError> {
        let path = temp_beside(live);
        let file = std::fs::File::create_new(&path).map_err(|e| SourceError::io(&path, e))?;
        Ok((Scratch::lock(path)?, file))
    }

    /// Creates an empty folder.
    pub fn dir(live: &Path) -> Result<Scratch, SourceError> {
        let path = temp_beside(live);
        std::fs::create_dir(&path).map_err(|e| SourceError::io(&path, e))?;
        Scratch::lock(path)
    }

    fn lock(path: PathBuf) -> Result<Scratch, SourceError> {
        // A handle of its own: the lock outlives the writer's handle.
        let lock = std::fs::File::open(&path).map_err(|e| SourceError::io(&path, e))?;
        kura_repo::try_lock(&lock).map_err(|e| SourceError::io(&path, e))?;
        Ok(Scratch { path, _lock: lock })
    }
}

/// Removes the temporary copies that killed restores left beside `live`:
/// those no living process holds locked, with their `companions` (a SQLite
/// copy's `-journal`), which go only with the copy they belong to.
pub(crate) fn sweep_leftovers(live: &Path, companions: &[&str]) {
    let Some(dir) = live.parent() else { return };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    kura_repo::remove_leftovers(dir, &scratch_prefix(live), kura_repo::Abandoned::Unlocked, companions);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_keeps_old_with_companions() {
        let d = tempfile::tempdir().unwrap();
        let live = d.path().join("app.db");
        std::fs::write(&live, b"old").unwrap();
        std::fs::write(d.path().join("app.db-wal"), b"old wal").unwrap();
        let new = d.path().join("new");
        std::fs::write(&new, b"new").unwrap();
        let s = Swap::replace(&new, &live, &["-wal", "-shm"], true, chrono::Local::now()).unwrap();
        let kept = s.kept.unwrap();
        assert_eq!(std::fs::read(&live).unwrap(), b"new");
        assert_eq!(std::fs::read(&kept).unwrap(), b"old");
        assert_eq!(std::fs::read(with_suffix(&kept, "-wal")).unwrap(), b"old wal");
        assert!(!d.path().join("app.db-wal").exists(), "the old WAL must not pair with the new database");
        assert!(kept.file_name().unwrap().to_string_lossy().starts_with("app.db.bak-"));
    }

    #[test]
    fn a_lone_directory_trades_places_with_its_replacement() {
        let d = tempfile::tempdir().unwrap();
        let live = d.path().join("config");
        std::fs::create_dir(&live).unwrap();
        std::fs::write(live.join("a"), b"old").unwrap();
        let new = temp_beside(&live);
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("a"), b"new").unwrap();
        let s = Swap::replace(&new, &live, &[], true, chrono::Local::now()).unwrap();
        assert_eq!(std::fs::read(live.join("a")).unwrap(), b"new");
        assert_eq!(std::fs::read(s.kept.unwrap().join("a")).unwrap(), b"old");
        assert!(!new.exists());
        let new = temp_beside(&live);
        std::fs::create_dir(&new).unwrap();
        assert!(Swap::replace(&new, &live, &[], false, chrono::Local::now()).unwrap().kept.is_none());
        assert!(!new.exists(), "the old copy is gone when not kept");
        assert!(live.is_dir());
    }

    #[test]
    fn backup_names_do_not_collide() {
        let d = tempfile::tempdir().unwrap();
        let live = d.path().join("x");
        let now = chrono::Local::now();
        let first = backup_name(&live, now);
        std::fs::write(&first, b"").unwrap();
        assert_ne!(backup_name(&live, now), first);
    }
}
