//! `orchestrator backup --to DIR`: a consistent checkpoint of a live node
//! (admin verb `backup` over NATS), or of a stopped data dir with
//! `--data-dir`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use super::ops::{block_on, AdminClient};
use super::NatsArgs;
use crate::admin::{BackupReply, BackupRequest};
use crate::protocol::VERSION;
use crate::storage::rocks::{RocksConfig, RocksStorage};
use crate::storage::store::WorkflowStore;
use crate::storage::Storage;

#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:\n  \
    orchestrator backup --to daily/2026-11-25   # live node, over NATS: under its node.backup_root\n  \
    orchestrator backup --data-dir /var/lib/narralytica --to /var/backups/nl-offline   # stopped node\n\n\
    Over NATS the target is a new directory under the orchestrator's backup root\n\
    (node.backup_root, --backup-root of `run`): relative to it, or an absolute path\n\
    inside it; `..` is refused and backups over NATS are off while no root is set.\n\
    The checkpoint is private (directory 0700, files 0600) and must lie outside the\n\
    data dir. On the same filesystem it is hard links and takes well under a second.\n\
    Restore: stop the orchestrator, put the checkpoint directory at the data dir path, start.")]
pub struct BackupArgs {
    /// Directory to create with the checkpoint (must not exist); over NATS,
    /// under the orchestrator's backup root.
    #[arg(long)]
    pub to: PathBuf,
    /// Back up this data dir directly instead of asking a running orchestrator
    /// (only while no orchestrator uses it: RocksDB allows one process).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub nats: NatsArgs,
}

pub fn run(args: BackupArgs) -> ExitCode {
    block_on(async move {
        let (path, files, bytes, took_ms) = match &args.data_dir {
            Some(dir) => {
                let dir = dir.clone();
                let to = std::path::absolute(&args.to)
                    .map_err(|e| format!("bad --to {}: {e}", args.to.display()))?;
                let r = tokio::task::spawn_blocking(move || offline(&dir, &to))
                    .await
                    .map_err(|e| e.to_string())??;
                (r.path.display().to_string(), r.files, r.bytes, r.took_ms)
            }
            None => {
                let client = AdminClient::connect(&args.nats).await?;
                // The orchestrator resolves it against its backup root.
                let to = args.to.display().to_string();
                let req = BackupRequest {
                    v: VERSION,
                    to: to.clone(),
                };
                let r: BackupReply = client
                    .call("backup", &req)
                    .await
                    .map_err(|e| e.to_string())?;
                (
                    r.path.unwrap_or(to),
                    r.files.unwrap_or(0),
                    r.bytes.unwrap_or(0),
                    r.took_ms.unwrap_or(0),
                )
            }
        };
        println!("backup path={path} files={files} bytes={bytes} took_ms={took_ms}");
        Ok(ExitCode::SUCCESS)
    })
}

/// Opens a stopped data dir and checkpoints it.
fn offline(
    dir: &std::path::Path,
    to: &std::path::Path,
) -> Result<crate::backup::BackupReport, String> {
    if !dir.join("CURRENT").exists() {
        return Err(format!(
            "{} is not a data dir (no RocksDB CURRENT file)",
            dir.display()
        ));
    }
    let storage: Arc<dyn Storage> = Arc::new(
        RocksStorage::open(dir, &RocksConfig::default()).map_err(|e| {
            format!(
                "cannot open {}: {e} (if an orchestrator is running on it, back up over NATS without --data-dir)",
                dir.display()
            )
        })?,
    );
    WorkflowStore::open_existing(storage.clone()).map_err(|e| e.to_string())?;
    crate::backup::checkpoint(&*storage, to).map_err(|e| e.to_string())
}
