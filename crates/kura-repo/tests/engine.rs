//! The engine as a library, with no binary in between: backup, restore,
//! verify and prune on a local store, and on a store that fails every few
//! operations (`Faulty`), retried and not.
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kura_format::crypto::KdfParams;
use kura_repo::backup::{backup, BackupOptions};
use kura_repo::prune::{forget, prune, PruneOptions};
use kura_repo::restore::{restore, RestoreOptions};
use kura_repo::verify::{verify, ReadData, VerifyOptions};
use kura_repo::{InitOptions, Repository};
use kura_store::{Faulty, LocalStore, Retry, RetryPolicy, Store};

/// Files of several shapes: many small, one larger than a chunk, one empty,
/// one that repeats another (dedup), nested.
fn tree(root: &Path) {
    // xorshift: incompressible, so sizes below are what is stored.
    let noise = |seed: u64, n: usize| -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    };
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    for i in 0..40 {
        std::fs::write(root.join(format!("a/small-{i}.txt")), format!("line {i}\n").repeat(i + 1)).unwrap();
    }
    std::fs::write(root.join("a/b/big.bin"), noise(7, 5_000_000)).unwrap();
    std::fs::write(root.join("a/b/c/copy.bin"), noise(7, 5_000_000)).unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
}

/// Every file under `a` equals the one under `b`, and both hold the same
/// names.
fn same_tree(a: &Path, b: &Path) {
    let mut names = Vec::new();
    let mut stack = vec![a.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(a).unwrap().to_path_buf();
            if p.is_dir() {
                stack.push(p);
            } else {
                assert_eq!(
                    std::fs::read(&p).unwrap(),
                    std::fs::read(b.join(&rel)).unwrap(),
                    "{}",
                    rel.display()
                );
            }
            names.push(rel);
        }
    }
    assert!(names.len() > 40, "{names:?}");
}

async fn init(store: Arc<dyn Store>) -> Arc<Repository> {
    let opts = InitOptions { kdf: KdfParams::insecure_for_tests(), ..Default::default() };
    Arc::new(Repository::init(store, b"engine", &opts).await.unwrap())
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        first_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        ..Default::default()
    }
}

#[tokio::test]
async fn backup_restore_verify_and_prune_on_a_store_that_fails_every_third_call_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree(&src);
    let flaky: Arc<dyn Store> = Arc::new(Retry::with_policy(
        Faulty::new(LocalStore::new(dir.path().join("repo")), 3),
        quick_retries(),
    ));
    let repo = init(flaky).await;

    let first = backup(&repo, std::slice::from_ref(&src), &BackupOptions::default(), Default::default())
        .await
        .unwrap();
    assert!(first.snapshot.warnings.is_empty(), "{:?}", first.snapshot.warnings);
    // The second copy of big.bin is stored once.
    let s = &first.snapshot.summary;
    assert!(s.bytes_new < s.bytes - 4_000_000, "{s:?}");

    let out = dir.path().join("out");
    let report = restore(&repo, first.snapshot.tree, &out, &RestoreOptions::default(), Default::default())
        .await
        .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    same_tree(&src, &out.join(src.strip_prefix("/").unwrap()));

    let checked =
        verify(&repo, &VerifyOptions { read_data: ReadData::All }, Default::default()).await.unwrap();
    assert!(checked.errors.is_empty(), "{:?}", checked.errors);
    assert!(checked.packs_read >= 1);

    // A second snapshot without the big files; the first forgotten and
    // pruned with no grace: the big blob's packs go, the rest restores.
    std::fs::remove_file(src.join("a/b/big.bin")).unwrap();
    std::fs::remove_file(src.join("a/b/c/copy.bin")).unwrap();
    let second = backup(&repo, std::slice::from_ref(&src), &BackupOptions::default(), Default::default())
        .await
        .unwrap();
    forget(&repo, &[first.id]).await.unwrap();
    let no_grace = PruneOptions { grace: chrono::Duration::zero(), ..Default::default() };
    let marked = prune(&repo, &no_grace).await.unwrap();
    assert!(marked.packs_marked >= 1, "{marked:?}");
    // The store judges the marker's age in whole seconds.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let deleted = prune(&repo, &no_grace).await.unwrap();
    assert!(deleted.packs_deleted >= 1 && deleted.bytes_deleted >= 4_000_000, "{deleted:?}");
    let out2 = dir.path().join("out2");
    restore(&repo, second.snapshot.tree, &out2, &RestoreOptions::default(), Default::default())
        .await
        .unwrap();
    same_tree(&src, &out2.join(src.strip_prefix("/").unwrap()));
    let checked =
        verify(&repo, &VerifyOptions { read_data: ReadData::All }, Default::default()).await.unwrap();
    assert!(checked.errors.is_empty(), "{:?}", checked.errors);
}

#[tokio::test]
async fn a_backup_on_a_failing_store_without_retries_fails_as_transient_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree(&src);
    let path = dir.path().join("repo");
    // The repository is made on a sound store, then written through one
    // that fails every fifth call and is not retried.
    init(Arc::new(LocalStore::new(&path))).await;
    let flaky: Arc<dyn Store> = Arc::new(Faulty::new(LocalStore::new(&path), 5));
    let repo = loop {
        // Opening itself may hit an injected fault.
        match Repository::open(flaky.clone(), b"engine").await {
            Ok(r) => break Arc::new(r),
            Err(e) => assert!(e.is_transient(), "{e}"),
        }
    };
    let err = backup(&repo, std::slice::from_ref(&src), &BackupOptions::default(), Default::default())
        .await
        .unwrap_err();
    assert!(err.is_transient(), "an outage is worth retrying: {err}");

    let sound = Arc::new(Repository::open(Arc::new(LocalStore::new(&path)), b"engine").await.unwrap());
    let (snaps, bad) = sound.snapshots().await.unwrap();
    assert!(snaps.is_empty() && bad.is_empty(), "no snapshot of a failed backup: {snaps:?}");
    let checked =
        verify(&sound, &VerifyOptions { read_data: ReadData::All }, Default::default()).await.unwrap();
    assert!(checked.errors.is_empty(), "what the failed backup left is not damage: {:?}", checked.errors);
    // And the next backup, on the sound store, is whole.
    let ok = backup(&sound, std::slice::from_ref(&src), &BackupOptions::default(), Default::default())
        .await
        .unwrap();
    let out = dir.path().join("out");
    restore(&sound, ok.snapshot.tree, &out, &RestoreOptions::default(), Default::default()).await.unwrap();
    same_tree(&src, &out.join(src.strip_prefix("/").unwrap()));
}

#[tokio::test]
async fn init_refuses_a_pack_size_that_open_would_refuse_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path().join("repo")));
    for pack_size in [0, 512 << 10, (1 << 30) + 1] {
        let opts = InitOptions { kdf: KdfParams::insecure_for_tests(), pack_size, ..Default::default() };
        let Err(err) = Repository::init(store.clone(), b"engine", &opts).await else {
            panic!("{pack_size} accepted")
        };
        assert!(err.to_string().contains("pack size"), "{err}");
    }
    assert!(store.list("").await.unwrap().is_empty(), "nothing was written");
}

/// Ids of a repository's packs: what a copy wrote, by difference.
async fn packs(repo: &Repository) -> std::collections::HashSet<kura_format::Id> {
    repo.list_packs().await.unwrap().into_keys().collect()
}

#[tokio::test]
async fn copy_reencrypts_into_another_repository_reads_only_what_changed_and_never_copies_twice() {
    use kura_repo::copy::{copy, Copied, CopyOptions};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree(&src);
    let from = init(Arc::new(LocalStore::new(dir.path().join("from")))).await;
    // The destination fails every fourth call and is retried: a copy goes
    // through the same uploads as a backup.
    let flaky: Arc<dyn Store> =
        Arc::new(Retry::with_policy(Faulty::new(LocalStore::new(dir.path().join("to")), 4), quick_retries()));
    let to = init(flaky).await;
    let opts = BackupOptions { target: Some("files".into()), hostname: "app-1".into(), ..Default::default() };
    let first = backup(&from, std::slice::from_ref(&src), &opts, Default::default()).await.unwrap();

    let mut heard = Vec::new();
    let run = copy(
        &from,
        &to,
        vec![(first.id, first.snapshot.clone())],
        &CopyOptions::default(),
        Default::default(),
        &mut |c: &Copied| heard.push(c.id()),
    )
    .await
    .unwrap();
    assert!(run.failed.is_none(), "{:?}", run.failed);
    let Copied::New { id: copied, snapshot, stats, .. } = &run.done[0] else { panic!("{:?}", run.done) };
    assert_eq!(heard, vec![*copied]);
    // Different keys: the ids differ, the rest of the snapshot is the same.
    assert_ne!(snapshot.tree, first.snapshot.tree);
    assert_eq!(
        (snapshot.time, &snapshot.target, &snapshot.hostname),
        (first.snapshot.time, &first.snapshot.target, &first.snapshot.hostname)
    );
    let origin = snapshot.copied_from.unwrap();
    assert_eq!((origin.repository, origin.snapshot), (from.config().id, first.id));
    // The second 5 MB file repeats the first: stored once here too.
    assert!(stats.bytes_new < 6_000_000 && stats.bytes_read >= 5_000_000, "{stats:?}");
    let out = dir.path().join("out");
    let report =
        restore(&to, snapshot.tree, &out, &RestoreOptions::default(), Default::default()).await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    same_tree(&src, &out.join(src.strip_prefix("/").unwrap()));
    let checked = verify(&to, &VerifyOptions { read_data: ReadData::All }, Default::default()).await.unwrap();
    assert!(checked.errors.is_empty(), "{:?}", checked.errors);

    // Asked again: already there, nothing written.
    let before = packs(&to).await;
    let again = copy(
        &from,
        &to,
        vec![(first.id, first.snapshot.clone())],
        &CopyOptions::default(),
        Default::default(),
        &mut |_: &Copied| {},
    )
    .await
    .unwrap();
    assert!(matches!(again.done[..], [Copied::Present { id, .. }] if id == *copied), "{:?}", again.done);
    assert_eq!(packs(&to).await, before);

    // One small file changes: the next copy reads that file's blob and the
    // trees above it, not the 10 MB that stayed.
    std::fs::write(src.join("a/small-3.txt"), "changed\n").unwrap();
    let second = backup(&from, std::slice::from_ref(&src), &opts, Default::default()).await.unwrap();
    let run = copy(
        &from,
        &to,
        vec![(second.id, second.snapshot.clone())],
        &CopyOptions::default(),
        Default::default(),
        &mut |_: &Copied| {},
    )
    .await
    .unwrap();
    let Copied::New { snapshot, stats, .. } = &run.done[0] else { panic!("{:?}", run) };
    assert!(stats.bytes_read < 1_000 && stats.blobs_read <= 8, "{stats:?}");
    let out2 = dir.path().join("out2");
    restore(&to, snapshot.tree, &out2, &RestoreOptions::default(), Default::default()).await.unwrap();
    same_tree(&src, &out2.join(src.strip_prefix("/").unwrap()));
}

#[tokio::test]
async fn a_copy_that_fails_midway_writes_no_snapshot_and_the_next_one_finishes_it() {
    use kura_repo::copy::{copy, Copied, CopyOptions};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    tree(&src);
    let from = init(Arc::new(LocalStore::new(dir.path().join("from")))).await;
    let first = backup(&from, std::slice::from_ref(&src), &BackupOptions::default(), Default::default())
        .await
        .unwrap();
    std::fs::write(src.join("a/b/new.bin"), vec![7u8; 3_000_000]).unwrap();
    let second = backup(&from, std::slice::from_ref(&src), &BackupOptions::default(), Default::default())
        .await
        .unwrap();
    let wanted = vec![(first.id, first.snapshot.clone()), (second.id, second.snapshot.clone())];

    // Every fifth call fails and nothing retries: the copy stops.
    let path = dir.path().join("to");
    init(Arc::new(LocalStore::new(&path))).await;
    let failing: Arc<dyn Store> = Arc::new(Faulty::new(LocalStore::new(&path), 5));
    // The first call fails too: open until it gets through.
    let to = loop {
        if let Ok(r) = Repository::open(failing.clone(), b"engine").await {
            break Arc::new(r);
        }
    };
    let stopped =
        copy(&from, &to, wanted.clone(), &CopyOptions::default(), Default::default(), &mut |_: &Copied| {})
            .await;
    let copied_before = match &stopped {
        Ok(run) => {
            assert!(run.failed.is_some(), "a store failing every fifth call let the copy through: {run:?}");
            run.done.len()
        }
        Err(e) => {
            assert!(e.is_transient(), "{e}");
            0
        }
    };
    let to = Arc::new(Repository::open(Arc::new(LocalStore::new(&path)), b"engine").await.unwrap());
    let (snaps, bad) = to.snapshots().await.unwrap();
    assert!(bad.is_empty());
    assert_eq!(snaps.len(), copied_before, "only finished copies are visible");

    let run = copy(&from, &to, wanted, &CopyOptions::default(), Default::default(), &mut |_: &Copied| {})
        .await
        .unwrap();
    assert!(run.failed.is_none(), "{:?}", run.failed);
    assert_eq!(run.done.len(), 2);
    let (snaps, _) = to.snapshots().await.unwrap();
    assert_eq!(snaps.len(), 2);
    let checked = verify(&to, &VerifyOptions { read_data: ReadData::All }, Default::default()).await.unwrap();
    assert!(checked.errors.is_empty(), "{:?}", checked.errors);
    let out = dir.path().join("out");
    restore(&to, snaps[1].1.tree, &out, &RestoreOptions::default(), Default::default()).await.unwrap();
    same_tree(&src, &out.join(src.strip_prefix("/").unwrap()));
}

/// A stream backed up with smaller chunks than the repository's (database
/// dumps, format.md §6.1) is cut in blobs of about that size and restores
/// byte for byte; without them, the repository's.
#[tokio::test]
async fn streams_can_be_cut_in_smaller_chunks_than_the_repository() {
    use kura_format::config::ChunkerParams;
    let dir = tempfile::tempdir().unwrap();
    let repo = init(Arc::new(LocalStore::new(dir.path().join("repo")))).await;
    let mut data = vec![0u8; 4 << 20];
    let mut x = 7u64;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
    let mut blobs = Vec::new();
    for chunking in [None, Some(ChunkerParams::with_average(16 << 10))] {
        let opts = BackupOptions { chunking, hostname: "h".into(), ..Default::default() };
        let r = kura_repo::backup::backup_stream(
            &repo,
            "dump.sql",
            Box::new(std::io::Cursor::new(data.clone())),
            &opts,
            Default::default(),
            Box::new(|| Ok(())),
        )
        .await
        .unwrap();
        let index = repo.load_index_present(&Default::default()).await.unwrap();
        let node =
            kura_repo::browse::find_node(&repo, &index, &r.snapshot.tree, "dump.sql").await.unwrap().unwrap();
        blobs.push(node.content.unwrap().len());
        let mut back = Vec::new();
        kura_repo::restore::dump(&repo, r.snapshot.tree, "dump.sql", &mut back).await.unwrap();
        assert!(back == data, "restored byte for byte");
    }
    assert!(blobs[0] <= 16, "1 MiB chunks: {blobs:?}");
    assert!((128..=512).contains(&blobs[1]), "16 KiB chunks: {blobs:?}");
}

/// Restore plans and writes a snapshot a batch of files at a time: a tree
/// of over two batches comes back whole, a hard link whose first name is
/// in the first batch and second in the last is a link again, a directory
/// made read-only gets its mode only after its files, and the directories
/// of later batches are made as the walk reaches them.
#[tokio::test]
async fn a_tree_of_several_restore_batches_comes_back_whole_with_links_across_them() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for d in 0..9 {
        let sub = src.join(format!("d{d}"));
        std::fs::create_dir_all(&sub).unwrap();
        for i in 0..2_000 {
            std::fs::write(sub.join(format!("f{i:04}")), format!("{d}/{i}\n").repeat(i % 7)).unwrap();
        }
    }
    std::fs::write(src.join("d0/linked"), b"one inode, two names").unwrap();
    std::fs::hard_link(src.join("d0/linked"), src.join("d8/linked-too")).unwrap();
    std::fs::set_permissions(src.join("d4"), std::fs::Permissions::from_mode(0o555)).unwrap();
    let repo = init(Arc::new(LocalStore::new(dir.path().join("repo")))).await;
    let snap = backup(&repo, std::slice::from_ref(&src), &BackupOptions::default(), Default::default())
        .await
        .unwrap();
    let out = dir.path().join("out");
    let report = restore(&repo, snap.snapshot.tree, &out, &RestoreOptions::default(), Default::default())
        .await
        .unwrap();
    std::fs::set_permissions(src.join("d4"), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.files, 18_002);
    let back = out.join(src.strip_prefix("/").unwrap());
    let d4 = std::fs::metadata(back.join("d4")).unwrap();
    assert_eq!(d4.permissions().mode() & 0o777, 0o555);
    std::fs::set_permissions(back.join("d4"), std::fs::Permissions::from_mode(0o755)).unwrap();
    same_tree(&src, &back);
    let (a, b) = (
        std::fs::metadata(back.join("d0/linked")).unwrap(),
        std::fs::metadata(back.join("d8/linked-too")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "the two names are one file again");
    assert!(!out.join(kura_repo::restore::INCOMPLETE_MARKER).exists());
}

/// Backs `src` up into a new repository on `counting`, restores it to
/// `out`, and returns the repository, the restore's report and how many
/// requests the restore made.
async fn restore_counted(
    counting: &Arc<Faulty<LocalStore>>,
    src: &Path,
    out: &Path,
) -> (Arc<Repository>, kura_repo::restore::RestoreReport, u64) {
    let store: Arc<dyn Store> = counting.clone();
    let repo = init(store).await;
    let snap =
        backup(&repo, &[src.to_path_buf()], &BackupOptions::default(), Default::default()).await.unwrap();
    let before = counting.operations();
    let report = restore(&repo, snap.snapshot.tree, out, &RestoreOptions::default(), Default::default())
        .await
        .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    (repo, report, counting.operations() - before)
}

/// Across a network, a tree read-ahead takes a pack's trees in the request
/// that reads the first of them: a snapshot 40 directories deep is read in a
/// few requests, not a round trip per level.
#[tokio::test]
async fn across_a_network_deep_trees_are_read_in_a_few_requests() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let mut deep = src.clone();
    for level in 0..40 {
        deep = deep.join(format!("l{level}"));
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("x"), format!("{level}\n")).unwrap();
    }
    let counting = Arc::new(Faulty::counting(LocalStore::new(dir.path().join("repo"))).as_remote());
    let out = dir.path().join("out");
    let (repo, _, requests) = restore_counted(&counting, &src, &out).await;
    // Listing packs and index files, the index file, the trees, the data.
    assert!(requests <= 8, "{requests} requests for a snapshot 40 directories deep");
    same_tree(&src, &out.join(src.strip_prefix("/").unwrap()));

    // Day 2 reads the parent's trees the same way.
    let before = counting.operations();
    backup(&repo, std::slice::from_ref(&src), &BackupOptions::default(), Default::default()).await.unwrap();
    let requests = counting.operations() - before;
    assert!(requests <= 16, "{requests} requests for an unchanged day 2 of 40 directories deep");
}

/// A restore reads the snapshot's trees ahead, by pack spans: not one
/// request per directory (and not twice: once to measure the tree's shape,
/// once to walk it), which across a network was a round trip each.
#[tokio::test]
async fn a_restore_of_many_directories_reads_their_trees_in_a_few_requests() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for d in 0..300 {
        let sub = src.join(format!("d{:03}/e", d / 10)).join(format!("f{d}"));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("x"), format!("{d}\n")).unwrap();
    }
    let counting = Arc::new(Faulty::counting(LocalStore::new(dir.path().join("repo"))));
    let out = dir.path().join("out");
    let (_, report, requests) = restore_counted(&counting, &src, &out).await;
    assert_eq!((report.files, report.dirs), (300, 300 + 30 + 30 + src.components().count() as u64 - 1));
    assert!(requests < 40, "{requests} requests for 300 files in 360 directories");
    same_tree(&src, &out.join(src.strip_prefix("/").unwrap()));
}
