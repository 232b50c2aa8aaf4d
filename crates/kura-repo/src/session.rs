//! Sessions (format.md §13): how a running backup tells prune what it may
//! still be using, without ever taking a lock.
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use kura_format::session::{Session, HEARTBEAT_EVERY, SESSION_TTL};
use kura_format::{paths, Id};
use tokio::task::JoinHandle;

use crate::{Repository, Result};

pub struct SessionGuard {
    repo: Arc<Repository>,
    id: Id,
    heartbeat: JoinHandle<()>,
    last_written: Arc<Mutex<Instant>>,
}

impl SessionGuard {
    /// Writes the session object; format.md §12.3 requires this before the
    /// caller lists deletion markers or loads the index.
    pub async fn start(repo: &Arc<Repository>, kind: &str, hostname: &str) -> Result<SessionGuard> {
        let id = Id::random();
        let mut session = Session::new(kind, hostname, repo.now());
        repo.store().put(&paths::session(&id), Bytes::from(session.seal(repo.key()))).await?;
        let r = repo.clone();
        let last_written = Arc::new(Mutex::new(Instant::now()));
        let last = last_written.clone();
        let heartbeat = tokio::spawn(async move {
            let every = HEARTBEAT_EVERY.to_std().expect("positive interval");
            loop {
                tokio::time::sleep(every).await;
                session.heartbeat = r.now();
                let sealed = Bytes::from(session.seal(r.key()));
                match r.store().put(&paths::session(&id), sealed).await {
                    Ok(()) => *last.lock().expect("heartbeat lock") = Instant::now(),
                    Err(e) => tracing::warn!(error = %e, "could not refresh session"),
                }
            }
        });
        Ok(SessionGuard { repo: repo.clone(), id, heartbeat, last_written })
    }

    /// Whether the session stayed live throughout. If it lapsed, a prune may
    /// have deleted packs this backup deduplicated against, so its snapshot
    /// must not be written (format.md §13).
    pub fn held(&self) -> bool {
        let ttl = SESSION_TTL.to_std().expect("positive TTL");
        // A margin for the time between our last write and a prune's read.
        self.last_written.lock().expect("heartbeat lock").elapsed() < ttl.mul_f64(0.8)
    }

    /// Ends the session; call only after the snapshot is written (§12.3).
    pub async fn finish(self) {
        self.heartbeat.abort();
        if let Err(e) = self.repo.store().delete(&paths::session(&self.id)).await {
            // Harmless: it stops being live by itself in 5 minutes.
            tracing::warn!(error = %e, "could not remove session");
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}
