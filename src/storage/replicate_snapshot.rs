//! A partition's snapshot, taken from and loaded into the local store.
//!
//! [`take_snapshot`] reads the partition's key range (the tables a
//! partition's journal writes: journal, snapshots, status, timers, outbox)
//! together with its applied journal position (`replicate_replay`) from
//! one consistent view of the store ([`Storage::read_ranges`]). Every
//! local write of a partition's ops carries the position of the record
//! they came from, so the view lies between two commits and the entries
//! are exactly the journal's state at that position: no commit needs to
//! pause for it.
//!
//! [`load_snapshot`] replaces the partition's key range with a snapshot's
//! entries and sets the position to the snapshot's, as one synced write:
//! a restore then replays only the records after it.

use std::collections::BTreeSet;

use super::keys::{self, KeyRange};
use super::replicate::partition_of;
use super::replicate_replay::{position_key, position_op};
use super::{Error, Op, Storage};
use crate::cluster::{JournalPosition, PartitionSnapshot};

/// Reads `partition`'s key range and applied position at one instant.
/// The entries come table by table, each in key order.
pub fn take_snapshot(local: &dyn Storage, partition: u16) -> Result<PartitionSnapshot, Error> {
    let at = position_key(partition);
    let mut ranges = keys::partition_ranges(partition);
    let mut just_at = at.clone();
    just_at.push(0);
    ranges.push(KeyRange {
        from: at.clone(),
        to: just_at,
    });
    let mut entries = local.read_ranges(&ranges)?;
    let position = match entries.last() {
        Some((k, v)) if *k == at => {
            let p = JournalPosition::decode(v).map_err(|reason| Error::Corrupt {
                key: keys::printable(&at),
                reason,
            })?;
            entries.pop();
            p
        }
        _ => JournalPosition::START,
    };
    Ok(PartitionSnapshot {
        partition,
        position,
        entries,
    })
}

/// Replaces the local store's key range of the snapshot's partition with
/// its entries and records its position, as one synced write. Answers
/// the number of entries loaded. A snapshot holding a key of another
/// partition or table is refused and nothing is written.
pub fn load_snapshot(local: &dyn Storage, snapshot: &PartitionSnapshot) -> Result<usize, Error> {
    let p = snapshot.partition;
    if let Some((k, _)) = snapshot
        .entries
        .iter()
        .find(|(k, _)| partition_of(k) != Some(p))
    {
        return Err(Error::Corrupt {
            key: keys::printable(k),
            reason: format!("the snapshot of partition {p} holds a key outside it"),
        });
    }
    let keep: BTreeSet<&[u8]> = snapshot.entries.iter().map(|(k, _)| k.as_slice()).collect();
    let mut ops: Vec<Op> = local
        .read_ranges(&keys::partition_ranges(p))?
        .into_iter()
        .filter(|(k, _)| !keep.contains(k.as_slice()))
        .map(|(k, _)| Op::Delete(k))
        .collect();
    ops.extend(
        snapshot
            .entries
            .iter()
            .map(|(k, v)| Op::Put(k.clone(), v.clone())),
    );
    ops.push(position_op(p, &snapshot.position));
    local.write(&ops, true)?;
    Ok(snapshot.entries.len())
}

/// Loads `snapshot` when it is ahead of the local store's position `at`
/// (an empty store, or one that fell behind); answers the position the
/// store is at afterwards and whether it loaded.
pub fn load_if_ahead(
    local: &dyn Storage,
    at: JournalPosition,
    snapshot: &PartitionSnapshot,
) -> Result<(JournalPosition, bool), Error> {
    if snapshot.position.seq <= at.seq {
        return Ok((at, false));
    }
    load_snapshot(local, snapshot)?;
    Ok((snapshot.position, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::replicate_replay::applied_position;
    use crate::storage::MemoryStorage;

    fn journal(p: u16, id: &str, seq: u64) -> Vec<u8> {
        keys::journal(p, id, seq).unwrap()
    }

    #[test]
    fn a_snapshot_holds_the_partitions_range_and_position_and_loads_over_a_stale_store() {
        let a = MemoryStorage::new();
        let at = JournalPosition::of(40, b"record");
        a.write(
            &[
                Op::Put(journal(1, "w", 1), b"one".to_vec()),
                Op::Put(keys::snapshot(1, "w").unwrap(), b"state".to_vec()),
                Op::Put(journal(2, "x", 1), b"other".to_vec()),
                Op::Put(keys::meta("local"), b"m".to_vec()),
                position_op(1, &at),
            ],
            true,
        )
        .unwrap();
        let s = take_snapshot(&a, 1).unwrap();
        assert_eq!((s.partition, s.position), (1, at));
        assert_eq!(s.entries.len(), 2, "{:?}", s.entries);
        assert!(s.entries.iter().all(|(k, _)| partition_of(k) == Some(1)));

        // A store that holds a key the snapshot no longer has, and
        // another partition: the first is removed, the second kept.
        let b = MemoryStorage::new();
        b.write(
            &[
                Op::Put(journal(1, "gone", 1), b"old".to_vec()),
                Op::Put(journal(3, "y", 1), b"kept".to_vec()),
            ],
            true,
        )
        .unwrap();
        let (now, loaded) = load_if_ahead(&b, JournalPosition::START, &s).unwrap();
        assert!(loaded);
        assert_eq!(now, at);
        assert_eq!(applied_position(&b, 1).unwrap(), at);
        assert_eq!(take_snapshot(&b, 1).unwrap(), s);
        assert!(b.get(&journal(3, "y", 1)).unwrap().is_some());
        // Not ahead: nothing loaded.
        assert_eq!(load_if_ahead(&b, at, &s).unwrap(), (at, false));
        // An empty partition snapshots as nothing at the start.
        let empty = take_snapshot(&a, 9).unwrap();
        assert_eq!(
            (empty.position, empty.entries.len()),
            (JournalPosition::START, 0)
        );
    }

    /// Every key of partition `p` with its value.
    fn partition_state(store: &MemoryStorage, p: u16) -> Vec<(Vec<u8>, Vec<u8>)> {
        store.read_ranges(&keys::partition_ranges(p)).unwrap()
    }

    #[test]
    fn a_restore_loads_the_snapshot_and_replays_only_the_trimmed_journals_tail() {
        use crate::cluster::{check_replicated, Epoch};
        use crate::storage::{MemoryReplicator, ReplicatedStorage, Replicator};
        use std::sync::Arc;

        let mem_a = MemoryStorage::new();
        let journal_a = Arc::new(MemoryReplicator::new("n1".into()));
        let a = ReplicatedStorage::new(Arc::new(mem_a.clone()), journal_a.clone());
        journal_a.open(0, Epoch(2)).unwrap();
        for i in 1..=10 {
            a.write(&[Op::Put(journal(0, "w", i), vec![i as u8])], true)
                .unwrap();
        }
        a.write(&[Op::Delete(journal(0, "w", 1))], true).unwrap();
        let covered = journal_a.snapshot(0).unwrap().unwrap();
        // Trimmed below the covered record, which stays.
        assert_eq!(journal_a.records(0).len(), 1);
        for i in 11..=13 {
            a.write(&[Op::Put(journal(0, "w", i), vec![i as u8])], true)
                .unwrap();
        }
        let records = journal_a.records(0);
        assert_eq!(records.len(), 4);
        assert!(check_replicated(0, Some(&covered), &records).is_empty());
        // Without its snapshot the trimmed journal does not check.
        assert!(!check_replicated(0, None, &records).is_empty());

        // A node with an empty store: the snapshot, then the 3 records
        // after it.
        let mem_b = MemoryStorage::new();
        let journal_b = journal_a.sharing("n2".into());
        journal_b.attach(Arc::new(mem_b.clone()));
        assert_eq!(journal_b.open(0, Epoch(7)).unwrap(), 3);
        assert_eq!(partition_state(&mem_b, 0), partition_state(&mem_a, 0));
        assert!(mem_b.get(&journal(0, "w", 1)).unwrap().is_none());
        // Its open record continues the chain the snapshot anchors.
        let records = journal_a.records(0);
        assert!(check_replicated(0, journal_a.snapshot_position(0).as_ref(), &records).is_empty());
        // A snapshot whose record is gone from the journal is reported.
        let mut gone = records.clone();
        gone.remove(0);
        assert!(check_replicated(0, Some(&covered), &gone)[0].contains("not in the journal"));
    }

    #[test]
    fn a_snapshot_with_a_key_outside_its_partition_is_refused() {
        let s = PartitionSnapshot {
            partition: 1,
            position: JournalPosition::of(3, b"r"),
            entries: vec![(journal(2, "x", 1), b"v".to_vec())],
        };
        let store = MemoryStorage::new();
        let err = load_snapshot(&store, &s).unwrap_err().to_string();
        assert!(err.contains("outside it"), "{err}");
        assert_eq!(applied_position(&store, 1).unwrap(), JournalPosition::START);
    }
}
