//! Test support shared by kura's crates: fixtures that start real servers on
//! loopback, and the conformance suite every [`Store`] must pass.
//!
//! A fixture whose server is not installed panics with the command that
//! installs it: a test never passes silently without its server.
#![forbid(unsafe_code)]

mod conformance;
pub mod netem;
mod proxy;
mod servers;

pub use conformance::{check_headers, run_conformance, run_conformance_with, Capabilities};
pub use proxy::CutProxy;
pub use servers::{
    closed_port, http, reserve_port, AzuriteServer, GcsEmulator, Hold, MariaDb, MotoServer, MyHold, PgServer,
    PortLease, Prometheus, Pushgateway, Received, Receiver, SmtpServer, AZURITE_ACCOUNT, AZURITE_KEY,
    SMTP_PASSWORD, SMTP_USER,
};
