//! The replication port of cluster mode: a [`Storage`] wrapper that sends
//! each write batch's per-partition ops to a [`Replicator`] (the
//! partition's replicated journal) before writing them locally.
//!
//! The group committer hands a batch over as its requests
//! ([`Storage::write_requests`]); [`ReplicatedStorage`] groups the ops of
//! the batch by partition (the partition is part of every per-workflow key:
//! journal, snapshot, status, timer, outbox), asks the replicator to append
//! ONE record per partition, and then writes locally, as one write, the
//! ops of every appended record, with each appended partition's journal
//! position (`replicate_replay`): the local store mirrors the journal
//! record for record. A request of a partition the replicator refused (not
//! served by this node, or deposed: another owner appended) fails with
//! [`Error::NotReplicated`] and its ops of that partition are not written;
//! the other requests of the batch are unaffected. A transition is thus
//! durable only once the replica acknowledged it, and the engine runs its
//! effects after that, as it does after a local fsync.
//!
//! Store-wide tables (meta, pipeline definitions, batch jobs) have no
//! partition and are written locally only, with the requests that
//! succeeded.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::replicate_replay::position_op;
use super::{keys, Error, LsmStats, Op, Storage};
use crate::cluster::{JournalOp, JournalPosition};

/// The ops of one partition in one write batch: one journal record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionBatch {
    /// The partition.
    pub partition: u16,
    /// Its ops, in batch order.
    pub ops: Vec<JournalOp>,
}

/// Appends a batch's records to the partitions' replicated journals.
pub trait Replicator: Send + Sync + 'static {
    /// Appends one record per element and blocks until each is
    /// acknowledged (answering the record's position: its subject sequence
    /// and hash) or refused; answers one result per element, in order.
    /// Called from the committer's writer (never concurrently with itself
    /// for one storage); may block the calling thread.
    fn append(&self, batches: &[PartitionBatch]) -> Vec<Result<JournalPosition, Error>>;

    /// The local storage the journal's records are replayed into when a
    /// term starts (`replicate_replay`); [`ReplicatedStorage::new`] hands
    /// it over.
    fn attach(&self, local: Arc<dyn Storage>);
}

/// The partition a key belongs to, for the tables that have one.
pub fn partition_of(key: &[u8]) -> Option<u16> {
    match *key.first()? {
        tag if keys::PARTITIONED.contains(&tag) && key.len() >= 3 => {
            Some(u16::from_be_bytes([key[1], key[2]]))
        }
        _ => None,
    }
}

fn journal_op(op: &Op) -> JournalOp {
    match op {
        Op::Put(key, value) => JournalOp::Put {
            key: key.clone(),
            value: value.clone(),
        },
        Op::Delete(key) => JournalOp::Delete { key: key.clone() },
    }
}

/// A storage whose per-partition writes are replicated first (see the
/// module docs). Reads, scans and checkpoints go to the local storage.
pub struct ReplicatedStorage {
    local: Arc<dyn Storage>,
    replicator: Arc<dyn Replicator>,
}

impl ReplicatedStorage {
    /// Wraps `local`, and attaches it to the replicator for tail replay.
    pub fn new(local: Arc<dyn Storage>, replicator: Arc<dyn Replicator>) -> ReplicatedStorage {
        replicator.attach(local.clone());
        ReplicatedStorage { local, replicator }
    }
}

impl Storage for ReplicatedStorage {
    fn write(&self, ops: &[Op], sync: bool) -> Result<(), Error> {
        self.write_requests(&[ops], sync)
            .pop()
            .unwrap_or(Err(Error::CommitterClosed))
    }

    fn write_requests(&self, requests: &[&[Op]], sync: bool) -> Vec<Result<(), Error>> {
        // Group the batch's ops per partition, in order; remember which
        // partitions each request touches.
        let mut by_partition: BTreeMap<u16, Vec<JournalOp>> = BTreeMap::new();
        let mut touches: Vec<Vec<u16>> = Vec::with_capacity(requests.len());
        for ops in requests {
            let mut mine = Vec::new();
            for op in *ops {
                if let Some(p) = partition_of(op.key()) {
                    by_partition.entry(p).or_default().push(journal_op(op));
                    if !mine.contains(&p) {
                        mine.push(p);
                    }
                }
            }
            touches.push(mine);
        }
        let batches: Vec<PartitionBatch> = by_partition
            .into_iter()
            .map(|(partition, ops)| PartitionBatch { partition, ops })
            .collect();
        let mut refused: BTreeMap<u16, Error> = BTreeMap::new();
        let mut appended: Vec<(u16, JournalPosition)> = Vec::new();
        if !batches.is_empty() {
            let answers = self.replicator.append(&batches);
            for (i, b) in batches.iter().enumerate() {
                let answer = answers.get(i).cloned().unwrap_or_else(|| {
                    Err(Error::NotReplicated {
                        partition: b.partition,
                        reason: "the replicator gave no answer".into(),
                    })
                });
                match answer {
                    Ok(position) => appended.push((b.partition, position)),
                    Err(e) => {
                        refused.insert(b.partition, e);
                    }
                }
            }
        }
        let mut results: Vec<Result<(), Error>> = touches
            .iter()
            .map(|ps| match ps.iter().find_map(|p| refused.get(p)) {
                Some(e) => Err(e.clone()),
                None => Ok(()),
            })
            .collect();
        // The local write mirrors the journal: every op of an appended
        // record (even of a request failed for another partition: the
        // journal holds it, and a restore would apply it), the store-wide
        // ops of the requests that succeeded, and each appended
        // partition's new position.
        let refused_ref = &refused;
        let mut ops: Vec<Op> = requests
            .iter()
            .zip(&results)
            .flat_map(|(ops, r)| {
                ops.iter().filter(move |op| match partition_of(op.key()) {
                    Some(p) => !refused_ref.contains_key(&p),
                    None => r.is_ok(),
                })
            })
            .cloned()
            .collect();
        if ops.is_empty() {
            return results;
        }
        ops.extend(appended.iter().map(|(p, at)| position_op(*p, at)));
        // A crash here leaves the journal ahead of the local store: the
        // next term's tail replay applies what is missing.
        crate::failpoints::point("replicate.after_append");
        if let Err(e) = self.local.write(&ops, sync) {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(e.clone());
            }
        }
        results
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.local.get(key)
    }

    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), Error> {
        self.local.scan(from, to, visit)
    }

    fn read_ranges(&self, ranges: &[keys::KeyRange]) -> Result<super::Entries, Error> {
        self.local.read_ranges(ranges)
    }

    fn wal_syncs(&self) -> u64 {
        self.local.wal_syncs()
    }

    fn lsm_stats(&self) -> Option<LsmStats> {
        self.local.lsm_stats()
    }

    fn checkpoint(&self, dir: &Path) -> Result<(), Error> {
        self.local.checkpoint(dir)
    }
}

#[cfg(test)]
#[path = "replicate_tests.rs"]
mod tests;
