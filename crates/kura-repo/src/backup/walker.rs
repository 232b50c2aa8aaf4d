//! The walk of a file tree: directories in name order, files read on
//! worker threads, unchanged files' content reused from the parent.
use super::*;

/// Entries of one directory in flight at once. Every subdirectory among
/// them has as many of its own, so the walk's breadth multiplies with its
/// depth: at 64, a first backup of 60,000 small files in 5,000 directories
/// held most of the tree's pending entries at once (peak 113 MB, 8.4 s);
/// at 8, 44 MB and 6.8 s, because the read gates (`SMALL_FILES_AT_ONCE`)
/// stay full either way. A tree of large files was no slower (6.1 s).
const ENTRIES_AT_ONCE: usize = 8;

fn node_from_metadata(name: &[u8], m: &Metadata) -> Node {
    let ft = m.file_type();
    use std::os::unix::fs::FileTypeExt;
    let kind = if ft.is_dir() {
        NodeType::Dir
    } else if ft.is_symlink() {
        NodeType::Symlink
    } else if ft.is_fifo() {
        NodeType::Fifo
    } else if ft.is_socket() {
        NodeType::Socket
    } else if ft.is_char_device() {
        NodeType::Chardev
    } else if ft.is_block_device() {
        NodeType::Blockdev
    } else {
        NodeType::File
    };
    let mut n = Node::new("", kind);
    n.set_name_bytes(name);
    n.mode = m.mode() & 0o7777;
    n.uid = m.uid();
    n.gid = m.gid();
    n.mtime = (m.mtime(), m.mtime_nsec() as u32);
    n.ctime = (m.ctime(), m.ctime_nsec() as u32);
    n.inode = m.ino();
    n.device = m.dev();
    n.links = m.nlink();
    if matches!(kind, NodeType::Chardev | NodeType::Blockdev) {
        n.rdev = Some(m.rdev());
    }
    if kind == NodeType::File {
        n.size = Some(m.len());
    }
    n
}

impl Walker {
    fn too_old(&self, meta: &Metadata) -> bool {
        let Some(window) = self.opts.changed_within else { return false };
        // On the repository's clock, like every other time of the run.
        let age = self.saver.repo.now().timestamp() - meta.mtime();
        age > window.as_secs() as i64
    }

    fn warn(&self, path: &Path, message: String) {
        tracing::warn!(path = %path.display(), "{message}");
        self.warnings
            .lock()
            .expect("warnings lock")
            .push(Warning { path: path.display().to_string(), message });
    }

    async fn save_tree(&self, mut tree: Tree) -> Result<Id> {
        let saver = self.saver.clone();
        let bytes = tree.encode();
        tokio::task::spawn_blocking(move || saver.save_blob(BlobType::Tree, &bytes))
            .await
            .map_err(RepoError::worker)?
    }

    async fn parent_subtree(&self, parent: Option<&Node>) -> Option<Tree> {
        let id = parent.filter(|n| n.kind == NodeType::Dir)?.subtree?;
        if !self.saver.index.contains(&id) {
            return None;
        }
        self.saver.repo.load_tree(&self.saver.index, &id).await.ok()
    }

    /// The synthetic directories above the backed-up paths.
    pub(super) fn save_root(
        self: Arc<Self>,
        dir: RootDir,
        path: PathBuf,
        parent: Option<Tree>,
    ) -> BoxFuture<'static, Result<Id>> {
        Box::pin(async move {
            let mut tree = Tree::default();
            for (name, child) in dir.children {
                let child_path = path.join(std::ffi::OsStr::from_bytes(&name));
                let parent_node = parent.as_ref().and_then(|t| find(t, &name)).cloned();
                let node = if let Some(real) = child.real {
                    let depth = real.components().count();
                    match self.clone().save_path(real, parent_node, depth).await? {
                        Some(n) => n,
                        None => continue,
                    }
                } else {
                    let meta = std::fs::metadata(&child_path).map_err(|e| RepoError::io(&child_path, e))?;
                    let mut node = node_from_metadata(&name, &meta);
                    let sub = self.parent_subtree(parent_node.as_ref()).await;
                    node.subtree = Some(self.clone().save_root(child, child_path, sub).await?);
                    node
                };
                tree.nodes.push(node);
            }
            self.save_tree(tree).await
        })
    }

    /// One path: returns its node, or `None` when it is excluded or
    /// vanished.
    fn save_path(
        self: Arc<Self>,
        path: PathBuf,
        parent: Option<Node>,
        depth: usize,
    ) -> BoxFuture<'static, Result<Option<Node>>> {
        Box::pin(async move {
            let name = path.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_default();
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => {
                    self.warn(&path, format!("cannot stat: {e}"));
                    return Ok(None);
                }
            };
            let mut node = node_from_metadata(&name, &meta);
            if node.kind == NodeType::File && self.too_old(&meta) {
                return Ok(None);
            }
            match node.kind {
                NodeType::File => self.save_file(&path, &mut node, parent.as_ref()).await?,
                NodeType::Symlink => match std::fs::read_link(&path) {
                    Ok(t) => node.set_target_bytes(t.as_os_str().as_bytes()),
                    Err(e) => {
                        self.warn(&path, format!("cannot read link: {e}"));
                        return Ok(None);
                    }
                },
                NodeType::Dir => {
                    self.summary.lock().expect("summary lock").dirs += 1;
                    if depth >= kura_format::tree::MAX_DEPTH {
                        self.warn(
                            &path,
                            format!(
                                "nested deeper than {} directories: stored empty, its contents are not backed up",
                                kura_format::tree::MAX_DEPTH
                            ),
                        );
                        node.subtree = Some(self.save_tree(Tree::default()).await?);
                        return Ok(Some(node));
                    }
                    let sub = self.parent_subtree(parent.as_ref()).await;
                    node.subtree = Some(self.clone().save_dir(&path, &meta, sub, depth).await?);
                }
                _ => {}
            }
            Ok(Some(node))
        })
    }

    pub(super) async fn save_dir(
        self: Arc<Self>,
        path: &Path,
        meta: &Metadata,
        parent: Option<Tree>,
        depth: usize,
    ) -> Result<Id> {
        let dev = meta.dev();
        let entries = match list_dir(path, meta) {
            Ok(v) => v,
            Err(e) => {
                self.warn(path, format!("cannot list: {e}"));
                Vec::new()
            }
        };
        let mut children = Vec::new();
        for p in entries {
            if self.excludes.excluded(&p) {
                continue;
            }
            if self.opts.one_file_system {
                if let Ok(m) = std::fs::symlink_metadata(&p) {
                    if m.is_dir() && m.dev() != dev {
                        continue;
                    }
                }
            }
            let name = p.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_default();
            let parent_node = parent.as_ref().and_then(|t| find(t, &name)).cloned();
            children.push((p, parent_node));
        }
        let nodes: Vec<Option<Node>> = futures::stream::iter(children)
            .map(|(p, pn)| self.clone().save_path(p, pn, depth + 1))
            .buffered(ENTRIES_AT_ONCE)
            .try_collect()
            .await?;
        self.save_tree(Tree { nodes: nodes.into_iter().flatten().collect() }).await
    }

    async fn save_file(&self, path: &Path, node: &mut Node, parent: Option<&Node>) -> Result<()> {
        let size = node.size.unwrap_or(0);
        {
            let mut s = self.summary.lock().expect("summary lock");
            s.files += 1;
            s.bytes += size;
        }
        if let Some(content) = self.unchanged_content(node, parent) {
            self.summary.lock().expect("summary lock").files_unchanged += 1;
            self.saver.counters.files.fetch_add(1, Ordering::Relaxed);
            self.saver.counters.bytes_read.fetch_add(size, Ordering::Relaxed);
            node.content = Some(content);
            return Ok(());
        }
        if let Some(PathHook(hook)) = &self.opts.before_open {
            let (hook, p) = (hook.clone(), path.to_path_buf());
            let _ = tokio::task::spawn_blocking(move || hook(&p)).await;
        }
        let early = self.prefetch(path, size);
        let gate = if size >= SMALL_READ { &self.large_files } else { &self.small_files };
        let _permit = gate.acquire().await.expect("semaphore open");
        let saver = self.saver.clone();
        let p = path.to_path_buf();
        let stored = tokio::task::spawn_blocking(move || {
            let (mut f, before) = match early {
                Some((f, m, _ahead)) => (f, m),
                None => open_regular(&p).map_err(StreamError::Source)?,
            };
            let (content, read) = saver.save_stream(&mut f, Some(before.len()))?;
            let after = f.metadata().map_err(StreamError::Source)?;
            Ok((content, read, before, after))
        })
        .await
        .map_err(RepoError::worker)?;
        self.saver.counters.files.fetch_add(1, Ordering::Relaxed);
        match stored {
            Ok((content, read, before, after)) => {
                // What the file is, from the handle its bytes came from: a
                // path swapped for a symlink to another file after our lstat
                // is stored with that file's owner and mode, never ours.
                let name = node.name_bytes().unwrap_or_default();
                *node = node_from_metadata(&name, &before);
                let changed = read != before.len()
                    || after.len() != before.len()
                    || (after.mtime(), after.mtime_nsec()) != (before.mtime(), before.mtime_nsec());
                if changed {
                    self.warn(
                        path,
                        format!(
                            "changed while it was read ({} bytes before, {} after, {read} read); \
                             the snapshot holds what was read, which may mix both",
                            before.len(),
                            after.len()
                        ),
                    );
                }
                node.size = Some(read);
                node.content = Some(content);
                let mut s = self.summary.lock().expect("summary lock");
                if parent.is_some_and(|p| p.kind == NodeType::File) {
                    s.files_changed += 1;
                } else {
                    s.files_new += 1;
                }
                Ok(())
            }
            Err(StreamError::Source(e)) => {
                let msg = format!("cannot read: {e}");
                self.warn(path, msg.clone());
                node.error = Some(msg);
                node.size = Some(0);
                node.content = Some(Vec::new());
                Ok(())
            }
            Err(StreamError::Repo(e)) => Err(e),
        }
    }

    /// Opens a file that waits for its turn and asks the kernel to read its
    /// first bytes in the background (`POSIX_FADV_WILLNEED`), so that on a
    /// cold cache the disk works on the next files while the current ones
    /// are compressed. At most [`PREFETCH_FILES`] are held open this way;
    /// beyond that, files are opened when their turn comes.
    fn prefetch(
        &self,
        path: &Path,
        size: u64,
    ) -> Option<(std::fs::File, Metadata, tokio::sync::OwnedSemaphorePermit)> {
        let permit = self.prefetch.clone().try_acquire_owned().ok()?;
        let (f, m) = open_regular(path).ok()?;
        if let Some(len) = std::num::NonZeroU64::new(size.min(PREFETCH_BYTES)) {
            let _ = rustix::fs::fadvise(&f, 0, Some(len), rustix::fs::Advice::WillNeed);
        }
        Some((f, m, permit))
    }

    fn unchanged_content(&self, node: &Node, parent: Option<&Node>) -> Option<Vec<Id>> {
        if self.opts.force {
            return None;
        }
        let p = parent?;
        let same = p.kind == NodeType::File
            && p.error.is_none()
            && p.size == node.size
            && p.mtime == node.mtime
            && p.ctime == node.ctime
            && p.inode == node.inode
            && p.device == node.device;
        if !same {
            return None;
        }
        let content = p.content.clone()?;
        content.iter().all(|id| self.saver.index.contains(id)).then_some(content)
    }
}

/// The entries of directory `path`, listed from a handle opened without
/// following a symlink and checked to be the directory `meta` describes: a
/// directory swapped for a symlink after it was looked at is not listed.
fn list_dir(path: &Path, meta: &Metadata) -> std::io::Result<Vec<PathBuf>> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)?;
    let st = rustix::fs::fstat(&fd).map_err(std::io::Error::from)?;
    if (st.st_dev, st.st_ino) != (meta.dev(), meta.ino()) {
        return Err(std::io::Error::other("it was replaced while the backup ran"));
    }
    let mut out = Vec::new();
    let mut dir = rustix::fs::Dir::read_from(&fd).map_err(std::io::Error::from)?;
    while let Some(e) = dir.read() {
        let e = e.map_err(std::io::Error::from)?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(path.join(std::ffi::OsStr::from_bytes(name)));
        }
    }
    Ok(out)
}

/// Opens a file to back it up, and says what it is from the open handle.
///
/// `O_NOFOLLOW`: a file swapped for a symlink after it was listed is not
/// followed. `O_NONBLOCK`: a FIFO swapped in does not hang the backup (a
/// regular file ignores the flag). Anything that is not a regular file once
/// open is refused.
fn open_regular(path: &Path) -> std::io::Result<(std::fs::File, Metadata)> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)?;
    let f = std::fs::File::from(fd);
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(std::io::Error::other(
            "is no longer a regular file (it was replaced while the backup ran)",
        ));
    }
    Ok((f, m))
}

fn find<'a>(tree: &'a Tree, name: &[u8]) -> Option<&'a Node> {
    // Nodes are sorted by name bytes (format.md §10).
    let i = tree.nodes.partition_point(|n| n.name_bytes().unwrap_or_default().as_slice() < name);
    tree.nodes.get(i).filter(|n| n.name_bytes().map(|b| b == name).unwrap_or(false))
}
