//! What the shell tells the ownership core, and what the core asks of it.

use super::super::kv::{Entry, KvRequest, KvResult};
use super::super::{Epoch, NodeId};

/// What happened, as the shell tells the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Time passed (the shell ticks at least every few hundred ms).
    Tick,
    /// The bucket's live registrations and leases, as read just now.
    Scanned {
        nodes: Vec<NodeId>,
        leases: Vec<(u16, Entry)>,
    },
    /// The answer to the write [`Action::Kv`] with this id.
    KvDone { id: u64, result: KvResult },
    /// After [`Action::StopIntake`]: no commit of the partition is in flight.
    CommitFinished { partition: u16 },
    /// After [`Action::Snapshot`]: the partition's snapshot is written.
    SnapshotWritten { partition: u16 },
    /// The journal refused an append (or open record) of this term because
    /// its tail moved.
    AppendRejected { partition: u16, epoch: Epoch },
    /// Hand every partition over and deregister (the node is stopping).
    Leave,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Perform this write and answer with [`Input::KvDone`].
    Kv(KvRequest),
    /// Read the bucket and answer with [`Input::Scanned`].
    Scan,
    /// Restore the partition, read its journal's tail, append the term's
    /// open record after it, then serve, stamping every append with `epoch`.
    StartServing { partition: u16, epoch: Epoch },
    /// Take no new input for the partition; answer with
    /// [`Input::CommitFinished`] once no commit is in flight.
    StopIntake { partition: u16 },
    /// Write the partition's snapshot; answer with [`Input::SnapshotWritten`].
    Snapshot { partition: u16 },
    /// Stop serving the partition at once; append nothing more for it.
    StopServing { partition: u16 },
    /// Every partition is handed over and the node is deregistered.
    Left,
}
