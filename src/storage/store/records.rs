//! A workflow's records: its journal, its snapshots and its lifecycle-event
//! outbox rows, and the deletes of all of them when it is purged.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::WorkflowStore;
use crate::storage::keys::{self, JournalKey, SnapshotKey};
use crate::storage::{codec, Error, Op};

/// One scanned outbox row: its raw key (to delete it) and the decoded entry.
pub type OutboxRow<T> = (Vec<u8>, Result<(JournalKey, T), Error>);

impl WorkflowStore {
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
        self.scan_outbox_of(None, limit, decode)
    }

    /// [`WorkflowStore::scan_outbox`] over the rows of `partitions` only
    /// (`None`: every partition), in partition order.
    pub fn scan_outbox_of<T>(
        &self,
        partitions: Option<&[u16]>,
        limit: usize,
        decode: impl Fn(&[u8], &[u8]) -> Result<T, Error>,
    ) -> Result<Vec<OutboxRow<T>>, Error> {
        let ranges = match partitions {
            None => vec![keys::all_outbox()],
            Some(ps) => ps.iter().map(|p| keys::partition_outbox(*p)).collect(),
        };
        let mut out = Vec::new();
        for range in ranges {
            if out.len() >= limit {
                break;
            }
            self.storage.scan(&range.from, &range.to, &mut |k, v| {
                let item =
                    keys::decode_outbox(k).and_then(|key| decode(k, v).map(|val| (key, val)));
                out.push((k.to_vec(), item));
                out.len() < limit
            })?;
        }
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

    /// The snapshot of workflow `id`, if any.
    pub fn load_snapshot<T: DeserializeOwned>(
        &self,
        partition: u16,
        id: &str,
    ) -> Result<Option<T>, Error> {
        self.check_partition(partition)?;
        self.load(&keys::snapshot(partition, id)?)
    }

    /// [`Self::load_snapshot`] for a state type whose older encoding `Old`
    /// is still read (see [`codec::decode_compat`]).
    pub fn load_snapshot_compat<T: DeserializeOwned, Old: codec::OlderEncodings<T>>(
        &self,
        partition: u16,
        id: &str,
    ) -> Result<Option<T>, Error> {
        self.check_partition(partition)?;
        let key = keys::snapshot(partition, id)?;
        match self.storage.get(&key)? {
            Some(bytes) => codec::decode_compat::<T, Old>(&key, &bytes).map(Some),
            None => Ok(None),
        }
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

    /// [`Self::scan_all_snapshots`] for a state type whose older encoding
    /// `Old` is still read (see [`codec::decode_compat`]).
    pub fn scan_all_snapshots_compat<T, Old, F>(&self, mut visit: F) -> Result<(), Error>
    where
        T: DeserializeOwned,
        Old: codec::OlderEncodings<T>,
        F: FnMut(Result<SnapshotKey, Error>, Result<T, Error>) -> bool,
    {
        let range = keys::all_snapshots();
        self.storage.scan(&range.from, &range.to, &mut |k, v| {
            visit(
                keys::decode_snapshot(k),
                codec::decode_compat::<T, Old>(k, v),
            )
        })
    }
}
