//! object_store targets: a bucket prefix on a real S3-compatible server
//! (moto) backed up object by object and restored additively, and a
//! directory used as an object store for the date-range restore (object
//! stores do not let a client set an object's modification time).
mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::*;
use kura_store::Store;
use kura_testkit::MotoServer;

struct Bucket {
    rt: tokio::runtime::Runtime,
    store: Arc<dyn Store>,
}

impl Bucket {
    fn open(url: &str, env: impl Fn(&str) -> Option<String>) -> Bucket {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let store = kura_store::open_url(url, &env).unwrap();
        Bucket { rt, store }
    }
    fn put(&self, key: &str, data: &[u8], ty: &str) {
        self.rt.block_on(self.store.put_typed(key, Bytes::copy_from_slice(data), ty)).unwrap();
    }
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.rt.block_on(self.store.get(key)).ok().map(|b| b.to_vec())
    }
    fn put_with(&self, key: &str, data: &[u8], ty: &str, h: &kura_store::Headers) {
        self.rt.block_on(self.store.put_with(key, Bytes::copy_from_slice(data), ty, h)).unwrap();
    }
    fn headers(&self, key: &str) -> kura_store::Headers {
        self.rt.block_on(self.store.stat(key)).unwrap().headers
    }
    fn content_type(&self, key: &str) -> Option<String> {
        self.rt.block_on(self.store.stat(key)).unwrap().content_type
    }
    fn delete(&self, key: &str) {
        self.rt.block_on(self.store.delete(key)).unwrap();
    }
    fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> =
            self.rt.block_on(self.store.list("")).unwrap().into_iter().map(|m| m.key).collect();
        k.sort();
        k
    }
}

fn run(k: &Kura, args: &[&str]) -> std::process::Output {
    k.cmd(args).env_remove("KURA_REPOSITORY").output().unwrap()
}

fn ok(k: &Kura, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = run(k, &a);
    assert!(
        out.status.success(),
        "kura {args:?}: {}\n{}",
        stderr(&out),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn summary(run: &serde_json::Value) -> serde_json::Value {
    let t = &run["targets"][0];
    assert_eq!(t["ok"], true, "{run}");
    t["summary"].clone()
}

#[test]
fn bucket_prefix_round_trip_reuses_unchanged_objects_and_restores_additively() {
    let moto = MotoServer::start();
    moto.create_bucket("uploads");
    let live = Bucket::open("s3://uploads/live", moto.env_fn());
    let big = noise(10 << 20, 7); // read in ranges, not in one request
    let objects: Vec<(&str, Vec<u8>, &str)> = vec![
        ("2025-11-01/orders.csv", b"id,total\n1,9.50\n".to_vec(), "text/csv"),
        ("2025-11-02/orders.csv", b"id,total\n2,3.25\n".to_vec(), "text/csv"),
        ("img/big.bin", big.clone(), "application/octet-stream"),
        ("photos/cat.jpg", noise(70_000, 3), "image/jpeg"),
        ("a", b"a file and a folder".to_vec(), "text/plain"),
        ("a/b", b"under a".to_vec(), "text/plain"),
        ("notes/caf\u{e9} %20.txt", "non-ASCII key \u{e9}".as_bytes().to_vec(), "text/plain; charset=utf-8"),
    ];
    for (key, data, ty) in &objects {
        live.put(key, data, ty);
    }
    let other = Bucket::open("s3://uploads/other", moto.env_fn());
    other.put("not-mine.txt", b"outside the prefix", "text/plain");

    // The repository is local; the bucket's credentials come only from the
    // target's own table, never from kura's environment.
    let mut k = Kura::new();
    k.env.push(("SRC_KEY".into(), "testing".into()));
    k.env.push(("SRC_SECRET".into(), "testing-secret".into()));
    config(
        &mut k,
        &format!(
            r#"[target.uploads]
type = "object_store"
url = "s3://uploads/live?endpoint={}&region=us-east-1"
credentials = {{ AWS_ACCESS_KEY_ID = "${{SRC_KEY}}", AWS_SECRET_ACCESS_KEY = "${{SRC_SECRET}}" }}
"#,
            moto.endpoint()
        ),
    );
    ok(&k, &["init"]);
    let first = ok(&k, &["backup", "--target", "uploads"]);
    let s = summary(&first);
    assert_eq!(s["files"], objects.len() as u64 + 1, "every object and the manifest: {s}");
    assert_eq!(s["files_unchanged"], 0, "{s}");
    let bytes: u64 = objects.iter().map(|(_, d, _)| d.len() as u64).sum();
    assert!(s["bytes"].as_u64().unwrap() > bytes, "{s}");

    // The snapshot is browsable; keys that are not valid paths are escaped.
    let id = first["targets"][0]["id"].as_str().unwrap().to_string();
    let ls = String::from_utf8(run(&k, &["ls", &id]).stdout).unwrap();
    for want in ["/objects/a%\n", "/objects/a/b\n", "/objects/img/big.bin\n", "/objects.json\n"] {
        assert!(ls.contains(want), "{want} in {ls}");
    }

    // Nothing changed: no object is downloaded again.
    let second = ok(&k, &["backup", "--target", "uploads"]);
    let s = summary(&second);
    assert_eq!(s["files_unchanged"], objects.len() as u64, "{s}");
    assert_eq!(s["files_new"], 1, "only the manifest: {s}");

    // One object changes; only it is read again.
    live.put("2025-11-02/orders.csv", b"id,total\n2,3.25\n3,1.00\n", "text/csv");
    let third = ok(&k, &["backup", "--target", "uploads"]);
    let s = summary(&third);
    assert_eq!(s["files_unchanged"], objects.len() as u64 - 1, "{s}");

    // Damage the live prefix: lose an object, overwrite another.
    live.delete("2025-11-01/orders.csv");
    live.delete("photos/cat.jpg");
    live.put("img/big.bin", b"overwritten by mistake", "application/octet-stream");

    // No confirmation on a pipe; a dry run changes nothing.
    let out = run(&k, &["restore", "--target", "uploads"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    let out = run(&k, &["restore", "--target", "uploads", "--dry-run"]);
    let plan = String::from_utf8_lossy(&out.stdout).to_string() + &stderr(&out);
    assert!(out.status.success(), "{plan}");
    assert!(plan.contains("write 2 object(s)"), "{plan}");
    assert!(plan.contains(&format!("skip {} already there", objects.len() - 2)), "{plan}");
    assert_eq!(live.get("2025-11-01/orders.csv"), None);

    // Additive restore: the lost objects come back with their media type;
    // the overwritten one is left alone without --force.
    let r = ok(&k, &["restore", "--target", "uploads", "--yes"]);
    let restored = &r["restored"][0];
    assert_eq!(restored["written"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(live.get("2025-11-01/orders.csv").unwrap(), objects[0].1);
    assert_eq!(live.content_type("2025-11-01/orders.csv").as_deref(), Some("text/csv"));
    assert_eq!(live.get("photos/cat.jpg").unwrap(), objects[3].1);
    assert_eq!(live.get("2025-11-02/orders.csv").unwrap(), b"id,total\n2,3.25\n3,1.00\n");
    assert_eq!(live.get("img/big.bin").unwrap(), b"overwritten by mistake");

    // --force under a key prefix replaces it; the replaced object is kept
    // beside the prefix, not lost.
    let r = ok(&k, &["restore", "--target", "uploads", "--include", "img/", "--force", "--yes"]);
    assert_eq!(r["restored"][0]["replaced"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(live.get("img/big.bin").unwrap(), big);
    let kept = r["restored"][0]["kept"].as_str().unwrap().to_string();
    assert!(kept.starts_with("s3://uploads/live.kura-bak-"), "{kept}");
    let prefix = kept.trim_start_matches("s3://uploads/");
    let old = Bucket::open(&format!("s3://uploads/{prefix}"), moto.env_fn());
    assert_eq!(old.keys(), ["img/big.bin"]);
    assert_eq!(old.get("img/big.bin").unwrap(), b"overwritten by mistake");

    // An older snapshot into another prefix, the live one untouched.
    let into = format!("s3://uploads/copy?endpoint={}&region=us-east-1", moto.endpoint());
    let first_id = &first["targets"][0]["id"].as_str().unwrap()[..8];
    ok(&k, &["restore", "--target", "uploads", "--snapshot", first_id, "--into", &into, "--yes"]);
    let copy = Bucket::open("s3://uploads/copy", moto.env_fn());
    let mut want: Vec<String> = objects.iter().map(|(k, _, _)| k.to_string()).collect();
    want.sort();
    assert_eq!(copy.keys(), want);
    for (key, data, _) in &objects {
        assert_eq!(&copy.get(key).unwrap(), data, "{key}");
    }
    assert_eq!(copy.get("2025-11-02/orders.csv").unwrap(), objects[1].1, "as of the first snapshot");
    assert_eq!(other.keys(), ["not-mine.txt"]);

    let v = ok(&k, &["verify", "--read-data"]);
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn date_range_restore_and_failures_write_nothing() {
    let mut k = Kura::new();
    let src = k.path("exports");
    let day = |d: u32| {
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(
                chrono::NaiveDate::from_ymd_opt(2025, 11, d)
                    .unwrap()
                    .and_hms_opt(12, 0, 0)
                    .unwrap()
                    .and_utc()
                    .timestamp() as u64,
            )
    };
    for d in [1u32, 3, 5, 7, 9] {
        let p = src.join(format!("daily/2025-11-{d:02}.csv"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("day {d}\n")).unwrap();
        std::fs::File::options().write(true).open(&p).unwrap().set_modified(day(d)).unwrap();
    }
    let closed = kura_testkit::closed_port();
    config(
        &mut k,
        &format!(
            "[target.exports]\ntype = \"object_store\"\nurl = \"{}\"\n\n[target.gone]\ntype = \"object_store\"\nurl = \"s3://nowhere/x?endpoint=http://127.0.0.1:{}&region=us-east-1\"\ncredentials = {{ AWS_ACCESS_KEY_ID = \"k\", AWS_SECRET_ACCESS_KEY = \"s\" }}\n",
            src.display(),
            closed.port
        ),
    );
    ok(&k, &["init"]);
    ok(&k, &["backup", "--target", "exports"]);

    let into = k.path("window");
    let r = ok(
        &k,
        &[
            "restore",
            "--target",
            "exports",
            "--start",
            "2025-11-03",
            "--end",
            "2025-11-07",
            "--into",
            into.to_str().unwrap(),
            "--yes",
        ],
    );
    let mut got: Vec<String> = r["restored"][0]["written"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    got.sort();
    assert_eq!(got, ["daily/2025-11-03.csv", "daily/2025-11-05.csv", "daily/2025-11-07.csv"]);
    assert_eq!(std::fs::read_to_string(into.join("daily/2025-11-05.csv")).unwrap(), "day 5\n");
    assert!(!into.join("daily/2025-11-01.csv").exists());

    // A range that matches nothing is an error, not a silent success.
    let out = run(
        &k,
        &[
            "restore",
            "--target",
            "exports",
            "--start",
            "2030-01-01",
            "--into",
            k.path("none").to_str().unwrap(),
            "--yes",
        ],
    );
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("no object") && e.contains("last-modified time"), "{e}");
    assert!(e.contains("the nearest dates there are: before it 2025-11-09"), "says what there is: {e}");

    // An unreachable bucket fails the target and records no snapshot.
    let before = k.cmd(&["snapshots", "--json"]).env_remove("KURA_REPOSITORY").output().unwrap().stdout;
    let out = run(&k, &["backup", "--target", "gone"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot list"), "{}", stderr(&out));
    let after = k.cmd(&["snapshots", "--json"]).env_remove("KURA_REPOSITORY").output().unwrap().stdout;
    assert_eq!(before, after);

    // A damaged repository writes no object at all: every blob is checked
    // before the first write.
    let packs = k.path("repo/data");
    for e in walk(&packs) {
        let mut b = std::fs::read(&e).unwrap();
        let n = b.len() / 2;
        b[n] ^= 0x40;
        std::fs::write(&e, b).unwrap();
    }
    let dest = k.path("after-damage");
    let out = run(&k, &["restore", "--target", "exports", "--into", dest.to_str().unwrap(), "--yes"]);
    assert!(!out.status.success(), "restore from a damaged repository must fail");
    assert!(!dest.exists() || std::fs::read_dir(&dest).unwrap().next().is_none(), "nothing written");
}

/// Seed 000: daily exports whose keys carry their date, restored by that
/// date (their modification times say nothing after an earlier restore),
/// and copied inside the bucket from one prefix to another.
#[test]
fn objects_are_chosen_by_the_date_in_their_key_and_copied_within_the_bucket() {
    let moto = MotoServer::start();
    moto.create_bucket("exports");
    let backups = Bucket::open("s3://exports/backups/daily", moto.env_fn());
    // Each export carries its headers and user metadata (x-amz-meta-src).
    let headers = |d: u32| kura_store::Headers {
        content_encoding: Some("identity".into()),
        content_disposition: Some(format!("attachment; filename=\"{d}.json\"")),
        cache_control: Some("no-cache".into()),
        metadata: [("src".to_string(), format!("billing-{d}"))].into(),
    };
    for d in 1..=9u32 {
        let body = format!("{{\"day\": {d}}}");
        backups.put_with(&format!("2025-11-{d:02}.json"), body.as_bytes(), "application/json", &headers(d));
    }
    let mut k = Kura::new();
    config(
        &mut k,
        &format!(
            "[target.exports]\ntype = \"object_store\"\nurl = \"s3://exports/backups/daily?endpoint={}&region=us-east-1\"\nkey_date = \"%Y-%m-%d\"\n",
            moto.endpoint()
        ),
    );
    for (k2, v) in moto.env() {
        k.env.push((k2, v));
    }
    ok(&k, &["init"]);
    ok(&k, &["backup", "--target", "exports"]);
    // The runbook's copy: backups/daily/<date>.json -> exports/daily/<date>.json,
    // same bucket, same credentials; the dry run lists the keys.
    let into = format!("s3://exports/exports/daily?endpoint={}&region=us-east-1", moto.endpoint());
    let args =
        ["restore", "--target", "exports", "--start", "2025-11-03", "--end", "2025-11-04", "--into", &into];
    let plan = run(&k, &[&args[..], &["--dry-run"]].concat());
    let text = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(
        text.contains("write 2 object(s)")
            && text.contains("    2025-11-03.json")
            && text.contains("    2025-11-04.json"),
        "{text}"
    );
    let dry = ok(&k, &[&args[..], &["--dry-run"]].concat());
    assert_eq!(dry["objects"]["write"], serde_json::json!(["2025-11-03.json", "2025-11-04.json"]), "{dry}");
    let copy = Bucket::open("s3://exports/exports/daily", moto.env_fn());
    assert!(copy.keys().is_empty(), "a dry run writes nothing");
    ok(&k, &[&args[..], &["--yes"]].concat());
    assert_eq!(copy.keys(), ["2025-11-03.json", "2025-11-04.json"]);
    assert_eq!(copy.get("2025-11-04.json").unwrap(), b"{\"day\": 4}");
    assert_eq!(copy.headers("2025-11-04.json"), headers(4), "headers and user metadata come back");
    assert_eq!(copy.content_type("2025-11-04.json").as_deref(), Some("application/json"));
    let manifest = k
        .cmd(&["dump", "--target", "exports", "latest", "objects.json"])
        .env_remove("KURA_REPOSITORY")
        .output()
        .unwrap();
    let manifest = String::from_utf8_lossy(&manifest.stdout).into_owned();
    assert!(
        manifest.contains("\"src\": \"billing-4\"") && manifest.contains("\"cache_control\": \"no-cache\""),
        "{manifest}"
    );
    // A directory keeps no headers: the restore says so and exits 3.
    let dir = k.path("local-copy");
    let out = run(
        &k,
        &[
            "restore",
            "--target",
            "exports",
            "--include",
            "2025-11-05",
            "--into",
            dir.to_str().unwrap(),
            "--yes",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("user metadata of 1 object(s) not restored"), "{}", stderr(&out));
    assert_eq!(std::fs::read(dir.join("2025-11-05.json")).unwrap(), b"{\"day\": 5}");
    // A day with no export says which days there are around it.
    let out = run(
        &k,
        &[
            "restore",
            "--target",
            "exports",
            "--start",
            "2025-11-20",
            "--end",
            "2025-11-21",
            "--into",
            &into,
            "--yes",
        ],
    );
    let e = stderr(&out);
    assert!(e.contains("key_date = \"%Y-%m-%d\"") && e.contains("before it 2025-11-09"), "{e}");
}

/// An object_store target's drill restores its newest snapshot into a
/// scratch folder (a local store), reads every object back and removes the
/// folder; `sample` restores a share of the objects, chosen afresh each
/// drill. The bucket is never written.
#[test]
fn object_store_drills_restore_into_a_scratch_folder_whole_or_sampled() {
    let moto = MotoServer::start();
    moto.create_bucket("media");
    let live = Bucket::open("s3://media/live", moto.env_fn());
    for i in 0..40 {
        live.put(&format!("img/{i:03}.bin"), &noise(3_000 + i * 100, i as u64), "application/octet-stream");
    }
    let keys = live.keys();
    let mut k = Kura::new();
    k.env.push(("AWS_ACCESS_KEY_ID".into(), "testing".into()));
    k.env.push(("AWS_SECRET_ACCESS_KEY".into(), "testing-secret".into()));
    let url = format!("s3://media/live?endpoint={}&region=us-east-1", moto.endpoint());
    config(
        &mut k,
        &format!(
            "[target.media]\ntype = \"object_store\"\nurl = \"{url}\"\n\
             [target.sampled]\ntype = \"object_store\"\nurl = \"{url}\"\nsample = \"25%\"\n"
        ),
    );
    ok(&k, &["init"]);
    ok(&k, &["backup", "--target", "media"]);
    ok(&k, &["backup", "--target", "sampled"]);
    let r = ok(&k, &["drill", "--target", "media", "--target", "sampled"]);
    let t = &r[0]["targets"];
    assert!(t[0]["error"].is_null() && t[1]["error"].is_null(), "{r}");
    assert_eq!(t[0]["checks"][0]["what"], "every object restored and read back", "{r}");
    assert_eq!(t[0]["files"], 40, "{r}");
    assert!(t[0]["checks"][0]["detail"].as_str().unwrap().starts_with("40 of 40 objects"), "{r}");
    let picked = t[1]["files"].as_u64().unwrap();
    assert!((2..=20).contains(&picked), "about a quarter of 40: {r}");
    assert!(t[1]["checks"][0]["detail"].as_str().unwrap().ends_with("(a 25% sample of 40)"), "{r}");
    assert_eq!(t[1]["checks"][0]["ok"], true, "{r}");
    let drills = k.path("state/drills");
    assert!(std::fs::read_dir(&drills).unwrap().flatten().all(|e| e.file_name() == "pending"), "removed");
    assert_eq!(live.keys(), keys, "the bucket is not written");

    // Another drill picks other objects.
    let again = ok(&k, &["drill", "--target", "sampled"]);
    assert_eq!(again[0]["targets"][0]["checks"][0]["ok"], true, "{again}");

    // Damage in the repository fails the whole drill.
    let packs = files_under(&std::path::Path::new(&k.repo).join("data"));
    for p in &packs {
        let mut b = std::fs::read(p).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0xff;
        std::fs::write(p, b).unwrap();
    }
    let out = run(&k, &["drill", "--target", "media"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(std::fs::read_dir(&drills).unwrap().flatten().all(|e| e.file_name() == "pending"), "removed");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
