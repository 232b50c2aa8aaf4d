//! `kura drp [--format markdown|html] [--output F]`: the disaster-recovery
//! plan for this config, generated (`kura_monitor::drp`).
use crate::cli::{DrpArgs, Global};
use crate::output::{code, Failure};

pub fn run(g: &Global, a: &DrpArgs) -> Result<u8, Failure> {
    let cfg = super::require_config(g)?;
    let path = super::config_path(g).ok_or_else(|| Failure::new("no config file found"))?;
    // Absolute, so that every command printed runs from anywhere.
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    let ctx = super::context(g)?;
    let md = kura_monitor::drp::markdown(&cfg, &path, &super::state_dir(), ctx.clock.now(), &ctx.hostname)
        .map_err(|e| Failure::new(e.to_string()))?;
    let text = match a.format.as_str() {
        "markdown" | "md" => md,
        "html" => kura_monitor::report::page(
            &format!("Disaster-recovery plan: {}", ctx.hostname),
            &kura_monitor::report::md_to_html(&md),
        ),
        other => return Err(Failure::new(format!("--format {other}: use markdown or html"))),
    };
    match &a.output {
        Some(p) => {
            std::fs::write(p, text).map_err(|e| Failure::new(format!("cannot write {}: {e}", p.display())))?
        }
        None => print!("{text}"),
    }
    Ok(code::OK)
}
