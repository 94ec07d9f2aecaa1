//! Keys of the per-workflow tables, all led by the partition: journal,
//! snapshots, status index, durable timers and the event outbox.

use super::bytes::{prefix_end, push_name, Reader};
use super::{
    JournalKey, KeyRange, SnapshotKey, StatusKey, TimerKey, JOURNAL, OUTBOX, SNAPSHOT, STATUS,
    TIMER,
};
use crate::storage::Error;

/// Key of the journal record of workflow `id` whose first event has `seq`.
pub fn journal(partition: u16, id: &str, seq: u64) -> Result<Vec<u8>, Error> {
    let mut k = journal_prefix(partition, id)?;
    k.extend_from_slice(&seq.to_be_bytes());
    Ok(k)
}

/// The journal records of workflow `id` with `seq >= from_seq`, in seq order.
pub fn journal_range(partition: u16, id: &str, from_seq: u64) -> Result<KeyRange, Error> {
    let prefix = journal_prefix(partition, id)?;
    let to = prefix_end(&prefix);
    let mut from = prefix;
    from.extend_from_slice(&from_seq.to_be_bytes());
    Ok(KeyRange { from, to })
}

/// Every journal record of every workflow (offline verification).
pub fn all_journals() -> KeyRange {
    KeyRange::prefixed(vec![JOURNAL])
}

/// Key of the outbox entry of the journal record of workflow `id` starting at `seq`.
/// Same shape as the journal key, so a workflow's entries scan in journal order.
pub fn outbox(partition: u16, id: &str, seq: u64) -> Result<Vec<u8>, Error> {
    let mut k = vec![OUTBOX];
    k.extend_from_slice(&partition.to_be_bytes());
    push_name(&mut k, id, "workflow id")?;
    k.extend_from_slice(&seq.to_be_bytes());
    Ok(k)
}

/// Every outbox entry.
pub fn all_outbox() -> KeyRange {
    KeyRange::prefixed(vec![OUTBOX])
}

/// Every outbox entry of `partition`.
pub fn partition_outbox(partition: u16) -> KeyRange {
    let mut prefix = vec![OUTBOX];
    prefix.extend_from_slice(&partition.to_be_bytes());
    KeyRange::prefixed(prefix)
}

/// Decode an outbox key (same fields as a journal key).
pub fn decode_outbox(key: &[u8]) -> Result<JournalKey, Error> {
    let mut r = Reader::new(key, OUTBOX)?;
    let k = JournalKey {
        partition: r.u16()?,
        id: r.name()?,
        seq: r.u64()?,
    };
    r.end()?;
    Ok(k)
}

/// Key of the snapshot of workflow `id`.
pub fn snapshot(partition: u16, id: &str) -> Result<Vec<u8>, Error> {
    let mut k = vec![SNAPSHOT];
    k.extend_from_slice(&partition.to_be_bytes());
    push_name(&mut k, id, "workflow id")?;
    Ok(k)
}

/// Every snapshot of every workflow (offline verification).
pub fn all_snapshots() -> KeyRange {
    KeyRange::prefixed(vec![SNAPSHOT])
}

/// Key of the status index entry of workflow `id`.
pub fn status(partition: u16, status: u8, id: &str) -> Result<Vec<u8>, Error> {
    let mut k = status_prefix(partition, status);
    push_name(&mut k, id, "workflow id")?;
    Ok(k)
}

/// Every workflow of `partition` indexed under `status`.
pub fn status_range(partition: u16, status: u8) -> KeyRange {
    KeyRange::prefixed(status_prefix(partition, status))
}

/// Like [`status_range`] but starting strictly after workflow `after_id`: the cursor
/// for paging through a long listing.
pub fn status_range_after(partition: u16, status: u8, after_id: &str) -> Result<KeyRange, Error> {
    let mut from = self::status(partition, status, after_id)?;
    // The smallest key greater than `k` is `k` followed by a zero byte.
    from.push(0);
    Ok(KeyRange {
        from,
        to: prefix_end(&status_prefix(partition, status)),
    })
}

/// Key of one durable timer.
pub fn timer(partition: u16, due_ms: u64, id: &str, tag: u64) -> Result<Vec<u8>, Error> {
    let mut k = timer_prefix(partition);
    k.extend_from_slice(&due_ms.to_be_bytes());
    push_name(&mut k, id, "workflow id")?;
    k.extend_from_slice(&tag.to_be_bytes());
    Ok(k)
}

/// The timers of `partition` with `due_ms <= until_ms`, earliest first.
pub fn timers_due(partition: u16, until_ms: u64) -> KeyRange {
    let prefix = timer_prefix(partition);
    let to = match until_ms.checked_add(1) {
        Some(end) => {
            let mut to = prefix.clone();
            to.extend_from_slice(&end.to_be_bytes());
            to
        }
        None => prefix_end(&prefix),
    };
    KeyRange { from: prefix, to }
}

pub(super) fn journal_prefix(partition: u16, id: &str) -> Result<Vec<u8>, Error> {
    let mut k = vec![JOURNAL];
    k.extend_from_slice(&partition.to_be_bytes());
    push_name(&mut k, id, "workflow id")?;
    Ok(k)
}

pub(super) fn status_prefix(partition: u16, status: u8) -> Vec<u8> {
    let mut k = vec![STATUS];
    k.extend_from_slice(&partition.to_be_bytes());
    k.push(status);
    k
}

pub(super) fn timer_prefix(partition: u16) -> Vec<u8> {
    let mut k = vec![TIMER];
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// Decode a journal key.
pub fn decode_journal(key: &[u8]) -> Result<JournalKey, Error> {
    let mut r = Reader::new(key, JOURNAL)?;
    let k = JournalKey {
        partition: r.u16()?,
        id: r.name()?,
        seq: r.u64()?,
    };
    r.end()?;
    Ok(k)
}

/// Decode a snapshot key.
pub fn decode_snapshot(key: &[u8]) -> Result<SnapshotKey, Error> {
    let mut r = Reader::new(key, SNAPSHOT)?;
    let k = SnapshotKey {
        partition: r.u16()?,
        id: r.name()?,
    };
    r.end()?;
    Ok(k)
}

/// Decode a status index key.
pub fn decode_status(key: &[u8]) -> Result<StatusKey, Error> {
    let mut r = Reader::new(key, STATUS)?;
    let k = StatusKey {
        partition: r.u16()?,
        status: r.u8()?,
        id: r.name()?,
    };
    r.end()?;
    Ok(k)
}

/// Decode a timer key.
pub fn decode_timer(key: &[u8]) -> Result<TimerKey, Error> {
    let mut r = Reader::new(key, TIMER)?;
    let k = TimerKey {
        partition: r.u16()?,
        due_ms: r.u64()?,
        id: r.name()?,
        tag: r.u64()?,
    };
    r.end()?;
    Ok(k)
}
