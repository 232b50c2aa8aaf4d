//! The contract of `kura_store::Store`, checked the same way for every store.
use bytes::Bytes;
use kura_store::{ErrorKind, Store};

/// What a test server can do. Real services do all of it; some emulators
/// lack a feature, and then exactly the checks that need it are skipped
/// (each skip is printed).
#[derive(Clone, Copy, Debug)]
pub struct Capabilities {
    /// `put_new` fails on an existing key.
    pub conditional_create: bool,
    /// Objects larger than one part (8 MiB) upload.
    pub multipart: bool,
}

impl Capabilities {
    pub const FULL: Capabilities = Capabilities { conditional_create: true, multipart: true };
}

/// Runs every check of the storage contract against `store`, which must be
/// empty. Panics with the failing check's name.
pub async fn run_conformance(store: &dyn Store) {
    run_conformance_with(store, Capabilities::FULL).await
}

pub async fn run_conformance_with(store: &dyn Store, caps: Capabilities) {
    let loc = store.location();

    // A missing key is NotFound; delete of it succeeds; an empty prefix lists empty.
    let e = store.get("data/00/missing").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{loc}: get of a missing key: {e}");
    let e = store.stat("data/00/missing").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{loc}: stat of a missing key: {e}");
    let e = store.get_range("data/00/missing", 0..1).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{loc}: get_range of a missing key: {e}");
    store.delete("data/00/missing").await.expect("delete of a missing key succeeds");
    assert!(store.list("snapshots/").await.unwrap().is_empty(), "{loc}: empty prefix lists empty");

    // put / get / stat / range.
    let body: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    store.put("data/ab/one", Bytes::from(body.clone())).await.unwrap();
    assert_eq!(store.get("data/ab/one").await.unwrap(), body, "{loc}: get returns what put wrote");
    assert_eq!(store.stat("data/ab/one").await.unwrap().size, body.len() as u64);
    assert_eq!(store.get_range("data/ab/one", 10..20).await.unwrap(), &body[10..20]);
    assert_eq!(store.get_range("data/ab/one", 99_990..100_000).await.unwrap(), &body[99_990..]);
    assert!(
        store.get_range("data/ab/one", 99_990..100_010).await.is_err(),
        "{loc}: a range past the end is an error"
    );

    // An empty object is an object.
    store.put("keys/empty", Bytes::new()).await.unwrap();
    assert_eq!(store.get("keys/empty").await.unwrap().len(), 0);

    // put replaces.
    store.put("data/ab/one", Bytes::from_static(b"second")).await.unwrap();
    assert_eq!(store.get("data/ab/one").await.unwrap(), &b"second"[..]);

    // put_new creates once.
    store.put_new("locks/prune", Bytes::from_static(b"first")).await.unwrap();
    if !caps.conditional_create {
        eprintln!("{loc}: this server does not enforce conditional creates; those checks are skipped");
    } else {
        let e = store.put_new("locks/prune", Bytes::from_static(b"again")).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::AlreadyExists, "{loc}: put_new over an existing key: {e}");
        let kept = store.get("locks/prune").await.unwrap();
        assert_eq!(kept, &b"first"[..], "{loc}: put_new must not overwrite");

        // Concurrent put_new: exactly one wins.
        let attempts = (0..8).map(|i| store.put_new("locks/race", Bytes::from(vec![i as u8; 10])));
        let results = futures::future::join_all(attempts).await;
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "{loc}: exactly one concurrent put_new wins: {results:?}");
    }

    // list is recursive, relative to the root, and sized.
    store.put("data/cd/two", Bytes::from_static(b"22")).await.unwrap();
    let mut listed = store.list("data/").await.unwrap();
    listed.sort_by(|a, b| a.key.cmp(&b.key));
    let keys: Vec<(&str, u64)> = listed.iter().map(|m| (m.key.as_str(), m.size)).collect();
    assert_eq!(keys, vec![("data/ab/one", 6), ("data/cd/two", 2)], "{loc}: recursive listing");

    // Large objects (multipart on object stores) round-trip.
    if caps.multipart {
        let big: Vec<u8> = (0..(20u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        store.put("data/ef/big", Bytes::from(big.clone())).await.unwrap();
        assert_eq!(store.stat("data/ef/big").await.unwrap().size, big.len() as u64);
        let back = store.get("data/ef/big").await.unwrap();
        assert!(back == big, "{loc}: a 20 MiB object round-trips");
    } else {
        eprintln!("{loc}: this server has no multipart uploads; the 20 MiB check is skipped");
        store.put("data/ef/big", Bytes::from_static(b"small stand-in")).await.unwrap();
    }

    // put_new_file publishes a file assembled in the spool directory (or
    // anywhere, for stores without one); the listing skips spool files.
    let spool = store.spool_dir().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&spool).unwrap();
    let src = spool.join(format!(".tmp-pack-conformance-{:016x}", rand::random::<u64>()));
    std::fs::write(&src, &body).unwrap();
    store.put_new_file("data/12/spooled", &src).await.unwrap();
    let _ = std::fs::remove_file(&src);
    assert!(
        store.get("data/12/spooled").await.unwrap() == body,
        "{loc}: put_new_file stores the file's bytes"
    );
    let keys: Vec<String> = store.list("data/").await.unwrap().into_iter().map(|m| m.key).collect();
    assert!(!keys.iter().any(|k| k.contains(".tmp-")), "{loc}: spool files are not listed: {keys:?}");
    if caps.conditional_create {
        std::fs::write(&src, b"other").unwrap();
        let e = store.put_new_file("data/12/spooled", &src).await.unwrap_err();
        let _ = std::fs::remove_file(&src);
        assert_eq!(e.kind, ErrorKind::AlreadyExists, "{loc}: put_new_file over an existing key: {e}");
    }

    // delete removes.
    for key in [
        "data/ab/one",
        "data/cd/two",
        "data/ef/big",
        "data/12/spooled",
        "keys/empty",
        "locks/prune",
        "locks/race",
    ] {
        store.delete(key).await.unwrap();
    }
    assert!(store.list("data/").await.unwrap().is_empty(), "{loc}: deleted objects are gone");
    assert_eq!(store.get("data/ab/one").await.unwrap_err().kind, ErrorKind::NotFound);
}

/// An object store keeps what `put_with` gives (media type, encoding,
/// disposition, cache control, user metadata) and `stat` reports it.
pub async fn check_headers(store: &dyn Store) {
    let headers = kura_store::Headers {
        content_encoding: Some("gzip".into()),
        content_disposition: Some("attachment; filename=\"daily.json.gz\"".into()),
        cache_control: Some("max-age=3600".into()),
        metadata: [("src".to_string(), "billing-export".to_string()), ("run".to_string(), "42".to_string())]
            .into(),
    };
    store
        .put_with(
            "headers/daily.json.gz",
            bytes::Bytes::from_static(b"\x1f\x8b not really"),
            "application/json",
            &headers,
        )
        .await
        .unwrap();
    let m = store.stat("headers/daily.json.gz").await.unwrap();
    assert_eq!(m.content_type.as_deref(), Some("application/json"), "{}", store.location());
    // What the store says it cannot keep is exactly what is missing.
    let unkept = store.unkept_headers(&headers);
    let mut want = headers.clone();
    for h in &unkept {
        match *h {
            "Content-Encoding" => want.content_encoding = None,
            "Content-Disposition" => want.content_disposition = None,
            "Cache-Control" => want.cache_control = None,
            _ => want.metadata.clear(),
        }
    }
    assert_eq!(m.headers, want, "{} (says it cannot keep {unkept:?})", store.location());
    if !unkept.is_empty() {
        eprintln!("{}: cannot keep {unkept:?}", store.location());
    }
    store.delete("headers/daily.json.gz").await.unwrap();
}
