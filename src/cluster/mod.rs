//! Cluster ownership as pure code: which node serves which partition, and
//! the fencing that keeps a deposed owner's appends out of the journal.
//!
//! Nothing here does IO, reads a clock or uses tokio: the shell (the
//! deterministic simulator in [`crate::dst::cluster`] today) feeds inputs
//! with the current time and performs the actions.
//!
//! | file | holds |
//! | --- | --- |
//! | `kv` | the bucket's keys, values, revisions, writes and their results; [`Epoch`] |
//! | `config` | lease and heartbeat timings ([`LeaseConfig`]) |
//! | `share` | each node's fair share of the partitions |
//! | `ownership` | one node's state machine: registration, leases, handover, fencing |
//! | `chain` | the journal's append rule and the chain checker |
//! | `claim` | the single-node prefix claim and the partition-count check |
//!
//! `docs/cluster.md` explains how the pieces fit.

mod chain;
mod claim;
mod config;
mod kv;
mod ownership;
mod share;
#[cfg(test)]
mod tests;

pub use chain::{accepts, check_chain, ChainRecord, RecordKind};
pub use claim::{check_partition_count, claim_step, ClaimStep};
pub use config::LeaseConfig;
pub use kv::{Entry, Epoch, Holder, Key, KvOp, KvRequest, KvResult, Revision};
pub use ownership::{Action, Input, Ownership};
pub use share::fair_share;

/// A node's id in the cluster (kept in its data directory).
pub type NodeId = String;
