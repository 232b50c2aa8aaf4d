//! Writing one file (`dump`) or a content list to a stream, every blob
//! authenticated and checked against its id before its bytes go out.
use std::io::Write;

use kura_format::{paths, Id};

use crate::browse::find_node;
use crate::index::{Index, Location};
use crate::{RepoError, Repository, Result};
use kura_format::tree::NodeType;

/// Consecutive blobs of one pack, read with one request.
struct Run {
    pack: Id,
    start: u64,
    end: u64,
    blobs: Vec<(Id, Location)>,
}

fn plan_reads(index: &Index, content: &[Id]) -> Result<Vec<Run>> {
    const MAX_RUN: u64 = 32 << 20;
    let mut runs: Vec<Run> = Vec::new();
    for id in content {
        let loc = index.get(id).ok_or_else(|| RepoError::MissingBlob { blob: id.to_hex() })?;
        let (s, e) = (loc.offset as u64, loc.offset as u64 + loc.length as u64);
        match runs.last_mut() {
            Some(r) if r.pack == loc.pack && r.end == s && e - r.start <= MAX_RUN => {
                r.end = e;
                r.blobs.push((*id, loc));
            }
            _ => runs.push(Run { pack: loc.pack, start: s, end: e, blobs: vec![(*id, loc)] }),
        }
    }
    Ok(runs)
}

/// Writes one file of a snapshot to `out`, verifying every blob first.
pub async fn dump(repo: &Repository, tree: Id, path: &str, out: &mut (dyn Write + Send)) -> Result<u64> {
    dump_files(repo, tree, &[path.to_string()], out).await
}

/// Writes several files of a snapshot to `out`, one after the other, as one
/// stream (the parts of a split database dump), loading the index once.
pub async fn dump_files(
    repo: &Repository,
    tree: Id,
    paths: &[String],
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let index = repo.load_index_present(&Default::default()).await?;
    let mut total = 0;
    for path in paths {
        total += dump_one(repo, &index, tree, path, out).await?;
    }
    out.flush().map_err(|e| RepoError::io("<output>", e))?;
    Ok(total)
}

/// [`dump`] with an index already loaded: several files written to
/// several outputs at once share one index.
pub async fn dump_indexed(
    repo: &Repository,
    index: &Index,
    tree: Id,
    path: &str,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let n = dump_one(repo, index, tree, path, out).await?;
    out.flush().map_err(|e| RepoError::io("<output>", e))?;
    Ok(n)
}

async fn dump_one(
    repo: &Repository,
    index: &Index,
    tree: Id,
    path: &str,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let node = find_node(repo, index, &tree, path)
        .await?
        .ok_or_else(|| RepoError::NotAFile { path: "/".into(), kind: "the snapshot root".into() })?;
    if node.kind != NodeType::File {
        return Err(RepoError::NotAFile { path: path.to_string(), kind: format!("{:?}", node.kind) });
    }
    write_content(repo, index, node.content.as_deref().unwrap_or_default(), out).await
}

/// Writes the blobs of a content list to `out`, each authenticated before
/// its bytes are written, reading adjacent blobs of a pack in one request.
pub async fn write_content(
    repo: &Repository,
    index: &Index,
    content: &[Id],
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let mut total = 0;
    for run in plan_reads(index, content)? {
        let bytes = repo.store().get_range(&paths::pack(&run.pack), run.start..run.end).await?;
        for (id, loc) in &run.blobs {
            let s = (loc.offset as u64 - run.start) as usize;
            let plain =
                repo.key().open_blob(&bytes[s..s + loc.length as usize], loc.ty, id, loc.raw_length)?;
            out.write_all(&plain).map_err(|e| RepoError::io("<output>", e))?;
            total += plain.len() as u64;
        }
    }
    out.flush().map_err(|e| RepoError::io("<output>", e))?;
    Ok(total)
}
