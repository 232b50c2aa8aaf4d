//! `kura serve`: the daemon. Runs every plan of kura.toml on its schedule
//! (`kura_runner::serve`); SIGHUP reloads the config (an invalid one is
//! refused and the old one kept); SIGTERM or SIGINT stops starting runs and
//! lets running ones finish within `--grace`, then abandons them (nothing
//! half-written becomes visible). Under systemd with `Type=notify` it says
//! when it is ready, reloading and stopping.
use kura_runner::serve::{serve, Control, ServeOptions};
use kura_runner::{Event, Sink};
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::{Global, ServeArgs};
use crate::output::{code, Failure};

/// Events as structured log lines: a daemon has no terminal.
struct Log;

impl Sink for Log {
    fn event(&self, event: Event) {
        match event {
            Event::TargetSaved { target, id, summary, warnings } => tracing::info!(
                target_name = %target,
                snapshot = %id.short(),
                bytes = summary.bytes,
                bytes_new = summary.bytes_new,
                warnings = warnings.len(),
                "target saved"
            ),
            Event::TargetFailed { target, error, .. } => {
                tracing::error!(target_name = %target, %error, "target failed")
            }
            Event::Copied { to, copied, .. } if !copied.present => tracing::info!(
                to = %to,
                snapshot = %copied.source.short(),
                copy = %copied.id.short(),
                bytes_new = copied.stats.bytes_new,
                "snapshot copied"
            ),
            Event::Warning { target, message } => tracing::warn!(target_name = %target, "{message}"),
            _ => {}
        }
    }
}

/// Tells systemd (`Type=notify`) what the daemon is doing, when it runs
/// under it; nothing otherwise.
fn notify(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|a| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &a));
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Asks the programs abandoned runs started (a dump, a user's command) to
/// stop: a pg_dump left running would hold its transaction open for
/// nothing.
fn stop_children() {
    let me = std::process::id().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else { return };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else { continue };
        // After the command name, which may hold spaces, in parentheses.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if ppid == Some(me.as_str()) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                tracing::info!(
                    pid = pid.as_raw_nonzero().get(),
                    "stopping a program an abandoned run started"
                );
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
    }
}

/// Starts answering `[monitor] listen` (health, metrics), when set. The
/// address and token are read once: a reload changes the plans the
/// answers are about, not where they are given.
async fn listen(cfg: &kura_policy::Config) -> Result<Option<std::sync::Arc<kura_monitor::Monitor>>, Failure> {
    let Some(addr) = &cfg.monitor.listen else { return Ok(None) };
    let token = super::health::monitor_token(cfg)?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Failure::new(format!("cannot listen on {addr}: {e}"))
            .hint("[monitor] listen: pick a free address and port")
    })?;
    if token.is_none() && !listener.local_addr().map(|a| a.ip().is_loopback()).unwrap_or(false) {
        tracing::warn!(%addr, "the monitor answers anyone who can connect: set [monitor] token_file");
    }
    let clock = super::clock();
    let monitor = std::sync::Arc::new(kura_monitor::Monitor::new(
        cfg.clone(),
        super::state_dir(),
        std::sync::Arc::new(move || clock.now()),
    ));
    tracing::info!(%addr, "monitor listening: /health, /health/PLAN, /metrics");
    tokio::spawn(kura_monitor::http::serve(listener, token, monitor.clone()));
    Ok(Some(monitor))
}

/// Checks for problems and tells of them (`kura_monitor::notify`) every
/// `[alerts] check_every`, whether or not a run just ended: a backup that
/// went stale because nothing ran is the problem most worth telling.
async fn check_loop(live: std::sync::Arc<std::sync::RwLock<kura_policy::Config>>, host: String) {
    let state = super::state_dir();
    loop {
        let cfg = live.read().unwrap_or_else(|e| e.into_inner()).clone();
        let every = cfg.alerts.check_every.unwrap_or(std::time::Duration::from_secs(30));
        if !cfg.notify.is_empty() {
            let now = super::clock().now();
            match kura_monitor::notify::tick(&cfg, &state, now, &host, true).await {
                Ok(r) => {
                    for m in &r.messages {
                        tracing::info!(status = ?m.status, level = m.level.name(), key = %m.key, "{}", m.summary);
                    }
                }
                Err(e) => tracing::warn!("notifications: {e}"),
            }
        }
        tokio::time::sleep(every.max(std::time::Duration::from_secs(1))).await;
    }
}

pub async fn run(g: &Global, a: &ServeArgs) -> Result<u8, Failure> {
    let grace = kura_policy::parse_duration(&a.grace).map_err(|e| Failure::new(format!("--grace: {e}")))?;
    let cfg = super::require_config(g)?;
    if cfg.plans.is_empty() {
        return Err(Failure::new("kura.toml has no plans for kura serve to run")
            .hint("add a [plan.NAME] section with schedule and targets"));
    }
    let ctx = kura_runner::Context { sink: std::sync::Arc::new(Log), ..super::context(g)? };
    let global = g.clone();
    let make_repos: kura_runner::serve::MakeRepos = Box::new(move |cfg| {
        super::repos(&global, Some(cfg)).unwrap_or_else(|f| {
            tracing::error!("{}", f.message);
            kura_runner::Repos::new(Default::default(), super::clock(), Default::default())
        })
    });
    let monitor = listen(&cfg).await?;
    let live = std::sync::Arc::new(std::sync::RwLock::new(cfg.clone()));
    tokio::spawn(check_loop(live.clone(), super::context(g)?.hostname));
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let signals = |k: SignalKind| signal(k).map_err(|e| Failure::new(format!("cannot watch signals: {e}")));
    let (mut term, mut int, mut hup) = (
        signals(SignalKind::terminate())?,
        signals(SignalKind::interrupt())?,
        signals(SignalKind::hangup())?,
    );
    let g2 = g.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    notify("RELOADING=1");
                    match super::load_config(&g2) {
                        Ok(Some(cfg)) => {
                            if let Some(m) = &monitor {
                                m.reload(cfg.clone());
                            }
                            *live.write().unwrap_or_else(|e| e.into_inner()) = cfg.clone();
                            let _ = tx.send(Control::Reload(Box::new(cfg))).await;
                        }
                        Ok(None) => tracing::error!("the configuration file is gone; keeping the one loaded"),
                        Err(f) => tracing::error!(
                            "the new configuration is invalid; keeping the one loaded: {}",
                            f.message
                        ),
                    }
                    notify("READY=1");
                }
            }
        }
        notify("STOPPING=1");
        let _ = tx.send(Control::Stop { grace }).await;
    });
    notify("READY=1");
    // Stopping when asked is success, also when a run had to be abandoned:
    // that is logged and recorded in the history, and the next run
    // proceeds.
    let stopped = serve(ctx, cfg, make_repos, ServeOptions { state_dir: super::state_dir() }, rx).await?;
    if !stopped.abandoned.is_empty() {
        stop_children();
    }
    Ok(code::OK)
}
