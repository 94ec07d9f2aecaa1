//! The partition changes the ownership core asks for, performed one after
//! the other off the lease loop (so that renewals go on while a journal's
//! tail replays or a commit in flight ends): opening a journal term and
//! starting the partition in the node's engine, stopping its intake,
//! writing its snapshot before it is handed over, and ending its term. The engine is reached through [`PartitionHost`], which
//! the CLI connects: this layer does not know the engine.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, watch};

use super::journal::JetStreamJournal;
use crate::cluster::Epoch;

/// The node's engine as the ownership shell sees it. Both calls are
/// idempotent: starting a partition served, or stopping one not served,
/// does nothing.
pub trait PartitionHost: Send + Sync + 'static {
    /// Recover `partition` from the local store and serve it; the store
    /// already holds its journal up to the tail.
    fn start(&self, partition: u16) -> BoxFuture<'_, Result<(), String>>;
    /// Stop taking input for `partition` and return once no commit of it is
    /// in flight and its actors are gone.
    fn stop(&self, partition: u16) -> BoxFuture<'_, ()>;
}

/// What the lease loop asks of the handover worker.
#[derive(Debug)]
pub(super) enum Handover {
    /// Open the journal term `epoch` (tail replay, then the open record),
    /// then start the partition in the engine. A partition the engine
    /// serves is stopped first: its state may predate records the replay
    /// brings in.
    Start { partition: u16, epoch: Epoch },
    /// Stop the engine's intake; answered with [`Done::CommitFinished`].
    StopIntake { partition: u16 },
    /// The term ended (the journal appends nothing more for it already):
    /// stop the partition in the engine too.
    StopServing { partition: u16 },
    /// Write the partition's snapshot from the local store (its commits
    /// have finished), so that its next owner replays only what follows;
    /// answered with [`Done::SnapshotWritten`].
    Snapshot { partition: u16 },
}

/// What the worker reports back to the lease loop.
#[derive(Debug)]
pub(super) enum Done {
    CommitFinished {
        partition: u16,
    },
    /// The journal term did not open (the core decides what next).
    NotOpened {
        partition: u16,
        epoch: Epoch,
    },
    /// A term opened: the partitions served changed.
    Opened,
    /// The handover snapshot is written, or could not be: either way the
    /// handover goes on (the next owner replays from the last snapshot).
    SnapshotWritten {
        partition: u16,
    },
}

/// Performs `requests` in order until the lease loop drops its sender.
/// `held` is the core's current view of the leases held and their epochs:
/// a start whose lease is no longer held under that epoch (it lapsed
/// while the request waited) is skipped.
pub(super) async fn run_handovers(
    journal: Arc<JetStreamJournal>,
    host: Arc<dyn PartitionHost>,
    mut requests: mpsc::UnboundedReceiver<Handover>,
    held: watch::Receiver<Vec<(u16, Epoch)>>,
    done: mpsc::UnboundedSender<Done>,
) {
    while let Some(request) = requests.recv().await {
        match request {
            Handover::Start { partition, epoch } => {
                if !held.borrow().contains(&(partition, epoch)) {
                    continue;
                }
                host.stop(partition).await;
                if let Err(e) = journal.start_serving(partition, epoch).await {
                    tracing::warn!(partition, %epoch, error = %e, "journal term not opened");
                    let _ = done.send(Done::NotOpened { partition, epoch });
                    continue;
                }
                let _ = done.send(Done::Opened);
                if let Err(e) = host.start(partition).await {
                    // The journal serves it and nothing commits: its
                    // requests are refused as not served until the term
                    // is opened again.
                    tracing::error!(partition, error = %e, "cluster mode: partition not started in the engine");
                }
            }
            Handover::StopIntake { partition } => {
                host.stop(partition).await;
                let _ = done.send(Done::CommitFinished { partition });
            }
            Handover::StopServing { partition } => {
                journal.stop_partition(partition);
                host.stop(partition).await;
            }
            Handover::Snapshot { partition } => {
                match journal.snapshot(partition).await {
                    Ok(Some(w)) => tracing::info!(
                        partition,
                        seq = w.position.seq,
                        keys = w.keys,
                        purged = w.purged,
                        "cluster mode: handover snapshot written"
                    ),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(
                        partition,
                        error = %e,
                        "cluster mode: handover snapshot not written; the next owner replays from the last one"
                    ),
                }
                let _ = done.send(Done::SnapshotWritten { partition });
            }
        }
    }
}
