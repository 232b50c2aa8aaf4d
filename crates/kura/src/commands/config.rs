//! `kura config check`: every problem of kura.toml at once, each with its
//! line and column and what to do (`kura_policy::check`), where loading
//! stops at the first.
use kura_policy::Severity;

use crate::cli::{ConfigCommand, Global};
use crate::output::{code, outln, print_json, say, Failure};

pub fn run(g: &Global, c: &ConfigCommand) -> Result<u8, Failure> {
    match c {
        ConfigCommand::Check => check(g),
    }
}

fn check(g: &Global) -> Result<u8, Failure> {
    let path = super::config_path(g).ok_or_else(|| {
        Failure::new("no config file found").hint("pass --config, set KURA_CONFIG, or create ./kura.toml")
    })?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Failure::new(format!("cannot read {}: {e}", path.display())))?;
    let env = |k: &str| std::env::var(k).ok();
    let now = super::clock().now().with_timezone(&chrono::Local).naive_local();
    let problems = kura_policy::check(&text, &path.display().to_string(), &env, now);
    let errors = problems.iter().filter(|p| p.severity == Severity::Error).count();
    let exit = if errors > 0 { code::FAILED } else { code::OK };
    if g.json {
        print_json(&serde_json::json!({ "ok": errors == 0, "problems": problems }));
        return Ok(exit);
    }
    for p in &problems {
        let at = match (p.line, p.column) {
            (Some(l), Some(c)) => format!("{}:{l}:{c}", path.display()),
            (Some(l), None) => format!("{}:{l}", path.display()),
            _ => path.display().to_string(),
        };
        let level = match p.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let place = p.place.as_deref().map(|pl| format!("{pl}: ")).unwrap_or_default();
        outln!("{at}: {level}: {place}{}", p.message);
        if let Some(h) = &p.hint {
            outln!("  hint: {h}");
        }
    }
    let warnings = problems.len() - errors;
    if problems.is_empty() {
        say(g, format!("{}: no problems", path.display()));
    } else {
        say(g, format!("{}: {errors} error(s), {warnings} warning(s)", path.display()));
    }
    Ok(exit)
}
