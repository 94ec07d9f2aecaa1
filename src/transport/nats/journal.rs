//! The replicated journal of cluster mode on JetStream: each partition's
//! records on `<prefix>.journal.<partition>` in the stream
//! `<PREFIX>_JOURNAL` (file storage, `cluster.journal_replicas` replicas).
//!
//! [`JetStreamJournal`] is the [`Replicator`] of [`ReplicatedStorage`]: the
//! group committer's writer hands it each batch, it publishes ONE record
//! per partition with `Nats-Expected-Last-Subject-Sequence` set to the
//! sequence the record follows, and answers once JetStream acknowledged
//! (stored on the stream's replicas) or refused. A refusal for a wrong last
//! sequence means another owner appended: the term ends at once (nothing
//! more is appended for the partition) and `(partition, epoch)` goes to the
//! deposed channel, which the ownership shell feeds to the core as
//! `AppendRejected`. An append without an answer (timeout, lost
//! connection) ends the term the same way: whether it was stored is
//! unknown, so the next term reads the tail afresh.
//!
//! Starting a term first replays the tail: the records after the local
//! store's applied position are read and applied to the local store
//! (`storage::replicate_replay`), so a node with an empty data directory
//! restores the partition from the journal, and one whose journal got
//! ahead of its store (a crash between the acknowledgement and the local
//! write) catches up. The term's open record then follows the last record
//! applied.
//!
//! When the partition has a snapshot (`journal_snapshot`) ahead of the
//! local store, starting a term loads it first and replays only the
//! records after it.
//!
//! The record format, the chain and the terms are the pure
//! [`crate::cluster`] code ([`Appender`], [`JournalRecord`]).
//!
//! [`ReplicatedStorage`]: crate::storage::ReplicatedStorage

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, object_store, stream};
use tokio::sync::mpsc;

use super::journal_snapshot::{ensure_snapshot_bucket, read_snapshot};
use super::stream_name;
use crate::cluster::{Append, Appender, Epoch, JournalPosition, NodeId};
use crate::storage::replicate_replay::position_op;
use crate::storage::{
    applied_position, apply_records, load_if_ahead, Error, PartitionBatch, Replicator, Storage,
};

/// Records read and applied per local write during a tail replay.
const REPLAY_CHUNK: usize = 256;

/// The journal stream of a prefix.
pub fn journal_stream(prefix: &str) -> String {
    stream_name(prefix, "JOURNAL")
}

/// The subject of a partition's records.
pub fn journal_subject(prefix: &str, partition: u16) -> String {
    format!("{prefix}.journal.{partition}")
}

/// Creates (or updates) the journal stream with `replicas` replicas.
pub async fn ensure_journal_stream(
    js: &jetstream::Context,
    prefix: &str,
    replicas: usize,
) -> Result<stream::Stream, String> {
    let name = journal_stream(prefix);
    js.get_or_create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("{prefix}.journal.>")],
        storage: stream::StorageType::File,
        num_replicas: replicas.max(1),
        retention: stream::RetentionPolicy::Limits,
        allow_direct: true,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot create stream {name}: {e}"))
}

/// The answers of one append, as the shell reports them to the appender.
enum Outcome {
    Stored(u64),
    /// The stream's last sequence for the subject was not the expected one.
    Refused,
    /// No definite answer.
    Unknown(String),
}

/// See the module docs.
pub struct JetStreamJournal {
    js: jetstream::Context,
    prefix: String,
    appender: parking_lot::Mutex<Appender>,
    /// Runs the publishes when called from the committer's thread.
    runtime: tokio::runtime::Handle,
    deposed: mpsc::UnboundedSender<(u16, Epoch)>,
    appends: AtomicU64,
    /// The local store tail replay writes to (attached by the storage).
    local: OnceLock<Arc<dyn Storage>>,
    replayed: AtomicU64,
    /// Each partition's snapshot (`<PREFIX>_SNAPSHOTS`).
    pub(super) snapshots: object_store::ObjectStore,
    /// Journal records appended per partition since its last snapshot.
    since_snapshot: parking_lot::Mutex<BTreeMap<u16, u64>>,
    /// Partition snapshots loaded into the local store by tail replay.
    loaded: AtomicU64,
}

impl JetStreamJournal {
    /// The journal of `prefix`, appended to as `node`; creates the stream.
    /// Returns the journal and the receiver of deposed terms. Call from
    /// inside the runtime that will run the publishes.
    pub async fn open(
        js: jetstream::Context,
        prefix: &str,
        node: NodeId,
        replicas: usize,
    ) -> Result<(JetStreamJournal, mpsc::UnboundedReceiver<(u16, Epoch)>), String> {
        ensure_journal_stream(&js, prefix, replicas).await?;
        let snapshots = ensure_snapshot_bucket(&js, prefix, replicas).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        Ok((
            JetStreamJournal {
                js,
                prefix: prefix.to_owned(),
                appender: parking_lot::Mutex::new(Appender::new(node)),
                runtime: tokio::runtime::Handle::current(),
                deposed: tx,
                appends: AtomicU64::new(0),
                local: OnceLock::new(),
                replayed: AtomicU64::new(0),
                snapshots,
                since_snapshot: parking_lot::Mutex::new(BTreeMap::new()),
                loaded: AtomicU64::new(0),
            },
            rx,
        ))
    }

    /// Records appended for commit batches so far (one per partition per
    /// batch): the numerator of journal messages per transition.
    pub fn appends(&self) -> u64 {
        self.appends.load(Ordering::Relaxed)
    }

    /// Journal records applied to the local store by tail replay so far.
    pub fn replayed(&self) -> u64 {
        self.replayed.load(Ordering::Relaxed)
    }

    /// Partition snapshots loaded into the local store by tail replay so
    /// far.
    pub fn snapshots_loaded(&self) -> u64 {
        self.loaded.load(Ordering::Relaxed)
    }

    /// Journal records appended for `partition` since its last snapshot
    /// (or since this node started).
    pub fn records_since_snapshot(&self, partition: u16) -> u64 {
        self.since_snapshot
            .lock()
            .get(&partition)
            .copied()
            .unwrap_or(0)
    }

    /// A snapshot covered `counted` of the records counted for `partition`.
    pub(super) fn snapshot_written(&self, partition: u16, counted: u64) {
        if let Some(n) = self.since_snapshot.lock().get_mut(&partition) {
            *n = n.saturating_sub(counted);
        }
    }

    /// The partitions whose terms have started.
    pub fn served(&self) -> Vec<u16> {
        self.appender.lock().served()
    }

    pub(super) fn local(&self) -> Option<&Arc<dyn Storage>> {
        self.local.get()
    }

    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(super) fn js(&self) -> &jetstream::Context {
        &self.js
    }

    /// The epoch this node appends under for `partition`, once serving.
    pub fn serving(&self, partition: u16) -> Option<Epoch> {
        self.appender.lock().epoch(partition)
    }

    /// Starts a term: replays the records after the local store's applied
    /// position into it, then appends the term's open record after the
    /// last one and serves once it is stored. An error means the term did
    /// not start (another append moved the tail first, the tail is a bad
    /// record, or a record to replay does not continue the local store);
    /// the core decides whether to try again.
    pub async fn start_serving(&self, partition: u16, epoch: Epoch) -> Result<(), String> {
        let subject = journal_subject(&self.prefix, partition);
        let stream = self
            .js
            .get_stream_no_info(journal_stream(&self.prefix))
            .await
            .map_err(|e| format!("cannot open the journal stream: {e}"))?;
        let local = self.local.get().cloned();
        let mut at = match &local {
            Some(l) => applied_position(l.as_ref(), partition).map_err(|e| e.to_string())?,
            None => JournalPosition::START,
        };
        // A snapshot ahead of the local store (an empty one, or one that
        // fell behind a trim) is loaded first: the records it covers may
        // be gone from the journal.
        if let Some(l) = &local {
            if let Some(snapshot) = read_snapshot(&self.snapshots, partition).await? {
                let store = l.clone();
                let (now, loaded) = tokio::task::spawn_blocking(move || {
                    load_if_ahead(store.as_ref(), at, &snapshot)
                })
                .await
                .map_err(|e| format!("loading the snapshot of partition {partition} failed: {e}"))?
                .map_err(|e| format!("loading the snapshot of partition {partition}: {e}"))?;
                if loaded {
                    self.loaded.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        partition,
                        seq = now.seq,
                        "cluster mode: partition snapshot loaded into the local store"
                    );
                }
                at = now;
            }
        }
        // Replay until the tail is a record already applied: a record
        // appended meanwhile (a deposed owner's) is replayed too, or, if it
        // lands after this read, refuses the open record below.
        let tail = loop {
            let tail = match stream.get_last_raw_message_by_subject(&subject).await {
                Ok(m) => Some((m.sequence, m.payload.to_vec())),
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => None,
                Err(e) => return Err(format!("cannot read the tail of {subject}: {e}")),
            };
            let (Some(local), Some((last, _))) = (&local, &tail) else {
                break tail;
            };
            if *last <= at.seq {
                break tail;
            }
            while at.seq < *last {
                let chunk = read_range(&stream, &subject, at.seq + 1, *last, REPLAY_CHUNK).await?;
                if chunk.is_empty() {
                    return Err(format!(
                        "tail replay of partition {partition}: no record after seq {} though the tail is seq {last}",
                        at.seq
                    ));
                }
                let store = local.clone();
                at = tokio::task::spawn_blocking(move || {
                    apply_records(store.as_ref(), partition, at, &chunk).map(|p| (p, chunk.len()))
                })
                .await
                .map_err(|e| format!("tail replay of partition {partition} failed: {e}"))?
                .map(|(p, n)| {
                    self.replayed.fetch_add(n as u64, Ordering::Relaxed);
                    p
                })
                .map_err(|e| format!("tail replay of partition {partition}: {e}"))?;
            }
        };
        match &tail {
            Some((seq, wire)) if *seq == at.seq && JournalPosition::of(*seq, wire) != at => {
                tracing::warn!(partition, seq, "the local store's journal position names another record than the journal's; serving from the local store")
            }
            Some((seq, _)) if *seq < at.seq => {
                tracing::warn!(partition, seq, applied = at.seq, "the journal ends before the local store's position (stream recreated?); serving from the local store")
            }
            None if at.seq > 0 => {
                tracing::warn!(partition, applied = at.seq, "the journal of the partition is empty but the local store applied records (stream recreated?); serving from the local store")
            }
            _ => {}
        }
        let append = self
            .appender
            .lock()
            .open(
                partition,
                epoch,
                tail.as_ref().map(|(s, w)| (*s, w.as_slice())),
            )
            .map_err(|e| e.to_string())?;
        match self.publish(&append).await {
            Outcome::Stored(seq) => {
                // The store holds everything up to the open record: a
                // restart replays only what follows it. Written before the
                // term takes commits, whose positions come after it.
                if let Some(local) = &local {
                    let at = JournalPosition::of(seq, &append.wire);
                    let store = local.clone();
                    let written = tokio::task::spawn_blocking(move || {
                        store.write(&[position_op(partition, &at)], false)
                    })
                    .await;
                    if !matches!(written, Ok(Ok(()))) {
                        tracing::warn!(
                            partition,
                            "journal position of the open record not written; a restart replays it"
                        );
                    }
                }
                self.appender.lock().acked(&append, seq);
                Ok(())
            }
            Outcome::Refused => {
                self.appender.lock().stop(partition, epoch);
                Err(format!(
                    "the journal of partition {partition} moved while opening epoch {epoch}"
                ))
            }
            Outcome::Unknown(e) => {
                self.appender.lock().stop(partition, epoch);
                Err(e)
            }
        }
    }

    /// Ends the term of `partition`, whichever it is (handover, lost
    /// lease): nothing more is appended for it.
    pub fn stop_partition(&self, partition: u16) {
        self.appender.lock().end(partition);
    }

    async fn publish(&self, append: &Append) -> Outcome {
        let subject = journal_subject(&self.prefix, append.partition);
        let msg = PublishMessage::build()
            .payload(append.wire.clone().into())
            .expected_last_subject_sequence(append.follows);
        let ack = match self.js.send_publish(subject, msg).await {
            Ok(ack) => ack,
            Err(e) => return Outcome::Unknown(format!("cannot publish: {e}")),
        };
        match ack.await {
            Ok(ack) => Outcome::Stored(ack.sequence),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Outcome::Refused,
            Err(e) => Outcome::Unknown(format!("no acknowledgement: {e}")),
        }
    }

    /// Appends one record per batch concurrently and waits for every
    /// answer (see [`Replicator::append`]).
    pub async fn append_batches(
        &self,
        batches: &[PartitionBatch],
    ) -> Vec<Result<JournalPosition, Error>> {
        let built: Vec<Result<Append, Error>> = {
            let appender = self.appender.lock();
            batches
                .iter()
                .map(|b| {
                    appender
                        .commit(b.partition, b.ops.clone())
                        .map_err(|e| Error::NotReplicated {
                            partition: b.partition,
                            reason: e.to_string(),
                        })
                })
                .collect()
        };
        let sends = built.iter().map(|b| async move {
            match b {
                Ok(a) => Some(self.publish(a).await),
                Err(_) => None,
            }
        });
        let outcomes = futures_util::future::join_all(sends).await;
        let mut appender = self.appender.lock();
        built
            .into_iter()
            .zip(outcomes)
            .map(|(b, outcome)| {
                let a = b?;
                self.appends.fetch_add(1, Ordering::Relaxed);
                let reason = match outcome {
                    Some(Outcome::Stored(seq)) => {
                        appender.acked(&a, seq);
                        *self.since_snapshot.lock().entry(a.partition).or_default() += 1;
                        return Ok(JournalPosition::of(seq, &a.wire));
                    }
                    Some(Outcome::Refused) => format!(
                        "deposed: the journal refused epoch {} (another owner appended)",
                        a.epoch
                    ),
                    Some(Outcome::Unknown(e)) => e,
                    None => "not sent".into(),
                };
                if appender.stop(a.partition, a.epoch) {
                    let _ = self.deposed.send((a.partition, a.epoch));
                }
                Err(Error::NotReplicated {
                    partition: a.partition,
                    reason,
                })
            })
            .collect()
    }
}

impl Replicator for JetStreamJournal {
    fn append(&self, batches: &[PartitionBatch]) -> Vec<Result<JournalPosition, Error>> {
        let refuse = |reason: &str| {
            batches
                .iter()
                .map(|b| {
                    Err(Error::NotReplicated {
                        partition: b.partition,
                        reason: reason.into(),
                    })
                })
                .collect()
        };
        match tokio::runtime::Handle::try_current() {
            // The committer's own thread: run the publishes on the runtime.
            Err(_) => self.runtime.block_on(self.append_batches(batches)),
            // A runtime thread (an inline commit): step out of the runtime
            // for the wait, which only a multi-threaded runtime allows.
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.runtime.block_on(self.append_batches(batches)))
            }
            Ok(_) => refuse("the replicated journal cannot wait on a current-thread runtime"),
        }
    }

    fn attach(&self, local: Arc<dyn Storage>) {
        let _ = self.local.set(local);
    }
}

/// A partition's records in stream order, as `(stream sequence, wire
/// form)`, read one by one from the stream.
pub async fn read_partition(
    js: &jetstream::Context,
    prefix: &str,
    partition: u16,
) -> Result<Vec<(u64, Vec<u8>)>, String> {
    let name = journal_stream(prefix);
    let stream = js
        .get_stream_no_info(&name)
        .await
        .map_err(|e| format!("cannot open stream {name}: {e}"))?;
    let subject = journal_subject(prefix, partition);
    read_range(&stream, &subject, 1, u64::MAX, usize::MAX).await
}

/// At most `max` records of `subject` with stream sequences in
/// `from..=to`, in stream order, read one by one (direct get).
async fn read_range(
    stream: &stream::Stream<()>,
    subject: &str,
    from: u64,
    to: u64,
    max: usize,
) -> Result<Vec<(u64, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut from = from;
    while from <= to && out.len() < max {
        match stream.get_first_raw_message_by_subject(subject, from).await {
            Ok(m) if m.sequence > to => break,
            Ok(m) => {
                from = m.sequence + 1;
                out.push((m.sequence, m.payload.to_vec()));
            }
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => break,
            Err(e) => return Err(format!("cannot read {subject} at {from}: {e}")),
        }
    }
    Ok(out)
}
