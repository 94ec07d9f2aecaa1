//! [`MemoryReplicator`]: the in-memory twin of the replicated journal, for
//! tests of the replication seam without a NATS server. One subject per
//! partition that stores an append only when it names the subject's last
//! sequence (JetStream's `Nats-Expected-Last-Subject-Sequence`), with the
//! same record format, the same [`Appender`] and the same tail replay as
//! the JetStream journal. [`MemoryReplicator::sharing`] is a second node
//! on the same journal. [`MemoryReplicator::snapshot`] writes a
//! partition's snapshot and trims the subject below it, as the JetStream
//! journal does with its object store.

use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use super::replicate::{PartitionBatch, Replicator};
use super::replicate_replay::{applied_position, apply_records, position_op};
use super::replicate_snapshot::{load_if_ahead, take_snapshot};
use super::{Error, Storage};
use crate::cluster::{
    chain_hash, Appender, Epoch, JournalOp, JournalPosition, NodeId, PartitionSnapshot,
};

#[derive(Default)]
struct Stream {
    /// `(stream sequence, partition, wire form)`, one sequence for all
    /// partitions, as in a JetStream stream.
    messages: Vec<(u64, u16, Vec<u8>)>,
    /// The last sequence given (purged messages keep their sequences).
    last_seq: u64,
    /// Each partition's snapshot, in its wire form (the object store).
    snapshots: std::collections::BTreeMap<u16, Vec<u8>>,
}

impl Stream {
    fn last(&self, partition: u16) -> Option<(u64, &[u8])> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.1 == partition)
            .map(|m| (m.0, m.2.as_slice()))
    }

    fn store(&mut self, partition: u16, wire: Vec<u8>) -> u64 {
        self.last_seq += 1;
        self.messages.push((self.last_seq, partition, wire));
        self.last_seq
    }
}

struct State {
    appender: Appender,
    /// Terms refused by the journal, in order: what the shell feeds the
    /// ownership core as `AppendRejected`.
    deposed: Vec<(u16, Epoch)>,
    /// Appends sent (one per partition per batch).
    appends: u64,
}

/// See the module docs.
pub struct MemoryReplicator {
    state: Mutex<State>,
    /// Shared by the nodes of one journal; locked after `state`.
    stream: Arc<Mutex<Stream>>,
    local: OnceLock<Arc<dyn Storage>>,
}

impl MemoryReplicator {
    /// A journal with no records, appended to as `node`.
    pub fn new(node: NodeId) -> MemoryReplicator {
        Self::on(node, Arc::new(Mutex::new(Stream::default())))
    }

    fn on(node: NodeId, stream: Arc<Mutex<Stream>>) -> MemoryReplicator {
        MemoryReplicator {
            state: Mutex::new(State {
                appender: Appender::new(node),
                deposed: Vec::new(),
                appends: 0,
            }),
            stream,
            local: OnceLock::new(),
        }
    }

    /// Another node, `node`, appending to the same journal.
    pub fn sharing(&self, node: NodeId) -> MemoryReplicator {
        Self::on(node, self.stream.clone())
    }

    /// Starts serving `partition` at `epoch`: applies the records after the
    /// local store's position to it (when a local store is attached),
    /// then appends the term's open record after the tail. Answers the
    /// number of records applied.
    pub fn open(&self, partition: u16, epoch: Epoch) -> Result<usize, String> {
        let mut st = self.state.lock();
        let mut stream = self.stream.lock();
        let mut replayed = 0;
        if let Some(local) = self.local.get() {
            let mut at = applied_position(local.as_ref(), partition).map_err(|e| e.to_string())?;
            if let Some(wire) = stream.snapshots.get(&partition) {
                let snapshot = PartitionSnapshot::decode(partition, wire)?;
                at = load_if_ahead(local.as_ref(), at, &snapshot)
                    .map_err(|e| e.to_string())?
                    .0;
            }
            let after: Vec<(u64, Vec<u8>)> = stream
                .messages
                .iter()
                .filter(|m| m.1 == partition && m.0 > at.seq)
                .map(|m| (m.0, m.2.clone()))
                .collect();
            apply_records(local.as_ref(), partition, at, &after).map_err(|e| e.to_string())?;
            replayed = after.len();
        }
        let append = st
            .appender
            .open(partition, epoch, stream.last(partition))
            .map_err(|e| e.to_string())?;
        let seq = stream.store(partition, append.wire.clone());
        st.appender.acked(&append, seq);
        if let Some(local) = self.local.get() {
            let at = JournalPosition::of(seq, &append.wire);
            local
                .write(&[position_op(partition, &at)], false)
                .map_err(|e| e.to_string())?;
        }
        Ok(replayed)
    }

    /// Writes `partition`'s snapshot from the local store and trims its
    /// subject below the record the snapshot covers (that record stays, so
    /// the subject keeps a last sequence). Answers the position covered;
    /// `None` when the store has applied nothing of the partition.
    pub fn snapshot(&self, partition: u16) -> Result<Option<JournalPosition>, String> {
        let local = self.local.get().ok_or("no local store attached")?;
        let snapshot = take_snapshot(local.as_ref(), partition).map_err(|e| e.to_string())?;
        let at = snapshot.position;
        if at.seq == 0 {
            return Ok(None);
        }
        let mut stream = self.stream.lock();
        let covered = stream
            .messages
            .iter()
            .find(|m| m.0 == at.seq && m.1 == partition);
        if covered.is_none_or(|m| chain_hash(&m.2) != at.hash) {
            return Err(format!(
                "partition {partition}: the local store's position seq {} is not a record of the journal",
                at.seq
            ));
        }
        stream.snapshots.insert(partition, snapshot.encode());
        stream
            .messages
            .retain(|m| m.1 != partition || m.0 >= at.seq);
        Ok(Some(at))
    }

    /// The position `partition`'s snapshot covers, if it has one.
    pub fn snapshot_position(&self, partition: u16) -> Option<JournalPosition> {
        let stream = self.stream.lock();
        let wire = stream.snapshots.get(&partition)?;
        PartitionSnapshot::decode(partition, wire)
            .ok()
            .map(|s| s.position)
    }

    /// Appends `wire` to `partition` without any check, as a writer that
    /// skips the expected-sequence header would.
    pub fn plant(&self, partition: u16, wire: Vec<u8>) -> u64 {
        self.stream.lock().store(partition, wire)
    }

    /// Another owner (`node` at `epoch`) takes `partition` over: it reads
    /// the tail and appends its open record, so this node's next append
    /// names an old tail.
    pub fn take_over_as(&self, node: &str, partition: u16, epoch: Epoch) {
        let mut stream = self.stream.lock();
        let mut other = Appender::new(node.into());
        let opened = other.open(partition, epoch, stream.last(partition));
        if let Ok(append) = opened {
            stream.store(partition, append.wire);
        }
    }

    /// The partition's records as `(stream sequence, wire form)`.
    pub fn records(&self, partition: u16) -> Vec<(u64, Vec<u8>)> {
        self.stream
            .lock()
            .messages
            .iter()
            .filter(|m| m.1 == partition)
            .map(|m| (m.0, m.2.clone()))
            .collect()
    }

    /// The terms refused so far.
    pub fn deposed(&self) -> Vec<(u16, Epoch)> {
        self.state.lock().deposed.clone()
    }

    /// Records appended for commit batches so far.
    pub fn appends(&self) -> u64 {
        self.state.lock().appends
    }
}

impl Replicator for MemoryReplicator {
    fn append(&self, batches: &[PartitionBatch]) -> Vec<Result<JournalPosition, Error>> {
        let mut st = self.state.lock();
        let mut stream = self.stream.lock();
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let ops: Vec<JournalOp> = b.ops.clone();
            let append = match st.appender.commit(b.partition, ops) {
                Ok(a) => a,
                Err(e) => {
                    out.push(Err(Error::NotReplicated {
                        partition: b.partition,
                        reason: e.to_string(),
                    }));
                    continue;
                }
            };
            st.appends += 1;
            let last = stream.last(b.partition).map_or(0, |t| t.0);
            if last != append.follows {
                st.appender.stop(b.partition, append.epoch);
                st.deposed.push((b.partition, append.epoch));
                out.push(Err(Error::NotReplicated {
                    partition: b.partition,
                    reason: format!(
                        "deposed: the journal refused epoch {} (another owner appended)",
                        append.epoch
                    ),
                }));
                continue;
            }
            let seq = stream.store(b.partition, append.wire.clone());
            st.appender.acked(&append, seq);
            out.push(Ok(JournalPosition::of(seq, &append.wire)));
        }
        out
    }

    fn attach(&self, local: Arc<dyn Storage>) {
        let _ = self.local.set(local);
    }
}
