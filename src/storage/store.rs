//! [`WorkflowStore`]: the typed tables the engine reads and writes.
//!
//! Generic over the stored values (anything `serde`), so storage does not depend on
//! the workflow types and the workflow core does not depend on storage. Writes are
//! not performed here: the op builders return [`Op`]s that the caller gathers into
//! one atomic batch (typically through the [`super::GroupCommitter`]), because a
//! transition's journal record, snapshot, index and timer changes must land together.
//! Reads go straight to the storage and decode through the checksummed envelope, so
//! a corrupt record surfaces as [`Error::Corrupt`] instead of as state.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::keys::{self, JournalKey, KeyRange, SnapshotKey};
use super::{codec, Error, Op, Storage};

/// Meta entry holding the partition count fixed at creation.
const META_PARTITIONS: &str = "partitions";

/// One durable timer returned by [`WorkflowStore::due_timers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer<T> {
    /// When it fires, in milliseconds since the Unix epoch.
    pub due_ms: u64,
    /// Workflow the timer belongs to.
    pub id: String,
    /// Engine-chosen discriminator among one workflow's timers.
    pub tag: u64,
    /// The stored timer payload.
    pub value: T,
}

/// Typed access to the journal, snapshots, status index, timers and pipeline
/// definitions of a store with a fixed number of partitions. Cheap to clone.
#[derive(Clone)]
pub struct WorkflowStore {
    /// The raw store; shared with the group committer.
    storage: Arc<dyn Storage>,
    /// Fixed when the store was created; part of every per-workflow key.
    partitions: u16,
}

impl std::fmt::Debug for WorkflowStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowStore")
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

/// One scanned outbox row: its raw key (to delete it) and the decoded entry.
pub type OutboxRow<T> = (Vec<u8>, Result<(JournalKey, T), Error>);

impl WorkflowStore {
    /// Open the typed store over `storage`.
    ///
    /// On the first open the partition count is recorded (synced) in the meta table;
    /// every later open must configure the same count or is refused with
    /// [`Error::PartitionCountMismatch`], because partitions are baked into every key
    /// and a different count would hash workflows to partitions where their data is not.
    pub fn open(storage: Arc<dyn Storage>, partitions: u16) -> Result<Self, Error> {
        if partitions == 0 {
            return Err(Error::InvalidArgument(
                "the partition count must be at least 1".into(),
            ));
        }
        let key = keys::meta(META_PARTITIONS);
        match storage.get(&key)? {
            Some(bytes) => {
                let stored: u16 = codec::decode(&key, &bytes)?;
                if stored != partitions {
                    return Err(Error::PartitionCountMismatch {
                        stored,
                        configured: partitions,
                    });
                }
            }
            None => {
                storage.write(&[Op::Put(key, codec::encode(&partitions)?)], true)?;
                tracing::info!(partitions, "store created");
            }
        }
        Ok(WorkflowStore {
            storage,
            partitions,
        })
    }

    /// Open a store that must already exist, with the partition count it was
    /// created with (for offline tools such as `verify`).
    pub fn open_existing(storage: Arc<dyn Storage>) -> Result<Self, Error> {
        let key = keys::meta(META_PARTITIONS);
        match storage.get(&key)? {
            Some(bytes) => {
                let partitions: u16 = codec::decode(&key, &bytes)?;
                Self::open(storage, partitions)
            }
            None => Err(Error::InvalidArgument(
                "not an orchestrator store: no partition count recorded".into(),
            )),
        }
    }

    /// Number of workflows with `status` in `partition`, read from the status
    /// index without decoding its values.
    pub fn count_status(&self, partition: u16, status: u8) -> Result<u64, Error> {
        self.check_partition(partition)?;
        let range = keys::status_range(partition, status);
        let mut n = 0u64;
        self.storage.scan(&range.from, &range.to, &mut |_, _| {
            n += 1;
            true
        })?;
        Ok(n)
    }

    /// Whether workflow `id` has any stored state: two point reads (bloom
    /// filters make a miss cheap), no iterator. A workflow always journals
    /// its seq 1 on creation; a snapshot covers a truncated journal.
    pub fn workflow_exists(&self, partition: u16, id: &str) -> Result<bool, Error> {
        self.check_partition(partition)?;
        if self
            .storage
            .get(&keys::journal(partition, id, 1)?)?
            .is_some()
        {
            return Ok(true);
        }
        Ok(self.storage.get(&keys::snapshot(partition, id)?)?.is_some())
    }

    /// The partition count of this store.
    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// The raw storage underneath (to build a [`super::GroupCommitter`] or write a
    /// batch of ops directly).
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Number of synced WAL writes so far (see [`Storage::wal_syncs`]).
    pub fn wal_syncs(&self) -> u64 {
        self.storage.wal_syncs()
    }

    /// The partition that owns workflow `id`: FNV-1a 64 of the id's bytes, modulo the
    /// partition count.
    ///
    /// Architecture invariant: this function must never change. Every stored key of a
    /// workflow embeds its partition, so a different hash would strand existing
    /// workflows in partitions that no longer look for them.
    pub fn partition_of(&self, id: &str) -> u16 {
        let h = fnv1a_64(id.as_bytes()) % u64::from(self.partitions);
        // `h < partitions <= u16::MAX`, so the conversion is lossless.
        u16::try_from(h).unwrap_or(0)
    }

    fn check_partition(&self, partition: u16) -> Result<(), Error> {
        if partition < self.partitions {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "partition {partition} out of range 0..{}",
                self.partitions
            )))
        }
    }

    // -----------------------------------------------------------------------------
    // Op builders

    /// Append the journal record of a transition; `seq` is the seq of its first event.
    pub fn journal_put<T: Serialize>(
        &self,
        partition: u16,
        id: &str,
        seq: u64,
        record: &T,
    ) -> Result<Op, Error> {
        self.check_partition(partition)?;
        Ok(Op::Put(
            keys::journal(partition, id, seq)?,
            codec::encode(record)?,
        ))
    }

    /// Remove one journal record (journal truncation after a snapshot).
    pub fn journal_delete(&self, partition: u16, id: &str, seq: u64) -> Result<Op, Error> {
        self.check_partition(partition)?;
        Ok(Op::Delete(keys::journal(partition, id, seq)?))
    }

    /// Delete ops for every journal record of workflow `id` with `seq < before_seq`
    /// (truncation once a snapshot covers them). Only keys are read, so records that
    /// are corrupt are deleted too. Put the ops in the same batch as the snapshot that
    /// makes them redundant.
    pub fn journal_truncate(
        &self,
        partition: u16,
        id: &str,
        before_seq: u64,
    ) -> Result<Vec<Op>, Error> {
        self.check_partition(partition)?;
        let from = keys::journal(partition, id, 0)?;
        let to = keys::journal(partition, id, before_seq)?;
        let mut ops = Vec::new();
        self.storage.scan(&from, &to, &mut |k, _| {
            ops.push(Op::Delete(k.to_vec()));
            true
        })?;
        Ok(ops)
    }

    /// Remember that the journal record of `id` at `seq` still has to be
    /// published as a lifecycle event; put it in the record's own batch.
    pub fn outbox_put<T: Serialize>(
        &self,
        partition: u16,
        id: &str,
        seq: u64,
        entry: &T,
    ) -> Result<Op, Error> {
        self.check_partition(partition)?;
        Ok(Op::Put(
            keys::outbox(partition, id, seq)?,
            codec::encode(entry)?,
        ))
    }

    /// The event of the record at `seq` of `id` is published.
    pub fn outbox_delete(&self, partition: u16, id: &str, seq: u64) -> Result<Op, Error> {
        self.check_partition(partition)?;
        Ok(Op::Delete(keys::outbox(partition, id, seq)?))
    }

    /// Up to `limit` outbox entries, each workflow's in journal order, each
    /// value read by `decode(key, value)`. A corrupt entry is returned as an
    /// error in place so the caller can drop it.
    pub fn scan_outbox<T>(
        &self,
        limit: usize,
        decode: impl Fn(&[u8], &[u8]) -> Result<T, Error>,
    ) -> Result<Vec<OutboxRow<T>>, Error> {
        let range = keys::all_outbox();
        let mut out = Vec::new();
        self.storage.scan(&range.from, &range.to, &mut |k, v| {
            let item = keys::decode_outbox(k).and_then(|key| decode(k, v).map(|val| (key, val)));
            out.push((k.to_vec(), item));
            out.len() < limit
        })?;
        Ok(out)
    }

    /// Delete ops for the whole stored history of workflow `id`: every journal
    /// record and its snapshot (retention). Only keys are read, so corrupt
    /// records go too. The caller adds the status-index entry and any timers.
    pub fn workflow_delete_ops(&self, partition: u16, id: &str) -> Result<Vec<Op>, Error> {
        self.check_partition(partition)?;
        let range = keys::journal_range(partition, id, 0)?;
        let mut ops = Vec::new();
        self.storage.scan(&range.from, &range.to, &mut |k, _| {
            ops.push(Op::Delete(k.to_vec()));
            true
        })?;
        ops.push(Op::Delete(keys::snapshot(partition, id)?));
        Ok(ops)
    }

    /// Delete ops for every durable timer of `partition` whose workflow id
    /// `select` picks (keys only; a malformed key is left alone).
    pub fn timer_deletes_where(
        &self,
        partition: u16,
        select: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Vec<Op>, Error> {
        self.check_partition(partition)?;
        let range = keys::timers_due(partition, u64::MAX);
        let mut ops = Vec::new();
        self.storage.scan(&range.from, &range.to, &mut |k, _| {
            if let Ok(t) = keys::decode_timer(k) {
                if select(&t.id) {
                    ops.push(Op::Delete(k.to_vec()));
                }
            }
            true
        })?;
        Ok(ops)
    }

    /// Replace the snapshot of workflow `id`.
    pub fn snapshot_put<T: Serialize>(
        &self,
        partition: u16,
        id: &str,
        snapshot: &T,
    ) -> Result<Op, Error> {
        self.check_partition(partition)?;
        Ok(Op::Put(
            keys::snapshot(partition, id)?,
            codec::encode(snapshot)?,
        ))
    }

    /// Remove the snapshot of workflow `id`.
    pub fn snapshot_delete(&self, partition: u16, id: &str) -> Result<Op, Error> {
        self.check_partition(partition)?;
        Ok(Op::Delete(keys::snapshot(partition, id)?))
    }

    /// Index workflow `id` under `status`. The caller deletes the old status entry in
    /// the same batch when the status changes.
    pub fn status_put<T: Serialize>(
        &self,
        partition: u16,
        status: u8,
        id: &str,
        entry: &T,
    ) -> Result<Op, Error> {
        self.check_partition(partition)?;
        Ok(Op::Put(
            keys::status(partition, status, id)?,
            codec::encode(entry)?,
        ))
    }

    /// Remove workflow `id` from the `status` index.
    pub fn status_delete(&self, partition: u16, status: u8, id: &str) -> Result<Op, Error> {
        self.check_partition(partition)?;
        Ok(Op::Delete(keys::status(partition, status, id)?))
    }

    /// Arm a durable timer.
    pub fn timer_put<T: Serialize>(
        &self,
        partition: u16,
        due_ms: u64,
        id: &str,
        tag: u64,
        timer: &T,
    ) -> Result<Op, Error> {
        self.check_partition(partition)?;
        Ok(Op::Put(
            keys::timer(partition, due_ms, id, tag)?,
            codec::encode(timer)?,
        ))
    }

    /// Disarm (or acknowledge) a durable timer; the full key is needed, so the caller
    /// keeps `due_ms` and `tag` of the timers it armed.
    pub fn timer_delete(
        &self,
        partition: u16,
        due_ms: u64,
        id: &str,
        tag: u64,
    ) -> Result<Op, Error> {
        self.check_partition(partition)?;
        Ok(Op::Delete(keys::timer(partition, due_ms, id, tag)?))
    }

    /// Store a pipeline definition (not partitioned: every partition reads it).
    pub fn pipeline_put<T: Serialize>(
        &self,
        name: &str,
        version: u32,
        hash: u64,
        definition: &T,
    ) -> Result<Op, Error> {
        Ok(Op::Put(
            keys::pipeline(name, version, hash)?,
            codec::encode(definition)?,
        ))
    }

    /// Store (or replace) the record of batch job `job` (not partitioned).
    pub fn batch_job_put<T: Serialize>(&self, job: &str, record: &T) -> Result<Op, Error> {
        Ok(Op::Put(keys::batch_job(job)?, codec::encode(record)?))
    }

    /// Store chunk `chunk` of the frozen member list of batch job `job`.
    pub fn batch_members_put<T: Serialize>(
        &self,
        job: &str,
        chunk: u32,
        members: &T,
    ) -> Result<Op, Error> {
        Ok(Op::Put(
            keys::batch_members(job, chunk)?,
            codec::encode(members)?,
        ))
    }

    /// Record the failed item at position `index` of batch job `job`.
    pub fn batch_failure_put<T: Serialize>(
        &self,
        job: &str,
        index: u64,
        failure: &T,
    ) -> Result<Op, Error> {
        Ok(Op::Put(
            keys::batch_failure(job, index)?,
            codec::encode(failure)?,
        ))
    }

    /// Delete ops for every row of batch job `job`: its record, member chunks
    /// and failed items (retention; keys only).
    pub fn batch_job_delete_ops(&self, job: &str) -> Result<Vec<Op>, Error> {
        let mut ops = vec![Op::Delete(keys::batch_job(job)?)];
        for range in [keys::batch_members_all(job)?, keys::batch_failures(job)?] {
            self.storage.scan(&range.from, &range.to, &mut |k, _| {
                ops.push(Op::Delete(k.to_vec()));
                true
            })?;
        }
        Ok(ops)
    }

    // -----------------------------------------------------------------------------
    // Readers

    /// The record of batch job `job`, if any.
    pub fn load_batch_job<T: DeserializeOwned>(&self, job: &str) -> Result<Option<T>, Error> {
        self.load(&keys::batch_job(job)?)
    }

    /// Up to `limit` batch job records with their ids, in id order.
    pub fn list_batch_jobs<T: DeserializeOwned>(
        &self,
        limit: usize,
    ) -> Result<Vec<(String, T)>, Error> {
        self.collect(&keys::all_batch_jobs(), limit, |k, v| {
            Ok((keys::decode_batch_job(k)?, codec::decode(k, v)?))
        })
    }

    /// Chunk `chunk` of the frozen member list of batch job `job`, if stored.
    pub fn load_batch_members<T: DeserializeOwned>(
        &self,
        job: &str,
        chunk: u32,
    ) -> Result<Option<T>, Error> {
        self.load(&keys::batch_members(job, chunk)?)
    }

    /// Up to `limit` failed items of batch job `job`, in member order.
    pub fn list_batch_failures<T: DeserializeOwned>(
        &self,
        job: &str,
        limit: usize,
    ) -> Result<Vec<T>, Error> {
        self.collect(&keys::batch_failures(job)?, limit, |k, v| {
            codec::decode(k, v)
        })
    }

    /// The snapshot of workflow `id`, if any.
    pub fn load_snapshot<T: DeserializeOwned>(
        &self,
        partition: u16,
        id: &str,
    ) -> Result<Option<T>, Error> {
        self.check_partition(partition)?;
        self.load(&keys::snapshot(partition, id)?)
    }

    /// Whether workflow `id` has a journal record starting at `seq`: a point
    /// read (bloom filters answer most misses), no iterator.
    pub fn journal_record_exists(&self, partition: u16, id: &str, seq: u64) -> Result<bool, Error> {
        self.check_partition(partition)?;
        Ok(self
            .storage
            .get(&keys::journal(partition, id, seq)?)?
            .is_some())
    }

    /// The journal record of workflow `id` that starts at `seq`, if any.
    pub fn load_journal_record<T: DeserializeOwned>(
        &self,
        partition: u16,
        id: &str,
        seq: u64,
    ) -> Result<Option<T>, Error> {
        self.check_partition(partition)?;
        self.load(&keys::journal(partition, id, seq)?)
    }

    /// The journal records of workflow `id` with `seq >= from_seq`, in seq order.
    /// The first corrupt record fails the whole load: replaying around a hole would
    /// build a state that never existed.
    pub fn load_journal<T: DeserializeOwned>(
        &self,
        partition: u16,
        id: &str,
        from_seq: u64,
    ) -> Result<Vec<(u64, T)>, Error> {
        self.check_partition(partition)?;
        let range = keys::journal_range(partition, id, from_seq)?;
        self.collect(&range, usize::MAX, |k, v| {
            let key = keys::decode_journal(k)?;
            Ok((key.seq, codec::decode(k, v)?))
        })
    }

    /// Up to `limit` workflows of `partition` indexed under `status`, with their index
    /// entries, in key order (ids by length, then bytes).
    pub fn list_status<T: DeserializeOwned>(
        &self,
        partition: u16,
        status: u8,
        limit: usize,
    ) -> Result<Vec<(String, T)>, Error> {
        self.check_partition(partition)?;
        self.list_status_range(&keys::status_range(partition, status), limit)
    }

    /// Like [`Self::list_status`], continuing strictly after workflow `after_id` (the
    /// last id of the previous page).
    pub fn list_status_after<T: DeserializeOwned>(
        &self,
        partition: u16,
        status: u8,
        after_id: &str,
        limit: usize,
    ) -> Result<Vec<(String, T)>, Error> {
        self.check_partition(partition)?;
        self.list_status_range(
            &keys::status_range_after(partition, status, after_id)?,
            limit,
        )
    }

    fn list_status_range<T: DeserializeOwned>(
        &self,
        range: &KeyRange,
        limit: usize,
    ) -> Result<Vec<(String, T)>, Error> {
        self.collect(range, limit, |k, v| {
            let key = keys::decode_status(k)?;
            Ok((key.id, codec::decode(k, v)?))
        })
    }

    /// Up to `limit` timers of `partition` with `due_ms <= until_ms`, earliest first.
    pub fn due_timers<T: DeserializeOwned>(
        &self,
        partition: u16,
        until_ms: u64,
        limit: usize,
    ) -> Result<Vec<DueTimer<T>>, Error> {
        self.check_partition(partition)?;
        self.collect(&keys::timers_due(partition, until_ms), limit, |k, v| {
            let key = keys::decode_timer(k)?;
            Ok(DueTimer {
                due_ms: key.due_ms,
                id: key.id,
                tag: key.tag,
                value: codec::decode(k, v)?,
            })
        })
    }

    /// The definition of pipeline `name` at `version` with definition hash `hash`.
    pub fn load_pipeline<T: DeserializeOwned>(
        &self,
        name: &str,
        version: u32,
        hash: u64,
    ) -> Result<Option<T>, Error> {
        self.load(&keys::pipeline(name, version, hash)?)
    }

    /// Visit every journal record of every workflow, for an offline verifier.
    ///
    /// Unlike the loaders, corruption does not abort the scan: a malformed key or a
    /// corrupt value is passed to `visit` as an `Err` and the scan goes on, so one
    /// pass reports every bad record. `visit` returns `false` to stop early. Only a
    /// failure of the storage itself is returned as an error.
    pub fn scan_all_journals<T, F>(&self, mut visit: F) -> Result<(), Error>
    where
        T: DeserializeOwned,
        F: FnMut(Result<JournalKey, Error>, Result<T, Error>) -> bool,
    {
        let range = keys::all_journals();
        self.storage.scan(&range.from, &range.to, &mut |k, v| {
            visit(keys::decode_journal(k), codec::decode(k, v))
        })
    }

    /// Visit every snapshot of every workflow; same contract as
    /// [`Self::scan_all_journals`].
    pub fn scan_all_snapshots<T, F>(&self, mut visit: F) -> Result<(), Error>
    where
        T: DeserializeOwned,
        F: FnMut(Result<SnapshotKey, Error>, Result<T, Error>) -> bool,
    {
        let range = keys::all_snapshots();
        self.storage.scan(&range.from, &range.to, &mut |k, v| {
            visit(keys::decode_snapshot(k), codec::decode(k, v))
        })
    }

    fn load<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, Error> {
        match self.storage.get(key)? {
            Some(bytes) => codec::decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Decode up to `limit` entries of `range`, stopping at the first error.
    fn collect<R>(
        &self,
        range: &KeyRange,
        limit: usize,
        mut decode: impl FnMut(&[u8], &[u8]) -> Result<R, Error>,
    ) -> Result<Vec<R>, Error> {
        let mut out = Vec::new();
        let mut failure = None;
        if limit == 0 {
            return Ok(out);
        }
        self.storage
            .scan(&range.from, &range.to, &mut |k, v| match decode(k, v) {
                Ok(r) => {
                    out.push(r);
                    out.len() < limit
                }
                Err(e) => {
                    failure = Some(e);
                    false
                }
            })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

/// FNV-1a, 64-bit. Chosen because it is tiny, has no dependency and, unlike
/// `std`'s `DefaultHasher`, is specified and therefore stable across Rust releases.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET_BASIS, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    #[test]
    fn fnv1a_matches_reference_vectors() {
        // Published FNV-1a 64 test vectors: any change here breaks every store.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn partition_of_is_stable_and_in_range() {
        let store = WorkflowStore::open(Arc::new(MemoryStorage::new()), 16).unwrap();
        // Pinned values: if this fails, existing stores would be stranded.
        assert_eq!(
            store.partition_of("a"),
            (0xaf63_dc4c_8601_ec8c_u64 % 16) as u16
        );
        for i in 0..1000 {
            assert!(store.partition_of(&format!("video-{i}")) < 16);
        }
    }

    #[test]
    fn zero_partitions_and_out_of_range_partitions_are_refused() {
        let mem: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        assert!(matches!(
            WorkflowStore::open(mem.clone(), 0),
            Err(Error::InvalidArgument(_))
        ));
        let store = WorkflowStore::open(mem, 4).unwrap();
        assert!(matches!(
            store.journal_put(4, "w", 0, &1u8),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            store.load_snapshot::<u8>(9, "w"),
            Err(Error::InvalidArgument(_))
        ));
    }
}
