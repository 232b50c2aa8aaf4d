//! Sources and restore targets: how application data gets into a kura
//! repository consistently, and back out without ever leaving the user with
//! less than they had.
//!
//! Every restore here follows one rule: the new copy is written *beside*
//! the live one, checked, and only then swapped in, with the old copy kept
//! as `NAME.bak-YYYYMMDD_HHMM` unless the caller says otherwise.
#![forbid(unsafe_code)]

pub mod catalogue;
mod child;
pub mod command;
mod db;
pub mod drill;
mod error;
pub mod files;
pub mod kept;
mod merge;
pub mod mysql;
pub mod mysql_split;
pub mod object_store;
pub mod postgres;
pub mod sqlite;
mod swap;

pub use error::SourceError;

/// Called with a step's name as a restore passes it, so a test can stop
/// the process exactly there (a kill -9 between two statements of a swap);
/// does nothing unless set.
#[derive(Clone, Default)]
pub struct Step(Option<std::sync::Arc<StepFn>>);

type StepFn = dyn Fn(&str) + Send + Sync;

impl Step {
    pub fn new(f: impl Fn(&str) + Send + Sync + 'static) -> Step {
        Step(Some(std::sync::Arc::new(f)))
    }

    pub fn reached(&self, name: &str) {
        if let Some(f) = &self.0 {
            f(name)
        }
    }
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Step(set)" } else { "Step(none)" })
    }
}
pub use swap::{backup_name, Swap};
