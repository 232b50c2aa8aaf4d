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

use crate::child::{feed, stderr_tail, Fed};
use crate::SourceError;

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
    let err = stderr_tail(child.stderr.take().expect("piped"));
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
    let Fed { dumped, status, stderr, .. } =
        feed(shell(cmd), &format!("`{cmd}`"), repo, tree, &[name.to_string()]).await?;
    if !status.success() {
        return Err(SourceError::Refused(format!("restore command `{cmd}` exited with {status}: {stderr}")));
    }
    let bytes = dumped.map_err(|e| SourceError::Refused(format!("feeding `{cmd}`: {e}")))?;
    Ok(CommandRestored { bytes, file: None })
}
