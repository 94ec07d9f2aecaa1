//! Tail replay: bringing a node's local store up to a partition's
//! replicated journal before the node serves the partition.
//!
//! The local store keeps, per partition, the [`JournalPosition`] of the
//! last journal record whose ops it holds (meta key
//! `journal_position.<partition>`, local only). [`ReplicatedStorage`]
//! writes it in the same local write as each batch's ops, and
//! [`apply_records`] in the same write as the replayed records' ops, so a
//! crash never leaves the position and the state apart. A node starting a
//! term reads the records after its position, applies them here, and opens
//! its term after the last one. A node with an empty data directory starts
//! at [`JournalPosition::START`] and restores the partition from its first
//! record.
//!
//! [`ReplicatedStorage`]: super::ReplicatedStorage

use super::{keys, Error, Op, Storage};
use crate::cluster::{JournalOp, JournalPosition};

/// Key of a partition's applied journal position (meta table: no
/// partition in the key, so it is never replicated).
pub fn position_key(partition: u16) -> Vec<u8> {
    keys::meta(&format!("journal_position.{partition}"))
}

/// The op that records `position` as applied for `partition`.
pub fn position_op(partition: u16, position: &JournalPosition) -> Op {
    Op::Put(position_key(partition), position.encode())
}

/// How far the local store has applied `partition`'s journal
/// ([`JournalPosition::START`] when it holds nothing of it).
pub fn applied_position(local: &dyn Storage, partition: u16) -> Result<JournalPosition, Error> {
    let key = position_key(partition);
    match local.get(&key)? {
        None => Ok(JournalPosition::START),
        Some(bytes) => JournalPosition::decode(&bytes).map_err(|reason| Error::Corrupt {
            key: keys::printable(&key),
            reason,
        }),
    }
}

/// The storage op of a replicated op.
pub fn storage_op(op: &JournalOp) -> Op {
    match op {
        JournalOp::Put { key, value } => Op::Put(key.clone(), value.clone()),
        JournalOp::Delete { key } => Op::Delete(key.clone()),
    }
}

/// Applies `records` (`(subject sequence, wire form)` in stream order, the
/// first following `at`) to `local` as one write, with the position after
/// the last, and answers that position. Every record is checked first
/// (checksum, partition, chain); on an error nothing is written.
pub fn apply_records(
    local: &dyn Storage,
    partition: u16,
    at: JournalPosition,
    records: &[(u64, Vec<u8>)],
) -> Result<JournalPosition, Error> {
    let mut position = at;
    let mut ops = Vec::new();
    for (seq, wire) in records {
        let (record, next) =
            position
                .follow(partition, *seq, wire)
                .map_err(|reason| Error::Corrupt {
                    key: format!("replicated journal of partition {partition} at seq {seq}"),
                    reason,
                })?;
        ops.extend(record.ops.iter().map(storage_op));
        position = next;
    }
    if position != at {
        ops.push(position_op(partition, &position));
        local.write(&ops, false)?;
    }
    Ok(position)
}

#[cfg(test)]
#[path = "replicate_replay_tests.rs"]
mod tests;
