//! Rebuilding the index from the packs themselves.
//!
//! Every pack carries a sealed header naming its blobs (format.md §8), so
//! the index can always be recomputed from what is stored. The new index
//! files are written first, and only then are the old ones deleted
//! (format.md §12.6), so a crash midway leaves at worst duplicate entries.
//! Packs whose header cannot be read are reported and left alone.
use std::sync::Arc;

use futures::stream::{self, StreamExt};
use kura_format::index::{IndexBlob, IndexFile, IndexPack};
use kura_format::pack::{decode_header, TRAILER_LEN};
use kura_format::{paths, Id};
use serde::Serialize;

use crate::prune::PruneLock;
use crate::{RepoError, Repository, Result};

#[derive(Debug, Default, Serialize)]
pub struct RepairReport {
    pub packs_read: u64,
    pub blobs_indexed: u64,
    pub index_files_written: u64,
    pub index_files_removed: u64,
    /// Packs whose header could not be read, with the reason.
    pub unreadable_packs: Vec<(String, String)>,
}

async fn read_pack_index(repo: &Repository, pack: Id, size: u64) -> Result<IndexPack> {
    let key = paths::pack(&pack);
    if size < TRAILER_LEN as u64 {
        return Err(RepoError::BadPack("shorter than its trailer"));
    }
    let trailer = repo.store().get_range(&key, size - TRAILER_LEN as u64..size).await?;
    let hlen = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes")) as u64;
    let end = size - TRAILER_LEN as u64;
    if hlen > end || hlen > 64 << 20 {
        return Err(RepoError::BadPack("header length beyond the pack"));
    }
    let sealed = repo.store().get_range(&key, end - hlen..end).await?;
    let entries = decode_header(&repo.key().open_object(&sealed, "pack header")?)?;
    let mut offset = 0u32;
    let mut blobs = Vec::with_capacity(entries.len());
    for e in entries {
        blobs.push(IndexBlob { ty: e.ty, id: e.id, offset, length: e.length, raw_length: e.raw_length });
        offset = offset.checked_add(e.length).ok_or(RepoError::BadPack("blob offsets overflow"))?;
    }
    if offset as u64 != end - hlen {
        return Err(RepoError::BadPack("header does not account for the pack's blobs"));
    }
    Ok(IndexPack { id: pack, blobs })
}

pub async fn repair_index(repo: &Arc<Repository>, hostname: &str) -> Result<RepairReport> {
    let lock = PruneLock::take(repo, hostname).await?;
    let result = async {
        let mut report = RepairReport::default();
        let old = repo.list_ids(paths::INDEX).await?;
        let packs = repo.list_packs().await?;
        let results: Vec<(Id, Result<IndexPack>)> = stream::iter(packs)
            .map(|(id, size)| async move { (id, read_pack_index(repo, id, size).await) })
            .buffer_unordered(8)
            .collect()
            .await;
        let mut good = Vec::new();
        for (id, r) in results {
            match r {
                Ok(p) => {
                    report.packs_read += 1;
                    report.blobs_indexed += p.blobs.len() as u64;
                    good.push(p);
                }
                Err(e) => report.unreadable_packs.push((paths::pack(&id), e.to_string())),
            }
        }
        good.sort_by_key(|p| p.id);
        // §12.6: successors first, then the files they replace.
        for chunk in good.chunks(4096) {
            repo.write_index(&IndexFile { packs: chunk.to_vec() }).await?;
            report.index_files_written += 1;
        }
        // Sealing uses a fresh nonce, so a new file never has an old name.
        for id in old {
            repo.store().delete(&paths::index(&id)).await?;
            report.index_files_removed += 1;
        }
        Ok(report)
    }
    .await;
    lock.release().await;
    result
}
