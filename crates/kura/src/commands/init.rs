use kura_format::config::ChunkerParams;
use kura_repo::{InitOptions, Repository};

use crate::cli::{Global, InitArgs};
use crate::output::{print_json, say, Failure};

pub async fn run(g: &Global, a: &InitArgs) -> Result<u8, Failure> {
    let (store, g2) = super::open_store_settings(g)?;
    let avg = a.chunk_avg_kib.saturating_mul(1024);
    let opts = InitOptions {
        chunker: ChunkerParams { min_size: avg / 4, avg_size: avg, max_size: avg.saturating_mul(4) },
        pack_size: a.pack_mib.saturating_mul(1 << 20),
        kdf: super::kdf_params(),
        hostname: super::hostname(),
        username: super::username(),
        ..InitOptions::default()
    };
    let password = crate::password::read_new_password(&g2, None, true)?;
    let repo = Repository::init(store, &password, &opts).await?;
    if g.json {
        print_json(&serde_json::json!({
            "repository": repo.store().location(),
            "id": repo.config().id,
            "key": repo.key_id(),
        }));
    } else {
        say(g, format!("created repository {} at {}", repo.config().id.short(), repo.store().location()));
        say(g, "keep the password safe: without it the backups cannot be read");
    }
    Ok(0)
}
