//! Putting a restored copy in place of a live one.
//!
//! The new copy already sits in the same directory as the live path (so the
//! renames are atomic and never copy data). The live path, and any companion
//! files (a SQLite database's `-wal` and `-shm`), are renamed to their `.bak`
//! names first, then the new copy is renamed in. If the second rename fails,
//! the first is undone.
use std::path::{Path, PathBuf};

use crate::SourceError;

/// `NAME.bak-YYYYMMDD_HHMM`, made unique with a suffix if taken.
pub fn backup_name(live: &Path, now: chrono::DateTime<chrono::Local>) -> PathBuf {
    let name = live.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stamp = now.format("%Y%m%d_%H%M");
    let mut candidate = live.with_file_name(format!("{name}.bak-{stamp}"));
    let mut n = 1;
    while candidate.symlink_metadata().is_ok() {
        n += 1;
        candidate = live.with_file_name(format!("{name}.bak-{stamp}-{n}"));
    }
    candidate
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
    ) -> Result<Swap, SourceError> {
        let bak = backup_name(live, chrono::Local::now());
        let lone = live.symlink_metadata().is_ok()
            && companions.iter().all(|c| with_suffix(live, c).symlink_metadata().is_err());
        if lone {
            use rustix::fs::{renameat_with, RenameFlags, CWD};
            match renameat_with(CWD, new, CWD, live, RenameFlags::EXCHANGE) {
                Ok(()) => {
                    sync_parent(live);
                    // `new` now names the old copy.
                    if !keep_old {
                        let r = if new.is_dir() {
                            std::fs::remove_dir_all(new)
                        } else {
                            std::fs::remove_file(new)
                        };
                        if let Err(e) = r {
                            tracing::warn!(path = %new.display(), error = %e, "could not remove the old copy");
                        }
                        return Ok(Swap { kept: None });
                    }
                    return match std::fs::rename(new, &bak) {
                        Ok(()) => {
                            sync_parent(&bak);
                            Ok(Swap { kept: Some(bak) })
                        }
                        Err(e) => {
                            tracing::warn!(path = %new.display(), error = %e, "the old copy keeps its temporary name");
                            Ok(Swap { kept: Some(new.to_path_buf()) })
                        }
                    };
                }
                Err(e)
                    if [rustix::io::Errno::INVAL, rustix::io::Errno::NOSYS, rustix::io::Errno::OPNOTSUPP]
                        .contains(&e) => {}
                Err(e) => return Err(SourceError::io(live, std::io::Error::from(e))),
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
                let r = if to.is_dir() { std::fs::remove_dir_all(to) } else { std::fs::remove_file(to) };
                if let Err(e) = r {
                    tracing::warn!(path = %to.display(), error = %e, "could not remove the old copy");
                }
            }
            return Ok(Swap { kept: None });
        }
        Ok(Swap { kept: had_old.then_some(bak) })
    }
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
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

/// A temporary name beside `live`, for the new copy.
pub(crate) fn temp_beside(live: &Path) -> PathBuf {
    let name = live.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    live.with_file_name(format!(".{name}.kura-restore-{:08x}", rand::random::<u32>()))
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
        let s = Swap::replace(&new, &live, &["-wal", "-shm"], true).unwrap();
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
        let s = Swap::replace(&new, &live, &[], true).unwrap();
        assert_eq!(std::fs::read(live.join("a")).unwrap(), b"new");
        assert_eq!(std::fs::read(s.kept.unwrap().join("a")).unwrap(), b"old");
        assert!(!new.exists());
        let new = temp_beside(&live);
        std::fs::create_dir(&new).unwrap();
        assert!(Swap::replace(&new, &live, &[], false).unwrap().kept.is_none());
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
