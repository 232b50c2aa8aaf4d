//! `kura repair index`: rebuilds the index from the packs' own headers.
use crate::cli::{Global, RepairArgs, RepairCommand};
use crate::output::{code, print_json, say, Failure};

pub async fn run(g: &Global, a: &RepairArgs) -> Result<u8, Failure> {
    let repo = super::open_repo(g).await?;
    match a.command {
        RepairCommand::Index => {
            let r = kura_repo::repair::repair_index(&repo, &super::hostname()).await?;
            if g.json {
                print_json(&r);
            } else {
                say(
                    g,
                    format!(
                        "read {} packs, indexed {} blobs in {} new index files, removed {} old ones",
                        r.packs_read, r.blobs_indexed, r.index_files_written, r.index_files_removed
                    ),
                );
            }
            for (pack, why) in &r.unreadable_packs {
                crate::output::errln!("unreadable: {pack}: {why}");
            }
            if !r.unreadable_packs.is_empty() {
                crate::output::errln!("kura: {} packs could not be indexed; run `kura verify --read-data` to see what they affect", r.unreadable_packs.len());
                return Ok(code::DAMAGE);
            }
            Ok(code::OK)
        }
    }
}
