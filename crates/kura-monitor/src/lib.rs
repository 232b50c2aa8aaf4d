//! Monitoring: whether backups are fresh and how they went, from this
//! machine's run history ([`health`]), as JSON and Prometheus metrics
//! ([`metrics`]), served by `kura serve` over HTTP ([`http`]). It knows
//! plans and runs, never how a backup is made; it reads the history the
//! runner writes and never a remote repository.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod drp;
pub mod health;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod publish;
pub mod report;
mod send;
mod smtp;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use kura_policy::Config;
use thiserror::Error;

pub use health::{assess, Health, PlanHealth};
pub use http::{Handler, Response};

#[derive(Debug, Error)]
pub enum MonitorError {
    #[error(transparent)]
    History(#[from] kura_runner::RunError),
    #[error("alert state in {path}: {message}")]
    Store { path: PathBuf, message: String },
}

impl MonitorError {
    fn store(path: &std::path::Path, e: impl std::fmt::Display) -> MonitorError {
        MonitorError::Store { path: path.to_path_buf(), message: e.to_string() }
    }
}

pub type Now = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// What the daemon's HTTP endpoints answer from: the config (replaced on
/// reload) and the state directory holding the history and plan locks.
pub struct Monitor {
    config: RwLock<Arc<Config>>,
    state_dir: PathBuf,
    now: Now,
}

impl Monitor {
    pub fn new(config: Config, state_dir: PathBuf, now: Now) -> Monitor {
        Monitor { config: RwLock::new(Arc::new(config)), state_dir, now }
    }

    /// Answers with the new config's plans from now on.
    pub fn reload(&self, config: Config) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }

    fn config(&self) -> Arc<Config> {
        self.config.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Bytes for people: `1.2 GB` (powers of 1000, as storage is billed).
pub fn size(n: u64) -> String {
    let n = n as f64;
    match n {
        n if n >= 1e12 => format!("{:.1} TB", n / 1e12),
        n if n >= 1e9 => format!("{:.1} GB", n / 1e9),
        n if n >= 1e6 => format!("{:.1} MB", n / 1e6),
        n if n >= 1e3 => format!("{:.1} kB", n / 1e3),
        n => format!("{n} B"),
    }
}

fn health_response(h: &Health) -> Response {
    Response::json(if h.healthy() { 200 } else { 503 }, h)
}

impl Handler for Monitor {
    fn respond(&self, path: &str) -> Response {
        let cfg = self.config();
        let now = (self.now)();
        let failed = |e: MonitorError| {
            tracing::error!("monitor: {e}");
            Response::json(500, &serde_json::json!({"status": "unhealthy", "error": e.to_string()}))
        };
        match path.trim_end_matches('/') {
            "/health" => {
                assess(&cfg, &self.state_dir, None, now).map(|h| health_response(&h)).unwrap_or_else(failed)
            }
            "/metrics" => metrics::gather(&cfg, &self.state_dir, now)
                .map(|body| Response { status: 200, content_type: metrics::CONTENT_TYPE, body })
                .unwrap_or_else(failed),
            p => match p.strip_prefix("/health/") {
                Some(plan) if cfg.plans.contains_key(plan) => assess(&cfg, &self.state_dir, Some(plan), now)
                    .map(|h| health_response(&h))
                    .unwrap_or_else(failed),
                Some(plan) => {
                    Response::json(404, &serde_json::json!({"error": format!("no plan named {plan}")}))
                }
                None if p.is_empty() => Response::text(200, "kura: /health, /health/PLAN, /metrics\n"),
                None => Response::text(404, "not found: /health, /health/PLAN, /metrics\n"),
            },
        }
    }
}
