//! `kura schedule --cron | --systemd`: the plans of kura.toml as crontab
//! lines or systemd units, for users who keep their own scheduler. Each
//! runs `kura run PLAN` with this binary and this config, by absolute path.
use crate::cli::{Global, ScheduleArgs};
use crate::output::{outln, Failure};

pub fn run(g: &Global, a: &ScheduleArgs) -> Result<u8, Failure> {
    let cfg = super::require_config(g)?;
    let config = super::config_path(g).expect("a config was loaded");
    let config =
        std::path::absolute(&config).map_err(|e| Failure::new(format!("{}: {e}", config.display())))?;
    let exe = std::env::current_exe().map_err(|e| Failure::new(format!("cannot tell where kura is: {e}")))?;
    let plans: Vec<&kura_policy::Plan> = match &a.plan {
        Some(p) => {
            vec![cfg.plans.get(p).ok_or_else(|| Failure::new(format!("no plan named {p:?} in kura.toml")))?]
        }
        None => cfg.plans.values().collect(),
    };
    if plans.is_empty() {
        return Err(Failure::new("kura.toml has no plans")
            .hint("a plan is a [plan.NAME] section with schedule and targets"));
    }
    let command = |p: &kura_policy::Plan| {
        format!(
            "{} --config {} run {}",
            shell_quote(&exe.display().to_string()),
            shell_quote(&config.display().to_string()),
            p.name
        )
    };
    if a.cron {
        if let Some(p) = plans.iter().find(|p| p.zone.name().is_some()) {
            return Err(Failure::new(format!(
                "plan {} runs on {}'s clock; cron runs every line on the machine's",
                p.name,
                p.zone.name().unwrap_or_default()
            ))
            .hint("use --systemd (OnCalendar takes a zone), or run the plans with `kura serve`"));
        }
        if let Some(p) = plans.iter().find(|p| p.schedule.has_seconds()) {
            return Err(Failure::new(format!(
                "plan {} fires at seconds ({:?}); cron counts whole minutes",
                p.name,
                p.schedule.text()
            ))
            .hint("use --systemd, or run the plans with `kura serve`"));
        }
        outln!(
            "# kura plans, from {} (install with: crontab -e, or into /etc/cron.d/kura with a user field)",
            config.display()
        );
        for p in plans {
            outln!("{} {}", p.schedule.text(), command(p));
        }
        return Ok(0);
    }
    for p in plans {
        outln!("# /etc/systemd/system/kura-{}.service", p.name);
        outln!(
            "[Unit]\nDescription=kura plan {}\nWants=network-online.target\nAfter=network-online.target\n",
            p.name
        );
        outln!("[Service]\nType=oneshot\nExecStart={}\nNice=10\nIOSchedulingClass=idle\n", command(p));
        outln!("# /etc/systemd/system/kura-{}.timer", p.name);
        outln!("[Unit]\nDescription=kura plan {} ({})\n\n[Timer]", p.name, p.schedule.text());
        let zone = p.zone.name().map(|z| format!(" {z}")).unwrap_or_default();
        for c in p.schedule.on_calendar().into_iter().map(|c| c + &zone) {
            outln!("OnCalendar={c}");
        }
        outln!("Persistent=true\n\n[Install]\nWantedBy=timers.target\n");
    }
    outln!("# then: systemctl daemon-reload && systemctl enable --now kura-PLAN.timer");
    Ok(0)
}

/// A word as sh reads it back unchanged.
fn shell_quote(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:=".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
