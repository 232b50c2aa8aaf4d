//! Helpers for end-to-end tests: run the real `kura` binary in a scratch
//! directory with a clean environment, build varied file trees, and compare
//! trees by bytes and metadata.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const PASSWORD: &str = "correct horse battery staple";

pub struct Kura {
    pub dir: tempfile::TempDir,
    pub repo: String,
    pub env: Vec<(String, String)>,
}

impl Kura {
    /// Starts `kura ARGS` with `KURA_TEST_STEP_GATE=STEP:GATE` (its output
    /// piped) and returns it standing at that step; it goes on once `GATE`
    /// exists.
    pub fn gated(&self, args: &[&str], step: &str, gate: &Path) -> std::process::Child {
        let mut child = self
            .cmd(args)
            .env("KURA_TEST_STEP_GATE", format!("{step}:{}", gate.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_at_gate(&mut child, gate);
        child
    }

    /// A fresh local repository location (not yet initialised).
    pub fn new() -> Kura {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo").display().to_string();
        Kura { dir, repo, env: Vec::new() }
    }

    pub fn with_repo(repo: &str, env: Vec<(String, String)>) -> Kura {
        let dir = tempfile::tempdir().expect("tempdir");
        Kura { dir, repo: repo.to_string(), env }
    }

    /// A path in the scratch directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kura"));
        for (k, _) in std::env::vars() {
            if k.starts_with("KURA_") || k.starts_with("AWS_") || k.starts_with("AZURE_") {
                c.env_remove(k);
            }
        }
        c.env("KURA_REPOSITORY", &self.repo)
            // Run history and plan locks stay in the scratch directory.
            .env("KURA_STATE_DIR", self.dir.path().join("state"))
            .env("KURA_PASSWORD", PASSWORD)
            .env("KURA_TEST_INSECURE_KDF", "1")
            .env("KURA_STORAGE_RETRIES", "3")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(args)
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run kura")
    }

    /// Runs and requires exit code 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kura {args:?} failed with {}:\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).expect("valid JSON")
    }

    pub fn init(&self) {
        self.ok(&["init"]);
    }

    /// Backs up and returns the new snapshot's full id.
    pub fn backup(&self, paths: &[&Path]) -> String {
        let mut args = vec!["backup".to_string()];
        args.extend(paths.iter().map(|p| p.display().to_string()));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        self.json(&a)["id"].as_str().expect("id").to_string()
    }

    pub fn snapshot_ids(&self) -> Vec<String> {
        self.json(&["snapshots"])
            .as_array()
            .expect("array")
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Mounts a tmpfs of `size` at `dir` until the guard drops (needs root).
pub fn tmpfs(dir: &std::path::Path, size: &str) -> impl Drop {
    tmpfs_with(dir, &format!("size={size}"))
}

/// Mounts a tmpfs with mount options `opts` (`size=1m,nr_inodes=8`) at
/// `dir` until the guard drops (needs root).
pub fn tmpfs_with(dir: &std::path::Path, opts: &str) -> impl Drop {
    std::fs::create_dir_all(dir).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", opts, "tmpfs", dir.to_str().unwrap()])
        .status()
        .expect("run mount");
    assert!(st.success(), "this test mounts a small tmpfs to fill it: run it as root (./scripts/test does)");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    Unmount(dir.to_path_buf())
}

/// Writes `kura.toml` in the scratch directory with the repository and
/// `body` (targets), and points the binary at it.
pub fn config(k: &mut Kura, body: &str) {
    let cfg = k.path("kura.toml");
    std::fs::write(&cfg, format!("[repository.main]\nurl = \"{}\"\n\n{body}", k.repo)).unwrap();
    k.env.push(("KURA_CONFIG".into(), cfg.display().to_string()));
}

/// A finished command's standard error, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Deterministic pseudo-random bytes.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// A tree with every kind of entry kura must preserve.
pub fn make_tree(root: &Path) {
    let w = |rel: &str, bytes: &[u8], mode: u32| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    w("empty.txt", b"", 0o644);
    w("small.txt", b"hello kura\n", 0o640);
    w("secret/.env", b"TOKEN=abc\n", 0o600);
    w("bin/tool.sh", b"#!/bin/sh\necho hi\n", 0o755);
    w("data/big.bin", &noise(5_000_000, 1), 0o644);
    w("data/dup-a.bin", &noise(1_500_000, 2), 0o644);
    w("data/dup-b.bin", &noise(1_500_000, 2), 0o644);
    w("text/log.txt", &b"2026-11-22 INFO request served in 3ms\n".repeat(50_000), 0o644);
    w("deep/a/b/c/d/e/f.txt", b"deep", 0o444);
    w("setgid/file", b"x", 0o2755);
    std::fs::create_dir_all(root.join("emptydir/inner")).unwrap();
    std::os::unix::fs::symlink("small.txt", root.join("link-to-small")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    std::fs::hard_link(root.join("small.txt"), root.join("hardlink.txt")).unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9 \xff name");
    std::fs::write(root.join(odd), b"non-utf8 name").unwrap();
    std::fs::write(root.join("名前.txt"), "日本語".as_bytes()).unwrap();
    std::fs::set_permissions(root.join("deep/a"), std::fs::Permissions::from_mode(0o750)).unwrap();
}

#[derive(Debug, PartialEq)]
pub struct Entry {
    pub kind: char,
    pub mode: u32,
    pub mtime: (i64, i64),
    pub uid: u32,
    pub gid: u32,
    pub content: Vec<u8>,
}

/// Every entry under `root` by relative path, plus groups of hard-linked paths.
pub fn listing(root: &Path) -> (BTreeMap<PathBuf, Entry>, Vec<Vec<PathBuf>>) {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let (kind, content) = if m.file_type().is_symlink() {
                ('l', std::fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec())
            } else if m.is_dir() {
                stack.push(p.clone());
                ('d', Vec::new())
            } else {
                if m.nlink() > 1 {
                    inodes.entry(m.ino()).or_default().push(rel.clone());
                }
                ('f', std::fs::read(&p).unwrap())
            };
            let mode = if kind == 'l' { 0 } else { m.mode() & 0o7777 };
            out.insert(
                rel,
                Entry { kind, mode, mtime: (m.mtime(), m.mtime_nsec()), uid: m.uid(), gid: m.gid(), content },
            );
        }
    }
    let mut groups: Vec<Vec<PathBuf>> = inodes
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    groups.sort();
    (out, groups)
}

/// Asserts two trees are identical in bytes, modes, mtimes, owners, links.
pub fn assert_same_tree(want: &Path, got: &Path) {
    let (a, ha) = listing(want);
    let (b, hb) = listing(got);
    let keys: std::collections::BTreeSet<_> = a.keys().chain(b.keys()).collect();
    for k in keys {
        match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) => {
                assert_eq!(x.kind, y.kind, "{k:?}: kind");
                assert!(x.content == y.content, "{k:?}: content differs");
                assert_eq!(x.mode, y.mode, "{k:?}: mode {:o} vs {:o}", x.mode, y.mode);
                if x.kind != 'l' {
                    assert_eq!(x.mtime, y.mtime, "{k:?}: mtime");
                }
                assert_eq!((x.uid, x.gid), (y.uid, y.gid), "{k:?}: owner");
            }
            (x, y) => panic!("{k:?}: present in original: {}, in restore: {}", x.is_some(), y.is_some()),
        }
    }
    assert_eq!(ha, hb, "hard-link groups");
}

/// Where a snapshot of absolute path `src` lands under a restore target.
pub fn restored(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").unwrap())
}

/// Fails if `secret` appears in any file under `dir` (a repository: every
/// byte of it is encrypted, so a plaintext credential is a leak).
pub fn assert_secret_absent(dir: &Path, secret: &str) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                let b = std::fs::read(e.path()).unwrap();
                assert!(
                    !b.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{secret:?} in {:?}",
                    e.path()
                );
            }
        }
    }
}

/// Asserts two long texts (database dumps) are equal, showing only the
/// first lines that differ.
pub fn assert_same_text(got: &str, want: &str, what: &str) {
    if got == want {
        return;
    }
    let (g, w): (Vec<&str>, Vec<&str>) = (got.lines().collect(), want.lines().collect());
    let first = g.iter().zip(&w).position(|(a, b)| a != b).unwrap_or(g.len().min(w.len()));
    let show =
        |v: &[&str]| v.iter().skip(first.saturating_sub(2)).take(6).cloned().collect::<Vec<_>>().join("\n");
    panic!(
        "{what}: differs from line {} ({} vs {} lines)\n--- got:\n{}\n--- want:\n{}",
        first + 1,
        g.len(),
        w.len(),
        show(&g),
        show(&w)
    );
}

/// A xorshift generator, so that randomized trials are reproducible.
pub fn rng(mut state: u64) -> impl FnMut(u64) -> u64 {
    move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    }
}

/// Runs `cmd`, sends it SIGKILL after `ms` milliseconds, and returns how it
/// ended (no exit code when the kill landed before it finished).
pub fn kill_after(mut cmd: Command, ms: u64) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start kura");
    std::thread::sleep(std::time::Duration::from_millis(ms));
    let _ = Command::new("kill").args(["-9", &child.id().to_string()]).status();
    child.wait_with_output().expect("wait for kura")
}

/// Every file under `dir`, recursively, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p)
            } else {
                out.push(p)
            }
        }
    }
    out.sort();
    out
}

/// A running `kura serve`, killed if the test ends early.
pub struct Daemon(pub std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    /// Logging JSON lines to a pipe that [`Daemon::wait`] reads.
    pub fn start(k: &Kura, grace: &str) -> Daemon {
        let child = k
            .cmd(&["serve", "--grace", grace, "--log-format", "json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start kura serve");
        Daemon(child)
    }

    /// Its output thrown away: for tests that only talk to it.
    pub fn quiet(k: &Kura) -> Daemon {
        let quiet = || Stdio::null();
        Daemon(k.cmd(&["serve"]).stdout(quiet()).stderr(quiet()).spawn().expect("start kura serve"))
    }

    pub fn signal(&self, sig: &str) {
        let st = std::process::Command::new("kill").args([sig, &self.0.id().to_string()]).status().unwrap();
        assert!(st.success());
    }

    /// Waits for it to exit (at most `secs`); returns its exit status and
    /// its log.
    pub fn wait(mut self, secs: u64) -> (std::process::ExitStatus, String) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Some(st) = self.0.try_wait().unwrap() {
                let mut log = String::new();
                use std::io::Read;
                self.0.stderr.take().unwrap().read_to_string(&mut log).unwrap();
                return (st, log);
            }
            assert!(std::time::Instant::now() < deadline, "kura serve did not exit within {secs}s");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// Polls `cond` until it holds, failing the test after `secs`.
pub fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "waited {secs}s for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Waits until `child`, run with `KURA_TEST_STEP_GATE=STEP:GATE`, stands
/// at its step (it made `GATE.waiting`), failing if it ends first or takes
/// a minute; removes the marker, so the gate can be used again. The child
/// goes on once `GATE` exists.
pub fn wait_at_gate(child: &mut std::process::Child, gate: &Path) {
    let marker = gate.with_extension("waiting");
    wait_for("the process to reach its step", 60, || {
        assert!(child.try_wait().unwrap().is_none(), "the process ended before its step");
        marker.exists()
    });
    let _ = std::fs::remove_file(marker);
}
