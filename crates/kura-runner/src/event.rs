//! What happens during a run or a restore, as it happens. The caller's
//! [`Sink`] decides what to do with it: the CLI prints and draws progress,
//! a daemon records and publishes.
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use kura_format::snapshot::{Summary, Warning};
use kura_format::Id;
use kura_repo::Counters;

use crate::restore::Restored;

#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    RunStarted {
        run: Id,
        time: DateTime<Utc>,
        targets: Vec<String>,
    },
    /// A target's work began; `counters` move while it runs (bytes read,
    /// added, stored), for progress displays and metrics.
    TargetStarted {
        target: String,
        what: &'static str,
        counters: Arc<Counters>,
    },
    /// A target's snapshot was saved.
    TargetSaved {
        target: String,
        id: Id,
        summary: Summary,
        warnings: Vec<Warning>,
    },
    TargetFailed {
        target: String,
        error: String,
        hint: Option<String>,
    },
    /// The target's work ended, saved or not: progress stops.
    TargetFinished {
        target: String,
    },
    RunFinished {
        run: Id,
        saved: Vec<String>,
        failed: Vec<String>,
    },
    /// A hook started (`line` is None) or printed a line.
    Hook {
        hook: &'static str,
        command: String,
        line: Option<String>,
    },
    /// One part of a target was restored (a file, a database, a tree).
    Restored {
        target: String,
        restored: Restored,
    },
    /// A kept copy the target's `kept_last` / `kept_within` let go.
    KeptRemoved {
        target: String,
        name: String,
    },
    /// A snapshot was copied to another repository, or found there.
    Copied {
        from: String,
        to: String,
        copied: crate::copy::CopiedSnapshot,
    },
    /// A plan's slot came while its previous run was still going: not
    /// doubled, recorded.
    SlotMissed {
        plan: String,
        slot: DateTime<Utc>,
        reason: String,
    },
    /// Something the user should know that does not fail the work.
    Warning {
        target: String,
        message: String,
    },
}

pub trait Sink: Send + Sync {
    fn event(&self, event: Event);
}

/// Drops every event.
pub struct Discard;

impl Sink for Discard {
    fn event(&self, _: Event) {}
}

/// Keeps every event, in order: for tests, and for callers that look at
/// them afterwards.
#[derive(Default)]
pub struct Recorder(Mutex<Vec<Event>>);

impl Recorder {
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().expect("recorder lock").clone()
    }
}

impl Sink for Recorder {
    fn event(&self, event: Event) {
        self.0.lock().expect("recorder lock").push(event);
    }
}
