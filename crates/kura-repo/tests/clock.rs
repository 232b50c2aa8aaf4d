//! The engine as a library on a local store, on an injected clock: a
//! snapshot takes the handle's time, and prune judges a deletion marker's
//! age on the store's clock, so a host whose clock runs ahead cannot delete
//! packs a backup may still be using.
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use kura_format::clock::ManualClock;
use kura_format::crypto::KdfParams;
use kura_repo::backup::{backup, BackupOptions};
use kura_repo::prune::{forget, prune, PruneOptions};
use kura_repo::{InitOptions, Repository};
use kura_store::LocalStore;

#[tokio::test]
async fn a_snapshot_takes_the_handles_time_and_grace_is_judged_on_the_stores_clock() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let noise: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(src.join("a.bin"), &noise).unwrap();
    std::fs::write(src.join("b.txt"), b"small").unwrap();

    let store = Arc::new(LocalStore::new(dir.path().join("repo")));
    let opts = InitOptions { kdf: KdfParams::insecure_for_tests(), ..Default::default() };
    let t0: DateTime<Utc> = DateTime::parse_from_rfc3339("2030-01-01T02:00:00Z").unwrap().with_timezone(&Utc);
    let clock = Arc::new(ManualClock::new(t0));
    let repo = Arc::new(Repository::init(store, b"pw", &opts).await.unwrap().with_clock(clock.clone()));

    let first = backup(&repo, std::slice::from_ref(&src), &BackupOptions::default(), Default::default())
        .await
        .unwrap();
    let (snaps, bad) = repo.snapshots().await.unwrap();
    assert!(bad.is_empty());
    assert_eq!(snaps.iter().find(|(id, _)| *id == first.id).unwrap().1.time, t0, "the handle's clock");

    forget(&repo, &[first.id]).await.unwrap();
    let grace = PruneOptions { grace: Duration::minutes(10), ..Default::default() };
    let marked = prune(&repo, &grace).await.unwrap();
    assert!(marked.packs_marked >= 1, "{marked:?}");
    // This host's clock jumps two hours ahead: the marker is still young on
    // the store's clock, so nothing is deleted.
    clock.advance(Duration::hours(2));
    let early = prune(&repo, &grace).await.unwrap();
    assert_eq!(early.packs_deleted, 0, "{early:?}");
    // With no grace the marked packs go, once the store's clock (whole
    // seconds, on a local disk) has passed the marker's time.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let now = prune(&repo, &PruneOptions { grace: Duration::zero(), ..Default::default() }).await.unwrap();
    assert!(now.packs_deleted >= 1, "{now:?}");
}

#[tokio::test]
async fn changed_within_counts_back_from_the_repositorys_clock() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("logs");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("old.log"), b"three days old").unwrap();
    std::fs::write(src.join("new.log"), b"fresh").unwrap();
    let now = Utc::now();
    let three_days = filetime::FileTime::from_unix_time((now - Duration::days(3)).timestamp(), 0);
    filetime::set_file_mtime(src.join("old.log"), three_days).unwrap();

    let store = Arc::new(LocalStore::new(dir.path().join("repo")));
    let opts = InitOptions { kdf: KdfParams::insecure_for_tests(), ..Default::default() };
    let clock = Arc::new(ManualClock::new(now));
    let repo = Arc::new(Repository::init(store, b"pw", &opts).await.unwrap().with_clock(clock.clone()));
    let within_a_day =
        BackupOptions { changed_within: Some(std::time::Duration::from_secs(86_400)), ..Default::default() };
    let files = |r: &kura_repo::backup::BackupResult| r.snapshot.summary.files;

    let today = backup(&repo, std::slice::from_ref(&src), &within_a_day, Default::default()).await.unwrap();
    assert_eq!(files(&today), 1, "only new.log changed within a day of now");
    // The same files judged by a clock set back to two and a half days ago:
    // old.log is then half a day old, and new.log is in the future.
    clock.advance(-Duration::hours(60));
    let then = backup(&repo, std::slice::from_ref(&src), &within_a_day, Default::default()).await.unwrap();
    assert_eq!(files(&then), 2, "both are within a day of the repository's clock");
}
