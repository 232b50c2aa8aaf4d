//! The runner's events on a terminal: progress bars while a target works,
//! a line per result, hook output as notes. `--quiet`, `--json` and
//! `--log-format` apply through `say` and `note`.
use std::sync::Mutex;

use kura_runner::restore::Restored;
use kura_runner::{Event, Sink};

use crate::cli::Global;
use crate::output::{human_bytes, note, say};
use crate::progress::Progress;

pub struct Cli {
    g: Global,
    progress: Mutex<Option<Progress>>,
    /// A line per saved target; off where one summary line is the output
    /// (`kura run`, for cron mail).
    per_target: bool,
}

impl Cli {
    pub fn new(g: &Global) -> Cli {
        Cli { g: g.clone(), progress: Mutex::new(None), per_target: true }
    }

    pub fn summary_only(g: &Global) -> Cli {
        Cli { per_target: false, ..Cli::new(g) }
    }
}

impl Sink for Cli {
    fn event(&self, event: Event) {
        let g = &self.g;
        match event {
            Event::TargetStarted { what, counters, .. } => {
                *self.progress.lock().expect("progress lock") =
                    Some(Progress::start(g, what, counters, None));
            }
            Event::TargetFinished { .. } => {
                if let Some(p) = self.progress.lock().expect("progress lock").take() {
                    p.finish();
                }
            }
            Event::TargetSaved { target, id, summary: s, warnings } => {
                if self.per_target {
                    say(
                        g,
                        format!(
                            "{target}: snapshot {} ({}, {} new, {:.1}s)",
                            id.short(),
                            human_bytes(s.bytes),
                            human_bytes(s.bytes_new),
                            s.duration_ms as f64 / 1000.0
                        ),
                    );
                }
                for w in &warnings {
                    tracing::warn!("{target}: {}: {}", w.path, w.message);
                }
            }
            Event::Hook { hook, command, line: None } => note(g, &format!("running {hook} hook: {command}")),
            Event::Hook { hook, line: Some(line), .. } => note(g, &format!("{hook}: {line}")),
            Event::Restored { restored, .. } => restored_lines(g, &restored),
            Event::KeptRemoved { name, .. } => say(g, format!("removed the older kept copy {name}")),
            Event::Warning { message, .. } => tracing::warn!("{message}"),
            Event::Copied { to, copied: c, .. } if self.per_target => {
                let what = format!(
                    "snapshot {}{} of {}",
                    c.source.short(),
                    c.target.as_ref().map(|t| format!(" ({t})")).unwrap_or_default(),
                    c.time.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M")
                );
                if c.present {
                    say(g, format!("{what}: already in {to} as {}", c.id.short()));
                } else {
                    say(
                        g,
                        format!(
                            "{what}: copied to {to} as {} (read {}, {} new, {:.1}s)",
                            c.id.short(),
                            human_bytes(c.stats.bytes_read),
                            human_bytes(c.stats.bytes_new),
                            c.stats.duration_ms as f64 / 1000.0
                        ),
                    );
                }
            }
            // Failures and the run's end are rendered from the report.
            _ => {}
        }
    }
}

fn restored_lines(g: &Global, r: &Restored) {
    match r {
        Restored::Sqlite { path, bytes, kept, .. } => {
            say(g, format!("restored {} ({}); integrity_check ok", path.display(), human_bytes(*bytes)));
            if let Some(k) = kept {
                say(g, format!("previous copy kept as {}", k.display()));
            }
        }
        Restored::Copy { path, files, .. } => {
            say(g, format!("restored {files} files into {}", path.display()))
        }
        Restored::Tree { path, files, bytes, kept, changes: c } => {
            say(
                g,
                format!(
                    "restored {} ({} files, {}): {} overwritten, {} added, {} moved aside",
                    path.display(),
                    files,
                    human_bytes(*bytes),
                    c.overwritten,
                    c.added,
                    c.moved_aside
                ),
            );
            if let Some(k) = kept {
                say(g, format!("what was replaced is kept in {}", k.display()));
            }
        }
        Restored::Postgres { database, bytes, kept, sessions_ended, warnings } => {
            if *sessions_ended > 0 {
                say(g, format!("ended {sessions_ended} session(s) on database {database} for the swap"));
            }
            say(g, format!("restored database {database} ({} of dump)", human_bytes(*bytes)));
            if let Some(k) = kept {
                say(g, format!("previous copy kept as {k}"));
            }
            for w in warnings {
                tracing::warn!("database {database}: not carried over: {w}");
            }
        }
        Restored::Mysql { database, tables, bytes, kept, events_disabled } => {
            say(
                g,
                format!(
                    "restored database {database} ({} tables, {} of dump)",
                    tables.len(),
                    human_bytes(*bytes)
                ),
            );
            if let Some(k) = kept {
                say(g, format!("previous tables kept in database {k}"));
            }
            if !events_disabled.is_empty() {
                let place = if kept.is_some() { "the kept copy" } else { "this copy" };
                say(g, format!("events disabled in {place}: {}", events_disabled.join(", ")));
            }
        }
        Restored::Command { bytes, file } => match file {
            Some(f) => say(g, format!("wrote {} ({})", f.display(), human_bytes(*bytes))),
            None => say(g, format!("restore command read {}", human_bytes(*bytes))),
        },
        Restored::Objects { written, replaced, skipped, bytes, kept, warnings } => {
            say(
                g,
                format!(
                    "wrote {} object(s), replaced {}, skipped {} already there ({}); each read back and compared",
                    written.len(),
                    replaced.len(),
                    skipped.len(),
                    human_bytes(*bytes)
                ),
            );
            if let Some(k) = kept {
                say(g, format!("replaced objects kept in {k}"));
            }
            for w in warnings {
                tracing::warn!("{w}");
            }
        }
    }
}
