//! `kura backup PATH…`, `--stdin`, `--command`: a snapshot of paths or
//! of a stream into the repository --repo names (`--target` goes to
//! target_backup).
use std::sync::Arc;

use kura_repo::backup::{backup, backup_stream, BackupOptions, BackupResult, StreamFinish};
use kura_repo::Counters;

use crate::cli::{BackupArgs, Global};
use crate::output::{code, human_bytes, print_json, say, Failure};
use crate::progress::Progress;

fn options(a: &BackupArgs) -> Result<BackupOptions, Failure> {
    let mut excludes = a.excludes.clone();
    for f in &a.exclude_file {
        let text = std::fs::read_to_string(f)
            .map_err(|e| Failure::new(format!("cannot read exclude file {}: {e}", f.display())))?;
        excludes.extend(
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from),
        );
    }
    let parent = match &a.parent {
        None => None,
        Some(p) => Some(p.parse().map_err(|_| {
            Failure::new(format!("--parent {p:?} is not a full snapshot id"))
                .hint("copy the id from `kura snapshots --json`")
        })?),
    };
    Ok(BackupOptions {
        excludes,
        one_file_system: a.one_file_system,
        tags: a.tags.clone(),
        hostname: a.host.clone().unwrap_or_else(super::hostname),
        username: super::username(),
        parent,
        force: a.force,
        before_open: test_gate(),
        ..BackupOptions::default()
    })
}

/// `KURA_TEST_BACKUP_GATE=FILE:GATE`: before opening FILE, the backup
/// creates `GATE.waiting` and waits until `GATE` exists, so a test can swap
/// the file in between, as a racing local user would.
fn test_gate() -> Option<kura_repo::backup::PathHook> {
    let spec = std::env::var("KURA_TEST_BACKUP_GATE").ok()?;
    let (file, gate) = spec.split_once(':')?;
    let (file, gate) = (std::path::PathBuf::from(file), std::path::PathBuf::from(gate));
    Some(kura_repo::backup::PathHook(std::sync::Arc::new(move |p: &std::path::Path| {
        if p == file {
            let _ = std::fs::write(gate.with_extension("waiting"), b"");
            while !gate.exists() {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    })))
}

pub async fn run(g: &Global, a: &BackupArgs) -> Result<u8, Failure> {
    if !a.targets.is_empty() {
        return super::target_backup::run(g, a).await;
    }
    let opts = options(a)?;
    let streaming = a.stdin || a.command.is_some();
    if streaming && !a.paths.is_empty() {
        return Err(Failure::new("paths cannot be combined with --stdin or --command"));
    }
    if !streaming && a.paths.is_empty() {
        return Err(Failure::new("nothing to back up").hint("name paths, or use --stdin or --command"));
    }
    let repo = super::open_repo(g).await?;
    let counters = Arc::new(Counters::default());
    let progress = Progress::start(g, "backup", counters.clone(), None);
    let result = if streaming {
        let (reader, finish): (Box<dyn std::io::Read + Send>, StreamFinish) = match &a.command {
            None => (Box::new(std::io::stdin()), Box::new(|| Ok(()))),
            Some(cmd) => kura_sources::command::spawn_output(cmd)?,
        };
        backup_stream(&repo, &a.stdin_name, reader, &opts, counters, finish).await
    } else {
        backup(&repo, &a.paths, &opts, counters).await
    };
    progress.finish();
    let BackupResult { id, snapshot } = result?;
    let s = &snapshot.summary;
    if g.json {
        print_json(&serde_json::json!({
            "id": id, "short_id": id.short(), "time": snapshot.time, "paths": snapshot.paths,
            "summary": s, "warnings": snapshot.warnings,
        }));
    } else {
        say(
            g,
            format!(
                "files: {} new, {} changed, {} unchanged; {} dirs",
                s.files_new, s.files_changed, s.files_unchanged, s.dirs
            ),
        );
        say(
            g,
            format!(
                "processed {} in {:.1}s; added {} ({} stored)",
                human_bytes(s.bytes),
                s.duration_ms as f64 / 1000.0,
                human_bytes(s.bytes_new),
                human_bytes(s.bytes_stored)
            ),
        );
        say(g, format!("snapshot {} saved", id.short()));
    }
    if !snapshot.warnings.is_empty() {
        for w in &snapshot.warnings {
            tracing::warn!("{}: {}", w.path, w.message);
        }
        crate::output::errln!(
            "kura: snapshot {} saved, but {} path(s) could not be read",
            id.short(),
            snapshot.warnings.len()
        );
        return Ok(code::PARTIAL_BACKUP);
    }
    Ok(code::OK)
}
