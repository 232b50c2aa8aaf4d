//! Flags and subcommands. Parsing only: validation into library options
//! happens in each command.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "kura",
    version,
    about = "kura (蔵): backups of databases and files that you can restore at 3 a.m."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Repository: a path, s3://bucket/prefix, gcs://bucket/prefix or azblob://container/prefix.
    #[arg(short = 'r', long, env = "KURA_REPOSITORY", global = true, help_heading = "Global options")]
    pub repo: Option<String>,
    /// Read the password from this file (first line). Wins over KURA_PASSWORD, KURA_PASSWORD_FILE and KURA_PASSWORD_COMMAND, which win over kura.toml.
    #[arg(long, global = true, help_heading = "Global options")]
    pub password_file: Option<PathBuf>,
    /// Run this command (through sh) and use the first line it prints as the password.
    #[arg(long, global = true, help_heading = "Global options")]
    pub password_command: Option<String>,
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,
    /// Print only errors.
    #[arg(short, long, global = true, help_heading = "Global options")]
    pub quiet: bool,
    /// More log detail (-v info, -vv debug, -vvv trace). KURA_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, help_heading = "Global options")]
    pub verbose: u8,
    /// Log format on stderr: text or json.
    #[arg(long, default_value = "text", global = true, value_parser = ["text", "json"], help_heading = "Global options")]
    pub log_format: String,
    /// Never show progress bars.
    #[arg(long, global = true, help_heading = "Global options")]
    pub no_progress: bool,
    /// Config file naming repositories and targets (default ./kura.toml, then /etc/kura/kura.toml).
    #[arg(long, env = "KURA_CONFIG", global = true, help_heading = "Global options")]
    pub config: Option<PathBuf>,
    /// Compression of what this run writes (`backup` and `prune` take
    /// --compression; the configured repository's setting otherwise).
    #[arg(skip)]
    pub compression: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new repository.
    Init(InitArgs),
    /// Back up files and directories, or a stream (--stdin, --command).
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots(SnapshotsArgs),
    /// List the entries of a snapshot.
    Ls(LsArgs),
    /// Restore a snapshot into a directory, or configured targets in place (--target NAME, --component C).
    Restore(RestoreArgs),
    /// Write one file of a snapshot to stdout (`kura dump latest db.sql | psql`).
    Dump(DumpArgs),
    /// Check the repository's integrity.
    Verify(VerifyArgs),
    /// Remove snapshots (their data goes with the next prunes).
    Forget(ForgetArgs),
    /// Copy snapshots to another repository (re-encrypted for it, only what it lacks, each checked there).
    Copy(CopyArgs),
    /// Run a plan of kura.toml once (for cron or a systemd timer): its targets, then its retention and prune.
    Run(RunArgs),
    /// Check kura.toml and list every problem with its line (`kura config check`).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run every plan of kura.toml on its schedule, as a daemon (SIGHUP reloads kura.toml, SIGTERM stops).
    Serve(ServeArgs),
    /// Print crontab lines or systemd units that run the plans of kura.toml on their schedules.
    Schedule(ScheduleArgs),
    /// The runs of plans this machine recorded, newest first.
    History(HistoryArgs),
    /// Whether every plan's newest good backup (and its copies) is fresh: exit 0 when healthy, 1 when not.
    Health(HealthArgs),
    /// Each plan's health, next run, last runs' sizes and copies; open problems; notifications not delivered.
    Status,
    /// Restore drills: each target's newest snapshot restored into a scratch place, checked, timed, removed.
    Drill(DrillArgs),
    /// Pre-flight check of kura.toml and all it names: tools, credentials, repositories (a probe written and removed), free space, permissions, hooks, schedules, retention.
    Doctor,
    /// The disaster-recovery plan for this config: what, where, when, objectives, where the secrets live, the restore commands per scenario.
    Drp(DrpArgs),
    /// Storage, growth and projected cost per repository; success rate, sizes, dedup and compression, run-time trend per plan.
    Report(ReportArgs),
    /// Reclaim the space of data no snapshot uses.
    Prune(PruneArgs),
    /// Manage the passwords (keys) that open the repository.
    Key(KeyArgs),
    /// Rebuild damaged repository metadata from what is stored.
    Repair(RepairArgs),
    /// See and remove the copies in-place restores moved aside (NAME.bak-…, NAME_bak_… databases).
    Kept(KeptArgs),
    /// Try kura end to end on sample data in a scratch folder; needs no server.
    Demo(DemoArgs),
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// With kura.toml: create only this configured repository (default:
    /// every configured one that does not exist yet).
    #[arg(long, value_name = "NAME")]
    pub repository: Option<String>,
    /// Average chunk size in KiB (a power of two; min is a quarter, max four times).
    #[arg(long, default_value_t = 1024, hide = true)]
    pub chunk_avg_kib: u32,
    /// Target pack size in MiB.
    #[arg(long, default_value_t = 16, hide = true)]
    pub pack_mib: u32,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Compression of what this run writes: auto (the repository's default, zstd 3), off, fast (zstd 1), max (zstd 19), or a zstd level 1-22.
    #[arg(long, env = "KURA_COMPRESSION")]
    pub compression: Option<String>,
    /// Files and directories to back up.
    pub paths: Vec<PathBuf>,
    /// Exclude paths matching this glob (a pattern with `/` matches the full path, otherwise the name).
    #[arg(short = 'e', long = "exclude")]
    pub excludes: Vec<String>,
    /// Read exclude patterns from a file, one per line (# comments).
    #[arg(long)]
    pub exclude_file: Vec<PathBuf>,
    /// Do not cross into other filesystems.
    #[arg(short = 'x', long)]
    pub one_file_system: bool,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Host name recorded in the snapshot.
    #[arg(long)]
    pub host: Option<String>,
    /// Compare against this snapshot instead of the latest of this host and paths.
    #[arg(long)]
    pub parent: Option<String>,
    /// Read every file, even those unchanged since the parent snapshot.
    #[arg(long)]
    pub force: bool,
    /// Back up standard input as one file.
    #[arg(long, conflicts_with = "command")]
    pub stdin: bool,
    /// Back up what this command (run through sh) prints; a non-zero exit fails the backup.
    #[arg(long)]
    pub command: Option<String>,
    /// File name of the stream in the snapshot.
    #[arg(long, default_value = "stdin")]
    pub stdin_name: String,
    /// Back up these configured targets as one run (repeatable; see kura.toml).
    #[arg(long = "target", conflicts_with_all = ["stdin", "command"])]
    pub targets: Vec<String>,
}

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Only snapshots of this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots with this tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// Only snapshots of this configured target.
    #[arg(long)]
    pub target: Option<String>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot id (a unique prefix) or `latest`.
    pub snapshot: String,
    /// A path inside the snapshot.
    pub path: Option<String>,
    /// Show mode, size and mtime.
    #[arg(short, long)]
    pub long: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id (a unique prefix) or `latest`: restore it into the directory --target.
    /// Without it, --target names a configured target, restored in place.
    pub snapshot: Option<String>,
    /// A directory (with a snapshot), or a target name from kura.toml.
    #[arg(short, long)]
    pub target: Option<String>,
    /// Target restores: every target of this component (database, configs,
    /// data, logs, or all) as of one run.
    #[arg(long, conflicts_with = "target")]
    pub component: Option<String>,
    /// Restore only this path of the snapshot (repeatable; directory restores),
    /// or, for an object_store target, only keys with this prefix.
    #[arg(short, long)]
    pub include: Vec<String>,
    /// Restore into a non-empty directory, replacing files of the same name.
    #[arg(long)]
    pub overwrite: bool,
    /// Target restores: the run to restore (an id prefix from `kura snapshots`).
    #[arg(long, conflicts_with_all = ["at", "from"])]
    pub run: Option<String>,
    /// Target restores: the newest snapshot at or before this date or time (2026-11-01, 2026-11-01T02:00).
    #[arg(long, conflicts_with = "from")]
    pub at: Option<String>,
    /// Target restores: this snapshot of the target.
    #[arg(long = "snapshot")]
    pub from: Option<String>,
    /// Target restores: only snapshots this plan's runs made, from the repository it writes to; with --component, only the plan's targets.
    #[arg(long)]
    pub plan: Option<String>,
    /// Target restores: write to this path instead of the live one (the live copy is untouched).
    #[arg(long)]
    pub into: Option<PathBuf>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Do not keep the replaced copy as NAME.bak-YYYYMMDD_HHMM.
    #[arg(long)]
    pub no_keep_old: bool,
    /// Files targets in place: also move aside (into the kept copy) what the
    /// snapshot lacks, except what the target's exclude and changed_within
    /// leave out. Without it, only the snapshot's entries are written.
    #[arg(long)]
    pub mirror: bool,
    /// PostgreSQL: give every restored object to the restoring user and
    /// grant nothing, for a server that lacks the backup's roles.
    #[arg(long)]
    pub no_owner: bool,
    /// MySQL/MariaDB, and PostgreSQL tables restored in place: how long to
    /// wait for other sessions to release the live tables before giving up
    /// with nothing changed (30s, 5m, ...).
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = kura_policy::parse_duration)]
    pub lock_timeout: std::time::Duration,
    /// With --into: run the target's pre_restore and post_restore hooks too
    /// (a copy beside the live data runs none by default).
    #[arg(long)]
    pub hooks: bool,
    /// Database targets: only this table (repeatable); the database's other
    /// tables are not touched.
    #[arg(long = "table")]
    pub tables: Vec<String>,
    /// Postgres targets with several databases: restore only this one.
    #[arg(long)]
    pub database: Option<String>,
    /// Object-store targets: only objects last modified on or after this date (2025-11-01).
    #[arg(long)]
    pub start: Option<String>,
    /// Object-store targets: only objects last modified on or before this date (the whole day counts).
    #[arg(long)]
    pub end: Option<String>,
    /// Object-store targets: replace objects that already exist (the old
    /// ones are kept beside the prefix unless --no-keep-old).
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct DumpArgs {
    /// Snapshot id (a unique prefix) or `latest` (with --target: the
    /// target's latest, the default).
    pub snapshot: Option<String>,
    /// The file's path inside the snapshot; with --target it may be left
    /// out for the target's whole dump.
    pub path: Option<String>,
    /// A configured target: its snapshots, and without a path its whole
    /// dump in order (MySQL's parts concatenated, ready for `mariadb`; a
    /// PostgreSQL database's archive, ready for `pg_restore`).
    #[arg(long)]
    pub target: Option<String>,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Also read and check every pack.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read and check a random subset of packs, e.g. 10%.
    #[arg(long)]
    pub read_data_subset: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum HistoryCommand {
    /// Rebuild a lost history from the snapshots of every repository in kura.toml (adds the runs it lacks).
    Rebuild,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    #[command(subcommand)]
    pub command: Option<HistoryCommand>,
    /// Only this plan's runs.
    #[arg(long)]
    pub plan: Option<String>,
    /// At most this many runs.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

#[derive(Args, Debug)]
pub struct ScheduleArgs {
    /// Crontab lines, one per plan.
    #[arg(long, conflicts_with = "systemd", required_unless_present = "systemd")]
    pub cron: bool,
    /// A service and a timer (Persistent=true: a run missed while the machine was off runs at boot) per plan.
    #[arg(long)]
    pub systemd: bool,
    /// Only this plan.
    #[arg(long)]
    pub plan: Option<String>,
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Snapshot ids (unique prefixes); none: every snapshot the other flags select.
    pub snapshots: Vec<String>,
    /// The repository to copy from: a name in kura.toml or a location (default: --repo, or with --plan where the plan writes).
    #[arg(long, value_name = "REPO")]
    pub from: Option<String>,
    /// The repository to copy to: a name in kura.toml or a location.
    #[arg(long, value_name = "REPO")]
    pub to: String,
    /// Only snapshots this plan's runs made.
    #[arg(long)]
    pub plan: Option<String>,
    /// Only this target's snapshots (repeatable).
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// Only this host's snapshots.
    #[arg(long)]
    pub host: Option<String>,
    /// The destination's password, when it differs from the source's and kura.toml does not give it.
    #[arg(long, env = "KURA_TO_PASSWORD_FILE", value_name = "FILE")]
    pub to_password_file: Option<std::path::PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// Every problem of the config, each with its line, column and a hint; exit 1 if any is an error.
    Check,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The window: runs and sizes recorded this long ago or later.
    #[arg(long, default_value = "30d", value_name = "DURATION")]
    pub since: String,
    /// markdown, json or html (one self-contained file with charts).
    #[arg(long, default_value = "markdown")]
    pub format: String,
    /// Write to this file instead of stdout.
    #[arg(long, short)]
    pub output: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
pub struct DrillArgs {
    /// Drill this plan's targets (from the repository it writes to).
    #[arg(long, conflicts_with_all = ["targets", "all"])]
    pub plan: Option<String>,
    /// Drill this target (repeatable).
    #[arg(long = "target", conflicts_with = "all")]
    pub targets: Vec<String>,
    /// Drill every plan, one after the other.
    #[arg(long)]
    pub all: bool,
}

#[derive(Args, Debug)]
pub struct DrpArgs {
    /// markdown or html (one self-contained file).
    #[arg(long, default_value = "markdown")]
    pub format: String,
    /// Write to this file instead of stdout.
    #[arg(long, short)]
    pub output: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Only this plan.
    #[arg(long)]
    pub plan: Option<String>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// On SIGTERM, how long running plans may take to finish before they are abandoned (nothing half-written becomes visible).
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub grace: String,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The plan's name (`[plan.NAME]` in kura.toml).
    pub plan: String,
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshot ids (unique prefixes); or give --keep-* rules instead.
    pub snapshots: Vec<String>,
    /// Run prune afterwards.
    #[arg(long)]
    pub prune: bool,
    /// Retention: keep the N newest snapshots of each host and target.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Retention: keep the newest snapshot of each of the N most recent hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Retention: the same for days (docs/retention.md).
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Retention: the same for ISO weeks.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Retention: the same for calendar months.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Retention: the same for calendar years.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Retention: keep every snapshot younger than this (30d), counted from each group's newest.
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Retention: only the snapshots of this target (repeatable).
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// Retention: a plan's keep rules on its targets' snapshots of this host; --keep-* flags change a rule (to preview a change with --dry-run).
    #[arg(long, conflicts_with = "targets")]
    pub plan: Option<String>,
    /// Retention: only the snapshots of this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Retention: show every snapshot as kept (with the rule) or removed, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Compression of what this run writes: auto (the repository's default, zstd 3), off, fast (zstd 1), max (zstd 19), or a zstd level 1-22.
    #[arg(long, env = "KURA_COMPRESSION")]
    pub compression: Option<String>,
    /// How long packs stay marked before deletion, e.g. 10m, 1h, 0s.
    #[arg(long, default_value = "10m")]
    pub grace: String,
    /// Repack packs whose unused share exceeds this percentage.
    #[arg(long, default_value_t = 20.0)]
    pub repack_unused: f64,
    /// Report what would be done, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct KeyArgs {
    #[command(subcommand)]
    pub command: KeyCommand,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Add a password. The new one comes from --new-password-file or a prompt.
    Add {
        #[arg(long)]
        new_password_file: Option<PathBuf>,
    },
    /// List keys.
    List,
    /// Remove a key by id prefix (never the last one, nor the one in use).
    Remove { id: String },
}

#[derive(Args, Debug)]
pub struct KeptArgs {
    #[command(subcommand)]
    pub command: KeptCommand,
}

#[derive(Subcommand, Debug)]
pub enum KeptCommand {
    /// List the kept copies of every configured target (or those named).
    List {
        /// Only this target (repeatable).
        #[arg(long = "target")]
        targets: Vec<String>,
    },
    /// Remove kept copies for good: those beyond --keep-last or older than
    /// --older-than; without either, what the target's kept_last and
    /// kept_within let go, or all of them if it sets neither.
    Clean {
        /// Only this target (repeatable).
        #[arg(long = "target")]
        targets: Vec<String>,
        /// Remove those older than this (7d, 12h, ...).
        #[arg(long, value_name = "DURATION", value_parser = kura_policy::parse_duration)]
        older_than: Option<std::time::Duration>,
        /// Keep this many of the newest of each target (0 removes all).
        #[arg(long, value_name = "N")]
        keep_last: Option<usize>,
        /// Show what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args, Debug)]
pub struct RepairArgs {
    #[command(subcommand)]
    pub command: RepairCommand,
}

#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    /// Rebuild the index from the packs' own headers (after index damage).
    Index,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Scratch folder for the demo (created; must be empty or missing).
    #[arg(long, default_value = "kura-demo")]
    pub dir: PathBuf,
}
