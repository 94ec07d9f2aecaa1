//! Durable storage: the journal, snapshots, timers and indexes of every workflow.
//!
//! # Layout
//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | the raw [`Storage`] trait (ordered byte keys, atomic batches, sync flag) |
//! | [`rocks`] | [`RocksStorage`], the production implementation on RocksDB |
//! | [`memory`] | [`MemoryStorage`], the in-memory twin that models the fsync boundary and can crash |
//! | [`codec`] | the record envelope (format version + crc32 + postcard) |
//! | [`keys`] | the key layout of every table and the scan ranges over them |
//! | [`store`] | [`WorkflowStore`], the typed tables the engine uses |
//! | [`replicate`] | [`ReplicatedStorage`]: cluster mode's per-partition journal replication before the local write |
//! | [`replicate_memory`] | [`MemoryReplicator`], the in-memory twin of the replicated journal |
//! | [`replicate_replay`] | tail replay: the applied journal position per partition, and applying the records after it |
//! | [`replicate_snapshot`] | a partition's snapshot, read from one consistent view of the local store, and loaded into one |
//! | [`group_commit`] | [`GroupCommitter`], one synced write per batch of many workflows' appends |
//! | `write_health` | [`WriteHealth`]: whether journal writes fail right now (readiness, intake) |
//! | `conformance.rs` | the one test suite both implementations must pass |
//!
//! # Why a raw trait under a typed store
//!
//! The engine must be testable without RocksDB, and crash-testable at all. Keeping the
//! trait down to "ordered bytes, atomic batch, optional fsync" makes the twin small
//! enough to be obviously right, while everything typed (keys, envelopes, partition
//! rules) lives once, above both, in [`WorkflowStore`].
//!
//! # Invariants
//!
//! - A `write` is atomic: after any crash either all of its ops are visible or none.
//! - A `write(.., sync = true)` that returned `Ok` is durable, and so is every write
//!   that returned before it started.
//! - Corrupt data is reported as [`Error::Corrupt`], never returned as state.
//! - [`GroupCommitter`] acknowledges a request only after the batch containing it
//!   has been written with `sync = true` (unless configured otherwise for a benchmark).

// Every public item of the storage layer is documented; keep it that way.
#![warn(missing_docs)]

use std::path::Path;

pub mod codec;
mod error;
pub mod group_commit;
pub mod keys;
pub mod memory;
pub mod replicate;
pub mod replicate_memory;
pub mod replicate_replay;
pub mod replicate_snapshot;
pub mod rocks;
pub mod status_entry;
pub mod store;
mod write_health;

#[cfg(test)]
mod conformance;

pub use error::Error;
pub use group_commit::{CommitConfig, CommitStats, GroupCommitter};
pub use memory::MemoryStorage;
pub use replicate::{partition_of, PartitionBatch, ReplicatedStorage, Replicator};
pub use replicate_memory::MemoryReplicator;
pub use replicate_replay::{applied_position, apply_records};
pub use replicate_snapshot::{load_if_ahead, load_snapshot, take_snapshot};
pub use rocks::{RocksConfig, RocksStorage};
pub use status_entry::StatusEntry;
pub use store::{DueTimer, WorkflowStore};
pub use write_health::{probe_op, WriteHealth};

/// Keys with their values, as [`Storage::read_ranges`] answers them.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// One mutation inside an atomic [`Storage::write`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// Remove `key` (a no-op if absent).
    Delete(Vec<u8>),
}

impl Op {
    /// The key this op touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put(k, _) | Op::Delete(k) => k,
        }
    }
}

/// See [`Storage::lsm_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LsmStats {
    /// Files in level 0 (compacted at `storage.l0_compaction_trigger`;
    /// writes slow down at 3x and stop at 4x that many).
    pub l0_files: u64,
    /// RocksDB's estimate of the bytes compactions still have to rewrite.
    pub pending_compaction_bytes: u64,
    /// Writes are stopped until compactions catch up.
    pub writes_stopped: bool,
}

/// An ordered key-value store with atomic batches and an explicit durability point.
///
/// Object-safe so the engine holds an `Arc<dyn Storage>` and tests swap in
/// [`MemoryStorage`]. Implementations must pass the conformance suite.
pub trait Storage: Send + Sync + 'static {
    /// Atomically apply all ops, in order (a later op on the same key wins).
    /// With `sync`, return only after the write is durable (fsync'd WAL).
    fn write(&self, ops: &[Op], sync: bool) -> Result<(), Error>;

    /// Writes the requests of one group-commit batch, answering one result
    /// per request. The default writes them all as one [`write`](Self::write)
    /// and gives every request its result; [`ReplicatedStorage`] appends
    /// each partition's ops to its replicated journal first and fails only
    /// the requests of a partition the journal refused.
    fn write_requests(&self, requests: &[&[Op]], sync: bool) -> Vec<Result<(), Error>> {
        let ops: Vec<Op> = requests.iter().flat_map(|r| r.iter().cloned()).collect();
        let result = self.write(&ops, sync);
        requests.iter().map(|_| result.clone()).collect()
    }

    /// The current value of `key`, including writes not yet synced.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error>;

    /// Visit keys in `[from, to)` in ascending byte order until the visitor returns
    /// `false`.
    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), Error>;

    /// Every entry of every range in `ranges` (in the order given, each in
    /// ascending key order), read from one consistent view of the store: a
    /// write is seen whole or not at all, whatever is written meanwhile.
    /// A partition's snapshot is read this way. The default refuses
    /// ([`Error::Unsupported`]); both implementations provide it.
    fn read_ranges(&self, ranges: &[keys::KeyRange]) -> Result<Entries, Error> {
        let _ = ranges;
        Err(Error::Unsupported("consistent multi-range reads"))
    }

    /// Number of synced WAL writes so far (RocksDB: its own `rocksdb.wal.synced`
    /// ticker; memory: syncs done). Lets tests and metrics prove that fsync is batched
    /// rather than skipped.
    fn wal_syncs(&self) -> u64;

    /// The LSM tree's state, for `/metrics`: L0 files, estimated compaction
    /// debt and whether writes are stopped. `None` where there is no LSM
    /// tree (the memory twin).
    fn lsm_stats(&self) -> Option<LsmStats> {
        None
    }

    /// Write a consistent on-disk checkpoint of the whole store into `dir`, which must
    /// not exist yet. The memory twin returns [`Error::Unsupported`].
    fn checkpoint(&self, dir: &Path) -> Result<(), Error>;
}
