//! One message of a partition's replicated journal, as bytes on the wire.
//!
//! Every group-commit batch of a partition becomes one record on the
//! partition's subject. A record carries the epoch of its ownership term,
//! the node that appended it, the subject sequence it was appended after
//! (`follows`, the value of `Nats-Expected-Last-Subject-Sequence`) and the
//! hash of the record it follows, so a reader checks the chain itself
//! instead of trusting the stream's replicas. The wire form is
//!
//! `[format version u8][crc32 u32 LE of payload][payload: postcard]`
//!
//! and a record's hash is SHA-256 over that whole wire form.

use serde::{Deserialize, Serialize};

use super::{Epoch, NodeId, RecordKind};

/// The wire format's version byte.
pub const RECORD_VERSION: u8 = 1;

/// The hash of a record (SHA-256 of its wire form); the first record of a
/// partition follows [`GENESIS`].
pub type ChainHash = [u8; 32];

/// What the first record of a partition names as its predecessor's hash.
pub const GENESIS: ChainHash = [0; 32];

/// One storage write of a batch, as replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JournalOp {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

/// The kind of a record on the wire (postcard: variants only appended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum WireKind {
    Open,
    Commit,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    partition: u16,
    epoch: u64,
    node: String,
    kind: WireKind,
    follows: u64,
    prev_hash: ChainHash,
    ops: Vec<JournalOp>,
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRecord {
    pub partition: u16,
    pub epoch: Epoch,
    pub node: NodeId,
    pub kind: RecordKind,
    /// The subject sequence this record was appended after (0: the first).
    pub follows: u64,
    /// The hash of the record at `follows` ([`GENESIS`] for the first).
    pub prev_hash: ChainHash,
    /// Empty for an open record.
    pub ops: Vec<JournalOp>,
}

impl JournalRecord {
    /// The wire form: version, checksum, payload.
    pub fn encode(&self) -> Vec<u8> {
        let wire = Wire {
            partition: self.partition,
            epoch: self.epoch.0,
            node: self.node.clone(),
            kind: match self.kind {
                RecordKind::Open => WireKind::Open,
                RecordKind::Commit => WireKind::Commit,
            },
            follows: self.follows,
            prev_hash: self.prev_hash,
            ops: self.ops.clone(),
        };
        // Encoding owned bytes, strings and integers cannot fail.
        let payload = postcard::to_allocvec(&wire).unwrap_or_default();
        super::frame::seal(RECORD_VERSION, &payload)
    }

    /// Checks the version and checksum, then decodes.
    pub fn decode(bytes: &[u8]) -> Result<JournalRecord, String> {
        use super::frame::FrameError;
        let payload = super::frame::open(RECORD_VERSION, bytes).map_err(|e| match e {
            FrameError::Short(n) => format!("record of {n} bytes is too short"),
            FrameError::Version(v) => format!("unknown record format version {v}"),
            FrameError::Checksum { stored, actual } => {
                format!("checksum mismatch (stored {stored:08x}, computed {actual:08x})")
            }
        })?;
        let w: Wire =
            postcard::from_bytes(payload).map_err(|e| format!("undecodable record: {e}"))?;
        Ok(JournalRecord {
            partition: w.partition,
            epoch: Epoch(w.epoch),
            node: w.node,
            kind: match w.kind {
                WireKind::Open => RecordKind::Open,
                WireKind::Commit => RecordKind::Commit,
            },
            follows: w.follows,
            prev_hash: w.prev_hash,
            ops: w.ops,
        })
    }
}

/// The hash of a record's wire form, named by the record that follows it.
pub fn chain_hash(wire: &[u8]) -> ChainHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, wire);
    let mut h = GENESIS;
    h.copy_from_slice(digest.as_ref());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> JournalRecord {
        JournalRecord {
            partition: 3,
            epoch: Epoch(17),
            node: "n1".into(),
            kind: RecordKind::Commit,
            follows: 41,
            prev_hash: chain_hash(b"previous"),
            ops: vec![
                JournalOp::Put {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                },
                JournalOp::Delete { key: b"d".to_vec() },
            ],
        }
    }

    #[test]
    fn a_record_round_trips_through_its_wire_form() {
        let r = record();
        assert_eq!(JournalRecord::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn a_flipped_bit_is_caught_by_the_checksum() {
        let mut wire = record().encode();
        let last = wire.len() - 1;
        wire[last] ^= 0x10;
        let err = JournalRecord::decode(&wire).unwrap_err();
        assert!(err.contains("checksum mismatch"), "{err}");
        assert!(JournalRecord::decode(&wire[..3]).is_err());
        wire[0] = 9;
        assert!(JournalRecord::decode(&wire)
            .unwrap_err()
            .contains("version"));
    }

    #[test]
    fn the_hash_covers_the_whole_wire_form() {
        let a = record().encode();
        let mut b = record();
        b.epoch = Epoch(18);
        assert_ne!(chain_hash(&a), chain_hash(&b.encode()));
        assert_eq!(chain_hash(&a), chain_hash(&record().encode()));
    }
}
