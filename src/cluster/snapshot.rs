//! A partition's snapshot: the partition's key range of a local store at
//! one journal position, so a restore loads it and replays only the
//! records after that position, and the journal can be trimmed below it.
//!
//! The wire form, as the journal's records:
//!
//! `[format version u8][crc32 u32 LE of payload][payload: postcard]`
//!
//! the payload holding the partition, the position (the subject sequence
//! and chain hash of the last journal record whose ops the entries hold)
//! and the entries in key order. The reader checks the checksum before it
//! trusts a byte of it: an object store's replicas are not trusted more
//! than the journal's.
//!
//! [`SnapshotPolicy`] decides when the owner of a partition writes one.

use serde::{Deserialize, Serialize};

use super::record::ChainHash;
use super::JournalPosition;

/// The wire format's version byte.
pub const SNAPSHOT_VERSION: u8 = 1;

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSnapshot {
    pub partition: u16,
    /// The last journal record whose ops `entries` hold.
    pub position: JournalPosition,
    /// Every key of the partition's tables with its value, in key order.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    partition: u16,
    seq: u64,
    hash: ChainHash,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl PartitionSnapshot {
    /// The wire form: version, checksum, payload.
    pub fn encode(&self) -> Vec<u8> {
        let wire = Wire {
            partition: self.partition,
            seq: self.position.seq,
            hash: self.position.hash,
            entries: self.entries.clone(),
        };
        // Encoding owned bytes and integers cannot fail.
        let payload = postcard::to_allocvec(&wire).unwrap_or_default();
        super::frame::seal(SNAPSHOT_VERSION, &payload)
    }

    /// Checks the version and the checksum, then decodes; `partition` is
    /// the partition the snapshot was read for, and one naming another is
    /// refused.
    pub fn decode(partition: u16, bytes: &[u8]) -> Result<PartitionSnapshot, String> {
        let what = format!("snapshot of partition {partition}");
        use super::frame::FrameError;
        let payload = super::frame::open(SNAPSHOT_VERSION, bytes).map_err(|e| match e {
            FrameError::Short(n) => format!("{what}: {n} bytes is too short"),
            FrameError::Version(v) => format!("{what}: unknown format version {v}"),
            FrameError::Checksum { stored, actual } => format!(
                "{what}: checksum mismatch (stored {stored:08x}, computed {actual:08x}); the snapshot is corrupt and is not loaded"
            ),
        })?;
        let w: Wire =
            postcard::from_bytes(payload).map_err(|e| format!("{what}: undecodable: {e}"))?;
        if w.partition != partition {
            return Err(format!("{what}: it names partition {}", w.partition));
        }
        Ok(PartitionSnapshot {
            partition: w.partition,
            position: JournalPosition {
                seq: w.seq,
                hash: w.hash,
            },
            entries: w.entries,
        })
    }
}

/// When the owner of a partition writes its snapshot: after
/// `every_records` journal records since the last one, or `interval_ms`
/// after it when at least one record was appended since. A zero turns
/// its trigger off; both zero, no snapshot is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    pub every_records: u64,
    pub interval_ms: u64,
}

impl SnapshotPolicy {
    /// Whether a snapshot is due, `records` having been appended and
    /// `elapsed_ms` having passed since the last one (or since the term
    /// started).
    pub fn due(&self, records: u64, elapsed_ms: u64) -> bool {
        records > 0
            && ((self.every_records > 0 && records >= self.every_records)
                || (self.interval_ms > 0 && elapsed_ms >= self.interval_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::chain_hash;

    fn snapshot() -> PartitionSnapshot {
        PartitionSnapshot {
            partition: 5,
            position: JournalPosition::of(812, b"record"),
            entries: vec![
                (b"J\x00\x05a".to_vec(), b"one".to_vec()),
                (b"S\x00\x05a".to_vec(), Vec::new()),
            ],
        }
    }

    #[test]
    fn a_snapshot_round_trips_through_its_wire_form() {
        let s = snapshot();
        let wire = s.encode();
        assert_eq!(PartitionSnapshot::decode(5, &wire).unwrap(), s);
        assert_eq!(s.position.hash, chain_hash(b"record"));
        let empty = PartitionSnapshot {
            entries: Vec::new(),
            ..snapshot()
        };
        assert_eq!(
            PartitionSnapshot::decode(5, &empty.encode()).unwrap(),
            empty
        );
    }

    #[test]
    fn a_corrupt_snapshot_is_refused_with_a_clear_error() {
        let mut wire = snapshot().encode();
        let last = wire.len() - 1;
        wire[last] ^= 0x01;
        let err = PartitionSnapshot::decode(5, &wire).unwrap_err();
        assert!(
            err.contains("snapshot of partition 5: checksum mismatch")
                && err.contains("not loaded"),
            "{err}"
        );
        assert!(PartitionSnapshot::decode(5, &wire[..4])
            .unwrap_err()
            .contains("too short"));
        let mut versioned = snapshot().encode();
        versioned[0] = 7;
        assert!(PartitionSnapshot::decode(5, &versioned)
            .unwrap_err()
            .contains("version 7"));
        let err = PartitionSnapshot::decode(6, &snapshot().encode()).unwrap_err();
        assert!(err.contains("names partition 5"), "{err}");
    }

    #[test]
    fn a_snapshot_is_due_by_count_or_by_time_and_never_without_records() {
        let p = SnapshotPolicy {
            every_records: 100,
            interval_ms: 60_000,
        };
        assert!(!p.due(99, 59_999));
        assert!(p.due(100, 0));
        assert!(p.due(1, 60_000));
        assert!(!p.due(0, 600_000));
        let count_only = SnapshotPolicy {
            interval_ms: 0,
            ..p
        };
        assert!(!count_only.due(5, u64::MAX));
        let off = SnapshotPolicy {
            every_records: 0,
            interval_ms: 0,
        };
        assert!(!off.due(u64::MAX, u64::MAX));
    }
}
