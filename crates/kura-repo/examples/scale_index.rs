//! Grows a scratch repository's index to N blobs, for the scale step of
//! `scripts/bench` ("a repository with 10 million chunks opens and takes a
//! backup within 1 GB of memory"):
//!
//!     KURA_PASSWORD=… cargo run --release -p kura-repo --example scale_index -- REPO N
//!
//! The blobs are index entries only, in packs that do not exist, laid out
//! as a real backup lays them out (16 blobs of about 1 MiB per 16 MiB pack,
//! written in index files of 64 packs). Opening the repository and
//! deduplicating against it touch exactly this index, so the memory and time
//! they take are those of a real repository of that size; `verify` of such
//! a repository fails, by design. Never point it at a repository you keep.
use std::sync::Arc;

use kura_format::index::{IndexBlob, IndexFile, IndexPack};
use kura_format::{BlobType, Id};
use kura_repo::Repository;

const BLOBS_PER_PACK: usize = 16;
const PACKS_PER_INDEX: usize = 64;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(repo), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse::<usize>().ok())) else {
        eprintln!("usage: scale_index REPO N (password in KURA_PASSWORD)");
        std::process::exit(2);
    };
    let password = std::env::var("KURA_PASSWORD").expect("KURA_PASSWORD is set");
    let store: Arc<dyn kura_store::Store> = Arc::new(kura_store::LocalStore::new(repo));
    let repo = Repository::open(store, password.as_bytes()).await.expect("the repository opens");
    let mut written = 0usize;
    while written < n {
        let mut packs = Vec::with_capacity(PACKS_PER_INDEX);
        while packs.len() < PACKS_PER_INDEX && written < n {
            let count = BLOBS_PER_PACK.min(n - written);
            let blobs = (0..count)
                .map(|i| IndexBlob {
                    ty: BlobType::Data,
                    id: Id::random(),
                    offset: (i as u32) << 20,
                    length: 340 << 10,
                    raw_length: 1 << 20,
                })
                .collect();
            packs.push(IndexPack { id: Id::random(), blobs });
            written += count;
        }
        repo.write_index(&IndexFile { packs }).await.expect("index file written");
    }
    eprintln!("{written} blobs indexed");
}
