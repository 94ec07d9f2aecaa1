//! [`GroupCommitter`]: one synced write serves many workflows.
//!
//! An fsync costs the same for one record as for five hundred, so throughput comes
//! from batching, never from skipping the sync (see DESIGN.md, durability rules). A
//! dedicated OS thread named `group-commit` takes the first queued request (blocking),
//! drains whatever else is already queued without waiting, up to
//! [`CommitConfig::batch_max_entries`] ops, writes everything as ONE atomic
//! `Storage::write(.., sync = true)`, and only then resolves every waiter of the batch
//! with the same result. A failed write fails every request of the batch: nothing is
//! half-acknowledged. There is no linger timer: under low load a request is written
//! alone and at once; under high load requests pile up while the previous fsync runs
//! and the next batch grows by itself.
//!
//! # Why a tokio channel into an OS thread
//!
//! The write blocks for an fsync, so it must not run on a runtime thread; a dedicated
//! thread also gives one writer, hence one fsync at a time and maximal batches. The
//! queue is a bounded `tokio::sync::mpsc` channel: submitters `send(..).await`, so a
//! full queue applies backpressure by suspending the task instead of blocking a
//! runtime thread, while the committer thread uses `blocking_recv` / `try_recv`,
//! which need no runtime. Completion is a `tokio::sync::oneshot` per request.
//!
//! # Cancellation
//!
//! Dropping a `commit` future after its request was queued does not withdraw the
//! request: its ops will still be written (atomically, with the rest of its batch).
//! A caller that needs to know must await the result.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::{Error, Op, Storage};
use crate::telemetry::export::metric_set;
use crate::telemetry::metrics::{COMMIT_BATCH_BOUNDS, COMMIT_LATENCY_BOUNDS_US};
use crate::telemetry::{Counter, FixedHistogram};

/// Bounds and durability of a [`GroupCommitter`].
#[derive(Debug, Clone, PartialEq)]
pub struct CommitConfig {
    /// Most ops written in one batch (one `WriteBatch`, one fsync). A single request
    /// larger than this is still written, alone, because a request is never split.
    /// Values below 1 are treated as 1. Default 512.
    pub batch_max_entries: usize,
    /// Most requests waiting for the committer; when full, `commit` waits for room.
    /// Values below 1 are treated as 1. Default 4096.
    pub queue_capacity: usize,
    /// Write batches with `sync = true`. Default `true`; `false` only for benchmarks
    /// that say so, since an unsynced acknowledgement breaks the write-ahead rule.
    pub sync: bool,
    /// Writer threads taking batches from the one queue. With more than one,
    /// one batch's CPU work (building the batch, WAL append, memtable
    /// inserts) can overlap another's fsync, and RocksDB folds concurrent
    /// synced writes into one WAL sync. Each request is still written whole,
    /// by one writer; a task waits for its commit before it sends the next,
    /// so per-workflow order holds. Values below 1 are treated as 1.
    /// Default 1: on this 2-core machine a second writer measured 8-12% fewer
    /// workflows/s (it competes for the cores the engine needs, and larger
    /// single batches amortise the fsync as well); see docs/benchmarks.md.
    pub threads: usize,
    /// When the committer is idle, write a request on the caller's thread
    /// instead of handing it to the committer thread (the batch is the
    /// same: one synced write). Idle means: nothing is queued, no batch is
    /// being written, and recent batches did not overlap (see
    /// [`inline_max_mean_batch`](Self::inline_max_mean_batch)). Saves the
    /// two thread hand-offs of a commit (≈ 70–100 µs each time on this
    /// machine; about 0.7 ms of an unloaded video workflow's 7 ms). The
    /// caller's thread (a runtime thread) is blocked for the write, which
    /// is why a busy committer never does it: at mid load that blocking
    /// cost more than it saved (docs/benchmarks.md). Default `true`.
    pub inline_when_idle: bool,
    /// The "recent batches did not overlap" part of idle: a moving average
    /// (weight 1/16) of requests per written batch, inline writes counted
    /// as batches of one, must be at most this. One workflow at a time
    /// keeps it at 1.0; at 950 video workflows/s it is ≈ 5, and it falls
    /// back under 1.25 within ≈ 20 batches once the load is gone. Values
    /// below 1 are treated as 1. Default 1.25.
    pub inline_max_mean_batch: f64,
}

impl Default for CommitConfig {
    fn default() -> Self {
        CommitConfig {
            batch_max_entries: 512,
            queue_capacity: 4096,
            sync: true,
            threads: 1,
            inline_when_idle: true,
            inline_max_mean_batch: 1.25,
        }
    }
}

/// Cumulative counters of a [`GroupCommitter`], for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Storage writes performed (successful or not).
    pub batches: u64,
    /// Ops written, over all batches.
    pub entries: u64,
    /// `commit` requests served.
    pub requests: u64,
    /// Largest batch so far, in ops.
    pub max_batch_entries: u64,
    /// Batches whose write failed (each failed all of its requests).
    pub failed_batches: u64,
    /// Time spent inside `Storage::write`, summed over batches, in nanoseconds.
    pub commit_time_ns: u64,
}

struct Counters {
    batches: AtomicU64,
    entries: AtomicU64,
    requests: AtomicU64,
    max_batch_entries: AtomicU64,
    failed_batches: AtomicU64,
    commit_time_ns: AtomicU64,
    /// Moving average of requests per batch, in 1/256ths; written only by
    /// the holder of the writer lock.
    mean_batch_x256: AtomicU64,
    histograms: Arc<CommitHistograms>,
    /// Whether the last batch failed, for readiness and intake.
    health: Arc<super::WriteHealth>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            batches: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            max_batch_entries: AtomicU64::new(0),
            failed_batches: AtomicU64::new(0),
            commit_time_ns: AtomicU64::new(0),
            // A fresh committer counts as idle.
            mean_batch_x256: AtomicU64::new(256),
            histograms: Arc::default(),
            health: Arc::default(),
        }
    }
}

metric_set! {
    /// Distributions and counts of the committer's writes, for the metrics
    /// exposition. Shared through an `Arc` that does not keep the committer
    /// alive.
    #[derive(Debug)]
    pub struct CommitHistograms {
        /// Storage ops per write batch.
        @metric("journal_commit_batch_entries", "Storage ops per synced journal write batch.")
        pub batch_entries: FixedHistogram,
        /// Duration of one `Storage::write` (the synced write), in µs.
        @metric("journal_commit_latency_seconds", "Duration of one synced journal write (the fsync included).")
        pub latency_us: FixedHistogram,
        /// Batches written on the caller's thread (the committer was idle).
        @metric("journal_commits_inline", "Journal write batches written on the caller's thread because the committer was idle (storage.commit_inline_when_idle).")
        pub inline_batches: Counter,
    }
}

impl Default for CommitHistograms {
    fn default() -> Self {
        CommitHistograms {
            batch_entries: FixedHistogram::new(COMMIT_BATCH_BOUNDS, 1.0),
            latency_us: FixedHistogram::new(COMMIT_LATENCY_BOUNDS_US, 1_000_000.0),
            inline_batches: Counter::default(),
        }
    }
}

/// One `commit` call waiting in the queue.
struct Request {
    ops: Vec<Op>,
    /// False for [`GroupCommitter::commit_unsynced`]: the request alone
    /// does not make its batch sync.
    sync: bool,
    done: oneshot::Sender<Result<(), Error>>,
}

/// Batches the writes of many tasks into few synced storage writes. See the module
/// docs for the guarantees.
pub struct GroupCommitter {
    /// `None` only while shutting down; dropping it lets the thread drain and exit.
    tx: Option<mpsc::Sender<Request>>,
    /// Joined by `shutdown`.
    threads: Vec<JoinHandle<()>>,
    /// Shared with the thread, read by `stats`.
    counters: Arc<Counters>,
    /// For a write on the caller's thread when the committer is idle.
    storage: Option<Arc<dyn Storage>>,
    /// Held by whoever writes a batch (the thread, or an inline caller).
    writer: Arc<parking_lot::Mutex<()>>,
    sync: bool,
    inline: bool,
    /// [`CommitConfig::inline_max_mean_batch`] in 1/256ths.
    inline_max_mean_x256: u64,
}

impl std::fmt::Debug for GroupCommitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommitter")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl GroupCommitter {
    /// Start the committer thread over `storage`.
    ///
    /// Fails only if the OS refuses to spawn a thread.
    pub fn start(storage: Arc<dyn Storage>, cfg: CommitConfig) -> Result<Self, Error> {
        let queue_capacity = cfg.queue_capacity.max(1);
        let batch_max_entries = cfg.batch_max_entries.max(1);
        let (tx, rx) = mpsc::channel(queue_capacity);
        let rx = Arc::new(parking_lot::Mutex::new(rx));
        let counters = Arc::new(Counters::default());
        let sync = cfg.sync;
        let writer = Arc::new(parking_lot::Mutex::new(()));
        let mut threads = Vec::new();
        for n in 0..cfg.threads.max(1) {
            let thread_counters = counters.clone();
            let storage = storage.clone();
            let rx = rx.clone();
            let writer = writer.clone();
            let thread = std::thread::Builder::new()
                .name(format!("group-commit-{n}"))
                .spawn(move || {
                    run(
                        &*storage,
                        &rx,
                        &writer,
                        batch_max_entries,
                        sync,
                        &thread_counters,
                    )
                })
                .map_err(|e| Error::Io(format!("cannot spawn a group-commit thread: {e}")))?;
            threads.push(thread);
        }
        Ok(GroupCommitter {
            tx: Some(tx),
            threads,
            counters,
            storage: Some(storage),
            writer,
            sync,
            inline: cfg.inline_when_idle,
            inline_max_mean_x256: mean_x256(cfg.inline_max_mean_batch),
        })
    }

    /// A committer without a writer thread: every `commit` fails with
    /// [`Error::CommitterClosed`]. For shells that write their batches to the
    /// storage themselves (the deterministic simulator, `crate::dst`) but
    /// reuse engine code that carries a committer in its context.
    pub fn detached() -> Self {
        GroupCommitter {
            tx: None,
            threads: Vec::new(),
            counters: Arc::new(Counters::default()),
            storage: None,
            writer: Arc::default(),
            sync: true,
            inline: false,
            inline_max_mean_x256: 256,
        }
    }

    /// Queue `ops` for the next batch; resolves after the batch containing them has
    /// been durably written, or with that batch's error. The ops of one call are
    /// always written atomically, in order, in a single batch.
    ///
    /// Never blocks the runtime: a full queue suspends the task until there is room.
    pub async fn commit(&self, ops: Vec<Op>) -> Result<(), Error> {
        self.submit(ops, true).await
    }

    /// Like [`commit`](Self::commit), for housekeeping whose loss in a crash
    /// is harmless (an outbox row deleted after its publish: lost, it is
    /// only published again and de-duplicated). The ops are written in
    /// order with the others, but a batch made only of such requests is
    /// written without an fsync; they become durable with the next synced
    /// batch (the WAL is sequential). Resolves once written.
    ///
    /// Why: an outbox delete used to cost an fsync of its own, and a
    /// transition queued behind it waited for that fsync too (about 0.25 ms
    /// per workflow step on this machine; docs/benchmarks.md).
    pub async fn commit_unsynced(&self, ops: Vec<Op>) -> Result<(), Error> {
        self.submit(ops, false).await
    }

    /// Writes `ops` on the caller's thread when the committer is idle
    /// (nothing queued, no batch being written, recent batches of about
    /// one request); otherwise hands them back.
    fn write_inline(
        &self,
        tx: &mpsc::Sender<Request>,
        ops: Vec<Op>,
        sync: bool,
    ) -> Result<Result<(), Error>, Vec<Op>> {
        let Some(storage) = self.storage.as_ref().filter(|_| self.inline) else {
            return Err(ops);
        };
        if tx.capacity() != tx.max_capacity()
            || self.counters.mean_batch_x256.load(Ordering::Relaxed) > self.inline_max_mean_x256
        {
            return Err(ops);
        }
        let Some(writing) = self.writer.try_lock() else {
            return Err(ops);
        };
        let (done, mut wait) = oneshot::channel();
        let entries = ops.len();
        self.counters
            .histograms
            .inline_batches
            .fetch_add(1, Ordering::Relaxed);
        write_batch(
            &**storage,
            vec![Request { ops, done, sync }],
            entries,
            self.sync,
            &self.counters,
            writing,
        );
        Ok(wait.try_recv().unwrap_or(Err(Error::CommitterClosed)))
    }

    async fn submit(&self, ops: Vec<Op>, sync: bool) -> Result<(), Error> {
        let tx = self.tx.as_ref().ok_or(Error::CommitterClosed)?;
        let ops = match self.write_inline(tx, ops, sync) {
            Ok(result) => return result,
            Err(ops) => ops,
        };
        let (done, wait) = oneshot::channel();
        tx.send(Request { ops, done, sync })
            .await
            .map_err(|_| Error::CommitterClosed)?;
        // A dropped sender means the thread died (a panic inside the storage) before
        // answering: the request's fate is unknown, so it is not acknowledged.
        wait.await.map_err(|_| Error::CommitterClosed)?
    }

    /// The moving average of requests per batch that gates inline writes
    /// (see [`CommitConfig::inline_max_mean_batch`]).
    pub fn mean_batch(&self) -> f64 {
        self.counters.mean_batch_x256.load(Ordering::Relaxed) as f64 / 256.0
    }

    /// Requests queued and not yet taken into a batch (a gauge for metrics).
    pub fn queue_depth(&self) -> usize {
        self.tx
            .as_ref()
            .map_or(0, |tx| tx.max_capacity() - tx.capacity())
    }

    /// Batch-size and write-latency histograms (shared, live).
    pub fn histograms(&self) -> Arc<CommitHistograms> {
        self.counters.histograms.clone()
    }

    /// Whether journal writes are failing right now (shared, live).
    pub fn write_health(&self) -> Arc<super::WriteHealth> {
        self.counters.health.clone()
    }

    /// A consistent-enough copy of the counters (each is read atomically).
    pub fn stats(&self) -> CommitStats {
        let c = &self.counters;
        CommitStats {
            batches: c.batches.load(Ordering::Relaxed),
            entries: c.entries.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            max_batch_entries: c.max_batch_entries.load(Ordering::Relaxed),
            failed_batches: c.failed_batches.load(Ordering::Relaxed),
            commit_time_ns: c.commit_time_ns.load(Ordering::Relaxed),
        }
    }

    /// Stop taking requests, write everything already queued, and join the thread.
    ///
    /// Blocks the calling thread until the last batch is written; from async code,
    /// call it inside `tokio::task::spawn_blocking`.
    pub fn shutdown(mut self) {
        self.tx = None;
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("group-commit thread panicked");
            }
        }
    }
}

impl Drop for GroupCommitter {
    /// Dropping without `shutdown` still lets the thread write what is queued and exit,
    /// but does not wait for it (a drop must not block a runtime thread).
    fn drop(&mut self) {
        self.tx = None;
    }
}

/// `mean` (requests per batch) in 1/256ths; below 1 (or NaN) counts as 1.
fn mean_x256(mean: f64) -> u64 {
    if mean > 1.0 {
        (mean.min(1e9) * 256.0) as u64
    } else {
        256
    }
}

/// The committer thread's loop; returns once every sender is gone and the queue is
/// empty.
fn run(
    storage: &dyn Storage,
    rx: &parking_lot::Mutex<mpsc::Receiver<Request>>,
    writer: &parking_lot::Mutex<()>,
    batch_max_entries: usize,
    sync: bool,
    counters: &Counters,
) {
    // A request that did not fit into the previous batch opens the next one.
    let mut carry: Option<Request> = None;
    loop {
        // The queue lock is held only while a batch is gathered; the write
        // happens outside it, so another writer can gather the next batch.
        let (mut batch, mut entries) = {
            let mut rx = rx.lock();
            let first = match carry.take() {
                Some(r) => r,
                None => match rx.blocking_recv() {
                    Some(r) => r,
                    None => break,
                },
            };
            let entries = first.ops.len();
            let mut batch = vec![first];
            let entries = top_up(&mut rx, &mut batch, entries, batch_max_entries, &mut carry);
            (batch, entries)
        };
        let writing = writer.lock();
        // Whatever queued while another writer (a thread, or a caller
        // writing inline) held the lock joins this batch.
        if carry.is_none() && entries < batch_max_entries {
            if let Some(mut rx) = rx.try_lock() {
                entries = top_up(&mut rx, &mut batch, entries, batch_max_entries, &mut carry);
            }
        }
        write_batch(storage, batch, entries, sync, counters, writing);
    }
    tracing::debug!("group-commit thread stopped");
}

/// Adds queued requests to `batch` without waiting, up to `max` ops; the
/// first one that does not fit goes to `carry`. Returns the batch's ops.
fn top_up(
    rx: &mut mpsc::Receiver<Request>,
    batch: &mut Vec<Request>,
    mut entries: usize,
    max: usize,
    carry: &mut Option<Request>,
) -> usize {
    while entries < max {
        let Ok(next) = rx.try_recv() else { break };
        if entries + next.ops.len() > max {
            *carry = Some(next);
            break;
        }
        entries += next.ops.len();
        batch.push(next);
    }
    entries
}

/// Writes `batch` as one storage write while `writing` (the writer lock) is
/// held, releases the lock, then answers every waiter: a waiter that commits
/// again at once finds the writer free, so an idle committer's next request
/// can be written inline.
fn write_batch(
    storage: &dyn Storage,
    batch: Vec<Request>,
    entries: usize,
    sync: bool,
    counters: &Counters,
    writing: parking_lot::MutexGuard<'_, ()>,
) {
    let mut requests = Vec::with_capacity(batch.len());
    let mut waiters = Vec::with_capacity(batch.len());
    // One request that needs durability makes the whole batch synced.
    let sync = sync && batch.iter().any(|r| r.sync);
    for req in batch {
        requests.push(req.ops);
        waiters.push(req.done);
    }
    let started = Instant::now();
    // One write for the batch; a replicating storage (cluster mode,
    // `storage::replicate`) may fail single requests of it.
    let slices: Vec<&[Op]> = requests.iter().map(Vec::as_slice).collect();
    let mut results = storage.write_requests(&slices, sync);
    results.resize(waiters.len(), Err(Error::CommitterClosed));
    let result = results
        .iter()
        .find(|r| matches!(r, Err(e) if !matches!(e, Error::NotReplicated { .. })))
        .cloned()
        .unwrap_or(Ok(()));
    let elapsed_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);

    // Counters first, so a woken waiter already sees its batch in `stats`.
    let entries = entries as u64;
    // The caller holds the writer lock, so this read-modify-write is not raced.
    let mean = counters.mean_batch_x256.load(Ordering::Relaxed);
    let n = waiters.len() as u64 * 256;
    counters
        .mean_batch_x256
        .store(mean - mean / 16 + n / 16, Ordering::Relaxed);
    counters.batches.fetch_add(1, Ordering::Relaxed);
    counters.entries.fetch_add(entries, Ordering::Relaxed);
    counters
        .requests
        .fetch_add(waiters.len() as u64, Ordering::Relaxed);
    counters
        .max_batch_entries
        .fetch_max(entries, Ordering::Relaxed);
    counters
        .commit_time_ns
        .fetch_add(elapsed_ns, Ordering::Relaxed);
    counters.histograms.batch_entries.record(entries);
    counters.histograms.latency_us.record(elapsed_ns / 1_000);
    if let Err(e) = &result {
        counters.failed_batches.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %e, requests = waiters.len(), entries, "group commit write failed");
        counters.health.record(Err(&e.to_string()));
    } else {
        counters.health.record(Ok(()));
    }

    drop(writing);
    for (done, result) in waiters.into_iter().zip(results) {
        // A waiter that went away (its future was dropped) needs no answer.
        let _ = done.send(result);
    }
}

#[cfg(test)]
mod tests;
