//! Assembling a node: storage, the group committer and the pipelines. Shared
//! by `dev` and `run`, so both open the data dir the same way.

use std::path::PathBuf;
use std::sync::Arc;

use crate::engine::PipelineRegistry;
use crate::pipeline::load::load_pipeline_files;
use crate::pipeline::PipelineLimits;
use crate::storage::group_commit::{CommitConfig, GroupCommitter};
use crate::storage::rocks::{RocksConfig, RocksStorage};
use crate::storage::store::WorkflowStore;
use crate::storage::{ReplicatedStorage, Replicator, Storage};

#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub data_dir: PathBuf,
    pub pipelines_dir: PathBuf,
    pub partitions: u16,
    pub commit_batch_max: usize,
    pub commit_threads: usize,
    pub commit_inline_when_idle: bool,
    /// See [`CommitConfig::inline_max_mean_batch`].
    pub commit_inline_max_mean_batch: f64,
    /// RocksDB's bounds, as given (the config file's `[storage]` or `dev`'s flags).
    pub rocks: RocksConfig,
}

pub struct Node {
    pub storage: Arc<dyn Storage>,
    pub store: WorkflowStore,
    pub committer: Arc<GroupCommitter>,
    pub pipelines: Arc<PipelineRegistry>,
}

fn lines(errors: &[crate::pipeline::error::PipelineError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Opens the data dir and loads and persists the pipeline definitions. A
/// pipeline file whose definition differs from the one stored under its name
/// and version stops the start: the node never runs a definition other than
/// the one its workflows of that version were started with.
pub async fn open_node(opts: &NodeOptions) -> Result<Node, String> {
    open_node_replicated(opts, None).await
}

/// [`open_node`], with the local storage wrapped in a
/// [`ReplicatedStorage`] over `replicator` when one is given (cluster
/// mode): every commit batch is appended to the partitions' replicated
/// journals before it is written locally.
pub async fn open_node_replicated(
    opts: &NodeOptions,
    replicator: Option<Arc<dyn Replicator>>,
) -> Result<Node, String> {
    let loaded = load_pipeline_files(&opts.pipelines_dir, &PipelineLimits::default())
        .map_err(|errs| lines(&errs))?;
    if loaded.is_empty() {
        return Err(format!(
            "no pipeline files in {}",
            opts.pipelines_dir.display()
        ));
    }
    std::fs::create_dir_all(&opts.data_dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", opts.data_dir.display()))?;
    let storage: Arc<dyn Storage> = Arc::new(
        RocksStorage::open(&opts.data_dir, &opts.rocks)
            .map_err(|e| format!("cannot open data dir {}: {e}", opts.data_dir.display()))?,
    );
    let storage: Arc<dyn Storage> = match replicator {
        Some(r) => Arc::new(ReplicatedStorage::new(storage, r)),
        None => storage,
    };
    let store = WorkflowStore::open(storage.clone(), opts.partitions).map_err(|e| e.to_string())?;
    let pipelines = Arc::new(
        PipelineRegistry::open(store.clone(), loaded, opts.pipelines_dir.clone())
            .map_err(|errs| lines(&errs))?,
    );
    let committer = Arc::new(
        GroupCommitter::start(
            storage.clone(),
            CommitConfig {
                batch_max_entries: opts.commit_batch_max,
                threads: opts.commit_threads,
                inline_when_idle: opts.commit_inline_when_idle,
                inline_max_mean_batch: opts.commit_inline_max_mean_batch,
                ..CommitConfig::default()
            },
        )
        .map_err(|e| e.to_string())?,
    );
    committer
        .commit(pipelines.persist_ops().map_err(|e| e.to_string())?)
        .await
        .map_err(|e| format!("cannot store pipeline definitions: {e}"))?;
    Ok(Node {
        storage,
        store,
        committer,
        pipelines,
    })
}

/// How often a failing journal is probed with a small write, so that
/// readiness and intake see the recovery even when no traffic arrives.
pub const WRITE_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl Node {
    /// While journal writes fail, writes a small probe record every
    /// [`WRITE_PROBE_INTERVAL`]; its success clears the failure (see
    /// [`crate::storage::WriteHealth`]). Holds the committer weakly, so it
    /// never delays [`Node::close`]; abort the task at shutdown.
    pub fn spawn_write_probe(&self) -> tokio::task::JoinHandle<()> {
        let committer = Arc::downgrade(&self.committer);
        let health = self.committer.write_health();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(WRITE_PROBE_INTERVAL).await;
                if health.failing().is_none() {
                    continue;
                }
                let Some(c) = committer.upgrade() else { return };
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                // The outcome is recorded by the committer itself.
                let _ = c.commit(vec![crate::storage::probe_op(now_ms)]).await;
            }
        })
    }

    /// Closes the node after the engine has stopped: waits (up to 5 s) for
    /// the last holders of the committer to let go, joins the commit thread,
    /// then drops the storage so RocksDB closes before the process exits.
    /// Tearing RocksDB down at exit under a live writer aborts the process.
    pub async fn close(self) {
        let Node {
            storage,
            store,
            committer,
            pipelines,
        } = self;
        drop(pipelines);
        let mut committer = committer;
        let mut joined = false;
        for _ in 0..500 {
            match Arc::try_unwrap(committer) {
                Ok(c) => {
                    let _ = tokio::task::spawn_blocking(move || c.shutdown()).await;
                    joined = true;
                    break;
                }
                Err(shared) => {
                    committer = shared;
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
        if !joined {
            tracing::warn!("group committer still shared after 5 s; exiting without joining it");
        }
        drop(store);
        drop(storage);
    }
}
