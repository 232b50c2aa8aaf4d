//! Sources and restore targets: how application data gets into a kura
//! repository consistently, and back out without ever leaving the user with
//! less than they had.
//!
//! Every restore here follows one rule: the new copy is written *beside*
//! the live one, checked, and only then swapped in, with the old copy kept
//! as `NAME.bak-YYYYMMDD_HHMM` unless the caller says otherwise.
#![forbid(unsafe_code)]

mod child;
pub mod command;
mod db;
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
pub use swap::{backup_name, Swap};
