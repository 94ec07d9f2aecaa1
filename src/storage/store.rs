//! [`WorkflowStore`]: the typed tables the engine reads and writes.
//!
//! Generic over the stored values (anything `serde`), so storage does not depend on
//! the workflow types and the workflow core does not depend on storage. Writes are
//! not performed here: the op builders return [`Op`]s that the caller gathers into
//! one atomic batch (typically through the [`super::GroupCommitter`]), because a
//! transition's journal record, snapshot, index and timer changes must land together.
//! Reads go straight to the storage and decode through the checksummed envelope, so
//! a corrupt record surfaces as [`Error::Corrupt`] instead of as state.
//!
//! This file opens the store and holds the store-wide tables (meta, pipeline
//! definitions); the per-workflow tables are in `records` (journal,
//! snapshots, outbox), `status_index` and `timers`, batch jobs in `batch`.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::keys::{self, KeyRange};
use super::{codec, Error, Op, Storage};

mod batch;
mod records;
mod status_index;
mod timers;

pub use records::OutboxRow;
pub use timers::DueTimer;

/// Meta entry holding the partition count fixed at creation.
const META_PARTITIONS: &str = "partitions";

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

    /// The definition of pipeline `name` at `version` with definition hash `hash`.
    pub fn load_pipeline<T: DeserializeOwned>(
        &self,
        name: &str,
        version: u32,
        hash: u64,
    ) -> Result<Option<T>, Error> {
        self.load(&keys::pipeline(name, version, hash)?)
    }

    /// [`Self::load_pipeline`] for a definition type whose older encoding
    /// `Old` is still read (see [`codec::decode_compat`]).
    pub fn load_pipeline_compat<T: DeserializeOwned, Old: codec::OlderEncodings<T>>(
        &self,
        name: &str,
        version: u32,
        hash: u64,
    ) -> Result<Option<T>, Error> {
        let key = keys::pipeline(name, version, hash)?;
        match self.storage.get(&key)? {
            Some(bytes) => codec::decode_compat::<T, Old>(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Every stored definition of pipeline `name`: (version, hash, definition),
    /// ordered by version then hash; at most `limit`. Definitions written in
    /// the older encoding `Old` are converted.
    pub fn pipeline_definitions<T: DeserializeOwned, Old: codec::OlderEncodings<T>>(
        &self,
        name: &str,
        limit: usize,
    ) -> Result<Vec<(u32, u64, T)>, Error> {
        self.collect(&keys::pipeline_versions(name)?, limit, |k, v| {
            let key = keys::decode_pipeline(k)?;
            Ok((key.version, key.hash, codec::decode_compat::<T, Old>(k, v)?))
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
