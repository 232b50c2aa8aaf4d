//! Progress on a terminal: a bar (or spinner) fed by the engine's counters.
//! Nothing is drawn when stderr is not a terminal, or with --quiet/--json.
use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use kura_repo::Counters;

use crate::cli::Global;

pub struct Progress {
    bar: Option<ProgressBar>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// `total` is the expected byte count when known.
    pub fn start(g: &Global, what: &'static str, counters: Arc<Counters>, total: Option<u64>) -> Progress {
        if g.quiet || g.json || g.no_progress || !std::io::stderr().is_terminal() {
            return Progress { bar: None, task: None };
        }
        let bar = match total {
            Some(t) => ProgressBar::new(t).with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec} {prefix}")
                    .expect("valid template"),
            ),
        };
        bar.set_message(what);
        bar.enable_steady_tick(Duration::from_millis(120));
        let b = bar.clone();
        let task = tokio::spawn(async move {
            loop {
                b.set_position(counters.bytes_read.load(Ordering::Relaxed));
                b.set_prefix(format!("{} files", counters.files.load(Ordering::Relaxed)));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Progress { bar: Some(bar), task: Some(task) }
    }

    pub fn finish(self) {
        if let Some(t) = self.task {
            t.abort();
        }
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
