//! `kura snapshots`: the repository's snapshots, by run and target.
use crate::cli::{Global, SnapshotsArgs};
use crate::output::{human_bytes, print_json, Failure};

pub async fn run(g: &Global, a: &SnapshotsArgs) -> Result<u8, Failure> {
    // A target names its repository; an unknown one is an error listing
    // the configured ones (not "0 snapshots").
    let cfg = match &a.target {
        Some(_) => super::load_config(g)?,
        None => None,
    };
    let repo = match (&a.target, &cfg) {
        (Some(name), Some(cfg)) => {
            let t = super::find_target(cfg, name)?;
            super::open_repo_for(g, cfg, t).await?
        }
        _ => super::open_repo(g).await?,
    };
    let (all, bad) = repo.snapshots().await?;
    for (id, e) in &bad {
        tracing::warn!("snapshot {} cannot be read: {e}", id.short());
    }
    let list: Vec<_> = all
        .into_iter()
        .filter(|(_, s)| a.host.as_ref().is_none_or(|h| &s.hostname == h))
        .filter(|(_, s)| a.tag.as_ref().is_none_or(|t| s.tags.contains(t)))
        .filter(|(_, s)| a.target.as_ref().is_none_or(|t| s.target.as_ref() == Some(t)))
        .collect();
    if g.json {
        let v: Vec<_> = list
            .iter()
            .map(|(id, s)| {
                let mut j = serde_json::to_value(s).expect("snapshot serializes");
                j["id"] = serde_json::json!(id);
                j["short_id"] = serde_json::json!(id.short());
                j
            })
            .collect();
        print_json(&v);
    } else {
        crate::output::outln!(
            "{:<8}  {:<19}  {:<12}  {:>10}  {:<12}  {:<8}  paths",
            "id",
            "time",
            "host",
            "size",
            "target",
            "run"
        );
        for (id, s) in &list {
            crate::output::outln!(
                "{:<8}  {:<19}  {:<12}  {:>10}  {:<12}  {:<8}  {}",
                id.short(),
                s.time.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S"),
                s.hostname,
                human_bytes(s.summary.bytes),
                s.target.as_deref().unwrap_or("-"),
                s.run.map(|r| r.short()).unwrap_or_else(|| "-".into()),
                s.paths.join(" ")
            );
        }
        crate::output::outln!("{} snapshots", list.len());
    }
    Ok(if bad.is_empty() { 0 } else { crate::output::code::DAMAGE })
}
