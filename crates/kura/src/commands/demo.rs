//! `kura demo`: the whole cycle on sample data, with no server and no
//! setup. It creates a folder tree and a SQLite database, backs them up into a
//! local repository, changes a file and backs up again, verifies every byte
//! of the repository, restores into a scratch folder and compares
//! everything, then opens the restored database and checks it.
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use kura_repo::backup::{backup, BackupOptions};
use kura_repo::restore::{restore, RestoreOptions};
use kura_repo::verify::{verify, ReadData, VerifyOptions};
use kura_repo::{Counters, InitOptions, Repository};

use crate::cli::{DemoArgs, Global};
use crate::output::{human_bytes, print_json, say, Failure};

fn io(what: &str) -> impl Fn(std::io::Error) -> Failure + '_ {
    move |e| Failure::new(format!("{what}: {e}"))
}

/// Deterministic bytes: text-like and compressible, or noise.
fn sample_bytes(n: usize, seed: u64, text: bool) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    let words: [&[u8]; 8] =
        [b"kura ", b"backup ", b"restore ", b"order ", b"user ", b"2026-11-22 ", b"INFO ", b"ok\n"];
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if text {
            out.extend_from_slice(words[(x % 8) as usize]);
        } else {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(n);
    out
}

fn make_sample(data: &Path) -> Result<(), Failure> {
    let w = |p: &str, bytes: &[u8]| -> Result<(), Failure> {
        let path = data.join(p);
        std::fs::create_dir_all(path.parent().expect("has parent")).map_err(io("creating sample folders"))?;
        std::fs::write(&path, bytes).map_err(io("writing sample files"))
    };
    w("config/app.toml", b"[server]\nport = 8080\nname = \"storehouse\"\n")?;
    w("config/.env.production", b"DATABASE_URL=sqlite:///srv/app/app.db\n")?;
    std::fs::set_permissions(data.join("config/.env.production"), std::fs::Permissions::from_mode(0o600))
        .map_err(io("chmod"))?;
    for i in 0..5u64 {
        w(&format!("uploads/2026/11/photo-{i}.bin"), &sample_bytes(300_000 + i as usize * 70_000, i, false))?;
    }
    w("logs/app.log", &sample_bytes(6 << 20, 99, true))?;
    w("logs/app.log.1", &sample_bytes(2 << 20, 98, true))?;
    std::fs::create_dir_all(data.join("cache/empty")).map_err(io("creating sample folders"))?;
    std::os::unix::fs::symlink("logs/app.log", data.join("current.log")).map_err(io("symlink"))?;
    std::fs::hard_link(data.join("config/app.toml"), data.join("config/app.toml.link"))
        .map_err(io("hard link"))?;

    let db =
        rusqlite::Connection::open(data.join("app.db")).map_err(|e| Failure::new(format!("sqlite: {e}")))?;
    db.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE);
         CREATE TABLE orders(id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id), total_cents INTEGER, note TEXT);
         CREATE INDEX orders_user ON orders(user_id);",
    )
    .map_err(|e| Failure::new(format!("sqlite: {e}")))?;
    let tx = db.unchecked_transaction().map_err(|e| Failure::new(format!("sqlite: {e}")))?;
    for i in 0..2000 {
        tx.execute(
            "INSERT INTO users(name, email) VALUES (?1, ?2)",
            (format!("user {i} 蔵"), format!("u{i}@example.org")),
        )
        .map_err(|e| Failure::new(format!("sqlite: {e}")))?;
        for j in 0..3 {
            tx.execute(
                "INSERT INTO orders(user_id, total_cents, note) VALUES (?1, ?2, ?3)",
                (i + 1, (i * 7 + j * 13) % 10_000, format!("order {j} of user {i}")),
            )
            .map_err(|e| Failure::new(format!("sqlite: {e}")))?;
        }
    }
    tx.commit().map_err(|e| Failure::new(format!("sqlite: {e}")))?;
    // Fold the WAL into the main file so the file on disk is the database.
    db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE;")
        .map_err(|e| Failure::new(format!("sqlite: {e}")))?;
    Ok(())
}

/// Relative path → (kind, mode, mtime, content or link target).
type Listing = BTreeMap<PathBuf, (char, u32, i64, Vec<u8>)>;

fn snapshot_of(root: &Path) -> Result<Listing, Failure> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).map_err(io("listing"))? {
            let p = e.map_err(io("listing"))?.path();
            let m = std::fs::symlink_metadata(&p).map_err(io("stat"))?;
            let rel = p.strip_prefix(root).expect("under root").to_path_buf();
            let entry = if m.file_type().is_symlink() {
                (
                    'l',
                    0,
                    0,
                    std::fs::read_link(&p).map_err(io("readlink"))?.into_os_string().into_encoded_bytes(),
                )
            } else if m.is_dir() {
                stack.push(p.clone());
                ('d', m.mode() & 0o7777, m.mtime(), Vec::new())
            } else {
                ('f', m.mode() & 0o7777, m.mtime(), std::fs::read(&p).map_err(io("reading"))?)
            };
            out.insert(rel, entry);
        }
    }
    Ok(out)
}

pub async fn run(g: &Global, a: &DemoArgs) -> Result<u8, Failure> {
    let started = Instant::now();
    let dir = std::path::absolute(&a.dir).map_err(io("demo folder"))?;
    if dir.exists() && std::fs::read_dir(&dir).map_err(io("demo folder"))?.next().is_some() {
        return Err(Failure::new(format!("{} is not empty", dir.display()))
            .hint("remove it, or pass --dir with another folder"));
    }
    let (data, repo_dir, target) = (dir.join("data"), dir.join("repo"), dir.join("restored"));
    std::fs::create_dir_all(&data).map_err(io("creating the demo folder"))?;
    say(g, format!("1. sample data: a folder tree and a SQLite database in {}", data.display()));
    make_sample(&data)?;

    let password: String = (0..4).map(|_| format!("{:08x}", rand::random::<u32>())).collect();
    let pw_file = dir.join("password");
    std::fs::write(&pw_file, format!("{password}\n")).map_err(io("writing the password file"))?;
    std::fs::set_permissions(&pw_file, std::fs::Permissions::from_mode(0o600)).map_err(io("chmod"))?;
    let store: Arc<dyn kura_store::Store> = Arc::new(kura_store::LocalStore::new(&repo_dir));
    let opts = InitOptions {
        hostname: super::hostname(),
        username: super::username(),
        kdf: super::kdf_params(),
        time: Some(super::clock().now()),
        ..Default::default()
    };
    let repo = Arc::new(Repository::init(store, password.as_bytes(), &opts).await?);
    say(g, format!("2. repository created at {} (password in {})", repo_dir.display(), pw_file.display()));

    let bopts = BackupOptions {
        hostname: super::hostname(),
        username: super::username(),
        tags: vec!["demo".into()],
        ..Default::default()
    };
    let first = backup(&repo, std::slice::from_ref(&data), &bopts, Arc::new(Counters::default())).await?;
    let s = &first.snapshot.summary;
    say(
        g,
        format!(
            "3. backup: snapshot {}: {} files, {} read, {} stored after dedup and compression",
            first.id.short(),
            s.files,
            human_bytes(s.bytes),
            human_bytes(s.bytes_stored)
        ),
    );

    let mut log =
        std::fs::OpenOptions::new().append(true).open(data.join("logs/app.log")).map_err(io("appending"))?;
    std::io::Write::write_all(&mut log, b"2026-11-22 INFO one more line\n").map_err(io("appending"))?;
    drop(log);
    let second = backup(&repo, std::slice::from_ref(&data), &bopts, Arc::new(Counters::default())).await?;
    let s2 = &second.snapshot.summary;
    say(g, format!("4. second backup after appending to a log: snapshot {}: {} changed, {} unchanged (not re-read), {} new",
        second.id.short(), s2.files_changed, s2.files_unchanged, human_bytes(s2.bytes_new)));

    let report =
        verify(&repo, &VerifyOptions { read_data: ReadData::All }, Arc::new(Counters::default())).await?;
    if !report.ok() {
        return Err(Failure::new(format!("verify found problems: {:?}", report.errors)));
    }
    say(
        g,
        format!(
            "5. verify --read-data: {} packs and {} blobs read and checked, no errors",
            report.packs_read, report.blobs_read
        ),
    );

    let ropts = RestoreOptions { owners: super::euid() == 0, ..Default::default() };
    let restored =
        restore(&repo, second.snapshot.tree, &target, &ropts, Arc::new(Counters::default())).await?;
    if !restored.failed.is_empty() {
        return Err(Failure::new(format!("restore failed for {:?}", restored.failed)));
    }
    let restored_root = target.join(data.strip_prefix("/").expect("absolute"));
    let (want, got) = (snapshot_of(&data)?, snapshot_of(&restored_root)?);
    if want != got {
        let diff: Vec<_> =
            want.keys().chain(got.keys()).filter(|k| want.get(*k) != got.get(*k)).take(5).collect();
        return Err(Failure::new(format!("restored tree differs from the original at {diff:?}")));
    }
    say(
        g,
        format!(
            "6. restore into {}: {} files, {} — every byte, mode, mtime and link identical",
            target.display(),
            restored.files,
            human_bytes(restored.bytes)
        ),
    );

    let db = rusqlite::Connection::open(restored_root.join("app.db"))
        .map_err(|e| Failure::new(format!("sqlite: {e}")))?;
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| Failure::new(format!("sqlite: {e}")))?;
    let orders: i64 = db
        .query_row("SELECT count(*) FROM orders", [], |r| r.get(0))
        .map_err(|e| Failure::new(format!("sqlite: {e}")))?;
    if check != "ok" || orders != 6000 {
        return Err(Failure::new(format!("restored database: integrity_check={check}, orders={orders}")));
    }
    say(g, format!("7. restored SQLite database: integrity_check ok, {orders} orders"));
    say(g, format!("demo OK in {:.1}s. Try:\n  export KURA_REPOSITORY={} KURA_PASSWORD_FILE={}\n  kura snapshots\n  kura ls latest\n  kura dump latest {}/config/app.toml",
        started.elapsed().as_secs_f64(), repo_dir.display(), pw_file.display(), data.display()));
    if g.json {
        print_json(&serde_json::json!({
            "ok": true, "repository": repo_dir, "snapshots": [first.id, second.id],
            "restored_files": restored.files, "restored_bytes": restored.bytes,
        }));
    }
    Ok(0)
}
