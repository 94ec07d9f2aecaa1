//! Cluster ownership as pure code: which node serves which partition, and
//! the fencing that keeps a deposed owner's appends out of the journal.
//!
//! Nothing here does IO, reads a clock or uses tokio: the shells (the
//! deterministic simulator in [`crate::dst::cluster`], and the NATS shell
//! in `transport::nats::lease` and `transport::nats::journal`) feed inputs
//! with the current time and perform the actions.
//!
//! | file | holds |
//! | --- | --- |
//! | `kv` | the bucket's keys, values, revisions, writes and their results; [`Epoch`] |
//! | `config` | lease and heartbeat timings ([`LeaseConfig`]) |
//! | `share` | each node's fair share of the partitions |
//! | `ownership` | one node's state machine: registration, leases, handover, fencing |
//! | `chain` | the journal's append rule and the chain checker |
//! | `record` | one replicated journal message: wire form, checksum, chain hash |
//! | `position` | how far a local store has applied a partition's journal |
//! | `appender` | the terms a node appends under |
//! | `check` | the replicated journal's checker (whole, or trimmed after a snapshot) |
//! | `snapshot` | a partition's snapshot: wire form, checksum; when one is due |
//! | `claim` | the single-node prefix claim and the partition-count check |
//!
//! `docs/cluster.md` explains how the pieces fit.

mod appender;
mod chain;
mod check;
mod claim;
mod config;
mod frame;
mod kv;
mod ownership;
mod position;
mod record;
mod share;
mod snapshot;
#[cfg(test)]
mod tests;

pub use appender::{Append, AppendRefused, Appender};
pub use chain::{accepts, check_chain, check_chain_after, ChainRecord, RecordKind};
pub use check::check_replicated;
pub use claim::{check_partition_count, claim_step, ClaimStep};
pub use config::LeaseConfig;
pub use kv::{Entry, Epoch, Holder, Key, KvOp, KvRequest, KvResult, Revision};
pub use ownership::{Action, Input, Ownership};
pub use position::JournalPosition;
pub use record::{chain_hash, ChainHash, JournalOp, JournalRecord, GENESIS};
pub use share::fair_share;
pub use snapshot::{PartitionSnapshot, SnapshotPolicy, SNAPSHOT_VERSION};

/// A node's id in the cluster (kept in its data directory).
pub type NodeId = String;
