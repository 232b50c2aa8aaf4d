//! Reading a snapshot's trees: finding a path, listing entries.
use std::path::{Component, Path, PathBuf};

use futures::future::BoxFuture;
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

/// Every entry under `tree`, depth first in name order, with its path
/// relative to the snapshot root.
pub fn walk<'a>(
    repo: &'a Repository,
    index: &'a Index,
    tree: Id,
    prefix: PathBuf,
    out: &'a mut Vec<(PathBuf, Node)>,
) -> BoxFuture<'a, Result<()>> {
    Box::pin(async move {
        let t: Tree = repo.load_tree(index, &tree).await?;
        for node in t.nodes {
            use std::os::unix::ffi::OsStrExt;
            let name = node.name_bytes()?;
            let path = prefix.join(std::ffi::OsStr::from_bytes(&name));
            let sub = node.subtree.filter(|_| node.kind == NodeType::Dir);
            out.push((path.clone(), node));
            if let Some(sub) = sub {
                walk(repo, index, sub, path, out).await?;
            }
        }
        Ok(())
    })
}
