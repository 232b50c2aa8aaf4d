//! One module per command. Shared here: finding and opening the repository.
pub mod backup;
pub mod demo;
pub mod dump;
pub mod forget;
pub mod init;
pub mod key;
pub mod ls;
pub mod prune;
pub mod restore;
pub mod snapshots;
pub mod verify;

use std::sync::Arc;

use kura_format::crypto::KdfParams;
use kura_repo::Repository;
use kura_store::Store;

use crate::cli::Global;
use crate::output::Failure;

pub fn open_store(g: &Global) -> Result<Arc<dyn Store>, Failure> {
    let url = g
        .repo
        .as_deref()
        .ok_or_else(|| Failure::new("no repository given").hint("pass --repo or set KURA_REPOSITORY"))?;
    let mut policy = kura_store::RetryPolicy::default();
    if let Ok(n) = std::env::var("KURA_STORAGE_RETRIES") {
        policy.attempts =
            n.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                Failure::new(format!("KURA_STORAGE_RETRIES={n:?} is not a positive number"))
            })?;
    }
    Ok(kura_store::open_url_with(url, &|k| std::env::var(k).ok(), policy)?)
}

pub async fn open_repo(g: &Global) -> Result<Arc<Repository>, Failure> {
    let store = open_store(g)?;
    // Check the config before asking for a password: a missing or newer
    // repository should say so, not prompt first.
    Repository::read_config(store.as_ref()).await?;
    let password = crate::password::read_password(g)?;
    Ok(Arc::new(Repository::open(store, &password).await?))
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
    let bad = || Failure::new(format!("{s:?} is not a duration")).hint("use e.g. 30s, 10m, 2h, 7d");
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num.parse().map_err(|_| bad())?;
    Ok(match unit {
        "s" | "" => chrono::Duration::seconds(n),
        "m" => chrono::Duration::minutes(n),
        "h" => chrono::Duration::hours(n),
        "d" => chrono::Duration::days(n),
        _ => return Err(bad()),
    })
}
