//! What every source does with the programs it runs (pg_dump, mariadb-dump,
//! a user's command).
use std::io::Read;
use std::process::ChildStderr;
use std::thread::JoinHandle;

/// Runs `work(i)` for `i` in `0..n`, each on a thread of its own that may
/// block (writing to a child's pipe) and await the runtime's futures
/// through the handle it is given; the results in order. `None` on a
/// single-threaded runtime, whose driver only its own thread can run: the
/// caller then does the work one piece after the other.
pub(crate) fn side_by_side<T: Send>(
    n: usize,
    work: impl Fn(usize, &tokio::runtime::Handle) -> T + Sync,
) -> Option<Vec<T>> {
    let handle = tokio::runtime::Handle::current();
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return None;
    }
    // This task's worker thread waits for the threads meanwhile.
    Some(tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..n)
                .map(|i| {
                    let (work, handle) = (&work, &handle);
                    s.spawn(move || work(i, handle))
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                .collect()
        })
    }))
}

/// How many sessions load a restored database at once: one per core, at
/// least two (the server's backends and the clients share the cores
/// anyway) and at most four (past that the server's disk, not its CPU,
/// bounds a load).
pub(crate) fn load_sessions() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 4)
}

/// The most of a program's standard error an error message quotes.
const STDERR_TAIL: usize = 4096;

/// Keeps the tail of a child's standard error on a thread, so a chatty
/// child cannot block on a full pipe nor fill memory.
pub(crate) fn stderr_tail(stderr: ChildStderr) -> JoinHandle<String> {
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

/// How a program that read files of a snapshot on its standard input ended.
pub(crate) struct Fed {
    /// What feeding it came to: the bytes written, or why it stopped.
    pub dumped: Result<u64, kura_repo::RepoError>,
    pub status: std::process::ExitStatus,
    /// The tail of its standard error.
    pub stderr: String,
    /// Its standard output, when asked for ([`feed_for_output`]).
    pub stdout: Vec<u8>,
}

/// Starts `cmd` and writes `files` of snapshot `tree` to its standard input,
/// one after the other, every blob verified before it is written. `what`
/// names the program in a message when it cannot start.
pub(crate) async fn feed(
    cmd: std::process::Command,
    what: &str,
    repo: &kura_repo::Repository,
    tree: kura_format::Id,
    files: &[String],
) -> Result<Fed, crate::SourceError> {
    run_fed(cmd, what, repo, tree, files, false).await
}

/// [`feed`], keeping what the program writes to its standard output (up to
/// [`OUTPUT_MAX`] bytes: a listing or a few statements, never a dump).
pub(crate) async fn feed_for_output(
    cmd: std::process::Command,
    what: &str,
    repo: &kura_repo::Repository,
    tree: kura_format::Id,
    files: &[String],
) -> Result<Fed, crate::SourceError> {
    run_fed(cmd, what, repo, tree, files, true).await
}

const OUTPUT_MAX: u64 = 64 << 20;

async fn run_fed(
    mut cmd: std::process::Command,
    what: &str,
    repo: &kura_repo::Repository,
    tree: kura_format::Id,
    files: &[String],
    capture: bool,
) -> Result<Fed, crate::SourceError> {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(if capture { Stdio::piped() } else { Stdio::null() })
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| crate::SourceError::Refused(format!("cannot start {what}: {e}")))?;
    let err = stderr_tail(child.stderr.take().expect("piped"));
    let out = child.stdout.take().map(|o| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let _ = o.take(OUTPUT_MAX).read_to_end(&mut kept);
            kept
        })
    });
    let mut stdin = child.stdin.take().expect("piped");
    let dumped = kura_repo::restore::dump_files(repo, tree, files, &mut stdin).await;
    drop(stdin);
    let status = child.wait().map_err(|e| crate::SourceError::Refused(e.to_string()))?;
    let stdout = out.map(|t| t.join().unwrap_or_default()).unwrap_or_default();
    Ok(Fed { dumped, status, stderr: err.join().unwrap_or_default(), stdout })
}
