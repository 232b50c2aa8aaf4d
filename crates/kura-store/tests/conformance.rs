//! Every store passes the same contract (kura_testkit::run_conformance),
//! each against a real backend on this machine.
use kura_store::{open_url, LocalStore, Retry, Store};
use kura_testkit::{
    check_headers, run_conformance, run_conformance_with, AzuriteServer, Capabilities, GcsEmulator,
    MotoServer,
};

#[tokio::test]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    run_conformance(&LocalStore::new(dir.path().join("repo"))).await;
}

#[tokio::test]
async fn local_store_publishes_a_file_spooled_on_another_filesystem() {
    // A link cannot cross filesystems: the file is copied in, durably and
    // exclusively, and the spooled original is left to its caller.
    let shm = std::path::Path::new("/dev/shm");
    assert!(shm.is_dir(), "/dev/shm (a tmpfs on every Linux) is needed for this test");
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path().join("repo"));
    let spooled = tempfile::NamedTempFile::new_in(shm).unwrap();
    std::fs::write(spooled.path(), b"a pack from elsewhere").unwrap();
    store.put_new_file("data/ab/elsewhere", spooled.path()).await.unwrap();
    assert_eq!(&store.get("data/ab/elsewhere").await.unwrap()[..], b"a pack from elsewhere");
    assert!(spooled.path().exists(), "the caller's file is not taken");
    let e = store.put_new_file("data/ab/elsewhere", spooled.path()).await.unwrap_err();
    assert_eq!(e.kind, kura_store::ErrorKind::AlreadyExists);
    let names: Vec<_> = std::fs::read_dir(dir.path().join("repo/data/ab"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");
}

#[tokio::test]
async fn local_store_through_retry_conforms() {
    let dir = tempfile::tempdir().unwrap();
    run_conformance(&Retry::new(LocalStore::new(dir.path()))).await;
}

#[tokio::test]
async fn s3_store_conforms_against_moto() {
    let moto = MotoServer::start();
    moto.create_bucket("conformance");
    let store = open_url("s3://conformance/some/prefix", &moto.env_fn()).unwrap();
    run_conformance(store.as_ref()).await;
    check_headers(store.as_ref()).await;
}

#[tokio::test]
async fn retry_rides_out_transient_faults() {
    use kura_store::{Faulty, RetryPolicy, Store};
    let dir = tempfile::tempdir().unwrap();
    let policy = RetryPolicy { first_delay: std::time::Duration::from_millis(1), ..Default::default() };
    // Every second call fails; with retries the whole contract still holds.
    let store = Retry::with_policy(Faulty::new(LocalStore::new(dir.path()), 2), policy);
    run_conformance(&store).await;
    // Without retries, the fault surfaces as transient.
    let bare = Faulty::new(LocalStore::new(dir.path()), 1);
    let e = bare.get("x").await.unwrap_err();
    assert!(e.is_transient());
}

#[tokio::test]
async fn azure_store_conforms_against_azurite() {
    let azurite = AzuriteServer::start();
    azurite.create_container("conformance");
    let url = format!("azblob://conformance/some/prefix?endpoint={}", azurite.endpoint());
    let store = open_url(&url, &azurite.env_fn()).unwrap();
    run_conformance(store.as_ref()).await;
    check_headers(store.as_ref()).await;
}

#[tokio::test]
async fn gcs_store_conforms_against_the_emulator() {
    let gcs = GcsEmulator::start("conformance");
    let url = format!("gcs://conformance/some/prefix?endpoint={}", gcs.endpoint());
    let store = open_url(&url, &gcs.env_fn()).unwrap();
    // The emulator enforces no preconditions and has no multipart uploads;
    // real GCS has both.
    run_conformance_with(store.as_ref(), Capabilities { conditional_create: false, multipart: false }).await;
    check_headers(store.as_ref()).await;
}
