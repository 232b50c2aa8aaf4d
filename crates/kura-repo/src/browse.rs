//! Reading a snapshot's trees: finding a path, listing entries.
use std::path::{Component, Path, PathBuf};

use kura_format::tree::{Node, NodeType, Tree};
use kura_format::Id;

use crate::index::Index;
use crate::{RepoError, Repository, Result};

/// A path inside a snapshot as its components' bytes; `/srv/app` and
/// `srv/app/` are the same path.
pub fn snapshot_path(p: &str) -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    Path::new(p)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.as_bytes().to_vec()),
            _ => None,
        })
        .collect()
}

/// The node at `path` under the tree `root`; `Ok(None)` for the root itself.
pub async fn find_node(repo: &Repository, index: &Index, root: &Id, path: &str) -> Result<Option<Node>> {
    let comps = snapshot_path(path);
    let mut tree = repo.load_tree(index, root).await?;
    let mut found = None;
    for (i, comp) in comps.iter().enumerate() {
        let node = tree
            .nodes
            .iter()
            .find(|n| n.name_bytes().map(|b| &b == comp).unwrap_or(false))
            .cloned()
            .ok_or_else(|| RepoError::PathNotInSnapshot {
            snapshot: root.short(),
            path: path.to_string(),
        })?;
        if i + 1 < comps.len() {
            match (node.kind, node.subtree) {
                (NodeType::Dir, Some(sub)) => tree = repo.load_tree(index, &sub).await?,
                _ => {
                    return Err(RepoError::PathNotInSnapshot {
                        snapshot: root.short(),
                        path: path.to_string(),
                    })
                }
            }
        }
        found = Some(node);
    }
    Ok(found)
}

/// How deep a snapshot's trees nest and how many entries they expand to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// Directory levels below the root tree.
    pub depth: usize,
    /// Entries, counting a subtree as often as it is referenced.
    pub entries: u64,
}

/// The most entries a listing or restore expands (format.md §10): a crafted
/// snapshot that reuses one subtree at every level would otherwise expand
/// without bound while each tree is small.
pub const MAX_ENTRIES: u64 = 50_000_000;

/// The shape of the trees under `root`, each distinct tree loaded once, with
/// no recursion; refuses one nested deeper than [`kura_format::tree::MAX_DEPTH`]
/// or expanding to more than [`MAX_ENTRIES`] entries.
pub async fn shape(repo: &Repository, index: &Index, root: Id) -> Result<Shape> {
    shape_with(repo, index, root, &mut Default::default()).await
}

/// [`shape`], remembering the shape of every tree seen in `memo` (verify
/// shares one across snapshots).
pub async fn shape_with(
    repo: &Repository,
    index: &Index,
    root: Id,
    memo: &mut std::collections::HashMap<Id, Shape>,
) -> Result<Shape> {
    if let Some(s) = memo.get(&root) {
        return Ok(*s);
    }
    struct Frame {
        id: Id,
        subs: Vec<Id>,
        next: usize,
        shape: Shape,
    }
    let open = |id: Id, t: Tree| Frame {
        id,
        subs: t.nodes.iter().filter(|n| n.kind == NodeType::Dir).filter_map(|n| n.subtree).collect(),
        next: 0,
        shape: Shape { depth: 0, entries: t.nodes.len() as u64 },
    };
    let mut stack = vec![open(root, repo.load_tree(index, &root).await?)];
    loop {
        let top = stack.last_mut().expect("the root frame is popped last");
        if top.next < top.subs.len() {
            let sub = top.subs[top.next];
            top.next += 1;
            if let Some(s) = memo.get(&sub) {
                top.shape.depth = top.shape.depth.max(s.depth + 1);
                top.shape.entries = top.shape.entries.saturating_add(s.entries);
            } else {
                if stack.len() > kura_format::tree::MAX_DEPTH {
                    return Err(RepoError::TreeTooDeep { max: kura_format::tree::MAX_DEPTH });
                }
                let t = repo.load_tree(index, &sub).await?;
                stack.push(open(sub, t));
            }
        } else {
            let done = stack.pop().expect("not empty");
            memo.insert(done.id, done.shape);
            match stack.last_mut() {
                None => return Ok(done.shape),
                Some(parent) => {
                    parent.shape.depth = parent.shape.depth.max(done.shape.depth + 1);
                    parent.shape.entries = parent.shape.entries.saturating_add(done.shape.entries);
                }
            }
        }
        let top = stack.last().expect("not empty");
        if top.shape.entries > MAX_ENTRIES {
            return Err(RepoError::TooManyEntries { max: MAX_ENTRIES });
        }
    }
}

/// Every entry under `tree`, depth first in name order, with its path
/// relative to the snapshot root. Refuses (before expanding anything) trees
/// whose [`shape`] is out of bounds; walks without recursion.
pub async fn walk(
    repo: &Repository,
    index: &Index,
    tree: Id,
    prefix: PathBuf,
    out: &mut Vec<(PathBuf, Node)>,
) -> Result<()> {
    let mut walker = Walker::new(repo, index, tree, prefix).await?;
    while let Some(entry) = walker.next().await? {
        out.push(entry);
    }
    Ok(())
}

/// The entries of [`walk`] one at a time, so that a caller that acts on
/// each (restore) holds only the directories on the current path, not the
/// whole snapshot.
pub struct Walker<'a> {
    repo: &'a Repository,
    index: &'a Index,
    stack: Vec<(PathBuf, std::vec::IntoIter<Node>)>,
}

impl<'a> Walker<'a> {
    /// Checks the tree's [`shape`] first, so a tree out of bounds is
    /// refused before its first entry is handed out.
    pub async fn new(
        repo: &'a Repository,
        index: &'a Index,
        tree: Id,
        prefix: PathBuf,
    ) -> Result<Walker<'a>> {
        shape(repo, index, tree).await?;
        let root = repo.load_tree(index, &tree).await?.nodes.into_iter();
        Ok(Walker { repo, index, stack: vec![(prefix, root)] })
    }

    /// The next entry, a directory before everything in it.
    #[allow(clippy::should_implement_trait)]
    pub async fn next(&mut self) -> Result<Option<(PathBuf, Node)>> {
        use std::os::unix::ffi::OsStrExt;
        while let Some((dir, nodes)) = self.stack.last_mut() {
            let Some(node) = nodes.next() else {
                self.stack.pop();
                continue;
            };
            let path = dir.join(std::ffi::OsStr::from_bytes(&node.name_bytes()?));
            if let Some(sub) = node.subtree.filter(|_| node.kind == NodeType::Dir) {
                let t = self.repo.load_tree_last(self.index, &sub).await?;
                self.stack.push((path.clone(), t.nodes.into_iter()));
            }
            return Ok(Some((path, node)));
        }
        Ok(None)
    }
}
