//! Copies between repositories (`kura copy`, and a plan's `copy_to`): the
//! snapshots a request selects from one repository, copied into another
//! by `kura_repo::copy`, each reported as it is done.
use std::sync::Arc;

use kura_format::snapshot::Snapshot;
use kura_format::Id;
use kura_repo::copy::{copy, Copied, CopyOptions, CopyStats};
use kura_repo::Counters;
use serde::Serialize;

use crate::event::Event;
use crate::{Context, RepoSpec, Repos, RunError};

/// Which snapshots of the source to copy. Empty fields select everything.
#[derive(Clone, Debug, Default)]
pub struct CopyRequest {
    /// Snapshot ids or id prefixes.
    pub snapshots: Vec<String>,
    /// Only snapshots a run of this plan made.
    pub plan: Option<String>,
    pub targets: Vec<String>,
    pub host: Option<String>,
    /// Only these ids (a plan copies what its retention keeps).
    pub only: Option<Vec<Id>>,
}

/// One snapshot copied, or found already copied.
#[derive(Clone, Debug, Serialize)]
pub struct CopiedSnapshot {
    /// Its id in the source.
    pub source: Id,
    /// Its id in the destination.
    pub id: Id,
    pub target: Option<String>,
    pub time: chrono::DateTime<chrono::Utc>,
    /// Already in the destination: nothing was written.
    pub present: bool,
    pub stats: CopyStats,
}

#[derive(Debug, Serialize)]
pub struct CopyReport {
    pub from: String,
    pub to: String,
    pub copied: Vec<CopiedSnapshot>,
    /// What stopped the copy; what was copied before it stays.
    #[serde(serialize_with = "error_text")]
    pub error: Option<RunError>,
}

fn error_text<S: serde::Serializer>(e: &Option<RunError>, s: S) -> Result<S::Ok, S::Error> {
    match e {
        Some(e) => s.serialize_some(&e.to_string()),
        None => s.serialize_none(),
    }
}

impl CopyReport {
    pub fn new_copies(&self) -> usize {
        self.copied.iter().filter(|c| !c.present).count()
    }
}

/// A repository's name for messages: its config name, or its location.
pub fn label(spec: &RepoSpec) -> String {
    spec.name.clone().unwrap_or_else(|| spec.url.clone())
}

/// Copies what `req` selects from `from` to `to`. Errors opening either
/// repository or choosing snapshots are returned; a failure while copying
/// is in the report, after what was copied before it.
pub async fn copy_between(
    ctx: &Context,
    repos: &Repos,
    from: &RepoSpec,
    to: &RepoSpec,
    req: &CopyRequest,
) -> Result<CopyReport, RunError> {
    let src = repos.open(from).await?;
    let dst = repos.open(to).await?;
    let (all, bad) = src.snapshots().await?;
    for (id, e) in &bad {
        ctx.sink.event(Event::Warning {
            target: String::new(),
            message: format!(
                "snapshot {} of {} cannot be read and is not copied: {e}",
                id.short(),
                label(from)
            ),
        });
    }
    let wanted = select(all, req)?;
    let mut report = CopyReport { from: label(from), to: label(to), copied: Vec::new(), error: None };
    let times: std::collections::HashMap<Id, Snapshot> = wanted.iter().cloned().collect();
    let counters = Arc::new(Counters::default());
    ctx.sink.event(Event::TargetStarted {
        target: report.to.clone(),
        what: "copy",
        counters: counters.clone(),
    });
    let (from_name, to_name) = (report.from.clone(), report.to.clone());
    let mut on_done = |c: &Copied| {
        let s = &times[&c.source()];
        let copied = CopiedSnapshot {
            source: c.source(),
            id: c.id(),
            target: s.target.clone(),
            time: s.time,
            present: matches!(c, Copied::Present { .. }),
            stats: match c {
                Copied::New { stats, .. } => stats.clone(),
                Copied::Present { .. } => CopyStats::default(),
            },
        };
        ctx.sink.event(Event::Copied {
            from: from_name.clone(),
            to: to_name.clone(),
            copied: copied.clone(),
        });
        report.copied.push(copied);
    };
    let opts = CopyOptions { hostname: ctx.hostname.clone() };
    let run = copy(&src, &dst, wanted, &opts, counters, &mut on_done).await;
    ctx.sink.event(Event::TargetFinished { target: report.to.clone() });
    match run {
        Ok(run) => {
            if let Some((id, e)) = run.failed {
                report.error = Some(RunError::Context {
                    context: format!("copying snapshot {}", id.short()),
                    source: Box::new(e.into()),
                });
            }
        }
        Err(e) => report.error = Some(e.into()),
    }
    Ok(report)
}

/// The snapshots `req` selects, oldest first.
fn select(all: Vec<(Id, Snapshot)>, req: &CopyRequest) -> Result<Vec<(Id, Snapshot)>, RunError> {
    let mut picked: Vec<(Id, Snapshot)> = Vec::new();
    for prefix in &req.snapshots {
        let p = prefix.to_ascii_lowercase();
        let matches: Vec<&(Id, Snapshot)> =
            all.iter().filter(|(id, _)| id.to_hex().starts_with(&p)).collect();
        match matches.as_slice() {
            [one] => picked.push((*one).clone()),
            [] => {
                return Err(RunError::NoSnapshot {
                    message: format!("no snapshot of the source matches {prefix:?}"),
                    hint: "`kura snapshots --repo FROM` lists them".into(),
                })
            }
            _ => {
                return Err(RunError::usage(format!(
                    "{prefix:?} matches several snapshots; type more of the id"
                )))
            }
        }
    }
    let by_id = !req.snapshots.is_empty();
    let pool = if by_id { picked } else { all };
    Ok(pool
        .into_iter()
        .filter(|(_, s)| req.plan.is_none() || s.plan == req.plan)
        .filter(|(_, s)| req.targets.is_empty() || s.target.as_ref().is_some_and(|t| req.targets.contains(t)))
        .filter(|(_, s)| req.host.as_ref().is_none_or(|h| *h == s.hostname))
        .filter(|(id, _)| req.only.as_ref().is_none_or(|o| o.contains(id)))
        .collect())
}
