//! Objects back into a store: additively, each written object read back and
//! compared; a forced overwrite keeps the old object under a sibling prefix.
use super::*;

/// Where a forced restore keeps the objects it replaces: beside the prefix
/// (`s3://b/uploads` → `s3://b/uploads.kura-bak-YYYYMMDD_HHMM`), or under
/// a top-level `kura-bak-YYYYMMDD_HHMM/` prefix when the target is a whole
/// bucket (there is nothing beside a bucket to write to).
pub fn kept_location(url: &str, now: chrono::DateTime<chrono::Local>) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let base = base.trim_end_matches('/');
    let stamp = now.format("kura-bak-%Y%m%d_%H%M");
    match base.split_once("://") {
        Some((scheme, rest)) if scheme != "file" && !rest.contains('/') => format!("{base}/{stamp}{query}"),
        _ => format!("{base}.{stamp}{query}"),
    }
}

/// The media type of an object that has none recorded.
const OCTETS: &str = "application/octet-stream";

/// Writes an object and reads it back: a store that acknowledged a write it
/// did not keep is caught here, not at the next restore.
async fn put_checked(
    store: &dyn Store,
    key: &str,
    data: Bytes,
    content_type: &str,
    headers: &kura_store::Headers,
) -> Result<(), String> {
    store.put_with(key, data.clone(), content_type, headers).await.map_err(|e| e.to_string())?;
    let back = store.get(key).await.map_err(|e| format!("reading it back: {e}"))?;
    if back != data {
        return Err(format!(
            "it does not read back as written from {} ({} of {} bytes)",
            store.location(),
            back.len(),
            data.len()
        ));
    }
    Ok(())
}

/// Which objects of a snapshot to restore, and how.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Key prefixes; empty means every object.
    pub include: Vec<String>,
    /// Only objects last modified in this range (seconds since the epoch,
    /// both ends inclusive).
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// Replace objects that already exist.
    pub force: bool,
    /// Print nothing, change nothing: only say what would happen.
    pub dry_run: bool,
    /// A chrono format finding each object's date in its key; `start` and
    /// `end` compare that date (its first second) instead of the
    /// last-modified time.
    pub key_date: Option<String>,
    /// Only a share of the selected objects, chosen by key (a drill's
    /// sample).
    pub sample: Option<kura_repo::restore::Sample>,
}

#[derive(Debug, Default, Clone)]
pub struct ObjectsRestored {
    pub written: Vec<String>,
    /// Already present and left alone.
    pub skipped: Vec<String>,
    /// Present and replaced (`force`); the old objects went to `kept`.
    pub replaced: Vec<String>,
    pub kept: Option<String>,
    pub bytes: u64,
    /// Headers the destination could not take back (a service whose
    /// storage layer cannot set them), with how many objects had them.
    pub warnings: Vec<String>,
}

/// The manifest entries `opts` selects.
pub fn select(manifest: &Manifest, opts: &RestoreOptions) -> Vec<Entry> {
    manifest
        .objects
        .iter()
        .filter(|e| opts.include.is_empty() || opts.include.iter().any(|p| e.key.starts_with(p.as_str())))
        .filter(|e| match (opts.start, opts.end, when(e, opts)) {
            (None, None, _) => true,
            (_, _, None) => false,
            (s, t, Some(m)) => s.is_none_or(|s| m >= s) && t.is_none_or(|t| m <= t),
        })
        .filter(|e| opts.sample.is_none_or(|s| s.picks(std::path::Path::new(&e.key))))
        .cloned()
        .collect()
}

/// The instant `--start`/`--end` compare for an entry: the date in its key
/// with `key_date`, else its last-modified time.
fn when(e: &Entry, opts: &RestoreOptions) -> Option<i64> {
    match &opts.key_date {
        Some(f) => date_in_key(&e.key, f),
        None => e.modified,
    }
}

/// The date `format` finds in `key` (the last place it matches), as the
/// local first second of that day, or of that time if the format has one.
pub fn date_in_key(key: &str, format: &str) -> Option<i64> {
    use chrono::{Local, NaiveDate, NaiveDateTime, TimeZone};
    let items = chrono::format::StrftimeItems::new(format);
    if items.clone().any(|i| matches!(i, chrono::format::Item::Error)) {
        return None;
    }
    let sample = NaiveDate::from_ymd_opt(2025, 11, 3)?.and_hms_opt(4, 5, 6)?;
    let len = sample.format_with_items(items).to_string().len();
    let starts: Vec<usize> = (0..key.len().saturating_sub(len) + 1).rev().collect();
    for i in starts {
        let Some(part) = key.get(i..i + len) else { continue };
        let t = NaiveDateTime::parse_from_str(part, format)
            .ok()
            .or_else(|| NaiveDate::parse_from_str(part, format).ok().and_then(|d| d.and_hms_opt(0, 0, 0)));
        if let Some(t) = t {
            return Local.from_local_datetime(&t).earliest().map(|t| t.timestamp());
        }
    }
    None
}

/// Why nothing matched: what the range was compared with, and the dates
/// there are nearest to it.
fn nothing_matches(manifest: &Manifest, opts: &RestoreOptions) -> String {
    let compared = match &opts.key_date {
        Some(f) => format!("the date in each key (key_date = {f:?})"),
        None => {
            "each object's last-modified time (a target's key_date compares a date in the key instead)".into()
        }
    };
    let day = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .map(|d| d.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default()
    };
    let mut times: Vec<i64> = manifest
        .objects
        .iter()
        .filter(|e| opts.include.is_empty() || opts.include.iter().any(|p| e.key.starts_with(p.as_str())))
        .filter_map(|e| when(e, opts))
        .collect();
    times.sort_unstable();
    let before = opts
        .start
        .and_then(|s| times.iter().rev().find(|t| **t < s))
        .map(|t| format!("before it {}", day(*t)));
    let after =
        opts.end.and_then(|e| times.iter().find(|t| **t > e)).map(|t| format!("after it {}", day(*t)));
    let nearest: Vec<String> = before.into_iter().chain(after).collect();
    let range = format!(
        "{} to {}",
        opts.start.map(day).unwrap_or_else(|| "any time".into()),
        opts.end.map(day).unwrap_or_else(|| "any time".into())
    );
    format!(
        "no object of the snapshot matches{}: the range {range} was compared with {compared}; {}",
        if opts.include.is_empty() { String::new() } else { format!(" under {}", opts.include.join(", ")) },
        if nearest.is_empty() {
            "no object has a date there".to_string()
        } else {
            format!("the nearest dates there are: {}", nearest.join(", "))
        }
    )
}

/// Restores the selected objects of snapshot `tree` into `dest`. Every blob
/// is authenticated before the first object is written; each written
/// object is read back and compared. With `force`, an object that is
/// replaced is first copied to `keep` (when given).
pub async fn restore(
    repo: &Repository,
    tree: Id,
    dest: Arc<dyn Store>,
    keep: Option<Arc<dyn Store>>,
    opts: &RestoreOptions,
) -> Result<ObjectsRestored, SourceError> {
    let index = repo.load_index_present(&Default::default()).await?;
    let (manifest, content) = load(repo, &index, tree).await?;
    let chosen = select(&manifest, opts);
    // Every key was checked when the manifest was read (it is refused whole
    // otherwise: format.md §11.2); the stores refuse such keys too.
    if chosen.is_empty() {
        return Err(SourceError::Refused(nothing_matches(&manifest, opts)));
    }
    let existing: HashMap<String, u64> = dest
        .list("")
        .await
        .map_err(|e| SourceError::Refused(format!("cannot list {}: {e}", dest.location())))?
        .into_iter()
        .map(|m| (m.key, m.size))
        .collect();
    let mut out = ObjectsRestored::default();
    let mut work = Vec::new();
    for e in chosen {
        let ids = content.get(&e.path).ok_or_else(|| {
            SourceError::Refused(format!("object {} is in the manifest but not in the snapshot", e.key))
        })?;
        match existing.get(&e.key) {
            Some(_) if !opts.force => out.skipped.push(e.key.clone()),
            Some(_) => {
                out.replaced.push(e.key.clone());
                work.push((e, ids));
            }
            None => work.push((e, ids)),
        }
    }
    if opts.dry_run {
        out.written = work.iter().map(|(e, _)| e.key.clone()).collect();
        out.bytes = work.iter().map(|(e, _)| e.size).sum();
        return Ok(out);
    }
    // Verify first, so that a damaged snapshot writes nothing at all.
    for (e, ids) in &work {
        let n = kura_repo::restore::write_content(repo, &index, ids, &mut std::io::sink()).await?;
        if n != e.size {
            return Err(SourceError::Refused(format!(
                "object {} holds {n} bytes in the snapshot, the manifest says {}",
                e.key, e.size
            )));
        }
    }
    if !out.replaced.is_empty() {
        out.kept = keep.as_ref().map(|k| k.location());
    }
    let mut unkept: std::collections::BTreeMap<&'static str, usize> = Default::default();
    for (e, ids) in &work {
        let mut data = Vec::with_capacity(e.size as usize);
        kura_repo::restore::write_content(repo, &index, ids, &mut data).await?;
        let data = Bytes::from(data);
        let ty = e.content_type.as_deref().unwrap_or(OCTETS);
        if existing.contains_key(&e.key) {
            if let Some(k) = &keep {
                let old = dest
                    .get(&e.key)
                    .await
                    .map_err(|err| SourceError::Refused(format!("reading {} to keep it: {err}", e.key)))?;
                let old_meta = dest.stat(&e.key).await.ok();
                let old_type = old_meta.as_ref().and_then(|m| m.content_type.clone());
                let old_headers = old_meta.map(|m| m.headers).unwrap_or_default();
                put_checked(k.as_ref(), &e.key, old, old_type.as_deref().unwrap_or(OCTETS), &old_headers)
                    .await
                    .map_err(|err| {
                        SourceError::Refused(format!(
                            "keeping the old {}: {err}; {} was not replaced",
                            e.key, e.key
                        ))
                    })?;
            }
        }
        let headers = headers_of(e);
        for h in dest.unkept_headers(&headers) {
            *unkept.entry(h).or_insert(0usize) += 1;
        }
        put_checked(dest.as_ref(), &e.key, data, ty, &headers)
            .await
            .map_err(|err| SourceError::Refused(format!("writing {}: {err}", e.key)))?;
        out.bytes += e.size;
        if !existing.contains_key(&e.key) {
            out.written.push(e.key.clone());
        }
    }
    out.warnings = unkept
        .into_iter()
        .map(|(h, n)| format!("{h} of {n} object(s) not restored: {} cannot take it back", dest.location()))
        .collect();
    Ok(out)
}
