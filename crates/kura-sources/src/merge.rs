//! A files target restored in place: the restored copy (complete and
//! verified beside the live tree) is moved into the live tree entry by entry.
//!
//! What the snapshot holds replaces what is live; everything else stays:
//! files the target's `exclude` left out, logs older than `changed_within`,
//! files created since the backup. With `mirror`, what the snapshot lacks
//! goes too, except what the filters left out. Whatever is replaced or
//! removed is moved into the kept copy (`NAME.bak-YYYYMMDD_HHMM`, holding
//! only those entries, at their paths), never deleted unless the user said
//! `--no-keep-old`.
//!
//! Each entry changes in one step: a file is swapped with
//! `renameat2(RENAME_EXCHANGE)`, so its live name always holds the old or
//! the new file, and a directory the live tree lacks arrives whole in one
//! rename. A restore killed midway leaves every path old or new and the kept
//! copy holding what was replaced so far. Every path is resolved from
//! directory handles opened without following symlinks (see
//! `kura_repo::restore::beneath`), so a local user racing the restore cannot
//! redirect a rename.
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kura_repo::backup::Excludes;
use kura_repo::restore::beneath::Beneath;
use rustix::fs::{AtFlags, FileType, Mode, RenameFlags};

use crate::SourceError;

/// What the target's backup leaves out: restore in place leaves it alone.
pub struct Filters {
    pub excludes: Excludes,
    pub changed_within: Option<std::time::Duration>,
    /// The time `changed_within` counts back from.
    pub now: chrono::DateTime<chrono::Utc>,
}

impl Filters {
    /// Whether the live entry at `path` is outside what the target backs up.
    pub(crate) fn leaves_out(&self, path: &Path, st: &rustix::fs::Stat) -> bool {
        if self.excludes.excluded(path) {
            return true;
        }
        match self.changed_within {
            Some(window) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                let age = self.now.timestamp() - st.st_mtime;
                age > window.as_secs() as i64
            }
            _ => false,
        }
    }
}

/// What a merge did, or (planned from the snapshot) would do.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Counts {
    /// Entries the snapshot holds that exist live: replaced.
    pub overwritten: u64,
    /// Entries the snapshot holds that do not exist live: added.
    pub added: u64,
    /// Live entries the snapshot lacks, moved aside (`mirror` only).
    pub moved_aside: u64,
    /// Live entries the snapshot lacks, left alone (filtered out, or no
    /// `mirror`).
    pub left_alone: u64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SourceError + '_ {
    move |e| SourceError::io(path, e)
}

fn errno(path: &Path) -> impl Fn(rustix::io::Errno) -> SourceError + '_ {
    move |e| SourceError::io(path, std::io::Error::from(e))
}

fn list(fd: &OwnedFd) -> std::io::Result<Vec<OsString>> {
    let own = rustix::fs::openat(
        fd,
        ".",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
        Mode::empty(),
    )?;
    let mut dir = rustix::fs::Dir::read_from(&own)?;
    let mut out = Vec::new();
    while let Some(e) = dir.read() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    out.sort();
    Ok(out)
}

fn stat(fd: &OwnedFd, name: &OsStr) -> std::io::Result<Option<rustix::fs::Stat>> {
    match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(s) => Ok(Some(s)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn is_dir(st: &rustix::fs::Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

/// Where replaced entries go: made on first use.
struct Kept {
    path: PathBuf,
    root: Option<Beneath>,
    keep: bool,
}

impl Kept {
    /// Moves the live entry `name` of directory `rel` aside (or deletes it
    /// without a kept copy).
    fn take(&mut self, live: &Arc<OwnedFd>, rel: &Path, name: &OsStr) -> Result<(), SourceError> {
        if !self.keep {
            return remove_tree(live, name).map_err(io(&self.path));
        }
        if self.root.is_none() {
            std::fs::create_dir(&self.path).map_err(io(&self.path))?;
            self.root = Some(Beneath::open(&self.path).map_err(io(&self.path))?);
        }
        let root = self.root.as_ref().expect("made above");
        let mut made = PathBuf::new();
        for c in rel.components() {
            made.push(c);
            root.mkdir(&made, false).map_err(io(&self.path))?;
        }
        let dir = root.dir(rel).map_err(io(&self.path))?;
        rustix::fs::renameat(live, name, &*dir, name).map_err(errno(&self.path))
    }
}

/// Removes an entry and, for a directory, everything below it, through
/// handles (no symlink followed).
fn remove_tree(dir: &OwnedFd, name: &OsStr) -> std::io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::PERM) => {}
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    for n in list(&sub)? {
        remove_tree(&sub, &n)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(Into::into)
}

/// Moves the complete restored tree `new` into `live`. `kept` is where
/// replaced entries go (`None`: they are deleted). With `mirror`, live
/// entries the snapshot lacks go too, unless `filters` leaves them out.
pub fn merge(
    new: &Path,
    live: &Path,
    kept: Option<&Path>,
    mirror: bool,
    filters: &Filters,
) -> Result<(Counts, Option<PathBuf>), SourceError> {
    let mut counts = Counts::default();
    let new_root = Beneath::open(new).map_err(io(new))?;
    let live_root = Beneath::open(live).map_err(io(live))?;
    let mut kept =
        Kept { path: kept.map(Path::to_path_buf).unwrap_or_default(), root: None, keep: kept.is_some() };
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let nd = new_root.dir(&rel).map_err(io(new))?;
        let ld = live_root.dir(&rel).map_err(io(live))?;
        let incoming = list(&nd).map_err(io(new))?;
        if mirror {
            for name in list(&ld).map_err(io(live))? {
                if incoming.binary_search(&name).is_ok() {
                    continue;
                }
                let st = stat(&ld, &name).map_err(io(live))?;
                match st {
                    Some(st) if !filters.leaves_out(&live.join(&rel).join(&name), &st) => {
                        kept.take(&ld, &rel, &name)?;
                        counts.moved_aside += 1;
                    }
                    Some(_) => counts.left_alone += 1,
                    None => {}
                }
            }
        }
        for name in incoming {
            let ns = stat(&nd, &name).map_err(io(new))?.ok_or_else(|| {
                SourceError::Refused(format!(
                    "{} vanished from the restored copy",
                    new.join(&rel).join(&name).display()
                ))
            })?;
            let ls = stat(&ld, &name).map_err(io(live))?;
            match ls {
                Some(l) if is_dir(&ns) && is_dir(&l) => {
                    counts.overwritten += 1;
                    dirs.push(rel.join(&name));
                    stack.push(rel.join(&name));
                }
                Some(l) if !is_dir(&ns) && !is_dir(&l) => {
                    // One step: the live name holds the old file or the new.
                    rustix::fs::renameat_with(&*nd, &name, &*ld, &name, RenameFlags::EXCHANGE)
                        .map_err(errno(live))?;
                    if kept.keep {
                        // The old file now lies in the restored copy.
                        kept_from_new(&mut kept, &nd, &rel, &name)?;
                    }
                    counts.overwritten += 1;
                }
                Some(_) => {
                    // A file where a directory goes, or the reverse: the live
                    // one is moved aside whole, then the new one moved in.
                    kept.take(&ld, &rel, &name)?;
                    rustix::fs::renameat(&*nd, &name, &*ld, &name).map_err(errno(live))?;
                    counts.overwritten += 1;
                }
                None => {
                    rustix::fs::renameat(&*nd, &name, &*ld, &name).map_err(errno(live))?;
                    counts.added += 1;
                }
            }
        }
    }
    // Directories that were merged take the snapshot's metadata, deepest
    // first (the restored copy's directories carry it).
    dirs.push(PathBuf::new());
    for rel in dirs.iter().rev() {
        let nd = new_root.dir(rel).map_err(io(new))?;
        let ld = live_root.dir(rel).map_err(io(live))?;
        copy_metadata(&nd, &ld).map_err(io(&live.join(rel)))?;
    }
    Ok((counts, kept.root.is_some().then_some(kept.path)))
}

/// After an exchange the old file lies in the restored copy: moves it to the
/// kept copy at the same path.
fn kept_from_new(kept: &mut Kept, nd: &Arc<OwnedFd>, rel: &Path, name: &OsStr) -> Result<(), SourceError> {
    kept.take(nd, rel, name)
}

/// Owner, mode and times of directory `from` onto `to`.
fn copy_metadata(from: &OwnedFd, to: &OwnedFd) -> std::io::Result<()> {
    let st = rustix::fs::fstat(from)?;
    let (uid, gid) = (rustix::fs::Uid::from_raw(st.st_uid), rustix::fs::Gid::from_raw(st.st_gid));
    if let Err(e) = rustix::fs::fchown(to, Some(uid), Some(gid)) {
        if e != rustix::io::Errno::PERM {
            return Err(e.into());
        }
    }
    rustix::fs::fchmod(to, Mode::from_raw_mode(st.st_mode & 0o7777))?;
    let t = |s: i64, ns: i64| rustix::fs::Timespec { tv_sec: s, tv_nsec: ns as _ };
    let times = rustix::fs::Timestamps {
        last_access: t(st.st_atime, st.st_atime_nsec as i64),
        last_modification: t(st.st_mtime, st.st_mtime_nsec as i64),
    };
    rustix::fs::futimens(to, &times)?;
    Ok(())
}
