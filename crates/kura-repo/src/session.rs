//! Sessions (format.md §13): how a running backup tells prune what it may
//! still be using, without ever taking a lock.
use std::sync::Arc;

use bytes::Bytes;
use kura_format::session::{Session, HEARTBEAT_EVERY};
use kura_format::{paths, Id};
use tokio::task::JoinHandle;

use crate::{Repository, Result};

pub struct SessionGuard {
    repo: Arc<Repository>,
    id: Id,
    heartbeat: JoinHandle<()>,
}

impl SessionGuard {
    /// Writes the session object; format.md §12.3 requires this before the
    /// caller lists deletion markers or loads the index.
    pub async fn start(repo: &Arc<Repository>, kind: &str, hostname: &str) -> Result<SessionGuard> {
        let id = Id::random();
        let mut session = Session::new(kind, hostname);
        repo.store()
            .put(&paths::session(&id), Bytes::from(session.seal(repo.key())))
            .await?;
        let r = repo.clone();
        let heartbeat = tokio::spawn(async move {
            let every = HEARTBEAT_EVERY.to_std().expect("positive interval");
            loop {
                tokio::time::sleep(every).await;
                session.heartbeat = chrono::Utc::now();
                if let Err(e) = r
                    .store()
                    .put(&paths::session(&id), Bytes::from(session.seal(r.key())))
                    .await
                {
                    tracing::warn!(error = %e, "could not refresh session");
                }
            }
        });
        Ok(SessionGuard {
            repo: repo.clone(),
            id,
            heartbeat,
        })
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
