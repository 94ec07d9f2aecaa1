//! The replication seam with the in-memory journal: one record per
//! partition per commit batch, nothing written locally that the journal
//! refused, a deposed partition reported and failed alone.

use std::sync::Arc;

use super::*;
use crate::cluster::{check_replicated, Epoch, JournalRecord, RecordKind};
use crate::storage::replicate_memory::MemoryReplicator;
use crate::storage::{CommitConfig, GroupCommitter, MemoryStorage};

fn put(partition: u16, id: &str, seq: u64) -> Op {
    Op::Put(
        keys::journal(partition, id, seq).unwrap(),
        format!("{id}-{seq}").into_bytes(),
    )
}

fn setup() -> (MemoryStorage, Arc<MemoryReplicator>, ReplicatedStorage) {
    let mem = MemoryStorage::new();
    let journal = Arc::new(MemoryReplicator::new("n1".into()));
    let storage = ReplicatedStorage::new(Arc::new(mem.clone()), journal.clone());
    (mem, journal, storage)
}

#[test]
fn keys_of_per_workflow_tables_name_their_partition() {
    assert_eq!(partition_of(&keys::journal(7, "wf", 1).unwrap()), Some(7));
    assert_eq!(partition_of(&keys::meta("partitions")), None);
    assert_eq!(partition_of(&[]), None);
}

#[test]
fn a_batch_becomes_one_record_per_partition_and_is_written_after_it() {
    let (mem, journal, storage) = setup();
    journal.open(0, Epoch(4)).unwrap();
    journal.open(1, Epoch(4)).unwrap();
    let a = [put(0, "a", 1), put(0, "a", 2)];
    let b = [put(0, "b", 1)];
    let c = [put(1, "c", 1), Op::Put(keys::meta("x"), b"1".to_vec())];
    let results = storage.write_requests(&[&a, &b, &c], true);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    // Two partitions in the batch: two records, each after its open record.
    assert_eq!(journal.appends(), 2);
    let p0 = journal.records(0);
    assert_eq!(p0.len(), 2);
    let rec = JournalRecord::decode(&p0[1].1).unwrap();
    assert_eq!(
        (rec.kind, rec.epoch, rec.ops.len()),
        (RecordKind::Commit, Epoch(4), 3)
    );
    assert!(check_replicated(0, None, &p0).is_empty());
    assert!(check_replicated(1, None, &journal.records(1)).is_empty());
    // Written locally too, the store-wide key included (local only).
    for op in a.iter().chain(&b).chain(&c) {
        assert!(mem.get(op.key()).unwrap().is_some());
    }
    assert_eq!(journal.records(1).len(), 2);
}

#[test]
fn a_deposed_partition_fails_alone_is_reported_and_is_not_written() {
    let (mem, journal, storage) = setup();
    journal.open(0, Epoch(4)).unwrap();
    journal.open(1, Epoch(4)).unwrap();
    journal.take_over_as("n2", 1, Epoch(9));
    let a = [put(0, "a", 1)];
    let b = [put(1, "b", 1)];
    let results = storage.write_requests(&[&a, &b], true);
    assert!(results[0].is_ok());
    match &results[1] {
        Err(Error::NotReplicated { partition, reason }) => {
            assert_eq!(*partition, 1);
            assert!(reason.contains("deposed"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(journal.deposed(), vec![(1, Epoch(4))]);
    assert!(mem.get(a[0].key()).unwrap().is_some());
    assert!(mem.get(b[0].key()).unwrap().is_none());
    // The node no longer serves partition 1: the next append is refused
    // here, without reaching the journal.
    let again = storage.write(&[put(1, "b", 2)], true);
    assert!(
        matches!(&again, Err(Error::NotReplicated { reason, .. }) if reason.contains("does not serve")),
        "{again:?}"
    );
    // The journal holds n1's open, n2's open and nothing of n1 after it.
    assert_eq!(journal.records(1).len(), 2);
    assert!(check_replicated(1, None, &journal.records(1)).is_empty());
}

#[test]
fn a_write_to_an_unserved_partition_is_refused() {
    let (mem, journal, storage) = setup();
    let err = storage.write(&[put(3, "a", 1)], true).unwrap_err();
    assert!(
        matches!(err, Error::NotReplicated { partition: 3, .. }),
        "{err:?}"
    );
    assert!(mem
        .get(&keys::journal(3, "a", 1).unwrap())
        .unwrap()
        .is_none());
    assert_eq!(journal.appends(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_committer_sends_one_record_per_partition_per_batch() {
    let (mem, journal, storage) = setup();
    journal.open(0, Epoch(1)).unwrap();
    let committer = Arc::new(
        GroupCommitter::start(
            Arc::new(storage),
            CommitConfig {
                inline_when_idle: false,
                ..CommitConfig::default()
            },
        )
        .unwrap(),
    );
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let c = committer.clone();
        tasks.push(tokio::spawn(async move {
            c.commit(vec![put(0, &format!("w{}", i % 20), i)]).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let batches = committer.stats().batches;
    // One open record, then exactly one record per batch.
    assert_eq!(journal.records(0).len() as u64, batches + 1);
    assert_eq!(journal.appends(), batches);
    assert!(check_replicated(0, None, &journal.records(0)).is_empty());
    let ops: usize = journal.records(0)[1..]
        .iter()
        .map(|(_, w)| JournalRecord::decode(w).unwrap().ops.len())
        .sum();
    assert_eq!(ops, 200);
    assert!(mem
        .get(&keys::journal(0, "w3", 3).unwrap())
        .unwrap()
        .is_some());
}
