//! `kura forget SNAPSHOT…`: removes snapshots; `--keep-daily 7 …` removes
//! what a retention policy does not keep (`--dry-run` shows each snapshot
//! with the rule that keeps it); `--prune` reclaims the space at once.
use chrono::Local;
use kura_format::Id;
use kura_policy::retention::Keep;
use kura_runner::retention::{self, Scope, Verdict};

use crate::cli::{ForgetArgs, Global, PruneArgs};
use crate::output::{print_json, say, Failure};

/// The rules: the command line's, over the plan's when --plan names one.
fn keep(a: &ForgetArgs, base: Keep) -> Result<Keep, Failure> {
    Ok(Keep {
        last: a.keep_last.or(base.last),
        hourly: a.keep_hourly.or(base.hourly),
        daily: a.keep_daily.or(base.daily),
        weekly: a.keep_weekly.or(base.weekly),
        monthly: a.keep_monthly.or(base.monthly),
        yearly: a.keep_yearly.or(base.yearly),
        within: match a.keep_within.as_deref() {
            Some(w) => Some(super::parse_duration(w)?),
            None => base.within,
        },
    })
}

pub async fn run(g: &Global, a: &ForgetArgs) -> Result<u8, Failure> {
    let mut scope = Scope { targets: a.targets.clone(), host: a.host.clone(), ..Scope::default() };
    // A plan's targets are judged in their own repository.
    let mut repo = None;
    let keep = match &a.plan {
        None => keep(a, Keep::default())?,
        Some(name) => {
            let cfg = super::require_config(g)?;
            let plan = cfg.plans.get(name).ok_or_else(|| {
                Failure::new(format!("no plan named {name:?} in kura.toml"))
                    .hint("a plan is a [plan.NAME] section with schedule, targets and keep")
            })?;
            scope.targets = plan.targets.clone();
            scope.plan = Some(name.clone());
            scope.zone = plan.zone.clone();
            // --repo picks one of the plan's repositories (a copy_to one,
            // say); else where the plan writes.
            repo = Some(match (&g.repo, &plan.repository) {
                (Some(_), _) => super::open_repo(g).await?,
                (None, Some(r)) => super::open_named(g, &cfg, r).await?,
                (None, None) => {
                    super::open_repo_for(g, &cfg, super::find_target(&cfg, &plan.targets[0])?).await?
                }
            });
            // What `kura run` of the plan would judge: this host's.
            scope.host = Some(a.host.clone().unwrap_or_else(super::hostname));
            let k = keep(a, plan.keep)?;
            if k.is_empty() {
                return Err(Failure::new(format!("plan {name} keeps every snapshot (it has no keep rules)"))
                    .hint("give --keep-* rules to preview some"));
            }
            k
        }
    };
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
    let repo = match repo {
        Some(r) => r,
        None => super::open_repo(g).await?,
    };
    let started = repo.now();
    let ids = if by_policy {
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
    super::record_operation(kura_runner::history::Operation {
        kind: "forget",
        repository: repo.store().location(),
        started,
        finished: repo.now(),
        status: "ok",
        forgotten: ids.len() as u64,
        bytes_pruned: 0,
        errors: Vec::new(),
    });
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
