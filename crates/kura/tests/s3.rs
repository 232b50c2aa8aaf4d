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
