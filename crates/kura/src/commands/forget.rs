//! `kura forget SNAPSHOT…`: removes snapshots; `--prune` reclaims their
//! space at once.
use kura_format::Id;

use crate::cli::{ForgetArgs, Global, PruneArgs};
use crate::output::{print_json, say, Failure};

pub async fn run(g: &Global, a: &ForgetArgs) -> Result<u8, Failure> {
    let repo = super::open_repo(g).await?;
    let mut ids: Vec<Id> = Vec::new();
    for spec in &a.snapshots {
        ids.push(repo.find_snapshot(spec).await?.0);
    }
    kura_repo::prune::forget(&repo, &ids).await?;
    if g.json && !a.prune {
        print_json(&serde_json::json!({ "forgotten": ids }));
    }
    for id in &ids {
        say(g, format!("forgot snapshot {}", id.short()));
    }
    if a.prune {
        let args = PruneArgs { compression: None, grace: "10m".into(), repack_unused: 20.0, dry_run: false };
        return super::prune::run_with(g, &repo, &args).await;
    }
    Ok(0)
}
