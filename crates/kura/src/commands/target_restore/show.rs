//! A restore plan, printed for the user to confirm.
use chrono::Local;
use kura_policy::TargetKind;
use kura_runner::restore::{RestorePlan, RestoreRequest};

use crate::cli::Global;
use crate::output::{human_bytes, say};

/// The hooks a restore would run, for `--json`: what the text plan says.
pub(super) fn hooks_json(req: &RestoreRequest, p: &RestorePlan) -> serde_json::Value {
    serde_json::json!({
        "run": req.runs_hooks(),
        "pre_restore": p.target.pre_restore,
        "post_restore": p.target.post_restore,
    })
}

pub(super) fn show_plan(g: &Global, req: &RestoreRequest, p: &RestorePlan) {
    let (t, snap) = (&p.target, &p.snapshot);
    let taken = snap.time.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S");
    say(g, format!("restore plan for target {} ({}):", t.name, t.kind.type_name()));
    say(
        g,
        format!(
            "  from snapshot {} taken {taken} on {} ({})",
            p.id.short(),
            snap.hostname,
            human_bytes(snap.summary.bytes)
        ),
    );
    for line in &p.steps {
        say(g, format!("  {line}"));
    }
    if p.keep_old && req.into.is_none() && matches!(t.kind, TargetKind::Sqlite(_) | TargetKind::Files(_)) {
        say(g, "  the replaced copy is kept as NAME.bak-YYYYMMDD_HHMM beside it");
    }
    if req.runs_hooks() {
        if let Some(h) = &t.pre_restore {
            say(g, format!("  before: {h}"));
        }
        if let Some(h) = &t.post_restore {
            say(g, format!("  after: {h} (also after a failure or an interruption)"));
        }
    } else if t.pre_restore.is_some() || t.post_restore.is_some() {
        say(g, "  hooks: not run for a copy beside the live data (--hooks runs them)");
    }
}
