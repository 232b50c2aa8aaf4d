//! `kura copy --from A --to B [--plan P | SNAPSHOT…]`: snapshots copied to
//! another repository (`kura_runner::copy`): resealed under its key, only
//! what it lacks written, each checked there before it becomes visible; a
//! snapshot copied before is found, not copied again, so an interrupted
//! copy is finished by running the same command.
use kura_runner::copy::{copy_between, CopyRequest};
use kura_runner::password::Source;

use crate::cli::{CopyArgs, Global};
use crate::output::{code, human_bytes, print_json, say, Failure};

pub async fn run(g: &Global, a: &CopyArgs) -> Result<u8, Failure> {
    let cfg = super::load_config(g)?;
    let plan = match &a.plan {
        Some(name) => Some(cfg.as_ref().and_then(|c| c.plans.get(name)).ok_or_else(|| {
            Failure::new(format!("no plan named {name:?} in kura.toml"))
                .hint("a plan is a [plan.NAME] section with schedule and targets")
        })?),
        None => None,
    };
    let from_text = match (&a.from, &g.repo, plan) {
        (Some(f), _, _) => f.clone(),
        (None, Some(r), _) => r.clone(),
        (None, None, Some(p)) => match &p.repository {
            Some(r) => r.clone(),
            None => {
                let c = cfg.as_ref().expect("a plan comes from a config");
                let r = super::find_target(c, &p.targets[0])?.repository.clone();
                if r.is_empty() {
                    return Err(
                        Failure::new("the plan's targets name no repository").hint("give --from NAME")
                    );
                }
                r
            }
        },
        (None, None, None) => {
            return Err(Failure::new("copy needs the repository to copy from")
                .hint("--from NAME (a repository of kura.toml) or --from PATH/URL"))
        }
    };
    let from = super::spec_of(cfg.as_ref(), &from_text)?;
    let mut to = super::spec_of(cfg.as_ref(), &a.to)?;
    if let Some(p) = &a.to_password_file {
        to.passwords.insert(0, Source::File { path: p.clone(), from: "--to-password-file".into() });
    }
    if from.url == to.url {
        return Err(Failure::new(format!("--from and --to are the same repository ({})", to.url)));
    }
    let ctx = super::context(g)?;
    let repos = super::repos(g, cfg.as_ref())?;
    let req = CopyRequest {
        snapshots: a.snapshots.clone(),
        plan: a.plan.clone(),
        targets: plan
            .map(|p| p.targets.clone())
            .unwrap_or_default()
            .into_iter()
            .chain(a.targets.clone())
            .collect(),
        host: a.host.clone(),
        only: None,
    };
    let started = ctx.clock.now();
    let report = copy_between(&ctx, &repos, &from, &to, &req).await?;
    // As `kura run` does: a history that cannot be written loses no copy.
    kura_runner::history::note(&super::state_dir().join("history.db"), |h| {
        h.record_copy(&report, started, ctx.clock.now())
    });
    let new = report.new_copies();
    let exit = if report.error.is_some() { code::FAILED } else { code::OK };
    if g.json {
        print_json(&serde_json::json!({ "copy": report, "exit_code": exit }));
    } else {
        let bytes: u64 = report.copied.iter().map(|c| c.stats.bytes_new).sum();
        say(
            g,
            format!(
                "copied {new} snapshot(s) from {} to {} ({} new there); {} already there",
                report.from,
                report.to,
                human_bytes(bytes),
                report.copied.len() - new
            ),
        );
    }
    if let Some(e) = report.error {
        let f = Failure::from(e);
        return Err(match f.hint {
            Some(_) => f,
            None => f.hint("what was copied before stays; run the same command again to finish"),
        });
    }
    Ok(exit)
}
