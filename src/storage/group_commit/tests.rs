//! Tests that need the memory twin's hooks; the behaviour shared by both storages
//! is in the conformance suite.

use super::*;
use crate::storage::MemoryStorage;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// These tests hold the single writer inside its sync window to observe
/// batching; with more writers a second one would take the next batch.
fn one_writer() -> CommitConfig {
    CommitConfig {
        threads: 1,
        inline_when_idle: false,
        ..CommitConfig::default()
    }
}

fn put(k: &str) -> Op {
    Op::Put(k.as_bytes().to_vec(), b"v".to_vec())
}

/// A sync hook that records the name of every writing thread and, while
/// armed, reports "entered" and blocks until released.
struct Gate {
    entered: mpsc::UnboundedReceiver<()>,
    release: std::sync::mpsc::Sender<()>,
    armed: Arc<AtomicBool>,
    writers: Arc<parking_lot::Mutex<Vec<String>>>,
}

fn install_gate(mem: &MemoryStorage) -> Gate {
    let (entered_tx, entered) = mpsc::unbounded_channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = parking_lot::Mutex::new(release_rx);
    let armed = Arc::new(AtomicBool::new(true));
    let writers = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let (hook_armed, seen) = (armed.clone(), writers.clone());
    mem.set_sync_hook(Some(Arc::new(move || {
        let name = std::thread::current().name().unwrap_or("").to_owned();
        seen.lock().push(name);
        if hook_armed.swap(false, Ordering::SeqCst) {
            let _ = entered_tx.send(());
            let _ = release_rx.lock().recv();
        }
    })));
    Gate {
        entered,
        release,
        armed,
        writers,
    }
}

async fn wait_until(mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("condition not reached in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_waiter_is_woken_before_its_batch_is_synced() {
    let mem = MemoryStorage::new();
    let mut gate = install_gate(&mem);
    let gc = Arc::new(GroupCommitter::start(Arc::new(mem.clone()), one_writer()).unwrap());

    let task = tokio::spawn({
        let gc = gc.clone();
        async move { gc.commit(vec![put("a")]).await }
    });
    gate.entered.recv().await.unwrap();
    // Inside the window: applied (visible) but not synced.
    assert_eq!(mem.get(b"a").unwrap(), Some(b"v".to_vec()));
    assert_eq!(mem.wal_syncs(), 0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !task.is_finished(),
        "waiter resolved before its batch was synced"
    );

    gate.release.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(mem.wal_syncs(), 1);
    mem.crash();
    assert_eq!(
        mem.get(b"a").unwrap(),
        Some(b"v".to_vec()),
        "acknowledged means durable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_committer_lets_the_caller_write_and_a_busy_one_batches() {
    let mem = MemoryStorage::new();
    let gate = install_gate(&mem);
    gate.armed.store(false, Ordering::SeqCst);
    let writers = gate.writers;
    let cfg = CommitConfig {
        inline_when_idle: true,
        ..CommitConfig::default()
    };
    let gc = GroupCommitter::start(Arc::new(mem.clone()), cfg).unwrap();
    gc.commit(vec![put("a")]).await.unwrap();
    let first = writers.lock()[0].clone();
    assert!(
        !first.starts_with("group-commit"),
        "an idle committer's request is written by the caller ({first})"
    );
    mem.crash();
    assert_eq!(mem.get(b"a").unwrap(), Some(b"v".to_vec()), "and synced");
    gc.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_commits_keep_the_thread_until_the_committer_is_idle_again() {
    let mem = MemoryStorage::new();
    let Gate {
        mut entered,
        release,
        writers,
        ..
    } = install_gate(&mem);
    let cfg = CommitConfig {
        inline_when_idle: true,
        inline_max_mean_batch: 1.25,
        ..CommitConfig::default()
    };
    let gc = Arc::new(GroupCommitter::start(Arc::new(mem.clone()), cfg).unwrap());
    let by_thread = |i: usize| writers.lock()[i].starts_with("group-commit");

    // A fresh committer is idle: the first request is written inline, and
    // held there while eight more arrive and queue behind the writer.
    let first = tokio::spawn({
        let gc = gc.clone();
        async move { gc.commit(vec![put("first")]).await }
    });
    entered.recv().await.unwrap();
    assert!(!by_thread(0), "idle: written by the caller");
    // A runtime worker is blocked in the inline write, so nothing here
    // may wait for a spawned task or a timer (the blocked worker may be
    // the one that would run it): the eight are polled by this task,
    // and the release waits on the OS clock.
    let overlapping =
        futures_util::future::join_all((0..8).map(|i| gc.commit(vec![put(&format!("o{i}"))])));
    // Polled after the eight have queued. The committer thread takes
    // what is queued and waits for the writer with it; anything it did
    // not take yet is added once it has the writer.
    let releaser = async {
        std::thread::sleep(Duration::from_millis(50));
        release.send(()).unwrap();
    };
    let (results, ()) = tokio::join!(overlapping, releaser);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    first.await.unwrap().unwrap();
    assert_eq!(
        writers.lock().len(),
        2,
        "what queued behind the inline write is one batch: {:?}",
        writers.lock()
    );
    assert!(by_thread(1));
    assert!(gc.mean_batch() > 1.25, "{}", gc.mean_batch());

    // Commits overlapped, so the next one goes to the thread although
    // nothing is queued now; one at a time, the average falls back and
    // writes go inline again.
    gc.commit(vec![put("next")]).await.unwrap();
    assert!(
        by_thread(2),
        "busy recently: written by the committer thread"
    );
    let mut sequential = 1;
    let last = || writers.lock().len() - 1;
    while by_thread(last()) {
        assert!(sequential < 20, "never idle again: {}", gc.mean_batch());
        gc.commit(vec![put(&format!("s{sequential}"))])
            .await
            .unwrap();
        sequential += 1;
    }
    assert!(gc.mean_batch() <= 1.25, "{}", gc.mean_batch());
    assert!(
        gc.histograms().inline_batches.load(Ordering::Relaxed) == 2,
        "the first and the last were inline"
    );
    mem.crash();
    for k in ["first", "o0", "o7", "next"] {
        assert!(mem.get(k.as_bytes()).unwrap().is_some(), "{k} is durable");
    }
}

#[test]
fn the_inline_threshold_is_at_least_one_request_per_batch() {
    assert_eq!(mean_x256(1.25), 320);
    for low in [0.0, 0.5, -3.0, f64::NAN, f64::NEG_INFINITY] {
        assert_eq!(mean_x256(low), 256, "{low}");
    }
    assert_eq!(mean_x256(f64::INFINITY), 1_000_000_000 * 256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsynced_requests_cost_no_fsync_and_become_durable_with_the_next_sync() {
    let mem = MemoryStorage::new();
    let gc = GroupCommitter::start(Arc::new(mem.clone()), one_writer()).unwrap();
    gc.commit_unsynced(vec![put("lazy")]).await.unwrap();
    assert_eq!(
        mem.wal_syncs(),
        0,
        "an unsynced request alone is not synced"
    );
    assert_eq!(mem.get(b"lazy").unwrap(), Some(b"v".to_vec()));
    mem.crash();
    assert_eq!(
        mem.get(b"lazy").unwrap(),
        None,
        "lost in a crash before any sync"
    );

    gc.commit_unsynced(vec![put("lazy")]).await.unwrap();
    gc.commit(vec![put("durable")]).await.unwrap();
    assert_eq!(mem.wal_syncs(), 1);
    mem.crash();
    assert_eq!(mem.get(b"durable").unwrap(), Some(b"v".to_vec()));
    assert_eq!(
        mem.get(b"lazy").unwrap(),
        Some(b"v".to_vec()),
        "written before a synced batch: durable with it"
    );
    gc.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_fails_every_waiter_of_its_batch() {
    let mem = MemoryStorage::new();
    let mut gate = install_gate(&mem);
    let gc = Arc::new(GroupCommitter::start(Arc::new(mem.clone()), one_writer()).unwrap());

    // Batch 1 holds the committer inside its sync window...
    let first = tokio::spawn({
        let gc = gc.clone();
        async move { gc.commit(vec![put("first")]).await }
    });
    gate.entered.recv().await.unwrap();
    // ...while three more requests queue up behind it and will form batch 2.
    let rest: Vec<_> = ["b", "c", "d"]
        .into_iter()
        .map(|k| {
            let gc = gc.clone();
            tokio::spawn(async move { gc.commit(vec![put(k), put(&format!("{k}2"))]).await })
        })
        .collect();
    wait_until(|| gc.queue_depth() == 3).await;
    mem.fail_next_writes(1);
    gate.release.send(()).unwrap();

    first.await.unwrap().unwrap();
    for t in rest {
        assert!(matches!(t.await.unwrap(), Err(Error::Io(_))));
    }
    let stats = gc.stats();
    assert_eq!(
        (stats.batches, stats.requests, stats.failed_batches),
        (2, 4, 1)
    );
    for k in ["b", "c", "d", "b2"] {
        assert_eq!(
            mem.get(k.as_bytes()).unwrap(),
            None,
            "nothing of a failed batch is written"
        );
    }

    // The committer recovers for later requests.
    assert!(!gate.armed.load(Ordering::SeqCst));
    gc.commit(vec![put("after")]).await.unwrap();
    assert!(mem.get(b"after").unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_respect_the_entry_bound_and_never_split_a_request() {
    let mem = MemoryStorage::new();
    let mut gate = install_gate(&mem);
    let cfg = CommitConfig {
        batch_max_entries: 4,
        ..one_writer()
    };
    let gc = Arc::new(GroupCommitter::start(Arc::new(mem.clone()), cfg).unwrap());
    let first = tokio::spawn({
        let gc = gc.clone();
        async move { gc.commit(vec![put("x")]).await }
    });
    gate.entered.recv().await.unwrap();
    // Queued while the first batch is held: 3 + 3 + 6 ops. Batch 2 takes the first
    // request (3), the second does not fit (3 + 3 > 4) and opens batch 3, and the
    // oversized third one is written alone in batch 4.
    let mut tasks = Vec::new();
    for (i, n) in [3usize, 3, 6].into_iter().enumerate() {
        let ops = (0..n).map(|j| put(&format!("r{i}-{j}"))).collect();
        let submitter = gc.clone();
        tasks.push(tokio::spawn(async move { submitter.commit(ops).await }));
        wait_until(|| gc.queue_depth() == i + 1).await;
    }
    gate.release.send(()).unwrap();
    first.await.unwrap().unwrap();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let stats = gc.stats();
    assert_eq!(stats.batches, 4);
    assert_eq!(stats.entries, 13);
    assert_eq!(stats.max_batch_entries, 6);
    assert_eq!(mem.wal_syncs(), 4);
}

#[tokio::test]
async fn shutdown_joins_the_thread() {
    let mem = MemoryStorage::new();
    let gc = GroupCommitter::start(Arc::new(mem.clone()), CommitConfig::default()).unwrap();
    gc.commit(vec![put("a")]).await.unwrap();
    tokio::task::spawn_blocking(move || gc.shutdown())
        .await
        .unwrap();
    assert_eq!(mem.wal_syncs(), 1);
}
