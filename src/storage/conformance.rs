//! The conformance suite: one set of tests, run against every [`Storage`]
//! implementation, so the memory twin the engine tests rely on cannot drift from
//! RocksDB. Each test is a generic function over a [`Harness`]; the
//! `conformance!` macro at the bottom instantiates them per backend.
//!
//! Behaviour only the twin has (crash, failure injection, the sync window) is tested
//! next to it, in `memory.rs` and `group_commit.rs`.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::keys::{self, JournalKey, KeyRange};
use super::{
    CommitConfig, Error, GroupCommitter, MemoryStorage, Op, RocksConfig, RocksStorage, Storage,
    WorkflowStore,
};

/// Opens a backend. Every call opens the *same* data, as a process restart would; the
/// tests drop earlier handles before calling it again (RocksDB locks its directory).
trait Harness {
    fn open(&self) -> Arc<dyn Storage>;
}

struct MemoryHarness(MemoryStorage);

impl Harness for MemoryHarness {
    fn open(&self) -> Arc<dyn Storage> {
        Arc::new(self.0.clone())
    }
}

fn memory_harness() -> MemoryHarness {
    let mem = MemoryStorage::new();
    // Model the cost of an fsync, so that group commit sees requests pile up during
    // a write the way it does on a disk.
    mem.set_sync_hook(Some(Arc::new(|| {
        std::thread::sleep(Duration::from_micros(200))
    })));
    MemoryHarness(mem)
}

struct RocksHarness(tempfile::TempDir);

impl Harness for RocksHarness {
    fn open(&self) -> Arc<dyn Storage> {
        let cfg = RocksConfig {
            block_cache_mib: 8,
            write_buffer_mib: 8,
            ..RocksConfig::default()
        };
        Arc::new(RocksStorage::open(self.0.path().join("db"), &cfg).unwrap())
    }
}

fn rocks_harness() -> RocksHarness {
    RocksHarness(tempfile::tempdir().unwrap())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Rec {
    text: String,
    n: u64,
}

fn rec(text: &str, n: u64) -> Rec {
    Rec {
        text: text.into(),
        n,
    }
}

fn put(k: &[u8], v: &[u8]) -> Op {
    Op::Put(k.to_vec(), v.to_vec())
}

fn scan_all(s: &dyn Storage, from: &[u8], to: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    s.scan(from, to, &mut |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        true
    })
    .unwrap();
    out
}

// ---------------------------------------------------------------------------------
// Raw storage

fn put_get_delete(h: &impl Harness) {
    let s = h.open();
    assert_eq!(s.get(b"k").unwrap(), None);
    s.write(&[put(b"k", b"v1")], true).unwrap();
    assert_eq!(s.get(b"k").unwrap(), Some(b"v1".to_vec()));
    s.write(&[put(b"k", b"v2")], false).unwrap();
    assert_eq!(s.get(b"k").unwrap(), Some(b"v2".to_vec()));
    s.write(&[Op::Delete(b"k".to_vec())], true).unwrap();
    assert_eq!(s.get(b"k").unwrap(), None);
    // Deleting a missing key is not an error; empty values are values.
    s.write(&[Op::Delete(b"missing".to_vec()), put(b"e", b"")], true)
        .unwrap();
    assert_eq!(s.get(b"e").unwrap(), Some(Vec::new()));
}

fn batches_apply_in_order_and_together(h: &impl Harness) {
    let s = h.open();
    s.write(
        &[
            put(b"a", b"1"),
            Op::Delete(b"a".to_vec()),
            Op::Delete(b"b".to_vec()),
            put(b"b", b"2"),
            put(b"c", b"3"),
            put(b"c", b"4"),
        ],
        true,
    )
    .unwrap();
    assert_eq!(s.get(b"a").unwrap(), None);
    assert_eq!(s.get(b"b").unwrap(), Some(b"2".to_vec()));
    assert_eq!(s.get(b"c").unwrap(), Some(b"4".to_vec()));
    // Survives a reopen (a clean restart).
    drop(s);
    let s = h.open();
    assert_eq!(s.get(b"c").unwrap(), Some(b"4".to_vec()));
}

fn scan_is_ordered_and_half_open(h: &impl Harness) {
    let s = h.open();
    let keys: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x00],
        vec![0x00, 0x00],
        vec![0x01],
        vec![0x01, 0xff],
        vec![0x02],
        vec![0x7f, 0x80],
        vec![0xff],
        vec![0xff, 0xff, 0x00],
    ];
    // Written in reverse, in several batches, to rule out insertion order.
    for chunk in keys.iter().rev().collect::<Vec<_>>().chunks(2) {
        let ops: Vec<Op> = chunk.iter().map(|k| put(k, k)).collect();
        s.write(&ops, false).unwrap();
    }
    let all = scan_all(&*s, &[], &[0xff, 0xff, 0xff]);
    let got: Vec<Vec<u8>> = all.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(got, keys, "ascending byte order");
    assert!(all.iter().all(|(k, v)| k == v));

    let got: Vec<Vec<u8>> = scan_all(&*s, &[0x00, 0x00], &[0x02])
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(got, vec![vec![0x00, 0x00], vec![0x01], vec![0x01, 0xff]]);
    assert!(scan_all(&*s, &[0x02], &[0x02]).is_empty(), "empty range");
    assert!(scan_all(&*s, &[0x03], &[0x01]).is_empty(), "inverted range");
    assert!(
        scan_all(&*s, &[0x03], &[0x7f]).is_empty(),
        "range between keys"
    );
}

fn scan_stops_when_the_visitor_says_so(h: &impl Harness) {
    let s = h.open();
    let ops: Vec<Op> = (0u16..600).map(|i| put(&i.to_be_bytes(), b"v")).collect();
    s.write(&ops, true).unwrap();
    let mut seen = Vec::new();
    s.scan(&[0, 0], &[0xff, 0xff], &mut |k, _| {
        seen.push(k.to_vec());
        seen.len() < 300
    })
    .unwrap();
    assert_eq!(seen.len(), 300);
    assert_eq!(seen.last().unwrap(), &299u16.to_be_bytes().to_vec());
    let mut calls = 0;
    s.scan(&[0, 0], &[0xff, 0xff], &mut |_, _| {
        calls += 1;
        false
    })
    .unwrap();
    assert_eq!(calls, 1);
}

fn read_ranges_reads_every_range_from_one_view(h: &impl Harness) {
    let s = h.open();
    let range = |from: &[u8], to: &[u8]| KeyRange {
        from: from.to_vec(),
        to: to.to_vec(),
    };
    s.write(
        &[put(b"a1", b"1"), put(b"a2", b"2"), put(b"b1", b"3")],
        true,
    )
    .unwrap();
    let got = s
        .read_ranges(&[range(b"b", b"c"), range(b"a", b"a2"), range(b"z", b"a")])
        .unwrap();
    assert_eq!(
        got,
        vec![
            (b"b1".to_vec(), b"3".to_vec()),
            (b"a1".to_vec(), b"1".to_vec())
        ],
        "ranges in the order given, half-open, an empty one skipped"
    );
    // A writer sets both keys to one value per write; every read of the
    // two ranges sees them equal.
    s.write(&[put(b"a1", b"0"), put(b"b1", b"0")], false)
        .unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|t| {
        t.spawn(|| {
            for i in 0u32..2000 {
                let v = i.to_be_bytes();
                s.write(&[put(b"a1", &v), put(b"b1", &v)], false).unwrap();
            }
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let mut reads = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) || reads == 0 {
            let got = s
                .read_ranges(&[range(b"a1", b"a2"), range(b"b1", b"b2")])
                .unwrap();
            assert_eq!(got.len(), 2);
            assert_eq!(got[0].1, got[1].1, "a write seen in part");
            reads += 1;
        }
    });
}

fn wal_syncs_count_synced_writes(h: &impl Harness) {
    let s = h.open();
    let before = s.wal_syncs();
    s.write(&[put(b"a", b"1")], false).unwrap();
    assert_eq!(s.wal_syncs(), before);
    s.write(&[put(b"b", b"1")], true).unwrap();
    s.write(&[put(b"c", b"1")], true).unwrap();
    assert_eq!(s.wal_syncs(), before + 2);
}

// ---------------------------------------------------------------------------------
// Typed store

fn journals_are_ordered_and_isolated_per_workflow(h: &impl Harness) {
    let store = WorkflowStore::open(h.open(), 4).unwrap();
    // Ids that are prefixes of each other, in every partition, seqs interleaved.
    let ids = ["a", "ab", "abc", "b", "a\u{0}"];
    let mut ops = Vec::new();
    for seq in (0..20u64).rev() {
        for id in ids {
            for part in 0..4 {
                let r = rec(&format!("{part}/{id}"), seq);
                ops.push(store.journal_put(part, id, seq * 10, &r).unwrap());
            }
        }
    }
    store.storage().write(&ops, true).unwrap();
    for part in 0..4 {
        for id in ids {
            let j: Vec<(u64, Rec)> = store.load_journal(part, id, 0).unwrap();
            assert_eq!(j.len(), 20, "{part}/{id}");
            for (i, (seq, r)) in j.iter().enumerate() {
                assert_eq!(*seq, i as u64 * 10);
                assert_eq!(r, &rec(&format!("{part}/{id}"), i as u64));
            }
            let tail: Vec<(u64, Rec)> = store.load_journal(part, id, 155).unwrap();
            assert_eq!(
                tail.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
                vec![160, 170, 180, 190]
            );
        }
    }
    assert!(store.load_journal::<Rec>(0, "zz", 0).unwrap().is_empty());

    // Truncation removes exactly the records before the cut, of that workflow only.
    let cut = store.journal_truncate(2, "ab", 100).unwrap();
    assert_eq!(cut.len(), 10);
    store.storage().write(&cut, true).unwrap();
    let left: Vec<(u64, Rec)> = store.load_journal(2, "ab", 0).unwrap();
    assert_eq!(left.first().map(|(s, _)| *s), Some(100));
    assert_eq!(left.len(), 10);
    assert_eq!(store.load_journal::<Rec>(2, "a", 0).unwrap().len(), 20);
    assert_eq!(store.load_journal::<Rec>(2, "abc", 0).unwrap().len(), 20);
    assert!(store.journal_truncate(2, "ab", 100).unwrap().is_empty());

    let mut visited = 0;
    store
        .scan_all_journals(|k: Result<JournalKey, Error>, v: Result<Rec, Error>| {
            let (k, v) = (k.unwrap(), v.unwrap());
            assert_eq!(v.text, format!("{}/{}", k.partition, k.id));
            visited += 1;
            true
        })
        .unwrap();
    assert_eq!(visited, 4 * ids.len() * 20 - 10);
}

fn snapshots_and_pipelines_round_trip(h: &impl Harness) {
    let store = WorkflowStore::open(h.open(), 2).unwrap();
    let id = "video-123";
    let part = store.partition_of(id);
    assert_eq!(store.load_snapshot::<Rec>(part, id).unwrap(), None);
    store
        .storage()
        .write(
            &[
                store.snapshot_put(part, id, &rec("s", 1)).unwrap(),
                store
                    .pipeline_put("ingest", 3, 0xabc, &rec("p", 3))
                    .unwrap(),
            ],
            true,
        )
        .unwrap();
    assert_eq!(store.load_snapshot(part, id).unwrap(), Some(rec("s", 1)));
    assert_eq!(
        store.load_pipeline("ingest", 3, 0xabc).unwrap(),
        Some(rec("p", 3))
    );
    assert_eq!(
        store.load_pipeline::<Rec>("ingest", 3, 0xabd).unwrap(),
        None
    );
    assert_eq!(
        store.load_pipeline::<Rec>("ingest", 4, 0xabc).unwrap(),
        None
    );

    store
        .storage()
        .write(&[store.snapshot_put(part, id, &rec("s", 2)).unwrap()], true)
        .unwrap();
    assert_eq!(store.load_snapshot(part, id).unwrap(), Some(rec("s", 2)));
    let mut seen = Vec::new();
    store
        .scan_all_snapshots(|k, v: Result<Rec, Error>| {
            seen.push((k.unwrap().id, v.unwrap().n));
            true
        })
        .unwrap();
    assert_eq!(seen, vec![(id.to_string(), 2)]);
    store
        .storage()
        .write(&[store.snapshot_delete(part, id).unwrap()], true)
        .unwrap();
    assert_eq!(store.load_snapshot::<Rec>(part, id).unwrap(), None);
}

fn status_index_lists_and_pages(h: &impl Harness) {
    const RUNNING: u8 = 1;
    const DONE: u8 = 2;
    let store = WorkflowStore::open(h.open(), 2).unwrap();
    let ids = ["w1", "w2", "w3", "w10", "w"];
    let mut ops = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        ops.push(
            store
                .status_put(1, RUNNING, id, &rec(id, i as u64))
                .unwrap(),
        );
    }
    ops.push(store.status_put(0, RUNNING, "other", &rec("x", 0)).unwrap());
    store.storage().write(&ops, true).unwrap();

    // Move w2 from RUNNING to DONE in one atomic batch.
    store
        .storage()
        .write(
            &[
                store.status_delete(1, RUNNING, "w2").unwrap(),
                store.status_put(1, DONE, "w2", &rec("w2", 9)).unwrap(),
            ],
            true,
        )
        .unwrap();

    let running: Vec<(String, Rec)> = store.list_status(1, RUNNING, 100).unwrap();
    // Key order: ids by length, then bytes.
    let names: Vec<&str> = running.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(names, vec!["w", "w1", "w3", "w10"]);
    assert_eq!(running[0].1, rec("w", 4));
    let done: Vec<(String, Rec)> = store.list_status(1, DONE, 100).unwrap();
    assert_eq!(done, vec![("w2".to_string(), rec("w2", 9))]);
    assert_eq!(store.list_status::<Rec>(0, RUNNING, 100).unwrap().len(), 1);
    assert!(store.list_status::<Rec>(0, DONE, 100).unwrap().is_empty());

    // Paging with a limit and a cursor visits everything once.
    let mut pages = Vec::new();
    let mut page: Vec<(String, Rec)> = store.list_status(1, RUNNING, 3).unwrap();
    while !page.is_empty() {
        let last = page.last().unwrap().0.clone();
        pages.extend(page.into_iter().map(|(id, _)| id));
        page = store.list_status_after(1, RUNNING, &last, 3).unwrap();
    }
    assert_eq!(pages, vec!["w", "w1", "w3", "w10"]);
    assert!(store.list_status::<Rec>(1, RUNNING, 0).unwrap().is_empty());
}

fn timers_come_due_in_order(h: &impl Harness) {
    let store = WorkflowStore::open(h.open(), 2).unwrap();
    let timers = [
        (500u64, "b", 1u64),
        (100, "zz", 7),
        (300, "a", 2),
        (100, "a", 3),
        (u64::MAX, "far", 0),
        (300, "a", 1),
    ];
    let mut ops: Vec<Op> = timers
        .iter()
        .map(|&(due, id, tag)| store.timer_put(1, due, id, tag, &rec(id, due)).unwrap())
        .collect();
    ops.push(store.timer_put(0, 0, "other", 0, &rec("o", 0)).unwrap());
    store.storage().write(&ops, true).unwrap();

    let due = store.due_timers::<Rec>(1, 300, 100).unwrap();
    let got: Vec<(u64, &str, u64)> = due
        .iter()
        .map(|t| (t.due_ms, t.id.as_str(), t.tag))
        .collect();
    // Due time first; within a due time, by id (length, bytes) then tag.
    assert_eq!(
        got,
        vec![(100, "a", 3), (100, "zz", 7), (300, "a", 1), (300, "a", 2)]
    );
    assert_eq!(due[0].value, rec("a", 100));
    assert_eq!(store.due_timers::<Rec>(1, 99, 100).unwrap().len(), 0);
    assert_eq!(store.due_timers::<Rec>(1, 300, 2).unwrap().len(), 2);
    assert_eq!(store.due_timers::<Rec>(1, u64::MAX, 100).unwrap().len(), 6);

    store
        .storage()
        .write(&[store.timer_delete(1, 100, "a", 3).unwrap()], true)
        .unwrap();
    let first = &store.due_timers::<Rec>(1, 300, 1).unwrap()[0];
    assert_eq!((first.due_ms, first.id.as_str()), (100, "zz"));
}

fn a_different_partition_count_is_refused_on_reopen(h: &impl Harness) {
    let store = WorkflowStore::open(h.open(), 8).unwrap();
    assert_eq!(store.partitions(), 8);
    drop(store);
    match WorkflowStore::open(h.open(), 16) {
        Err(Error::PartitionCountMismatch { stored, configured }) => {
            assert_eq!((stored, configured), (8, 16));
        }
        other => panic!("expected PartitionCountMismatch, got {other:?}"),
    }
    let store = WorkflowStore::open(h.open(), 8).unwrap();
    assert_eq!(store.partitions(), 8);
}

fn corrupt_records_are_detected_not_served(h: &impl Harness) {
    let store = WorkflowStore::open(h.open(), 1).unwrap();
    let s = store.storage().clone();
    let ops = vec![
        store.snapshot_put(0, "w", &rec("snap", 1)).unwrap(),
        store.journal_put(0, "w", 0, &rec("j", 0)).unwrap(),
        store.journal_put(0, "w", 1, &rec("j", 1)).unwrap(),
        store.journal_put(0, "w", 2, &rec("j", 2)).unwrap(),
        store.status_put(0, 1, "w", &rec("i", 0)).unwrap(),
        store.timer_put(0, 5, "w", 0, &rec("t", 0)).unwrap(),
    ];
    s.write(&ops, true).unwrap();

    // Flip one payload byte of every stored value.
    for op in &ops {
        let key = op.key();
        let mut value = s.get(key).unwrap().unwrap();
        let last = value.len() - 1;
        value[last] ^= 0x40;
        if key == keys::journal(0, "w", 2).unwrap().as_slice() {
            continue; // keep one journal record intact for the verifier below
        }
        s.write(&[Op::Put(key.to_vec(), value)], true).unwrap();
    }
    let is_corrupt = |e: Error| matches!(e, Error::Corrupt { .. });
    assert!(is_corrupt(store.load_snapshot::<Rec>(0, "w").unwrap_err()));
    assert!(is_corrupt(
        store.load_journal::<Rec>(0, "w", 0).unwrap_err()
    ));
    assert!(is_corrupt(store.list_status::<Rec>(0, 1, 10).unwrap_err()));
    assert!(is_corrupt(store.due_timers::<Rec>(0, 10, 10).unwrap_err()));
    // The intact tail is still readable on its own.
    assert_eq!(store.load_journal::<Rec>(0, "w", 2).unwrap().len(), 1);

    // The offline verifier sees every record, corrupt ones included, and the key of
    // the corrupt ones.
    let mut report = Vec::new();
    store
        .scan_all_journals(|k, v: Result<Rec, Error>| {
            report.push((k.unwrap().seq, v.is_ok()));
            true
        })
        .unwrap();
    assert_eq!(report, vec![(0, false), (1, false), (2, true)]);

    // A truncated value, an unknown version and a malformed key are corrupt too.
    let snap_key = keys::snapshot(0, "w").unwrap();
    s.write(&[put(&snap_key, &[1, 2])], true).unwrap();
    assert!(is_corrupt(store.load_snapshot::<Rec>(0, "w").unwrap_err()));
    let mut bumped = store.snapshot_put(0, "w", &rec("snap", 1)).unwrap();
    if let Op::Put(_, v) = &mut bumped {
        v[0] = 99;
    }
    s.write(&[bumped], true).unwrap();
    match store.load_snapshot::<Rec>(0, "w").unwrap_err() {
        Error::Corrupt { key, reason } => {
            assert_eq!(key, keys::printable(&snap_key));
            assert!(reason.contains("version 99"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    s.write(&[put(b"J\x00\x00\x05ab", b"x")], true).unwrap();
    let mut bad_keys = 0;
    store
        .scan_all_journals(|k, _: Result<Rec, Error>| {
            bad_keys += usize::from(k.is_err());
            true
        })
        .unwrap();
    assert_eq!(bad_keys, 1);
}

// ---------------------------------------------------------------------------------
// Group commit

async fn group_commit_batches_concurrent_commits(h: &impl Harness) {
    const TASKS: usize = 8;
    const COMMITS: u64 = 200;
    let store = WorkflowStore::open(h.open(), 4).unwrap();
    let syncs_before = store.wal_syncs();
    let gc =
        Arc::new(GroupCommitter::start(store.storage().clone(), CommitConfig::default()).unwrap());

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (gc, store) = (gc.clone(), store.clone());
        tasks.push(tokio::spawn(async move {
            let id = format!("wf-{t}");
            let part = store.partition_of(&id);
            for seq in 0..COMMITS {
                let ops = vec![
                    store.journal_put(part, &id, seq, &rec(&id, seq)).unwrap(),
                    store.snapshot_put(part, &id, &rec(&id, seq)).unwrap(),
                ];
                gc.commit(ops).await.unwrap();
                // Acknowledged means readable.
                let snap: Rec = store.load_snapshot(part, &id).unwrap().unwrap();
                assert!(snap.n >= seq);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    for t in 0..TASKS {
        let id = format!("wf-{t}");
        let j: Vec<(u64, Rec)> = store.load_journal(store.partition_of(&id), &id, 0).unwrap();
        let want: Vec<(u64, Rec)> = (0..COMMITS).map(|s| (s, rec(&id, s))).collect();
        assert_eq!(j, want, "{id}");
    }
    let stats = gc.stats();
    let requests = TASKS as u64 * COMMITS;
    assert_eq!(stats.requests, requests);
    assert_eq!(stats.entries, requests * 2);
    assert_eq!(stats.failed_batches, 0);
    assert!(
        stats.batches < stats.requests,
        "no batching happened: {stats:?}"
    );
    assert!(stats.max_batch_entries > 2, "{stats:?}");
    let syncs = store.wal_syncs() - syncs_before;
    assert!(
        syncs >= 1 && syncs <= stats.batches,
        "{syncs} syncs for {stats:?}"
    );
    let gc = Arc::try_unwrap(gc).expect("all tasks finished");
    tokio::task::spawn_blocking(move || gc.shutdown())
        .await
        .unwrap();
}

macro_rules! conformance {
    ($backend:ident, $harness:expr) => {
        mod $backend {
            use super::*;

            #[test]
            fn put_get_delete() {
                super::put_get_delete(&$harness)
            }
            #[test]
            fn batches_apply_in_order_and_together() {
                super::batches_apply_in_order_and_together(&$harness)
            }
            #[test]
            fn scan_is_ordered_and_half_open() {
                super::scan_is_ordered_and_half_open(&$harness)
            }
            #[test]
            fn scan_stops_when_the_visitor_says_so() {
                super::scan_stops_when_the_visitor_says_so(&$harness)
            }
            #[test]
            fn wal_syncs_count_synced_writes() {
                super::wal_syncs_count_synced_writes(&$harness)
            }
            #[test]
            fn read_ranges_reads_every_range_from_one_view() {
                super::read_ranges_reads_every_range_from_one_view(&$harness)
            }
            #[test]
            fn journals_are_ordered_and_isolated_per_workflow() {
                super::journals_are_ordered_and_isolated_per_workflow(&$harness)
            }
            #[test]
            fn snapshots_and_pipelines_round_trip() {
                super::snapshots_and_pipelines_round_trip(&$harness)
            }
            #[test]
            fn status_index_lists_and_pages() {
                super::status_index_lists_and_pages(&$harness)
            }
            #[test]
            fn timers_come_due_in_order() {
                super::timers_come_due_in_order(&$harness)
            }
            #[test]
            fn a_different_partition_count_is_refused_on_reopen() {
                super::a_different_partition_count_is_refused_on_reopen(&$harness)
            }
            #[test]
            fn corrupt_records_are_detected_not_served() {
                super::corrupt_records_are_detected_not_served(&$harness)
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn group_commit_batches_concurrent_commits() {
                super::group_commit_batches_concurrent_commits(&$harness).await
            }
        }
    };
}

conformance!(memory, memory_harness());
conformance!(rocks, rocks_harness());
