//! A repository in a local directory.
//!
//! Atomicity (format.md §12.2): every object is written to a temporary file
//! in its final directory, fsynced, renamed into place, and the directory is
//! fsynced, so a crash or power loss leaves either the old state or the
//! complete new object. `put_new` publishes with `link(2)`, which fails if the
//! name exists, making creation exclusive even between processes.
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{ErrorKind, Headers, ObjectMeta, Result, Store, StoreError};

/// Temporary files start with this; listings skip them.
const TMP_PREFIX: &str = ".tmp-";

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> LocalStore {
        LocalStore { root: root.into() }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(PathBuf) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || f(root))
            .await
            .map_err(|e| StoreError::new(ErrorKind::Other, "task", "", e.to_string()))?
    }
}

/// The file of `key` under `root`, for a key that stays under it.
fn joined(root: &Path, key: &str) -> Result<PathBuf> {
    crate::check_key(key)?;
    Ok(root.join(key))
}

/// The modes of what the store creates: private (0700 and 0600), so that
/// no local user can copy key files to guess passwords offline, unless the
/// repository's own directory grants its group access, which new files and
/// directories then share (to share a repository with a group: `chgrp` it
/// and `chmod 2770` it).
fn modes(root: &Path) -> (u32, u32) {
    use std::os::unix::fs::PermissionsExt;
    let group = fs::metadata(root).map(|m| m.permissions().mode() & 0o070).unwrap_or(0);
    (0o700 | group, 0o600 | (group & 0o060))
}

/// Creates `dir` and any missing parents with the store's directory mode.
fn make_dirs(root: &Path, dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let mode = modes(root).0;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new().recursive(true).mode(mode).create(dir)?;
    // The umask may have taken the group's bits; a shared repository needs them.
    if mode & 0o070 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

fn write_temp(root: &Path, final_path: &Path, data: &[u8], key: &str) -> Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = final_path.parent().expect("object paths have a parent");
    make_dirs(root, dir).map_err(|e| StoreError::from_io("put", key, e))?;
    let tmp = dir.join(format!("{TMP_PREFIX}{:016x}", rand::random::<u64>()));
    let result = (|| {
        let mode = modes(root).1;
        let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        if mode & 0o070 != 0 {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        f.write_all(data)?;
        f.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(StoreError::from_io("put", key, e));
    }
    Ok(tmp)
}

/// Gives the complete, fsynced file `from` the name `path`, failing if the
/// name exists (link(2) is exclusive, even between processes).
fn link_new(from: &Path, path: &Path, key: &str) -> Result<()> {
    fs::hard_link(from, path).map_err(|e| StoreError::from_io("put_new", key, e))?;
    sync_dir(path);
    Ok(())
}

fn sync_dir(path: &Path) {
    // Best effort: some filesystems refuse fsync on directories; the rename
    // itself is still atomic there.
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

#[async_trait]
impl Store for LocalStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let key = key.to_string();
        self.blocking(move |root| {
            let path = joined(&root, &key)?;
            let tmp = write_temp(&root, &path, &data, &key)?;
            fs::rename(&tmp, &path).map_err(|e| {
                let _ = fs::remove_file(&tmp);
                StoreError::from_io("put", &key, e)
            })?;
            sync_dir(&path);
            Ok(())
        })
        .await
    }

    async fn put_new(&self, key: &str, data: Bytes) -> Result<()> {
        let key = key.to_string();
        self.blocking(move |root| {
            let path = joined(&root, &key)?;
            if path.exists() {
                return Err(StoreError::new(ErrorKind::AlreadyExists, "put_new", &key, "object exists"));
            }
            let tmp = write_temp(&root, &path, &data, &key)?;
            let linked = link_new(&tmp, &path, &key);
            let _ = fs::remove_file(&tmp);
            linked
        })
        .await
    }

    /// Three reads at once keep a disk busy; more only seek.
    fn read_concurrency(&self) -> usize {
        3
    }
    fn remote(&self) -> bool {
        false
    }
    /// Objects are assembled in `data/` (pack files are the large ones), on
    /// the same filesystem as their final place, under a temporary name that
    /// listings skip.
    fn spool_dir(&self) -> Option<PathBuf> {
        let dir = self.root.join("data");
        // Made here with the store's modes, before a writer makes it with
        // its own.
        let _ = make_dirs(&self.root, &dir);
        Some(dir)
    }

    /// Publishes a file assembled in [`Store::spool_dir`] by linking it
    /// under its key: no copy, and exclusive like `put_new`.
    async fn put_new_file(&self, key: &str, src: &Path) -> Result<()> {
        let key = key.to_string();
        let src = src.to_path_buf();
        self.blocking(move |root| {
            let path = joined(&root, &key)?;
            if path.exists() {
                return Err(StoreError::new(ErrorKind::AlreadyExists, "put_new", &key, "object exists"));
            }
            let io = |e| StoreError::from_io("put_new", &key, e);
            let dir = path.parent().expect("object paths have a parent");
            make_dirs(&root, dir).map_err(io)?;
            use std::os::unix::fs::MetadataExt;
            let same_fs = src.metadata().map_err(io)?.dev() == dir.metadata().map_err(io)?.dev();
            if !same_fs {
                // Spooled on another filesystem: a link cannot cross, copy.
                let tmp = write_temp(&root, &path, &fs::read(&src).map_err(io)?, &key)?;
                let linked = link_new(&tmp, &path, &key);
                let _ = fs::remove_file(&tmp);
                return linked;
            }
            // Durable, and with the store's mode, before it has a name
            // (format.md §12.2).
            {
                use std::os::unix::fs::PermissionsExt;
                let f = File::open(&src).map_err(io)?;
                f.set_permissions(fs::Permissions::from_mode(modes(&root).1)).map_err(io)?;
                f.sync_all().map_err(io)?;
            }
            link_new(&src, &path, &key)?;
            let _ = fs::remove_file(&src);
            Ok(())
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let key = key.to_string();
        self.blocking(move |root| {
            fs::read(joined(&root, &key)?).map(Bytes::from).map_err(|e| StoreError::from_io("get", &key, e))
        })
        .await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let key = key.to_string();
        self.blocking(move |root| {
            let io = |e| StoreError::from_io("get_range", &key, e);
            let mut f = File::open(joined(&root, &key)?).map_err(io)?;
            let len = f.metadata().map_err(io)?.len();
            if range.end > len || range.start > range.end {
                return Err(StoreError::new(
                    ErrorKind::Other,
                    "get_range",
                    &key,
                    format!("range {range:?} outside object of {len} bytes"),
                ));
            }
            f.seek(SeekFrom::Start(range.start)).map_err(io)?;
            let mut buf = vec![0u8; (range.end - range.start) as usize];
            f.read_exact(&mut buf).map_err(io)?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn stat(&self, key: &str) -> Result<ObjectMeta> {
        let key = key.to_string();
        self.blocking(move |root| {
            let m = fs::metadata(joined(&root, &key)?).map_err(|e| StoreError::from_io("stat", &key, e))?;
            Ok(ObjectMeta {
                key,
                size: m.len(),
                modified: mtime(&m),
                content_type: None,
                headers: Headers::default(),
            })
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let prefix = prefix.to_string();
        self.blocking(move |root| {
            crate::check_prefix(&prefix)?;
            let mut out = Vec::new();
            let start = root.join(&prefix);
            walk(&root, &start, &mut out).map_err(|e| StoreError::from_io("list", &prefix, e))?;
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let key = key.to_string();
        self.blocking(move |root| match fs::remove_file(joined(&root, &key)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::from_io("delete", &key, e)),
        })
        .await
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<ObjectMeta>) -> std::io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(TMP_PREFIX) {
            continue;
        }
        let ft = entry.file_type()?;
        let path = entry.path();
        if ft.is_dir() {
            walk(root, &path, out)?;
        } else if ft.is_file() {
            let rel = path.strip_prefix(root).expect("walk stays under root");
            let m = entry.metadata()?;
            out.push(ObjectMeta {
                key: rel.to_string_lossy().replace('\\', "/"),
                size: m.len(),
                modified: mtime(&m),
                content_type: None,
                headers: Headers::default(),
            });
        }
    }
    Ok(())
}

impl LocalStore {
    /// The directory this store writes into.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The absolute path of a key, for tests that damage a repository on
    /// purpose.
    pub fn path_of(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

fn mtime(m: &fs::Metadata) -> Option<i64> {
    use std::os::unix::fs::MetadataExt;
    Some(m.mtime())
}
