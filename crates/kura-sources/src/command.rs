//! Any program's output as a source (`docker compose exec db mysqldump …`),
//! and a matching program that reads it back on its standard input.
//!
//! The command runs under `sh -c`; its exit status decides whether the
//! snapshot is kept. Its standard error is kept (the last few KiB) for the
//! error message. A restore reads every blob once to verify it before the
//! restore command sees a byte, since a command cannot be rolled back.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use kura_format::Id;
use kura_repo::backup::{backup_stream, BackupOptions, BackupResult, StreamFinish};
use kura_repo::{Counters, Repository};

use crate::SourceError;

/// The most of a command's standard error an error message quotes.
const STDERR_TAIL: usize = 4096;

/// Keeps the tail of a child's standard error on a thread, so a chatty
/// child cannot block on a full pipe.
fn tail(stderr: std::process::ChildStderr) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut kept: Vec<u8> = Vec::new();
        let mut buf = [0u8; 8192];
        let mut r = stderr;
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > 2 * STDERR_TAIL {
                kept.drain(..kept.len() - STDERR_TAIL);
            }
        }
        let start = kept.len().saturating_sub(STDERR_TAIL);
        String::from_utf8_lossy(&kept[start..]).trim().to_string()
    })
}

fn shell(cmd: &str) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", cmd]);
    c
}

/// Starts `cmd` and returns its standard output with a check that vetoes
/// the snapshot if the command fails.
pub fn spawn_output(cmd: &str) -> Result<(Box<dyn Read + Send>, StreamFinish), SourceError> {
    let mut child: Child = shell(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SourceError::Refused(format!("cannot start `{cmd}`: {e}")))?;
    let out = child.stdout.take().expect("piped");
    let err = tail(child.stderr.take().expect("piped"));
    let cmd = cmd.to_string();
    let finish: StreamFinish = Box::new(move || {
        let status = child.wait().map_err(|e| format!("waiting for `{cmd}`: {e}"))?;
        let stderr = err.join().unwrap_or_default();
        if status.success() {
            if !stderr.is_empty() {
                tracing::warn!(command = %cmd, stderr = %stderr, "the command succeeded but wrote to stderr");
            }
            Ok(())
        } else {
            Err(format!("`{cmd}` exited with {status}: {stderr}; no snapshot was saved"))
        }
    });
    Ok((Box::new(out), finish))
}

/// Backs up the output of `cmd` as one file named `name`.
pub async fn backup(
    repo: &Arc<Repository>,
    cmd: &str,
    name: &str,
    opts: &BackupOptions,
    counters: Arc<Counters>,
) -> Result<BackupResult, SourceError> {
    let (reader, finish) = spawn_output(cmd)?;
    let mut opts = opts.clone();
    opts.source = Some("command".into());
    Ok(backup_stream(repo, name, reader, &opts, counters, finish).await?)
}

#[derive(Debug)]
pub struct CommandRestored {
    pub bytes: u64,
    /// Set when the output went to a file instead of the restore command.
    pub file: Option<PathBuf>,
}

/// Feeds the stored output to `restore_cmd` on its standard input, or
/// writes it to the new file `into`.
pub async fn restore(
    repo: &Repository,
    tree: Id,
    name: &str,
    restore_cmd: Option<&str>,
    into: Option<&Path>,
) -> Result<CommandRestored, SourceError> {
    // Every blob verified first: nothing reaches the command from a snapshot
    // that turns out damaged halfway.
    kura_repo::restore::dump(repo, tree, name, &mut std::io::sink()).await?;
    if let Some(path) = into {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| SourceError::io(path, e))?;
        let bytes = kura_repo::restore::dump(repo, tree, name, &mut f).await?;
        f.sync_all().map_err(|e| SourceError::io(path, e))?;
        return Ok(CommandRestored { bytes, file: Some(path.to_path_buf()) });
    }
    let cmd = restore_cmd.ok_or_else(|| {
        SourceError::Refused("this target has no `restore` command; use --into FILE to get the output".into())
    })?;
    let mut child = shell(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SourceError::Refused(format!("cannot start `{cmd}`: {e}")))?;
    let err = tail(child.stderr.take().expect("piped"));
    let mut stdin = child.stdin.take().expect("piped");
    let fed = kura_repo::restore::dump(repo, tree, name, &mut stdin).await;
    drop(stdin);
    let status = child.wait().map_err(|e| SourceError::Refused(e.to_string()))?;
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        return Err(SourceError::Refused(format!("restore command `{cmd}` exited with {status}: {stderr}")));
    }
    let bytes = fed.map_err(|e| SourceError::Refused(format!("feeding `{cmd}`: {e}")))?;
    Ok(CommandRestored { bytes, file: None })
}
