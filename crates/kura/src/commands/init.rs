//! `kura init`: creates a repository, or every configured one that does
//! not exist yet, each with its own password source.
use kura_format::config::ChunkerParams;
use kura_repo::{InitOptions, Repository};

use crate::cli::{Global, InitArgs};
use crate::output::{print_json, say, Failure};

pub async fn run(g: &Global, a: &InitArgs) -> Result<u8, Failure> {
    // With a config: each configured repository (or the one named) that
    // does not exist yet, with its own password source.
    if let Some(repos) = super::configured_repositories(g, a.repository.as_deref())? {
        let mut made = Vec::new();
        for spec in repos {
            let (name, url) = (spec.name.clone().unwrap_or_default(), &spec.url);
            let store = super::store_at(&spec)?;
            match Repository::read_config(store.as_ref()).await {
                Ok(_) => {
                    say(g, format!("repository {name} exists at {url}; left as it is"));
                    continue;
                }
                Err(kura_repo::RepoError::NotARepository { .. }) => {}
                Err(e) => return Err(Failure::from(e).context(format!("repository {name}"))),
            }
            let repo =
                init_one(g, &spec, a, store).await.map_err(|f| f.context(format!("repository {name}")))?;
            made.push(serde_json::json!({
                "name": name, "repository": repo.store().location(), "id": repo.config().id, "key": repo.key_id(),
            }));
        }
        if g.json {
            print_json(&serde_json::json!({ "created": made }));
        }
        return Ok(0);
    }
    let (store, spec) = super::open_store_settings(g)?;
    let repo = init_one(g, &spec, a, store).await?;
    if g.json {
        print_json(&serde_json::json!({
            "repository": repo.store().location(),
            "id": repo.config().id,
            "key": repo.key_id(),
        }));
    }
    Ok(0)
}

async fn init_one(
    g: &Global,
    spec: &kura_runner::RepoSpec,
    a: &InitArgs,
    store: std::sync::Arc<dyn kura_store::Store>,
) -> Result<Repository, Failure> {
    let avg = a.chunk_avg_kib.saturating_mul(1024);
    let opts = InitOptions {
        chunker: ChunkerParams { min_size: avg / 4, avg_size: avg, max_size: avg.saturating_mul(4) },
        pack_size: a.pack_mib.saturating_mul(1 << 20),
        kdf: super::kdf_params(),
        time: Some(super::clock().now()),
        hostname: super::hostname(),
        username: super::username(),
        ..InitOptions::default()
    };
    let password = crate::password::read_new_password(g, None, Some(spec))?;
    let repo = Repository::init(store, &password, &opts).await?;
    say(g, format!("created repository {} at {}", repo.config().id.short(), repo.store().location()));
    say(g, "keep the password safe: without it the backups cannot be read");
    Ok(repo)
}
