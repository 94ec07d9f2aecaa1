//! Partition snapshots of cluster mode on JetStream Object Store, and the
//! trimming of the journal below them.
//!
//! The owner of a partition writes the partition's snapshot
//! (`storage::replicate_snapshot`: its key range of the local store at
//! one journal position, read from one consistent view between two
//! commits) as the object `partition-<p>` of the bucket
//! `<PREFIX>_SNAPSHOTS` (`cluster.journal_replicas` replicas), replacing
//! the previous one. Once the object store acknowledged it, the owner
//! purges the partition's journal subject below the record the snapshot
//! covers and keeps that record: the subject then still has a last
//! sequence for the next append to name, and the checker starts the
//! chain at it. A restore loads the snapshot first and replays only the
//! records after it (`JetStreamJournal::start_serving`).
//!
//! When a snapshot is due is the pure [`SnapshotPolicy`]; [`run_snapshots`]
//! checks it every second for each partition the node serves.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, object_store};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::journal::{journal_stream, journal_subject, JetStreamJournal};
use super::stream_name;
use crate::cluster::{chain_hash, JournalPosition, PartitionSnapshot, SnapshotPolicy};
use crate::storage::take_snapshot;

/// The object store bucket of a prefix's partition snapshots.
pub fn snapshot_bucket(prefix: &str) -> String {
    stream_name(prefix, "SNAPSHOTS")
}

fn object_name(partition: u16) -> String {
    format!("partition-{partition}")
}

/// The object metadata key holding the covered subject sequence, so a
/// writer learns the stored snapshot's position without reading it.
const SEQ_KEY: &str = "journal-seq";

/// Opens (creating it when absent) the snapshot bucket of `prefix`.
pub async fn ensure_snapshot_bucket(
    js: &jetstream::Context,
    prefix: &str,
    replicas: usize,
) -> Result<object_store::ObjectStore, String> {
    let bucket = snapshot_bucket(prefix);
    if let Ok(store) = js.get_object_store(&bucket).await {
        return Ok(store);
    }
    js.create_object_store(object_store::Config {
        bucket: bucket.clone(),
        description: Some("partition snapshots of the replicated journal".into()),
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas.max(1),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot create object store {bucket}: {e}"))
}

/// `partition`'s snapshot, checked (checksum, partition); `None` when it
/// has none.
pub async fn read_snapshot(
    store: &object_store::ObjectStore,
    partition: u16,
) -> Result<Option<PartitionSnapshot>, String> {
    let mut object = match store.get(object_name(partition)).await {
        Ok(o) => o,
        Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "cannot read the snapshot of partition {partition}: {e}"
            ))
        }
    };
    let mut wire = Vec::new();
    object
        .read_to_end(&mut wire)
        .await
        .map_err(|e| format!("cannot read the snapshot of partition {partition}: {e}"))?;
    PartitionSnapshot::decode(partition, &wire).map(Some)
}

/// The subject sequence the stored snapshot of `partition` covers (0 when
/// it has none), from the object's metadata.
async fn stored_seq(store: &object_store::ObjectStore, partition: u16) -> Result<u64, String> {
    match store.info(object_name(partition)).await {
        Ok(info) => Ok(info
            .metadata
            .get(SEQ_KEY)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)),
        Err(e) if e.kind() == object_store::InfoErrorKind::NotFound => Ok(0),
        Err(e) => Err(format!(
            "cannot read the snapshot info of partition {partition}: {e}"
        )),
    }
}

/// What one snapshot wrote and trimmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotWritten {
    pub partition: u16,
    /// The journal position it covers.
    pub position: JournalPosition,
    /// Keys in it.
    pub keys: usize,
    /// Bytes of its wire form.
    pub bytes: usize,
    /// Journal records purged below it.
    pub purged: u64,
}

impl JetStreamJournal {
    /// Writes `partition`'s snapshot from the local store and trims the
    /// journal below the record it covers. `None` when there is nothing
    /// new to cover (the stored snapshot is at or past the local store's
    /// position, or the store applied nothing of the partition). An error
    /// leaves the journal untrimmed.
    pub async fn snapshot(&self, partition: u16) -> Result<Option<SnapshotWritten>, String> {
        let Some(local) = self.local().cloned() else {
            return Ok(None);
        };
        let counted = self.records_since_snapshot(partition);
        let snapshot =
            tokio::task::spawn_blocking(move || take_snapshot(local.as_ref(), partition))
                .await
                .map_err(|e| format!("snapshot of partition {partition} failed: {e}"))?
                .map_err(|e| format!("snapshot of partition {partition}: {e}"))?;
        let at = snapshot.position;
        if at.seq == 0 || stored_seq(&self.snapshots, partition).await? >= at.seq {
            self.snapshot_written(partition, counted);
            return Ok(None);
        }
        // The position must be the journal's record at that sequence: a
        // store on another chain (the stream was recreated) is not
        // written over the journal's history.
        let subject = journal_subject(self.prefix(), partition);
        let stream = self
            .js()
            .get_stream_no_info(journal_stream(self.prefix()))
            .await
            .map_err(|e| format!("cannot open the journal stream: {e}"))?;
        let covered = stream
            .get_raw_message(at.seq)
            .await
            .map_err(|e| format!("cannot read seq {} of the journal: {e}", at.seq))?;
        if covered.subject.as_str() != subject || chain_hash(&covered.payload) != at.hash {
            return Err(format!(
                "partition {partition}: the local store's position seq {} is not the journal's record there; no snapshot written",
                at.seq
            ));
        }
        let wire = snapshot.encode();
        let meta = object_store::ObjectMetadata {
            name: object_name(partition),
            metadata: HashMap::from([(SEQ_KEY.to_owned(), at.seq.to_string())]),
            ..Default::default()
        };
        self.snapshots
            .put(meta, &mut wire.as_slice())
            .await
            .map_err(|e| format!("cannot write the snapshot of partition {partition}: {e}"))?;
        self.snapshot_written(partition, counted);
        // Stored on the bucket's replicas: the records below the covered
        // one are no longer needed by any restore.
        let purged = stream
            .purge()
            .filter(&subject)
            .sequence(at.seq)
            .await
            .map_err(|e| {
                format!("snapshot of partition {partition} written, journal not trimmed: {e}")
            })?
            .purged;
        Ok(Some(SnapshotWritten {
            partition,
            position: at,
            keys: snapshot.entries.len(),
            bytes: wire.len(),
            purged,
        }))
    }
}

/// Writes the snapshot of each partition the node serves whenever
/// `policy` says it is due, checking every second, until `stop` turns
/// true or is dropped. A failed snapshot is logged and tried again at the
/// next check.
pub async fn run_snapshots(
    journal: Arc<JetStreamJournal>,
    policy: SnapshotPolicy,
    mut stop: watch::Receiver<bool>,
) {
    let mut last: BTreeMap<u16, Instant> = BTreeMap::new();
    let mut timer = tokio::time::interval(Duration::from_secs(1));
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = timer.tick() => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
        for partition in journal.served() {
            let since = *last.entry(partition).or_insert_with(Instant::now);
            let records = journal.records_since_snapshot(partition);
            let elapsed_ms = since.elapsed().as_millis() as u64;
            if !policy.due(records, elapsed_ms) {
                continue;
            }
            match journal.snapshot(partition).await {
                Ok(Some(w)) => {
                    last.insert(partition, Instant::now());
                    tracing::info!(
                        partition,
                        seq = w.position.seq,
                        keys = w.keys,
                        bytes = w.bytes,
                        purged = w.purged,
                        "cluster mode: partition snapshot written, journal trimmed below it"
                    );
                }
                Ok(None) => {
                    last.insert(partition, Instant::now());
                }
                Err(e) => {
                    tracing::warn!(partition, error = %e, "cluster mode: partition snapshot not written")
                }
            }
        }
    }
}
