//! The restore target as a tree of directory handles.
//!
//! Every path below the target is resolved from a handle restore opened
//! itself, never by a path string: `openat2` with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS` where the kernel has it, else a walk that opens one
//! component at a time with `O_NOFOLLOW | O_DIRECTORY`. A local user who can
//! write inside the target and swaps a directory for a symlink between our
//! `mkdir` and our write makes that one entry fail; nothing is ever written
//! through a symlink restore did not create, nor outside the target.
//!
//! New files and directories are private while they are filled (0600 and
//! 0700); their final modes are set through the open handle at the end.
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use kura_format::tree::Node;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, CWD};

/// Directory handles kept open at most, whatever the file limit (a quarter
/// of it when that is lower). Files arrive in pack order, which follows
/// the backup's walk only roughly: with 256, a restore of 11,400
/// directories opened one again for 40% of its files.
const DIR_HANDLES_MAX: usize = 4096;

pub struct Beneath {
    root: Arc<OwnedFd>,
    dirs: Mutex<HashMap<PathBuf, Arc<OwnedFd>>>,
    cap: usize,
}

fn err(e: rustix::io::Errno) -> io::Error {
    io::Error::from(e)
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

impl Beneath {
    /// Opens the target directory (which must exist). The target path itself
    /// is the user's choice and may pass through symlinks; nothing below it may.
    pub fn open(target: &Path) -> io::Result<Beneath> {
        let root =
            rustix::fs::open(target, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(err)?;
        let cap = (open_file_limit() / 4).clamp(8, DIR_HANDLES_MAX);
        Ok(Beneath { root: Arc::new(root), dirs: Mutex::new(HashMap::new()), cap })
    }

    /// The directory `rel` ("" for the target itself), opened without
    /// following any symlink on the way.
    pub fn dir(&self, rel: &Path) -> io::Result<Arc<OwnedFd>> {
        if rel.as_os_str().is_empty() {
            return Ok(self.root.clone());
        }
        if let Some(fd) = self.dirs.lock().expect("dir handles").get(rel) {
            return Ok(fd.clone());
        }
        let fd = open_beneath(&self.root, rel)?;
        self.remember(rel, fd)
    }

    fn remember(&self, rel: &Path, fd: OwnedFd) -> io::Result<Arc<OwnedFd>> {
        let fd = Arc::new(fd);
        let mut dirs = self.dirs.lock().expect("dir handles");
        if dirs.len() >= self.cap {
            // Handles in use elsewhere live on through their Arc.
            dirs.clear();
        }
        dirs.insert(rel.to_path_buf(), fd.clone());
        Ok(fd)
    }

    /// Creates directory `rel` (0700 until its metadata is set at the end),
    /// or accepts an existing one. With `replace`, a non-directory in the way
    /// is removed first; a symlink is never followed.
    pub fn mkdir(&self, rel: &Path, replace: bool) -> io::Result<()> {
        let (parent, name) = split(rel)?;
        let p = self.dir(parent)?;
        match rustix::fs::mkdirat(&*p, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {
                let st = rustix::fs::statat(&*p, name, AtFlags::SYMLINK_NOFOLLOW).map_err(err)?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                    if !replace {
                        return Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            "exists and is not a directory",
                        ));
                    }
                    rustix::fs::unlinkat(&*p, name, AtFlags::empty()).map_err(err)?;
                    rustix::fs::mkdirat(&*p, name, Mode::from_raw_mode(0o700)).map_err(err)?;
                }
            }
            Err(e) => return Err(err(e)),
        }
        // Proves it is a directory reached without a symlink, and caches it.
        let fd = rustix::fs::openat(&*p, name, dir_flags(), Mode::empty()).map_err(err)?;
        self.remember(rel, fd).map(|_| ())
    }

    /// Creates a new, private (0600) file named `name` in directory `dir`.
    /// Its identity is taken only if it must be opened again
    /// ([`identity`]): most files are finished through this handle.
    pub(crate) fn create_new(&self, dir: &Path, name: &std::ffi::OsStr) -> io::Result<File> {
        let d = self.dir(dir)?;
        let fd = rustix::fs::openat(
            &*d,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(err)?;
        Ok(File::from(fd))
    }

    /// Opens a file restore created earlier, and checks it is still that
    /// file (same device and inode), not something swapped in meanwhile.
    pub(crate) fn reopen(
        &self,
        dir: &Path,
        name: &std::ffi::OsStr,
        identity: (u64, u64),
    ) -> io::Result<File> {
        let d = self.dir(dir)?;
        let fd =
            rustix::fs::openat(&*d, name, OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
                .map_err(err)?;
        let st = rustix::fs::fstat(&fd).map_err(err)?;
        if (st.st_dev, st.st_ino) != identity {
            return Err(io::Error::other("the partial file was replaced by another during the restore"));
        }
        Ok(File::from(fd))
    }

    /// Renames `from` to `to` inside directory `dir`; refuses when a
    /// directory holds the name.
    pub(crate) fn publish(&self, dir: &Path, from: &std::ffi::OsStr, to: &[u8]) -> io::Result<()> {
        let d = self.dir(dir)?;
        let to = std::ffi::OsStr::from_bytes(to);
        // rename(2) refuses to put a file over a directory (EISDIR) by
        // itself: no lookup of the name first, which in a fresh target
        // fails for every file.
        match rustix::fs::renameat(&*d, from, &*d, to) {
            Err(rustix::io::Errno::ISDIR) => {
                Err(io::Error::new(io::ErrorKind::AlreadyExists, "a directory is in the way"))
            }
            r => r.map_err(err),
        }
    }

    /// Removes a name (not a directory) from directory `dir`, if present.
    pub(crate) fn remove(&self, dir: &Path, name: &std::ffi::OsStr) -> io::Result<()> {
        let d = self.dir(dir)?;
        match rustix::fs::unlinkat(&*d, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    /// Whether `name` exists in directory `dir` (without following it).
    pub(crate) fn exists(&self, dir: &Path, name: &std::ffi::OsStr) -> io::Result<bool> {
        let d = self.dir(dir)?;
        match rustix::fs::statat(&*d, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(err(e)),
        }
    }

    pub(crate) fn symlink(&self, rel: &Path, target: &[u8]) -> io::Result<()> {
        let (parent, name) = split(rel)?;
        let d = self.dir(parent)?;
        rustix::fs::symlinkat(std::ffi::OsStr::from_bytes(target), &*d, name).map_err(err)
    }

    /// A hard link at `rel` to the file restored at `leader`.
    pub(crate) fn hard_link(&self, leader: &Path, rel: &Path) -> io::Result<()> {
        let (lp, ln) = split(leader)?;
        let (p, n) = split(rel)?;
        let (ld, d) = (self.dir(lp)?, self.dir(p)?);
        rustix::fs::linkat(&*ld, ln, &*d, n, AtFlags::empty()).map_err(err)
    }

    /// A FIFO or device node at `rel`, private until its metadata is set.
    pub(crate) fn special(&self, rel: &Path, ty: FileType, rdev: u64) -> io::Result<()> {
        let (parent, name) = split(rel)?;
        let d = self.dir(parent)?;
        rustix::fs::mknodat(&*d, name, ty, Mode::from_raw_mode(0o600), rdev).map_err(err)
    }

    /// Owner, mode and times of a directory restore made or accepted.
    pub(crate) fn set_dir_metadata(&self, rel: &Path, meta: &Meta, owners: bool) -> io::Result<()> {
        let fd = self.dir(rel)?;
        set_metadata(&*fd, meta, owners)
    }

    /// Owner, mode and times of a FIFO or device node, through an `O_PATH`
    /// handle opened without following a symlink: it needs no permission on
    /// the node and never opens it for I/O.
    pub(crate) fn set_special_metadata(&self, rel: &Path, node: &Node, owners: bool) -> io::Result<()> {
        let (parent, name) = split(rel)?;
        let d = self.dir(parent)?;
        let fd =
            rustix::fs::openat(&*d, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
                .map_err(err)?;
        // The kernel resolves /proc/self/fd/N to the very inode, never by
        // name, so this cannot be redirected.
        let path = {
            use std::os::fd::AsRawFd;
            PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
        };
        if owners {
            rustix::fs::chownat(CWD, &path, uid(node.uid), gid(node.gid), AtFlags::empty()).map_err(err)?;
        }
        rustix::fs::chmodat(CWD, &path, Mode::from_raw_mode(node.mode & 0o7777), AtFlags::empty())
            .map_err(err)?;
        rustix::fs::utimensat(CWD, &path, &times(&node.mtime), AtFlags::empty()).map_err(err)
    }

    /// Owner and times of a symlink restore created (its mode means nothing).
    pub(crate) fn set_link_metadata(&self, rel: &Path, node: &Node, owners: bool) -> io::Result<()> {
        let (parent, name) = split(rel)?;
        let d = self.dir(parent)?;
        if owners {
            rustix::fs::chownat(&*d, name, uid(node.uid), gid(node.gid), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(err)?;
        }
        rustix::fs::utimensat(&*d, name, &times(&node.mtime), AtFlags::SYMLINK_NOFOLLOW).map_err(err)
    }

    /// Removes the partial files a killed restore left in directory `dir`.
    pub(crate) fn sweep(&self, dir: &Path, prefix: &str) {
        let Ok(d) = self.dir(dir) else { return };
        let Ok(fd) = rustix::fs::openat(&*d, ".", dir_flags(), Mode::empty()) else { return };
        let Ok(mut listing) = rustix::fs::Dir::read_from(&fd) else { return };
        let mut names = Vec::new();
        while let Some(Ok(e)) = listing.read() {
            let n = e.file_name().to_bytes();
            if n.starts_with(prefix.as_bytes()) && e.file_type() == FileType::RegularFile {
                names.push(n.to_vec());
            }
        }
        for n in names {
            let _ = rustix::fs::unlinkat(&*d, std::ffi::OsStr::from_bytes(&n), AtFlags::empty());
        }
    }
}

/// The device and inode of an open file, to recognise it when reopened.
pub(crate) fn identity(f: impl AsFd) -> io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(f).map_err(err)?;
    Ok((st.st_dev, st.st_ino))
}

/// Sets owner, mode and times through an open handle.
/// The metadata restore sets on an entry: what every directory keeps until
/// the end, when directories get theirs (a sixth of a whole [`Node`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, u32),
}

impl From<&Node> for Meta {
    fn from(n: &Node) -> Meta {
        Meta { mode: n.mode, uid: n.uid, gid: n.gid, mtime: n.mtime }
    }
}

pub(crate) fn set_metadata(f: impl AsFd, meta: &Meta, owners: bool) -> io::Result<()> {
    let f = f.as_fd();
    if owners {
        rustix::fs::fchown(f, uid(meta.uid), gid(meta.gid)).map_err(err)?;
    }
    // chmod after chown: chown clears setuid bits.
    rustix::fs::fchmod(f, Mode::from_raw_mode(meta.mode & 0o7777)).map_err(err)?;
    rustix::fs::futimens(f, &times(&meta.mtime)).map_err(err)
}

fn uid(n: u32) -> Option<rustix::fs::Uid> {
    Some(rustix::fs::Uid::from_raw(n))
}

fn gid(n: u32) -> Option<rustix::fs::Gid> {
    Some(rustix::fs::Gid::from_raw(n))
}

fn times(mtime: &(i64, u32)) -> Timestamps {
    let t = Timespec { tv_sec: mtime.0, tv_nsec: mtime.1.min(999_999_999) as _ };
    Timestamps { last_access: t, last_modification: t }
}

fn split(rel: &Path) -> io::Result<(&Path, &std::ffi::OsStr)> {
    match (rel.parent(), rel.file_name()) {
        (Some(p), Some(n)) => Ok((p, n)),
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "not a path below the target")),
    }
}

/// Opens directory `rel` below `root`, refusing every symlink and `..`.
fn open_beneath(root: &OwnedFd, rel: &Path) -> io::Result<OwnedFd> {
    let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    for _ in 0..3 {
        match rustix::fs::openat2(root, rel, dir_flags(), Mode::empty(), how) {
            Ok(fd) => return Ok(fd),
            // A rename elsewhere raced the lookup: the kernel asks us to retry.
            Err(rustix::io::Errno::AGAIN) => continue,
            Err(rustix::io::Errno::NOSYS) | Err(rustix::io::Errno::PERM) => return walk_beneath(root, rel),
            Err(e) => return Err(err(e)),
        }
    }
    walk_beneath(root, rel)
}

/// The same without `openat2`: one component at a time.
fn walk_beneath(root: &OwnedFd, rel: &Path) -> io::Result<OwnedFd> {
    let mut cur: Option<OwnedFd> = None;
    for c in rel.components() {
        let Component::Normal(name) = c else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a plain path below the target"));
        };
        let base = cur.as_ref().unwrap_or(root);
        cur = Some(rustix::fs::openat(base, name, dir_flags(), Mode::empty()).map_err(err)?);
    }
    match cur {
        Some(fd) => Ok(fd),
        None => rustix::fs::openat(root, ".", dir_flags(), Mode::empty()).map_err(err),
    }
}

/// The soft limit on open files.
fn open_file_limit() -> usize {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current.map(|n| n as usize).unwrap_or(1024)
}
