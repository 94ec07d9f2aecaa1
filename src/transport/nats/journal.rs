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
//! The record format, the chain and the terms are the pure
//! [`crate::cluster`] code ([`Appender`], [`JournalRecord`]).
//!
//! [`ReplicatedStorage`]: crate::storage::ReplicatedStorage

use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use tokio::sync::mpsc;

use super::stream_name;
use crate::cluster::{Append, Appender, Epoch, NodeId};
use crate::storage::{Error, PartitionBatch, Replicator};

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
        let (tx, rx) = mpsc::unbounded_channel();
        Ok((
            JetStreamJournal {
                js,
                prefix: prefix.to_owned(),
                appender: parking_lot::Mutex::new(Appender::new(node)),
                runtime: tokio::runtime::Handle::current(),
                deposed: tx,
                appends: AtomicU64::new(0),
            },
            rx,
        ))
    }

    /// Records appended for commit batches so far (one per partition per
    /// batch): the numerator of journal messages per transition.
    pub fn appends(&self) -> u64 {
        self.appends.load(Ordering::Relaxed)
    }

    /// The epoch this node appends under for `partition`, once serving.
    pub fn serving(&self, partition: u16) -> Option<Epoch> {
        self.appender.lock().epoch(partition)
    }

    /// Starts a term: reads the partition's tail, appends the term's open
    /// record after it and serves once it is stored. An error means the
    /// term did not start (another append moved the tail first, or the
    /// tail is a bad record); the core decides whether to try again.
    pub async fn start_serving(&self, partition: u16, epoch: Epoch) -> Result<(), String> {
        let subject = journal_subject(&self.prefix, partition);
        let stream = self
            .js
            .get_stream_no_info(journal_stream(&self.prefix))
            .await
            .map_err(|e| format!("cannot open the journal stream: {e}"))?;
        let tail = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => Some((m.sequence, m.payload.to_vec())),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => None,
            Err(e) => return Err(format!("cannot read the tail of {subject}: {e}")),
        };
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
    pub async fn append_batches(&self, batches: &[PartitionBatch]) -> Vec<Result<(), Error>> {
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
                        return Ok(());
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
    fn append(&self, batches: &[PartitionBatch]) -> Vec<Result<(), Error>> {
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
    let mut out = Vec::new();
    let mut from = 1;
    loop {
        match stream
            .get_first_raw_message_by_subject(&subject, from)
            .await
        {
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
