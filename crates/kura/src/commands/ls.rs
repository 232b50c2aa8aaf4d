//! `kura ls SNAPSHOT [PATH]`: the entries of a snapshot.
use std::path::PathBuf;

use kura_format::tree::NodeType;
use kura_repo::browse::{find_node, snapshot_path, walk};

use crate::cli::{Global, LsArgs};
use crate::output::{print_json, Failure};

pub async fn run(g: &Global, a: &LsArgs) -> Result<u8, Failure> {
    let repo = super::open_repo(g).await?;
    let (_, snap) = repo.find_snapshot(&a.snapshot).await?;
    let index = repo.load_index(&Default::default()).await?;
    let start = a.path.as_deref().unwrap_or("/");
    let mut entries = Vec::new();
    let base: PathBuf = PathBuf::from("/").join(
        snapshot_path(start).iter().map(|c| String::from_utf8_lossy(c).into_owned()).collect::<PathBuf>(),
    );
    match find_node(&repo, &index, &snap.tree, start).await? {
        None => walk(&repo, &index, snap.tree, PathBuf::from("/"), &mut entries).await?,
        Some(node) => {
            let sub = node.subtree.filter(|_| node.kind == NodeType::Dir);
            entries.push((base.clone(), node));
            if let Some(sub) = sub {
                walk(&repo, &index, sub, base, &mut entries).await?;
            }
        }
    }
    if g.json {
        let v: Vec<_> = entries
            .iter()
            .map(|(p, n)| {
                serde_json::json!({
                    "path": p.display().to_string(), "type": n.kind, "mode": n.mode, "size": n.size,
                    "uid": n.uid, "gid": n.gid, "mtime": n.mtime.0, "target": n.target,
                })
            })
            .collect();
        print_json(&v);
        return Ok(0);
    }
    for (p, n) in entries {
        if a.long {
            let t = chrono::DateTime::from_timestamp(n.mtime.0, n.mtime.1).unwrap_or_default();
            let kind = match n.kind {
                NodeType::Dir => 'd',
                NodeType::Symlink => 'l',
                NodeType::File => '-',
                _ => '?',
            };
            let link = n.target.as_ref().map(|t| format!(" -> {t}")).unwrap_or_default();
            crate::output::outln!(
                "{kind}{:04o} {:>6} {:>6} {:>12} {} {}{link}",
                n.mode,
                n.uid,
                n.gid,
                n.size.unwrap_or(0),
                t.format("%Y-%m-%d %H:%M:%S"),
                p.display()
            );
        } else {
            crate::output::outln!("{}", p.display());
        }
    }
    Ok(0)
}
