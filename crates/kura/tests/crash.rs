//! kill -9 at random moments of backup, forget and prune. After every kill:
//! `verify --read-data` passes, every snapshot completed before restores
//! byte-identical, and the next backup works without any unlocking. And
//! kill -9 at random moments of restores: no file ever holds wrong bytes
//! under its real name (into an empty target, one may lack bytes while the
//! marker that says so stands), a target restored in place holds either
//! its old or its new content (never nothing), and running the restore
//! again finishes.
mod common;

use std::path::{Path, PathBuf};

use common::*;
use kura_testkit::MotoServer;

fn trials() -> usize {
    std::env::var("KURA_CRASH_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

#[test]
fn kill_at_random_points_loses_nothing() {
    let k = Kura::new();
    k.init();
    crash_campaign(&k, trials(), 120, 12 << 20, None);
}

#[test]
fn kill_at_random_points_on_s3_loses_nothing() {
    // The same campaign against the S3 server: kills land between uploads,
    // in the middle of index and snapshot writes, and during prune's
    // deletions, where a local disk's renames would be all or nothing.
    let moto = MotoServer::start();
    moto.create_bucket("crash");
    let mut k = Kura::with_repo("s3://crash/repo", moto.env());
    // Packs for a remote store are spooled in the temp directory: one of
    // the test's own, to see what killed backups leave there.
    let tmp = k.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    k.env.push(("TMPDIR".into(), tmp.display().to_string()));
    k.init();
    let n = std::env::var("KURA_CRASH_TRIALS_S3").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    crash_campaign(&k, n, 300, 8 << 20, Some(&tmp));
}

/// Runs `trials` backups and prunes, each killed after up to `max_ms`, over
/// a source that gains a file of `file_size` bytes per trial; checks the
/// repository after every kill, and that no pack spool file is left in
/// `spool_dir` (when given) once the next backup has run.
fn crash_campaign(k: &Kura, trials: usize, max_ms: u64, file_size: usize, spool_dir: Option<&Path>) {
    let src = k.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // Each completed snapshot with a copy of what it saved.
    let mut completed: Vec<(String, PathBuf)> = Vec::new();
    let mut rand = rng(0x2545F4914F6CDD1D);
    let mut killed = 0;
    for trial in 0..trials {
        // Change the source: new files, a changed one, a removed one.
        std::fs::write(src.join(format!("f{trial}.bin")), noise(file_size, trial as u64)).unwrap();
        std::fs::write(src.join("changing.txt"), format!("trial {trial}\n").repeat(1000)).unwrap();
        if trial >= 3 {
            let _ = std::fs::remove_file(src.join(format!("f{}.bin", trial - 3)));
        }
        // Every completed snapshot is restored after every kill; keeping at
        // most six makes a trial cost the same at trial 500 as at trial 5.
        // A forgotten snapshot's copy goes too: a long run must not fill the
        // disk with copies.
        let forget_oldest = |completed: &mut Vec<(String, PathBuf)>| {
            let (id, copy) = completed.remove(0);
            k.ok(&["forget", &id]);
            std::fs::remove_dir_all(copy).unwrap();
        };
        while completed.len() > 6 {
            forget_oldest(&mut completed);
        }
        let op = rand(3);
        let cmd = match op {
            0 | 1 => k.cmd(&["backup", src.to_str().unwrap(), "--json"]),
            _ => {
                if completed.len() > 2 {
                    forget_oldest(&mut completed);
                }
                k.cmd(&["prune", "--grace", "0s"])
            }
        };
        let out = kill_after(cmd, rand(max_ms));
        if out.status.code().is_none() {
            killed += 1;
        } else if op < 2 {
            // Finished before the kill: it is a completed snapshot.
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let copy = k.path(&format!("copy-{trial}"));
            copy_tree(&src, &copy);
            completed.push((v["id"].as_str().unwrap().to_string(), copy));
        }

        let v = k.json(&["verify", "--read-data"]);
        assert_eq!(v["ok"], true, "trial {trial} (op {op}): {v}");
        // The next backup works at once: no lock to clear.
        let id = k.backup(&[&src]);
        if let Some(dir) = spool_dir {
            let left: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".tmp-pack-"))
                .collect();
            assert!(left.is_empty(), "trial {trial}: spool files of killed backups left behind: {left:?}");
        }
        let copy = k.path(&format!("copy-{trial}-after"));
        copy_tree(&src, &copy);
        completed.push((id, copy));
        for (id, copy) in &completed {
            let target = k.path(&format!("restore-{trial}-{}", &id[..8]));
            k.ok(&["restore", id, "--target", target.to_str().unwrap()]);
            assert_same_content(copy, &restored(&target, &src));
            std::fs::remove_dir_all(&target).unwrap();
        }
    }
    eprintln!("{killed} of {trials} operations were killed midway");
    assert!(killed > 0, "no operation was actually interrupted: the test proved nothing");
}

#[test]
fn killed_restores_never_leave_wrong_bytes_or_less_than_before() {
    let mut k = Kura::new();
    k.init();
    let live = k.path("app/config");
    std::fs::create_dir_all(&live).unwrap();
    let cfg = k.path("kura.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository.main]\nurl = \"{}\"\n\n[target.config]\ntype = \"files\"\npaths = [\"{}\"]\n",
            k.repo,
            live.display()
        ),
    )
    .unwrap();
    k.env.push(("KURA_CONFIG".into(), cfg.display().to_string()));
    for i in 0..12u64 {
        std::fs::write(live.join(format!("f{i}.bin")), noise(6 << 20, 500 + i)).unwrap();
    }
    let snapshot = k.copy_of(&live, "snap");
    k.ok(&["backup", "--target", "config"]);
    let mut rand = rng(0x9E3779B97F4A7C15);
    let mut killed = 0;
    for trial in 0..trials() {
        // The live copy drifts from the snapshot before each restore.
        std::fs::write(live.join("f0.bin"), format!("edited in trial {trial}\n")).unwrap();
        let before = k.copy_of(&live, &format!("before-{trial}"));
        let in_place = rand(2) == 0;
        let dir = k.path(&format!("restore-{trial}"));
        let mut cmd = if in_place {
            k.cmd(&["restore", "--target", "config", "--yes"])
        } else {
            k.cmd(&["restore", "latest", "--target", dir.to_str().unwrap()])
        };
        cmd.env_remove("KURA_REPOSITORY");
        if kill_after(cmd, 5 + rand(250)).status.code().is_none() {
            killed += 1;
        }
        if in_place {
            // Old or new, whole; never missing, never a mix.
            assert!(live.is_dir(), "trial {trial}: the live copy is missing");
            let now = listing(&live).0;
            let is = |want: &PathBuf| {
                let w = listing(want).0;
                w.len() == now.len()
                    && w.iter().all(|(p, e)| now.get(p).is_some_and(|n| n.content == e.content))
            };
            assert!(
                is(&before) || is(&snapshot),
                "trial {trial}: the live copy is neither the old nor the new one"
            );
            k.ok(&["restore", "--target", "config", "--yes", "--no-keep-old"]);
            assert_same_content(&snapshot, &live);
        } else {
            // Into an empty target files are written under their real names
            // while the marker stands: then a file may lack bytes (zeros
            // where nothing was written yet), but never hold a wrong one.
            // Without the marker, whatever is there is whole and right.
            let marked = dir.join(".kura-restore-incomplete").exists();
            let base = restored(&dir, &live);
            let there = if base.exists() { listing(&base).0 } else { Default::default() };
            let want = listing(&snapshot).0;
            for (rel, e) in there {
                let partial =
                    rel.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".kura-restore-"));
                if !base.join(&rel).is_file() || partial {
                    continue;
                }
                let right = &want[&rel].content;
                if marked {
                    assert!(
                        e.content.len() <= right.len()
                            && e.content.iter().zip(right).all(|(got, want)| got == want || *got == 0),
                        "trial {trial}: {rel:?} holds wrong bytes"
                    );
                } else {
                    assert!(e.content == *right, "trial {trial}: {rel:?} is not whole");
                }
            }
            if marked {
                // Run again as it was, it refuses and says why.
                let again =
                    k.cmd(&["restore", "latest", "--target", dir.to_str().unwrap()]).output().unwrap();
                let err = String::from_utf8_lossy(&again.stderr);
                assert!(!again.status.success() && err.contains("interrupted"), "trial {trial}: {err}");
                assert!(err.contains("--overwrite"), "{err}");
            }
            k.ok(&["restore", "latest", "--target", dir.to_str().unwrap(), "--overwrite"]);
            assert_same_content(&snapshot, &base);
            assert!(!dir.join(".kura-restore-incomplete").exists(), "trial {trial}: the marker stayed");
            std::fs::remove_dir_all(&dir).unwrap();
        }
        for e in std::fs::read_dir(live.parent().unwrap()).unwrap() {
            let p = e.unwrap().path();
            if p != live {
                let _ = std::fs::remove_dir_all(&p);
            }
        }
    }
    eprintln!("{killed} of {} restores were killed midway", trials());
    assert!(killed > 0, "no restore was actually interrupted: the test proved nothing");
}

trait CopyOf {
    fn copy_of(&self, from: &std::path::Path, name: &str) -> PathBuf;
}

impl CopyOf for Kura {
    fn copy_of(&self, from: &std::path::Path, name: &str) -> PathBuf {
        let to = self.path(name);
        copy_tree(from, &to);
        to
    }
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn assert_same_content(want: &std::path::Path, got: &std::path::Path) {
    let (a, _) = listing(want);
    let (b, _) = listing(got);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert!(v.content == b[k].content, "{k:?} differs");
    }
}
