//! Which snapshot of a target a restore uses, and which run a component
//! restore uses.
use chrono::{DateTime, Local, Utc};
use kura_format::snapshot::Snapshot;
use kura_format::Id;
use kura_policy::Target;
use kura_repo::{RepoError, Repository};

use crate::RunError;

/// A snapshot as a user names it.
#[derive(Clone, Debug)]
pub enum Selector {
    /// The newest, and never an older one in silence: an unreadable
    /// snapshot newer than it stops the restore.
    Latest,
    /// The target's snapshot of a run (an id prefix).
    Run(String),
    /// The newest at or before a time; `text` is how the user wrote it.
    At { time: DateTime<Utc>, text: String },
    /// A snapshot id prefix.
    Id(String),
}

/// A target's snapshots, oldest first, and the repository's unreadable
/// ones (whose target cannot be known).
pub async fn snapshots_and_damage(
    repo: &Repository,
    t: &Target,
    plan: Option<&str>,
) -> Result<(Vec<(Id, Snapshot)>, Vec<(Id, RepoError)>), RunError> {
    let (all, bad) = repo.snapshots().await?;
    Ok((
        all.into_iter()
            .filter(|(_, s)| s.target.as_deref() == Some(t.name.as_str()))
            .filter(|(_, s)| plan.is_none() || s.plan.as_deref() == plan)
            .collect(),
        bad,
    ))
}

/// A target's snapshots, oldest first; only those a run of `plan` made
/// when one is given.
pub async fn snapshots_of(
    repo: &Repository,
    t: &Target,
    plan: Option<&str>,
) -> Result<Vec<(Id, Snapshot)>, RunError> {
    Ok(snapshots_and_damage(repo, t, plan).await?.0)
}

/// The snapshot of `target` that `selector` names.
pub async fn pick(
    repo: &Repository,
    target: &Target,
    selector: &Selector,
    plan: Option<&str>,
) -> Result<(Id, Snapshot), RunError> {
    let (mine, bad) = snapshots_and_damage(repo, target, plan).await?;
    if matches!(selector, Selector::Latest) {
        repo.refuse_newer_damage(mine.last().map(|(_, s)| s.time), &bad).await?;
    }
    select(&target.name, selector, mine)
}

/// "the earliest is 2025-10-05 02:30 (run 9c3e1a2b)", for when nothing is
/// as old as asked.
pub fn earliest_note(snaps: &[(Id, Snapshot)]) -> String {
    match snaps.iter().min_by_key(|(_, s)| s.time) {
        Some((id, s)) => format!(
            "the earliest is {} ({})",
            s.time.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S"),
            s.run.map(|r| format!("run {}", r.short())).unwrap_or_else(|| format!("snapshot {}", id.short()))
        ),
        None => "there is none yet".to_string(),
    }
}

pub fn select(
    target: &str,
    selector: &Selector,
    mine: Vec<(Id, Snapshot)>,
) -> Result<(Id, Snapshot), RunError> {
    let hint = format!("`kura snapshots --target {target}` lists them");
    let none = |what: String| RunError::NoSnapshot {
        message: format!("no snapshot of target {target} {what}"),
        hint: hint.clone(),
    };
    match selector {
        Selector::Id(p) => {
            let p = p.to_ascii_lowercase();
            mine.into_iter()
                .find(|(id, _)| id.to_hex().starts_with(&p))
                .ok_or_else(|| none(format!("has id {p}")))
        }
        Selector::Run(r) => {
            let r = r.to_ascii_lowercase();
            mine.into_iter()
                .rev()
                .find(|(_, s)| s.run.is_some_and(|run| run.to_hex().starts_with(&r)))
                .ok_or_else(|| none(format!("belongs to run {r}")))
        }
        Selector::At { time, text } => {
            let note = earliest_note(&mine);
            mine.into_iter().rev().find(|(_, s)| s.time <= *time).ok_or_else(|| RunError::NoSnapshot {
                message: format!(
                    "no snapshot of target {target} was taken by {text} ({}); {note}",
                    time.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S")
                ),
                hint: hint.clone(),
            })
        }
        Selector::Latest => mine.into_iter().last().ok_or_else(|| none("exists yet".into())),
    }
}

/// The run a component restore uses: the newest one with any of the
/// targets' snapshots that `selector` allows.
pub fn run_of(
    component: &str,
    selector: &Selector,
    snaps: &[&[(Id, Snapshot)]],
) -> Result<(Id, DateTime<Utc>), RunError> {
    let (want, at) = match selector {
        Selector::Run(r) => (Some(r.to_ascii_lowercase()), None),
        Selector::At { time, .. } => (None, Some(*time)),
        _ => (None, None),
    };
    snaps
        .iter()
        .flat_map(|s| s.iter())
        .filter_map(|(_, s)| s.run.map(|r| (r, s.time)))
        .filter(|(r, t)| {
            want.as_ref().is_none_or(|w| r.to_hex().starts_with(w)) && at.is_none_or(|at| *t <= at)
        })
        .max_by_key(|(_, t)| *t)
        .ok_or_else(|| {
            let all: Vec<(Id, Snapshot)> = snaps.iter().flat_map(|s| s.iter().cloned()).collect();
            RunError::NoSnapshot {
                message: format!("no run of component {component} matches; {}", earliest_note(&all)),
                hint: "`kura snapshots` lists runs and their targets".into(),
            }
        })
}
