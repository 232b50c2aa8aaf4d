//! `kura dump`: one file of a snapshot, or a target's whole dump, to stdout.
use kura_policy::TargetKind;

use crate::cli::{DumpArgs, Global};
use crate::output::Failure;

pub async fn run(g: &Global, a: &DumpArgs) -> Result<u8, Failure> {
    let Some(name) = &a.target else {
        let (Some(snapshot), Some(path)) = (&a.snapshot, &a.path) else {
            return Err(Failure::new("dump needs a snapshot and a path, or --target NAME")
                .hint("`kura dump latest db.sql`, or `kura dump --target shop_db | mariadb shop`"));
        };
        let repo = super::open_repo(g).await?;
        let (_, snap) = repo.find_snapshot(snapshot).await?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
        kura_repo::restore::dump(&repo, snap.tree, path, &mut out).await?;
        return Ok(0);
    };
    let cfg = super::require_config(g)?;
    let t = super::find_target(&cfg, name)?;
    let repo = super::open_repo_for(g, &cfg, t).await?;
    let mine = kura_runner::select::snapshots_of(&repo, t, None).await?;
    let wanted = a.snapshot.as_deref().unwrap_or("latest").to_ascii_lowercase();
    let found = if wanted == "latest" {
        mine.last()
    } else {
        mine.iter().rev().find(|(id, _)| id.to_hex().starts_with(&wanted))
    };
    let (_, snap) = found.ok_or_else(|| {
        Failure::new(format!("target {name} has no snapshot {wanted}"))
            .hint(format!("`kura snapshots --target {name}` lists them"))
    })?;
    let files: Vec<String> = match (&a.path, &t.kind) {
        (Some(p), _) => vec![p.clone()],
        (None, TargetKind::Mysql(_)) => kura_sources::mysql::dump_order(&snap.paths),
        (None, TargetKind::Postgres(_)) => {
            let dumps: Vec<&String> = snap.paths.iter().filter(|p| p.ends_with(".pgdump")).collect();
            if snap.paths.iter().any(|p| p.contains(".parts/")) {
                return Err(Failure::new(
                    "this dump was made in parts (jobs > 1); no single archive holds it all",
                )
                .hint(format!("restore it with `kura restore --target {name} --into NEW_DATABASE`")));
            }
            match dumps[..] {
                [one] => vec![one.clone()],
                _ => {
                    return Err(Failure::new(format!(
                        "snapshot holds {} databases: name one ({})",
                        dumps.len(),
                        dumps.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(", ")
                    ))
                    .hint(format!("`kura dump --target {name} latest DB.pgdump | pg_restore -d DB`")))
                }
            }
        }
        (None, TargetKind::Sqlite(_)) => {
            kura_sources::sqlite::database_file(&snap.paths).map(str::to_string).into_iter().collect()
        }
        (None, TargetKind::Command(_)) => snap.paths.first().cloned().into_iter().collect(),
        (None, _) => {
            return Err(Failure::new(format!("target {name} holds many files: name one")).hint(format!(
                "`kura ls SNAPSHOT` lists them; `kura restore --target {name} --into DIR` writes them all"
            )))
        }
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
    kura_repo::restore::dump_files(&repo, snap.tree, &files, &mut out).await?;
    use std::io::Write;
    out.flush().map_err(|e| Failure::new(format!("writing to stdout: {e}")))?;
    Ok(0)
}
