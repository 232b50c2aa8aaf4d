//! `kura doctor`: a pre-flight check of kura.toml and everything it names,
//! one line per check (OK, WARN, FAIL, with a hint), exit 1 on any FAIL
//! (`kura_runner::doctor`).
use kura_runner::doctor::{Finding, Verdict};

use crate::cli::Global;
use crate::output::{code, outln, print_json, Failure};

pub async fn run(g: &Global) -> Result<u8, Failure> {
    let path = super::config_path(g).ok_or_else(|| {
        Failure::new("no config file found").hint("pass --config, set KURA_CONFIG, or create ./kura.toml")
    })?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Failure::new(format!("cannot read {}: {e}", path.display())))?;
    let mut findings = Vec::new();
    let env = |k: &str| std::env::var(k).ok();
    let now = super::clock().now().with_timezone(&chrono::Local).naive_local();
    let problems = kura_policy::check(&text, &path.display().to_string(), &env, now);
    for p in &problems {
        findings.push(Finding {
            verdict: if p.severity == kura_policy::Severity::Error { Verdict::Fail } else { Verdict::Warn },
            check: format!("config {}", p.place.as_deref().unwrap_or("")).trim_end().to_string(),
            detail: p.message.clone(),
            hint: p.hint.clone(),
        });
    }
    if problems.is_empty() {
        findings.push(Finding {
            verdict: Verdict::Ok,
            check: "config".into(),
            detail: format!("{} is valid", path.display()),
            hint: None,
        });
    }
    let secrets = kura_policy::literal_secrets(&text);
    if !secrets.is_empty() {
        let mut f = kura_runner::doctor::secret_file("config file", &path);
        if f.verdict == Verdict::Warn {
            // A password in a file others can read is as good as public.
            f.verdict = Verdict::Fail;
            f.detail = format!("{}, and holds a secret at {}", f.detail, secrets.join(", "));
        }
        findings.push(f);
    }
    if !problems.iter().any(|p| p.severity == kura_policy::Severity::Error) {
        let cfg = super::require_config(g)?;
        let ctx = super::context(g)?;
        let repos = super::repos(g, Some(&cfg))?;
        findings.extend(kura_runner::doctor::examine(&ctx, &repos, &cfg, &super::state_dir()).await);
    }
    let failed = findings.iter().any(|f| f.verdict == Verdict::Fail);
    if g.json {
        print_json(&findings);
    } else {
        for f in &findings {
            let tag = match f.verdict {
                Verdict::Ok => "OK  ",
                Verdict::Warn => "WARN",
                Verdict::Fail => "FAIL",
            };
            outln!("{tag}  {}: {}", f.check, f.detail);
            if let (Some(h), false) = (&f.hint, f.verdict == Verdict::Ok) {
                outln!("      hint: {h}");
            }
        }
    }
    Ok(if failed { code::FAILED } else { code::OK })
}
