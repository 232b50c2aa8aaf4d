//! The copies in-place restores moved aside, by target, and the target's
//! rule for which of them stay (`kept_last`, `kept_within`).
use chrono::Local;
use kura_policy::{Target, TargetKind};
use kura_sources::kept::{self, Kept};

use crate::event::Event;
use crate::{Context, RunError};

/// The kept copies of one target, oldest first. Command and object-store
/// targets keep none that kura can list.
pub fn of_target(t: &Target) -> Result<Vec<Kept>, RunError> {
    Ok(match &t.kind {
        TargetKind::Sqlite(s) => kept::of_paths(std::slice::from_ref(&s.path))?,
        TargetKind::Files(f) => kept::of_paths(&f.paths)?,
        TargetKind::Postgres(pg) => {
            let url = kura_sources::postgres::PgUrl::parse(&pg.url)?;
            let dbs = if pg.databases.is_empty() {
                vec![url.dbname.clone()]
            } else {
                kura_sources::postgres::databases_of(&url, &pg.databases)?
            };
            kept::of_postgres(&url, &dbs)?
        }
        TargetKind::Mysql(my) => kept::of_mysql(&my.url)?,
        _ => Vec::new(),
    })
}

/// After an in-place restore: removes the target's kept copies its
/// `kept_last` / `kept_within` let go (none when neither is set).
pub fn apply_policy(ctx: &Context, t: &Target) -> Result<Vec<String>, RunError> {
    if t.kept.last.is_none() && t.kept.within.is_none() {
        return Ok(Vec::new());
    }
    let all = of_target(t)?;
    let now = ctx.clock.now().with_timezone(&Local).naive_local();
    let mut removed = Vec::new();
    for k in kept::to_remove(&all, t.kept.last, t.kept.within, now) {
        kept::remove(&k)
            .map_err(|e| RunError::from(e).context(format!("removing the kept copy {}", k.name())))?;
        ctx.sink.event(Event::KeptRemoved { target: t.name.clone(), name: k.name() });
        removed.push(k.name());
    }
    Ok(removed)
}
