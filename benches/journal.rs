//! Group-commit throughput of the RocksDB journal.
//!
//! Each iteration submits `N` single-record commits concurrently (as `N` workflows
//! appending one transition each would) to a [`GroupCommitter`] allowed to put `N`
//! entries in a batch, and waits until all are durable: the synced batch size is `N`
//! when the committer catches them all in one drain. Records are journal entries of
//! ~200 bytes. For comparison, `raw_synced_write` writes the same `N` records as one
//! synced `WriteBatch` directly, without the committer.
//!
//! Runs in a temporary directory on the real disk (`JOURNAL_BENCH_DIR`, default the
//! system temp dir), so the numbers include real fsyncs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use orchestrator::storage::{
    CommitConfig, GroupCommitter, RocksConfig, RocksStorage, WorkflowStore,
};
use serde::Serialize;

const BATCH_SIZES: [usize; 3] = [1, 64, 512];
const WORKFLOWS: u64 = 10_000;

#[derive(Serialize)]
struct Record {
    step: &'static str,
    attempt: u32,
    output: String,
}

fn record(n: u64) -> Record {
    Record {
        step: "transcribe",
        attempt: 1,
        // Sized so the encoded envelope is ~200 bytes.
        output: format!("{n:0>170}"),
    }
}

fn open_store() -> (tempfile::TempDir, WorkflowStore) {
    let base = std::env::var_os("JOURNAL_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let storage = RocksStorage::open(dir.path().join("db"), &RocksConfig::default()).expect("open");
    let store = WorkflowStore::open(Arc::new(storage), 16).expect("store");
    (dir, store)
}

/// The journal op of the `n`th append: workflows round-robin, seq grows per workflow.
fn append(store: &WorkflowStore, n: u64) -> orchestrator::storage::Op {
    let id = format!("video-{}", n % WORKFLOWS);
    let part = store.partition_of(&id);
    store
        .journal_put(part, &id, n / WORKFLOWS, &record(n))
        .expect("encode")
}

fn group_commit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("journal_group_commit");
    for &n in &BATCH_SIZES {
        let (_dir, store) = open_store();
        let cfg = CommitConfig {
            batch_max_entries: n,
            queue_capacity: n.max(1) * 2,
            sync: true,
            threads: 1,
            // The bench measures batching by the committer thread.
            inline_when_idle: false,
            inline_max_mean_batch: 1.0,
        };
        let gc = Arc::new(GroupCommitter::start(store.storage().clone(), cfg).expect("start"));
        let next = Arc::new(AtomicU64::new(0));
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| {
                rt.block_on(async {
                    let mut tasks = tokio::task::JoinSet::new();
                    for _ in 0..n {
                        let op = append(&store, next.fetch_add(1, Ordering::Relaxed));
                        let gc = gc.clone();
                        tasks.spawn(async move { gc.commit(vec![op]).await });
                    }
                    while let Some(r) = tasks.join_next().await {
                        r.expect("task").expect("commit");
                    }
                })
            })
        });
        let stats = gc.stats();
        eprintln!(
            "journal_group_commit/{n}: {} requests in {} batches (mean {:.1} entries/batch, max {}), {} WAL syncs",
            stats.requests,
            stats.batches,
            stats.entries as f64 / stats.batches.max(1) as f64,
            stats.max_batch_entries,
            store.wal_syncs(),
        );
    }
    group.finish();
}

fn raw_synced_write(c: &mut Criterion) {
    let mut group = c.benchmark_group("raw_synced_write");
    for &n in &BATCH_SIZES {
        let (_dir, store) = open_store();
        let mut next = 0u64;
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| {
                let ops: Vec<_> = (0..n)
                    .map(|_| {
                        next += 1;
                        append(&store, next)
                    })
                    .collect();
                store.storage().write(&ops, true).expect("write");
            })
        });
    }
    group.finish();
}

criterion_group!(benches, group_commit, raw_synced_write);
criterion_main!(benches);
