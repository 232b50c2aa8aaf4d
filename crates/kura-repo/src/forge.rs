//! Snapshots whose trees the caller builds by hand: what anyone holding a
//! repository's password could write. kura's own commands never use this;
//! it exists so that tests can attack readers with hostile snapshots
//! (trees nested without end, one subtree reused at every level) and check
//! that they are refused, not followed.
use std::sync::Arc;

use kura_format::snapshot::Snapshot;
use kura_format::tree::Tree;
use kura_format::{BlobType, Id};

use crate::saver::Saver;
use crate::session::SessionGuard;
use crate::{RepoError, Repository, Result};

pub struct Forge {
    repo: Arc<Repository>,
    saver: Arc<Saver>,
    uploader: tokio::task::JoinHandle<Result<Vec<kura_format::index::IndexPack>>>,
    session: SessionGuard,
}

impl Forge {
    pub async fn start(repo: &Arc<Repository>) -> Result<Forge> {
        // format.md §12.3, as any writer: the session first, then the index.
        let session = SessionGuard::start(repo, "backup", "forge").await?;
        let index = repo.load_index_present(&repo.pending_deletion().await?).await?;
        let (saver, uploader) = Saver::start(repo.clone(), index, Default::default());
        Ok(Forge { repo: repo.clone(), saver, uploader, session })
    }

    /// Stores a tree blob as given; returns its id.
    pub async fn tree(&self, mut tree: Tree) -> Result<Id> {
        let saver = self.saver.clone();
        let bytes = tree.encode();
        tokio::task::spawn_blocking(move || saver.save_blob(BlobType::Tree, &bytes))
            .await
            .map_err(RepoError::worker)?
    }

    /// Stores a data blob; returns its id.
    pub async fn data(&self, bytes: Vec<u8>) -> Result<Id> {
        let saver = self.saver.clone();
        tokio::task::spawn_blocking(move || saver.save_blob(BlobType::Data, &bytes))
            .await
            .map_err(RepoError::worker)?
    }

    /// Writes the snapshot of `root`, after every blob (format.md §12.1).
    pub async fn snapshot(self, root: Id, paths: Vec<String>) -> Result<Id> {
        self.saver.clone().finish(self.uploader).await?;
        let mut snap = Snapshot::new(root, paths, chrono::Utc::now());
        snap.hostname = "forge".into();
        let id = self.repo.save_snapshot(&snap).await?;
        self.session.finish().await;
        Ok(id)
    }
}
