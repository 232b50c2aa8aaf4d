//! `kura report [--since 30d] [--format markdown|json|html] [--output F]`:
//! storage, growth and cost per repository; success rate, sizes, what
//! deduplication and compression saved, and run-time trend per plan; from
//! this machine's run history.
use crate::cli::{Global, ReportArgs};
use crate::output::{code, Failure};

pub fn run(g: &Global, a: &ReportArgs) -> Result<u8, Failure> {
    let cfg = super::require_config(g)?;
    let since = kura_policy::parse_duration(&a.since).map_err(|e| Failure::new(format!("--since: {e}")))?;
    let since = chrono::Duration::from_std(since).map_err(|_| Failure::new("--since: too long"))?;
    let report = kura_monitor::report::build(&cfg, &super::state_dir(), since, super::clock().now())
        .map_err(|e| Failure::new(e.to_string()))?;
    let format = if g.json { "json" } else { a.format.as_str() };
    let text = match format {
        "markdown" | "md" => kura_monitor::report::markdown(&report),
        "json" => serde_json::to_string_pretty(&report).expect("serializable") + "\n",
        "html" => kura_monitor::report::html(&report),
        other => {
            return Err(Failure::new(format!("--format {other}: use markdown, json or html")));
        }
    };
    match &a.output {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| Failure::new(format!("cannot write {}: {e}", path.display())))?,
        None => print!("{text}"),
    }
    Ok(code::OK)
}
