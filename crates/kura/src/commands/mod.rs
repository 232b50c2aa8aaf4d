//! One module per command. Shared here: finding and opening the repository.
pub mod backup;
pub mod config;
pub mod copy;
pub mod demo;
pub mod doctor;
pub mod drill;
pub mod drp;
pub mod dump;
pub mod forget;
pub mod health;
pub mod history;
pub mod init;
pub mod kept;
pub mod key;
pub mod ls;
pub mod prune;
pub mod repair;
pub mod report;
pub mod restore;
pub mod run;
pub mod schedule;
pub mod serve;
pub mod snapshots;
pub mod status;
pub mod target_backup;
pub mod target_restore;
pub mod verify;

use std::sync::Arc;

use kura_format::crypto::KdfParams;
use kura_policy::Config;
use kura_repo::Repository;
use kura_runner::{RepoSpec, Repos};
use kura_store::Store;

use crate::cli::Global;
use crate::output::Failure;

/// The config file: --config / KURA_CONFIG (must exist), else ./kura.toml,
/// else /etc/kura/kura.toml, else none.
pub fn load_config(g: &Global) -> Result<Option<Config>, Failure> {
    let env = |k: &str| std::env::var(k).ok();
    let Some(path) = config_path(g) else { return Ok(None) };
    let (cfg, text) = Config::load(&path, &env)
        .map_err(|e| Failure::new(e).hint("see the configuration section of README.md"))?;
    warn_if_secrets_readable_by_others(&path, &text);
    Ok(Some(cfg))
}

/// Where the config is: --config / KURA_CONFIG, else the first of
/// ./kura.toml and /etc/kura/kura.toml that exists.
pub fn config_path(g: &Global) -> Option<std::path::PathBuf> {
    match &g.config {
        Some(p) => Some(p.clone()),
        None => {
            ["kura.toml", "/etc/kura/kura.toml"].iter().map(std::path::PathBuf::from).find(|p| p.is_file())
        }
    }
}

/// A config that others may read is fine until it holds a secret; then it
/// is as exposed as a password file would be.
fn warn_if_secrets_readable_by_others(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(m) = std::fs::metadata(path) else { return };
    let mode = m.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return;
    }
    let places = kura_policy::literal_secrets(text);
    if !places.is_empty() {
        tracing::warn!(
            "config {} is readable by others (mode {mode:o}) and holds a secret at {}; chmod 600 it, \
             or write the secret as ${{VAR}} and set VAR in the environment",
            path.display(),
            places.join(", ")
        );
    }
}

fn config_error(e: kura_policy::ConfigError) -> Failure {
    Failure::new(e).hint("`kura.toml` names the repositories and targets")
}

/// Whether `--repo` names a configured repository rather than a location:
/// a bare word, with no `/` and no scheme (`primary`, not `./primary`).
fn is_bare_name(repo: &str) -> bool {
    !repo.is_empty() && !repo.contains('/') && !repo.contains(':') && repo != "." && repo != ".."
}

/// The config to read a repository from: needed unless --repo gives a
/// location.
fn config_for_repo(g: &Global) -> Result<Option<Config>, Failure> {
    match &g.repo {
        Some(r) if !is_bare_name(r) => Ok(None),
        _ => load_config(g),
    }
}

/// The repository --repo / KURA_REPOSITORY names (a location, or the name
/// of a configured repository), else the config's repository `name` (or
/// `main`, or its only one).
fn repository_spec(g: &Global, cfg: Option<&Config>, name: Option<&str>) -> Result<RepoSpec, Failure> {
    let retry = retry_policy()?;
    let name = match (name, &g.repo) {
        (None, Some(r)) if is_bare_name(r) => {
            let configured = cfg.is_some_and(|c| c.repositories.contains_key(r));
            if !configured {
                let known = cfg.map(|c| c.repositories.keys().cloned().collect::<Vec<_>>().join(", "));
                return Err(Failure::new(format!(
                    "--repo {r:?} is neither a repository configured in kura.toml{} nor a path",
                    known
                        .filter(|k| !k.is_empty())
                        .map(|k| format!(" (configured: {k})"))
                        .unwrap_or_default()
                ))
                .hint(format!("for a directory here, write ./{r}")));
            }
            Some(r.as_str())
        }
        (None, Some(url)) => return Ok(RepoSpec::at(url.clone(), retry)),
        (name, _) => name,
    };
    let cfg = cfg.ok_or_else(|| {
        Failure::new("no repository given").hint("pass --repo, set KURA_REPOSITORY, or write kura.toml")
    })?;
    let name = match name {
        Some(n) => n,
        None if cfg.repositories.contains_key("main") => "main",
        None if cfg.repositories.len() == 1 => cfg.repositories.keys().next().expect("one"),
        None => {
            let known = cfg.repositories.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(Failure::new(format!(
                "kura.toml configures several repositories ({known}) and none is called main"
            ))
            .hint("name one with --repo NAME, or use --target: a target uses its own repository"));
        }
    };
    tracing::debug!(repository = %name, "using the configured repository");
    RepoSpec::configured(cfg, name, retry).map_err(Failure::from)
}

/// Every configured repository (or the one named), for `kura init`; `None`
/// when --repo gives a location or there is no config.
pub fn configured_repositories(g: &Global, only: Option<&str>) -> Result<Option<Vec<RepoSpec>>, Failure> {
    if only.is_none() && g.repo.as_deref().is_some_and(|r| !is_bare_name(r)) {
        return Ok(None);
    }
    let Some(cfg) = load_config(g)? else {
        return match only.or(g.repo.as_deref()) {
            Some(n) => Err(Failure::new(format!("no kura.toml configures a repository named {n:?}"))
                .hint(format!("for a directory here, write ./{n}"))),
            None => Ok(None),
        };
    };
    if cfg.repositories.is_empty() {
        return Ok(None);
    }
    let wanted = only.or(g.repo.as_deref());
    for u in cfg.unresolved.iter().filter(|u| u.section == "repository") {
        match wanted {
            Some(w) if w == u.name => {
                return Err(config_error(kura_policy::ConfigError::Unresolved(u.error.clone())))
            }
            Some(_) => {}
            None => tracing::warn!("repository {} skipped: {}", u.name, u.error),
        }
    }
    let mut out = Vec::new();
    for name in cfg.repositories.keys() {
        if wanted.is_none_or(|w| w == name) {
            out.push(RepoSpec::configured(&cfg, name, retry_policy()?)?);
        }
    }
    if let (Some(w), true) = (wanted, out.is_empty()) {
        let known = cfg.repositories.keys().cloned().collect::<Vec<_>>().join(", ");
        return Err(Failure::new(format!("no repository named {w:?} in kura.toml (configured: {known})"))
            .hint(format!("for a directory here, write ./{w}")));
    }
    Ok(Some(out))
}

pub fn store_at(spec: &RepoSpec) -> Result<Arc<dyn Store>, Failure> {
    Ok(kura_store::open_url_with(&spec.url, &|k| std::env::var(k).ok(), spec.retry.clone())?)
}

/// How storage calls are retried: the default, or KURA_STORAGE_RETRIES
/// attempts.
fn retry_policy() -> Result<kura_store::RetryPolicy, Failure> {
    let mut policy = kura_store::RetryPolicy::default();
    if let Ok(n) = std::env::var("KURA_STORAGE_RETRIES") {
        policy.attempts =
            n.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                Failure::new(format!("KURA_STORAGE_RETRIES={n:?} is not a positive number"))
            })?;
    }
    Ok(policy)
}

/// The store of the repository the command line names, and its settings.
pub fn open_store_settings(g: &Global) -> Result<(Arc<dyn Store>, RepoSpec), Failure> {
    let cfg = config_for_repo(g)?;
    let spec = repository_spec(g, cfg.as_ref(), None)?;
    Ok((store_at(&spec)?, spec))
}

/// The clock every command runs on: the system's, or for the clock-skew
/// tests one moved by `KURA_TEST_CLOCK_OFFSET_SECS` (a host whose clock is
/// wrong by that much).
pub fn clock() -> Arc<dyn kura_format::clock::Clock> {
    static CLOCK: std::sync::OnceLock<Arc<dyn kura_format::clock::Clock>> = std::sync::OnceLock::new();
    CLOCK
        .get_or_init(|| {
            match std::env::var("KURA_TEST_CLOCK_OFFSET_SECS").ok().and_then(|v| v.parse().ok()) {
                Some(secs) => Arc::new(kura_format::clock::SkewedClock(chrono::Duration::seconds(secs))),
                None => Arc::new(kura_format::clock::SystemClock),
            }
        })
        .clone()
}

/// What the runner works with: this command's clock, its output, who runs.
pub fn context(g: &Global) -> Result<kura_runner::Context, Failure> {
    Ok(kura_runner::Context {
        clock: clock(),
        sink: Arc::new(crate::render::Cli::new(g)),
        retry: retry_policy()?,
        root: euid() == 0,
        hostname: hostname(),
        username: username(),
        state_dir: state_dir(),
    })
}

/// Opens repositories for this command: its password sources, its
/// --compression, and for targets of a config without `[repository]`
/// sections the repository --repo / KURA_REPOSITORY names.
pub fn repos(g: &Global, cfg: Option<&Config>) -> Result<Repos, Failure> {
    let mut unlock = crate::password::unlock(g);
    unlock.compression = match &g.compression {
        Some(c) => Some(kura_policy::parse_compression(c).map_err(|e| {
            Failure::new(format!("--compression (or KURA_COMPRESSION): {e}")).hint("e.g. --compression fast")
        })?),
        None => None,
    };
    let fallback = repository_spec(g, cfg, None).map_err(|f| (f.message, f.hint));
    Ok(Repos::new(unlock, clock(), retry_policy()?).with_fallback(fallback))
}

pub async fn open_repo(g: &Global) -> Result<Arc<Repository>, Failure> {
    let cfg = config_for_repo(g)?;
    let spec = repository_spec(g, cfg.as_ref(), None)?;
    Ok(repos(g, cfg.as_ref())?.open(&spec).await?)
}

/// Opens the repository kura.toml configures as `name`.
pub async fn open_named(g: &Global, cfg: &Config, name: &str) -> Result<Arc<Repository>, Failure> {
    let spec = RepoSpec::configured(cfg, name, retry_policy()?)?;
    Ok(repos(g, Some(cfg))?.open(&spec).await?)
}

/// A repository given on the command line: a name kura.toml configures,
/// or a location.
pub fn spec_of(cfg: Option<&Config>, text: &str) -> Result<RepoSpec, Failure> {
    if !is_bare_name(text) {
        return Ok(RepoSpec::at(text, retry_policy()?));
    }
    match cfg {
        Some(c) if c.repositories.contains_key(text) || c.unresolved_named("repository", text).is_some() => {
            Ok(RepoSpec::configured(c, text, retry_policy()?)?)
        }
        _ => {
            let known = cfg.map(|c| c.repositories.keys().cloned().collect::<Vec<_>>().join(", "));
            Err(Failure::new(format!(
                "{text:?} is neither a repository configured in kura.toml{} nor a path",
                known.filter(|k| !k.is_empty()).map(|k| format!(" (configured: {k})")).unwrap_or_default()
            ))
            .hint(format!("for a directory here, write ./{text}")))
        }
    }
}

/// Opens the repository a configured target backs up into.
pub async fn open_repo_for(
    g: &Global,
    cfg: &Config,
    target: &kura_policy::Target,
) -> Result<Arc<Repository>, Failure> {
    Ok(repos(g, Some(cfg))?.for_target(cfg, target).await?)
}

/// The config, which target commands require.
pub fn require_config(g: &Global) -> Result<Config, Failure> {
    load_config(g)?.ok_or_else(|| {
        Failure::new("targets need a config file and none was found")
            .hint("pass --config, set KURA_CONFIG, or create ./kura.toml")
    })
}

pub fn find_target<'a>(cfg: &'a Config, name: &str) -> Result<&'a kura_policy::Target, Failure> {
    cfg.target(name).map_err(config_error)
}

/// Where kura keeps what is this machine's own (plan locks; later run
/// history): KURA_STATE_DIR, else /var/lib/kura for root, else
/// $XDG_STATE_HOME/kura or ~/.local/state/kura.
pub fn state_dir() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("KURA_STATE_DIR").filter(|d| !d.is_empty()) {
        return d.into();
    }
    if euid() == 0 {
        return "/var/lib/kura".into();
    }
    match std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        Some(d) => std::path::PathBuf::from(d).join("kura"),
        None => std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
            .join(".local/state/kura"),
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

pub fn username() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| format!("uid-{}", euid()))
}

/// The effective uid, from /proc (no unsafe libc call needed).
pub fn euid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(u32::MAX)
}

/// Key derivation cost: the default, unless a test suite asks for cheap
/// settings with KURA_TEST_INSECURE_KDF=1.
pub fn kdf_params() -> KdfParams {
    if std::env::var("KURA_TEST_INSECURE_KDF").as_deref() == Ok("1") {
        tracing::warn!("KURA_TEST_INSECURE_KDF=1: using test-only key derivation cost");
        KdfParams::insecure_for_tests()
    } else {
        KdfParams::default()
    }
}

pub fn parse_duration(s: &str) -> Result<chrono::Duration, Failure> {
    let d = kura_policy::parse_duration(s).map_err(|e| Failure::new(e).hint("use e.g. 30s, 10m, 2h, 7d"))?;
    chrono::Duration::from_std(d).map_err(|_| Failure::new(format!("{s:?} is too long a duration")))
}

/// Records a `verify`, `prune` or `forget` in this machine's run history;
/// a history that cannot be written is a warning, never a failed command.
pub fn record_operation(op: kura_runner::history::Operation) {
    kura_runner::history::note(&state_dir().join("history.db"), |h| h.record_operation(&op));
}
