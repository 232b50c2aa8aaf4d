//! The `kura` command line. Flags are parsed here and mapped onto the
//! libraries' plain option structs in each command's module; only this crate
//! prints, and it alone decides exit codes (see README.md, "Exit codes").
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod output;
mod password;
mod progress;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::output::Failure;

fn main() -> ExitCode {
    let cli = Cli::parse();
    output::init_logging(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kura: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Init(a) => commands::init::run(&cli.global, a).await,
            Command::Backup(a) => commands::backup::run(&cli.global, a).await,
            Command::Snapshots(a) => commands::snapshots::run(&cli.global, a).await,
            Command::Ls(a) => commands::ls::run(&cli.global, a).await,
            Command::Restore(a) => commands::restore::run(&cli.global, a).await,
            Command::Dump(a) => commands::dump::run(&cli.global, a).await,
            Command::Verify(a) => commands::verify::run(&cli.global, a).await,
            Command::Forget(a) => commands::forget::run(&cli.global, a).await,
            Command::Prune(a) => commands::prune::run(&cli.global, a).await,
            Command::Key(a) => commands::key::run(&cli.global, a).await,
            Command::Demo(a) => commands::demo::run(&cli.global, a).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            output::report_failure(&cli.global, &f);
            ExitCode::from(Failure::code(&f))
        }
    }
}
