//! The whole cycle against a real S3-compatible server (moto) on loopback.
mod common;

use common::*;
use kura_testkit::MotoServer;

#[test]
fn s3_repository_full_cycle() {
    let moto = MotoServer::start();
    moto.create_bucket("kura-e2e");
    let k = Kura::with_repo("s3://kura-e2e/team/app?region=us-east-1", moto.env());
    k.init();
    let src = k.path("src");
    make_tree(&src);
    let first = k.backup(&[&src]);
    std::fs::write(src.join("small.txt"), b"edited").unwrap();
    let second = k.json(&["backup", src.to_str().unwrap()]);
    assert!(second["summary"]["files_unchanged"].as_u64().unwrap() >= 10, "{second}");
    let v = k.json(&["verify", "--read-data"]);
    assert_eq!(v["ok"], true, "{v}");
    let target = k.path("out");
    k.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &restored(&target, &src));

    k.ok(&["forget", &first]);
    k.ok(&["prune", "--grace", "0s"]);
    let r = k.json(&["prune", "--grace", "0s"]);
    assert!(r["packs_deleted"].as_u64().unwrap() + r["packs_revived"].as_u64().unwrap() >= 1, "{r}");
    let v = k.json(&["verify", "--read-data"]);
    assert_eq!(v["ok"], true, "{v}");

    // Path-style addressing against a custom endpoint came from the
    // environment; the same repository through an explicit URL option:
    let mut env = moto.env();
    env.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
    let url = format!("s3://kura-e2e/team/app?endpoint={}&style=path", moto.endpoint());
    let k2 = Kura::with_repo(&url, env);
    assert_eq!(k2.snapshot_ids().len(), 1);
}

/// What S3 itself says about every object under `prefix`: `key sse class`
/// per line, read back through boto3 (installed with moto), not kura.
fn s3_headers(moto: &MotoServer, bucket: &str, prefix: &str) -> Vec<String> {
    let script = format!(
        "import boto3\n\
         s3 = boto3.client('s3', endpoint_url='{}', region_name='us-east-1')\n\
         for page in s3.get_paginator('list_objects_v2').paginate(Bucket='{bucket}', Prefix='{prefix}'):\n\
         \x20   for o in page.get('Contents', []):\n\
         \x20       h = s3.head_object(Bucket='{bucket}', Key=o['Key'])\n\
         \x20       print(o['Key'], h.get('ServerSideEncryption', '-'), h.get('StorageClass', 'STANDARD'))\n",
        moto.endpoint()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .envs(moto.env())
        .output()
        .expect("python3 (with boto3, which moto brings: pip install 'moto[server]')");
    assert!(out.status.success(), "boto3: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn encryption_and_storage_class_go_with_every_write() {
    let moto = MotoServer::start();
    moto.create_bucket("secure");
    let mut k = Kura::with_repo("unused", moto.env());
    k.env.retain(|(n, _)| n != "KURA_REPOSITORY");
    let data = k.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("report.json"), b"{\"ok\": true}").unwrap();
    let cfg = k.path("kura.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository.primary]\nurl = \"s3://secure/kura?region=us-east-1\"\nsse = \"AES256\"\nstorage_class = \"STANDARD_IA\"\n\n\
             [target.exports]\ntype = \"object_store\"\nurl = \"{}\"\nsse = \"AES256\"\n\n\
             [target.app]\ntype = \"files\"\npaths = [\"{}\"]\n",
            data.display(),
            data.display()
        ),
    )
    .unwrap();
    k.env.push(("KURA_CONFIG".into(), cfg.display().to_string()));
    let run = |args: &[&str]| {
        let o = k.cmd(args).env_remove("KURA_REPOSITORY").output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    };
    run(&["init"]);
    // The doctor's probe goes with the encryption every write asks for.
    let doctor = k.cmd(&["doctor"]).env_remove("KURA_REPOSITORY").output().unwrap();
    let said = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        said.contains("with server-side encryption AES256, which the storage accepted; clocks agree"),
        "{said}"
    );
    run(&["backup", "--target", "app"]);
    let heads = s3_headers(&moto, "secure", "kura/");
    assert!(heads.len() >= 4, "config, key, index, pack, snapshot: {heads:?}");
    for h in &heads {
        assert!(h.ends_with(" AES256 STANDARD_IA"), "every write asks for both: {h}");
    }
    // An object_store target's options apply to what a restore writes.
    let into = format!("s3://secure/copy?endpoint={}&region=us-east-1", moto.endpoint());
    run(&["backup", "--target", "exports"]);
    run(&["restore", "--target", "exports", "--into", &into, "--yes"]);
    let copied = s3_headers(&moto, "secure", "copy/");
    assert_eq!(copied, vec!["copy/report.json AES256 STANDARD".to_string()]);
    // A wrong value is an error naming the option; GCS takes none of them.
    let bad =
        k.cmd(&["snapshots", "--repo", "s3://secure/kura?region=us-east-1&sse=AES128"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("sse=\"AES128\": use sse=AES256 or sse=aws:kms"), "{}", stderr(&bad));
    let gcs = k.cmd(&["snapshots", "--repo", "gcs://b/p?storage_class=NEARLINE"]).output().unwrap();
    assert!(stderr(&gcs).contains("unknown option \"storage_class\""), "{}", stderr(&gcs));
}

#[test]
fn a_daily_plan_on_s3_with_encryption_copies_each_run_to_a_second_bucket_and_keeps_its_retention() {
    let moto = MotoServer::start();
    moto.create_bucket("primary");
    moto.create_bucket("kura-dr");
    let mut k = Kura::with_repo("unused", moto.env());
    k.env.retain(|(n, _)| n != "KURA_REPOSITORY");
    let db = k.path("app.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("CREATE TABLE orders(id INTEGER PRIMARY KEY, total INT); INSERT INTO orders(total) VALUES (10), (20);")
        .unwrap();
    let pw = k.path("dr.pw");
    std::fs::write(&pw, "the dr bucket's own password").unwrap();
    let cfg = k.path("kura.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository.primary]\nurl = \"s3://primary/prod?region=us-east-1\"\nsse = \"AES256\"\nstorage_class = \"STANDARD_IA\"\n\
             [repository.offsite]\nurl = \"s3://kura-dr/prod?region=us-east-1&sse=AES256\"\npassword_file = \"{}\"\n\
             [target.app_db]\ntype = \"sqlite\"\npath = \"{}\"\n\
             [plan.daily]\nschedule = \"0 2 * * *\"\ntargets = [\"app_db\"]\nrepository = \"primary\"\ncopy_to = [\"offsite\"]\nkeep = {{ daily = 2 }}\nprune = true\n",
            pw.display(),
            db.display()
        ),
    )
    .unwrap();
    k.env.push(("KURA_CONFIG".into(), cfg.display().to_string()));
    k.ok(&["init", "--repository", "primary"]);
    let o = k.cmd(&["init", "--repository", "offsite"]).env_remove("KURA_PASSWORD").output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for days_ago in [2, 1, 0] {
        c.execute("INSERT INTO orders(total) VALUES (?1)", [days_ago]).unwrap();
        let o = k
            .cmd(&["run", "daily"])
            .env("KURA_TEST_CLOCK_OFFSET_SECS", (-days_ago * 86_400).to_string())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let line = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(line.contains("copied 1 to offsite"), "{line}");
    }
    let count = |repo: &str| k.json(&["snapshots", "--repo", repo]).as_array().unwrap().len();
    assert_eq!((count("primary"), count("offsite")), (2, 2), "daily = 2 in both");
    // Every object of the copy was written encrypted at rest.
    let heads = s3_headers(&moto, "kura-dr", "prod/");
    assert!(heads.len() >= 5, "{heads:?}");
    assert!(heads.iter().all(|h| h.contains(" AES256 ")), "{heads:?}");
    // The copy alone restores today's database.
    let newest = k.json(&["snapshots", "--repo", "offsite"]);
    let id = newest.as_array().unwrap().last().unwrap()["id"].as_str().unwrap().to_string();
    let out = k.path("restored");
    let o = k
        .cmd(&["restore", &id, "--target", out.to_str().unwrap(), "--repo", "offsite"])
        .env_remove("KURA_PASSWORD")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let file =
        common::files_under(&out).into_iter().find(|p| p.extension().is_some_and(|e| e == "db")).unwrap();
    let n: i64 = rusqlite::Connection::open(file)
        .unwrap()
        .query_row("SELECT count(*) FROM orders", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 5);
    let v = k
        .cmd(&["verify", "--repo", "offsite", "--read-data", "--json"])
        .env_remove("KURA_PASSWORD")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
}
