//! Monitoring: whether backups are fresh and how they went, from this
//! machine's run history ([`health`]), as JSON and Prometheus metrics
//! ([`metrics`]), served by `kura serve` over HTTP ([`http`]). It knows
//! plans and runs, never how a backup is made; it reads the history the
//! runner writes and never a remote repository.
#![forbid(unsafe_code)]

pub mod health;
pub mod http;
pub mod metrics;
pub mod publish;

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
            "/metrics" => assess(&cfg, &self.state_dir, None, now)
                .map(|h| Response {
                    status: 200,
                    content_type: metrics::CONTENT_TYPE,
                    body: metrics::render(&cfg, &h),
                })
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
