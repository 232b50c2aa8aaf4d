//! The `kura` command line. Flags are parsed here and mapped onto the
//! libraries' plain option structs in each command's module; only this crate
//! prints, and it alone decides exit codes (see README.md, "Exit codes").
#![deny(unsafe_code)]

mod cli;
mod commands;
mod output;
mod password;
mod progress;
mod render;
mod when;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::output::Failure;

/// Serve every allocation of 4 MiB or more (read batches, packs) straight
/// from mmap, so it goes back to the system when freed. glibc otherwise
/// raises its mmap threshold after the first large free and keeps such
/// buffers in per-thread arenas. Measured on a 1.3 GB, 43,700-file backup
/// (2 cores, cold cache): peak RSS 338 MB without this, about 100 MB with it;
/// wall time 8.3 s without, 9.0–9.3 s with (more mmap calls), against
/// restic's 13–14 s and 155 MB. A 1 MiB threshold gave the same memory and
/// was no faster.
///
/// One arena for all threads: with one per thread (glibc's default, up to
/// 8 per core), blob buffers freed by one blocking thread stayed resident in
/// its arena while another thread's arena grew. Measured on a 1 GB restore:
/// peak RSS 66 MB with per-thread arenas, 52 MB with one, same speed (the
/// large buffers are pooled, so allocation is rare).
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; it is called once,
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Raises the soft limit on open files to the hard one: the common soft
/// limit of 1024 is the kernel's compatibility default for `select(2)`, which
/// kura does not use, and restores of many files need more.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    password::take_env_secrets();
    raise_open_file_limit();
    let mut cli = Cli::parse();
    // Only the commands that write take --compression.
    match &cli.command {
        Command::Backup(a) => cli.global.compression = a.compression.clone(),
        Command::Prune(a) => cli.global.compression = a.compression.clone(),
        _ => {}
    }
    output::init_logging(&cli.global, matches!(cli.command, Command::Serve(_)));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            crate::output::errln!("kura: cannot start the async runtime: {e}");
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
            Command::Run(a) => commands::run::run(&cli.global, a).await,
            Command::Copy(a) => commands::copy::run(&cli.global, a).await,
            Command::Serve(a) => commands::serve::run(&cli.global, a).await,
            Command::Config(c) => commands::config::run(&cli.global, c),
            Command::Schedule(a) => commands::schedule::run(&cli.global, a),
            Command::History(a) => commands::history::run(&cli.global, a).await,
            Command::Health(a) => commands::health::run(&cli.global, a),
            Command::Status => commands::status::run(&cli.global),
            Command::Drill(a) => commands::drill::run(&cli.global, a).await,
            Command::Doctor => commands::doctor::run(&cli.global).await,
            Command::Drp(a) => commands::drp::run(&cli.global, a),
            Command::Report(a) => commands::report::run(&cli.global, a),
            Command::Prune(a) => commands::prune::run(&cli.global, a).await,
            Command::Key(a) => commands::key::run(&cli.global, a).await,
            Command::Repair(a) => commands::repair::run(&cli.global, a).await,
            Command::Kept(a) => commands::kept::run(&cli.global, a).await,
            Command::Demo(a) => commands::demo::run(&cli.global, a).await,
        }
    });
    // The command has its result. A blocking task still running is work
    // it abandoned (a daemon's run past its grace, reading a dump that is
    // no longer wanted): waiting for it would hold the exit hostage, and
    // stopping it is as safe as a kill (format.md §12).
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            output::report_failure(&cli.global, &f);
            ExitCode::from(Failure::code(&f))
        }
    }
}
