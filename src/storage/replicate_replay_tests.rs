//! Tail replay with the in-memory journal: a node with an empty store
//! restores every partition, a journal ahead of the local store is caught
//! up, and a record that does not continue the store is not applied.

use std::sync::Arc;

use super::*;
use crate::cluster::{chain_hash, Epoch, JournalRecord, RecordKind};
use crate::storage::replicate_memory::MemoryReplicator;
use crate::storage::{partition_of, MemoryStorage, PartitionBatch, ReplicatedStorage, Replicator};

fn put(partition: u16, id: &str, seq: u64) -> Op {
    Op::Put(
        keys::journal(partition, id, seq).unwrap(),
        format!("{id}-{seq}").into_bytes(),
    )
}

/// Every key of a per-partition table with its value.
fn partition_state(mem: &MemoryStorage) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    mem.scan(&[], &[0xff; 8], &mut |k, v| {
        if partition_of(k).is_some() {
            out.push((k.to_vec(), v.to_vec()));
        }
        true
    })
    .unwrap();
    out
}

fn node(journal: MemoryReplicator) -> (MemoryStorage, Arc<MemoryReplicator>, ReplicatedStorage) {
    let mem = MemoryStorage::new();
    let journal = Arc::new(journal);
    let storage = ReplicatedStorage::new(Arc::new(mem.clone()), journal.clone());
    (mem, journal, storage)
}

#[test]
fn a_node_with_an_empty_store_restores_every_partition_from_the_journal() {
    let (mem_a, journal_a, a) = node(MemoryReplicator::new("n1".into()));
    assert_eq!(journal_a.open(0, Epoch(2)).unwrap(), 0);
    assert_eq!(journal_a.open(1, Epoch(2)).unwrap(), 0);
    for i in 1..=5 {
        let r = a.write_requests(&[&[put(0, "a", i)], &[put(1, "b", i)]], true);
        assert!(r.iter().all(Result::is_ok), "{r:?}");
    }
    let deleted = [Op::Delete(keys::journal(0, "a", 1).unwrap())];
    a.write(&deleted, true).unwrap();
    a.write(&[Op::Put(keys::meta("local"), b"1".to_vec())], true)
        .unwrap();

    // A new node (another id, an empty store) takes both partitions over.
    let (mem_b, journal_b, b) = node(journal_a.sharing("n2".into()));
    assert_eq!(journal_b.open(0, Epoch(7)).unwrap(), 1 + 6);
    assert_eq!(journal_b.open(1, Epoch(7)).unwrap(), 1 + 5);
    assert_eq!(partition_state(&mem_b), partition_state(&mem_a));
    assert!(mem_b.get(deleted[0].key()).unwrap().is_none());
    // Store-wide keys are not in the journal.
    assert!(mem_b.get(&keys::meta("local")).unwrap().is_none());
    // The old owner is deposed; the new one appends after its open record
    // and the journal is still one chain.
    assert!(a.write(&[put(0, "a", 9)], true).is_err());
    b.write(&[put(0, "a", 9)], true).unwrap();
    assert!(crate::cluster::check_replicated(0, None, &journal_b.records(0)).is_empty());
    // Its position names the last record: a restart replays nothing.
    let last = journal_b.records(0).pop().unwrap();
    assert_eq!(
        applied_position(&mem_b, 0).unwrap(),
        JournalPosition::of(last.0, &last.1)
    );
    let again = journal_b.sharing("n2".into());
    again.attach(Arc::new(mem_b.clone()));
    assert_eq!(again.open(0, Epoch(8)).unwrap(), 0);
}

#[test]
fn a_journal_ahead_of_the_local_store_is_replayed_at_the_next_term() {
    let (mem, journal, storage) = node(MemoryReplicator::new("n1".into()));
    journal.open(0, Epoch(2)).unwrap();
    storage.write(&[put(0, "a", 1)], true).unwrap();
    // The journal acknowledges a batch the node then never writes locally
    // (a crash between the two).
    let ahead = [PartitionBatch {
        partition: 0,
        ops: vec![crate::cluster::JournalOp::Put {
            key: keys::journal(0, "a", 2).unwrap(),
            value: b"a-2".to_vec(),
        }],
    }];
    assert!(journal.append(&ahead)[0].is_ok());
    assert!(mem
        .get(&keys::journal(0, "a", 2).unwrap())
        .unwrap()
        .is_none());
    // The restart on the same store replays it, and only it.
    let restarted = journal.sharing("n1".into());
    restarted.attach(Arc::new(mem.clone()));
    assert_eq!(restarted.open(0, Epoch(5)).unwrap(), 1);
    assert_eq!(
        mem.get(&keys::journal(0, "a", 2).unwrap()).unwrap(),
        Some(b"a-2".to_vec())
    );
    assert!(crate::cluster::check_replicated(0, None, &journal.records(0)).is_empty());
}

#[test]
fn a_record_that_does_not_continue_the_local_store_is_not_applied() {
    let (_, journal, storage) = node(MemoryReplicator::new("n1".into()));
    journal.open(0, Epoch(2)).unwrap();
    storage.write(&[put(0, "a", 1)], true).unwrap();
    // A record planted without the expected-sequence check, naming an
    // older predecessor (a fork).
    let forged = JournalRecord {
        partition: 0,
        epoch: Epoch(3),
        node: "rogue".into(),
        kind: RecordKind::Commit,
        follows: 1,
        prev_hash: chain_hash(&journal.records(0)[0].1),
        ops: vec![crate::cluster::JournalOp::Put {
            key: keys::journal(0, "x", 1).unwrap(),
            value: b"x".to_vec(),
        }],
    };
    journal.plant(0, forged.encode());
    let mem = MemoryStorage::new();
    let fresh = journal.sharing("n2".into());
    fresh.attach(Arc::new(mem.clone()));
    let err = fresh.open(0, Epoch(9)).unwrap_err();
    assert!(err.contains("does not continue"), "{err}");
    // Nothing of the chain is applied past the last good record: the
    // replay writes per chunk, and the chunk holding the fork is refused.
    assert!(mem
        .get(&keys::journal(0, "x", 1).unwrap())
        .unwrap()
        .is_none());
    assert_eq!(
        applied_position(&mem, 0).unwrap(),
        JournalPosition::START,
        "a refused chunk leaves the position where it was"
    );
}

#[test]
fn a_request_failed_for_another_partition_keeps_the_ops_its_journal_took() {
    let (mem, journal, storage) = node(MemoryReplicator::new("n1".into()));
    journal.open(0, Epoch(2)).unwrap();
    journal.open(1, Epoch(2)).unwrap();
    journal.take_over_as("n2", 1, Epoch(9));
    let both = [put(0, "a", 1), put(1, "b", 1)];
    let r = storage.write(&both, true);
    assert!(
        matches!(r, Err(Error::NotReplicated { partition: 1, .. })),
        "{r:?}"
    );
    // Partition 0's record holds the op, so the local store does too: a
    // restore from the journal would apply it.
    assert!(mem.get(both[0].key()).unwrap().is_some());
    assert!(mem.get(both[1].key()).unwrap().is_none());
    let last = journal.records(0).pop().unwrap();
    assert_eq!(
        applied_position(&mem, 0).unwrap(),
        JournalPosition::of(last.0, &last.1)
    );
}
