//! Retention applied to a repository: its snapshots grouped by host and
//! target (or paths), each group judged by `kura_policy::retention`, and
//! what no rule keeps forgotten.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kura_format::Id;
use kura_policy::retention::{decide, Keep, Reason};
use kura_repo::Repository;
use serde::Serialize;

use crate::RunError;

/// One snapshot's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub id: Id,
    pub time: DateTime<Utc>,
    pub host: String,
    /// The target, or the snapshot's paths for a path backup.
    pub group: String,
    /// Why it stays; empty when it goes.
    #[serde(serialize_with = "reasons_as_text")]
    pub reasons: Vec<Reason>,
}

impl Verdict {
    pub fn kept(&self) -> bool {
        !self.reasons.is_empty()
    }
}

fn reasons_as_text<S: serde::Serializer>(r: &[Reason], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(r.iter().map(ToString::to_string))
}

/// Which snapshots to judge.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Only these targets (none: every snapshot).
    pub targets: Vec<String>,
    pub host: Option<String>,
    /// Only snapshots this plan's runs made (format.md §11).
    pub plan: Option<String>,
    /// The wall clock days, weeks and months are counted on (the plan's).
    pub zone: kura_policy::zone::Zone,
}

/// Every snapshot in scope with its verdict, groups in name order, newest
/// first within a group. Changes nothing.
pub async fn judge(repo: &Repository, keep: &Keep, scope: &Scope) -> Result<Vec<Verdict>, RunError> {
    let (snaps, bad) = repo.snapshots().await?;
    if let Some((id, e)) = bad.first() {
        // An unreadable snapshot might be a group's newest: judging the
        // rest without it could forget what is in fact the last good one.
        return Err(RunError::usage_hint(
            format!(
                "snapshot {} cannot be read ({e}); retention will not judge a list it cannot see whole",
                id.short()
            ),
            "`kura verify` shows what is damaged; forget the damaged snapshot by its id first",
        ));
    }
    // (host, target or paths) → its snapshots.
    type Groups = BTreeMap<(String, String), Vec<(Id, DateTime<Utc>)>>;
    let mut groups = Groups::new();
    for (id, s) in snaps {
        let group = s.target.clone().unwrap_or_else(|| s.paths.join(" "));
        if !scope.targets.is_empty() && !s.target.as_ref().is_some_and(|t| scope.targets.contains(t)) {
            continue;
        }
        if scope.host.as_ref().is_some_and(|h| *h != s.hostname) {
            continue;
        }
        if scope.plan.is_some() && scope.plan != s.plan {
            continue;
        }
        groups.entry((s.hostname.clone(), group)).or_default().push((id, s.time));
    }
    let local = |t: DateTime<Utc>| scope.zone.local(t);
    let mut out = Vec::new();
    for ((host, group), mut members) in groups {
        members.sort_by_key(|m| std::cmp::Reverse(m.1));
        let times: Vec<DateTime<Utc>> = members.iter().map(|(_, t)| *t).collect();
        let reasons = decide(&times, keep, &local);
        for ((id, time), reasons) in members.into_iter().zip(reasons) {
            out.push(Verdict { id, time, host: host.clone(), group: group.clone(), reasons });
        }
    }
    Ok(out)
}

/// Forgets the snapshots `verdicts` do not keep; returns them.
pub async fn apply(repo: &Repository, verdicts: &[Verdict]) -> Result<Vec<Id>, RunError> {
    let gone: Vec<Id> = verdicts.iter().filter(|v| !v.kept()).map(|v| v.id).collect();
    if !gone.is_empty() {
        kura_repo::prune::forget(repo, &gone).await?;
    }
    Ok(gone)
}
