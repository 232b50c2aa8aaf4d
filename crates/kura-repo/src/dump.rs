//! Writing one file (`dump`) or a content list to a stream, every blob
//! authenticated and checked against its id before its bytes go out.
use std::io::Write;

use kura_format::{paths, Id};

use crate::browse::find_node;
use crate::index::{Index, Location};
use crate::{RepoError, Repository, Result};
use kura_format::tree::NodeType;

/// Content is read a window at a time: the blobs of about this many stored
/// bytes, grouped by pack into spans read side by side. A blob list is
/// rarely laid out in pack order (blobs sealed in parallel land out of
/// order; a day-2 stream alternates between old packs and new), and one
/// request per blob made a database restore from object storage wait a
/// round trip per 12 KiB.
const WINDOW: u64 = 8 << 20;
/// Bytes read past a gap rather than issuing another request.
pub(crate) const SPAN_GAP: u64 = 256 << 10;
/// The most one request reads, which bounds memory per read in flight (a
/// single larger blob is read whole). File restores share both limits.
pub(crate) const SPAN_MAX: u64 = 4 << 20;

/// One window: its spans (pack, start, end), and each blob in content
/// order with the span it is read from.
pub(crate) struct Window {
    pub(crate) spans: Vec<(Id, u64, u64)>,
    pub(crate) blobs: Vec<(Id, Location, usize)>,
}

fn plan_windows(index: &Index, content: &[Id]) -> Result<Vec<Window>> {
    let mut windows = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0u64;
    for id in content {
        let loc = index.get(id).ok_or_else(|| RepoError::MissingBlob { blob: id.to_hex() })?;
        bytes += loc.length as u64;
        current.push((*id, loc));
        if bytes >= WINDOW {
            windows.push(plan_window(std::mem::take(&mut current)));
            bytes = 0;
        }
    }
    if !current.is_empty() {
        windows.push(plan_window(current));
    }
    Ok(windows)
}

pub(crate) fn plan_window(blobs: Vec<(Id, Location)>) -> Window {
    let mut order: Vec<usize> = (0..blobs.len()).collect();
    order.sort_by_key(|&i| (blobs[i].1.pack, blobs[i].1.offset));
    let mut spans: Vec<(Id, u64, u64)> = Vec::new();
    let mut span_of = vec![0; blobs.len()];
    for i in order {
        let loc = &blobs[i].1;
        let (s, e) = (loc.offset as u64, loc.offset as u64 + loc.length as u64);
        match spans.last_mut() {
            // Sorted by offset, so `s` is at or past the span's start; a
            // blob listed twice lies inside it already.
            Some((pack, start, end))
                if *pack == loc.pack && s <= *end + SPAN_GAP && e.max(*end) - *start <= SPAN_MAX =>
            {
                *end = (*end).max(e);
            }
            _ => spans.push((loc.pack, s, e)),
        }
        span_of[i] = spans.len() - 1;
    }
    let blobs = blobs.into_iter().zip(span_of).map(|((id, loc), span)| (id, loc, span)).collect();
    Window { spans, blobs }
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
/// its bytes are written. The next window is read while this one is
/// written, its spans as many at once as the store serves well.
pub async fn write_content(
    repo: &Repository,
    index: &Index,
    content: &[Id],
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    use futures::stream::{self, StreamExt, TryStreamExt};
    let store = repo.store().clone();
    let at_once = store.read_concurrency();
    let mut windows = stream::iter(plan_windows(index, content)?)
        .map(|w| {
            let store = store.clone();
            async move {
                let spans: Vec<bytes::Bytes> = stream::iter(w.spans.clone())
                    .map(|(pack, s, e)| {
                        let store = store.clone();
                        async move { store.get_range(&paths::pack(&pack), s..e).await }
                    })
                    .buffered(at_once)
                    .try_collect()
                    .await?;
                Ok::<_, RepoError>((w, spans))
            }
        })
        .buffered(2);
    let mut total = 0;
    while let Some(window) = windows.next().await {
        let (w, spans) = window?;
        for (id, loc, span) in &w.blobs {
            let s = (loc.offset as u64 - w.spans[*span].1) as usize;
            let sealed = &spans[*span][s..s + loc.length as usize];
            let plain = repo.key().open_blob(sealed, loc.ty, id, loc.raw_length)?;
            out.write_all(&plain).map_err(|e| RepoError::io("<output>", e))?;
            total += plain.len() as u64;
        }
    }
    out.flush().map_err(|e| RepoError::io("<output>", e))?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(pack: u8, offset: u32, length: u32) -> Location {
        Location { pack: Id([pack; 32]), ty: kura_format::BlobType::Data, offset, length, raw_length: length }
    }

    #[test]
    fn a_window_reads_each_pack_in_few_spans_whatever_the_blob_order() {
        // Out of order within pack 1, interleaved with pack 2, one blob
        // twice, and one far away in pack 1.
        let blobs = vec![
            (Id([10; 32]), loc(1, 2000, 1000)),
            (Id([11; 32]), loc(2, 0, 500)),
            (Id([12; 32]), loc(1, 0, 1000)),
            (Id([10; 32]), loc(1, 2000, 1000)),
            (Id([13; 32]), loc(1, 1000, 1000)),
            (Id([14; 32]), loc(1, 10 << 20, 1000)),
        ];
        let w = plan_window(blobs.clone());
        assert_eq!(
            w.spans,
            vec![(Id([1; 32]), 0, 3000), (Id([1; 32]), 10 << 20, (10 << 20) + 1000), (Id([2; 32]), 0, 500)]
        );
        // Every blob, in content order, lies inside the span it names.
        assert_eq!(w.blobs.len(), blobs.len());
        for ((id, loc, span), (want_id, _)) in w.blobs.iter().zip(&blobs) {
            assert_eq!(id, want_id);
            let (pack, s, e) = w.spans[*span];
            assert!(pack == loc.pack && s <= loc.offset as u64 && loc.offset as u64 + loc.length as u64 <= e);
        }
    }
}
