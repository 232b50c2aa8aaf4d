//! `kura forget SNAPSHOT…`: removes snapshots; `--keep-daily 7 …` removes
//! what a retention policy does not keep (`--dry-run` shows each snapshot
//! with the rule that keeps it); `--prune` reclaims the space at once.
use chrono::Local;
use kura_format::Id;
use kura_policy::retention::Keep;
use kura_runner::retention::{self, Scope, Verdict};

use crate::cli::{ForgetArgs, Global, PruneArgs};
use crate::output::{print_json, say, Failure};

fn keep(a: &ForgetArgs) -> Result<Keep, Failure> {
    Ok(Keep {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within: a.keep_within.as_deref().map(super::parse_duration).transpose()?,
    })
}

pub async fn run(g: &Global, a: &ForgetArgs) -> Result<u8, Failure> {
    let keep = keep(a)?;
    let by_policy = !keep.is_empty();
    match (a.snapshots.is_empty(), by_policy) {
        (true, false) => {
            return Err(Failure::new("forget needs snapshot ids, or --keep-* rules")
                .hint("e.g. kura forget --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --dry-run"))
        }
        (false, true) => return Err(Failure::new("give snapshot ids or --keep-* rules, not both")),
        _ => {}
    }
    if !by_policy && (a.dry_run || !a.targets.is_empty() || a.host.is_some()) {
        return Err(Failure::new("--dry-run, --target and --host go with --keep-* rules"));
    }
    let repo = super::open_repo(g).await?;
    let ids = if by_policy {
        let scope = Scope { targets: a.targets.clone(), host: a.host.clone() };
        let verdicts = retention::judge(&repo, &keep, &scope).await?;
        show(g, &verdicts, a.dry_run);
        if a.dry_run {
            if g.json {
                print_json(&serde_json::json!({ "snapshots": verdicts, "dry_run": true }));
            }
            return Ok(0);
        }
        retention::apply(&repo, &verdicts).await?
    } else {
        let mut ids: Vec<Id> = Vec::new();
        for spec in &a.snapshots {
            ids.push(repo.find_snapshot(spec).await?.0);
        }
        kura_repo::prune::forget(&repo, &ids).await?;
        ids
    };
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

/// Each group, newest first: every snapshot kept (with its rules) or
/// removed.
fn show(g: &Global, verdicts: &[Verdict], dry_run: bool) {
    let mut group: Option<(&str, &str)> = None;
    for v in verdicts {
        if group != Some((&v.host, &v.group)) {
            say(g, format!("{} on {}:", v.group, v.host));
            group = Some((&v.host, &v.group));
        }
        let what = if v.kept() {
            format!("keep    {}", v.reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
        } else if dry_run {
            "would remove".to_string()
        } else {
            "remove".to_string()
        };
        say(
            g,
            format!("  {}  {}  {what}", v.time.with_timezone(&Local).format("%Y-%m-%d %H:%M"), v.id.short()),
        );
    }
    let gone = verdicts.iter().filter(|v| !v.kept()).count();
    say(
        g,
        format!(
            "{} kept, {} {}",
            verdicts.len() - gone,
            gone,
            if dry_run { "would be removed" } else { "removed" }
        ),
    );
}
