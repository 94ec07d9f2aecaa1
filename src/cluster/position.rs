//! How far a node's local store has applied a partition's replicated
//! journal: the subject sequence and chain hash of the last record whose
//! ops are in the store.
//!
//! The position is written in the same local write as the ops of the
//! record it names, so local state and "applied up to" never disagree. At
//! the start of a term the node reads the records after its position and
//! applies them ([`JournalPosition::follow`] checks that each one follows
//! the last), then opens its term after the last one: the local store is
//! then exactly the journal's state.

use super::record::{chain_hash, ChainHash, JournalRecord, GENESIS};

/// See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalPosition {
    /// The subject sequence of the last applied record (0: none yet).
    pub seq: u64,
    /// Its hash ([`GENESIS`] when none).
    pub hash: ChainHash,
}

/// Stored length of a position: sequence (u64 BE) then hash.
const STORED_LEN: usize = 8 + 32;

impl JournalPosition {
    /// Before the first record of a partition.
    pub const START: JournalPosition = JournalPosition {
        seq: 0,
        hash: GENESIS,
    };

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(STORED_LEN);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.hash);
        out
    }

    /// Decodes the stored form.
    pub fn decode(bytes: &[u8]) -> Result<JournalPosition, String> {
        if bytes.len() != STORED_LEN {
            return Err(format!(
                "a journal position is {STORED_LEN} bytes, not {}",
                bytes.len()
            ));
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&bytes[..8]);
        let mut hash = GENESIS;
        hash.copy_from_slice(&bytes[8..]);
        Ok(JournalPosition {
            seq: u64::from_be_bytes(seq),
            hash,
        })
    }

    /// The position of the record `wire` stored at `seq`.
    pub fn of(seq: u64, wire: &[u8]) -> JournalPosition {
        JournalPosition {
            seq,
            hash: chain_hash(wire),
        }
    }

    /// Decodes the record `wire` stored at `seq` of `partition` and checks
    /// that it follows this position (its checksum, its partition, the
    /// sequence and hash it names). Answers the record and the position
    /// after it; an error names what is wrong, and nothing of the record
    /// may be applied then.
    pub fn follow(
        &self,
        partition: u16,
        seq: u64,
        wire: &[u8],
    ) -> Result<(JournalRecord, JournalPosition), String> {
        let r = JournalRecord::decode(wire)
            .map_err(|e| format!("partition {partition}: seq {seq}: {e}"))?;
        if r.partition != partition {
            return Err(format!(
                "partition {partition}: seq {seq} names partition {}",
                r.partition
            ));
        }
        if r.follows != self.seq || r.prev_hash != self.hash {
            return Err(format!(
                "partition {partition}: seq {seq} follows seq {} but the last applied record is seq {} (the journal does not continue the local store)",
                r.follows, self.seq
            ));
        }
        Ok((r, JournalPosition::of(seq, wire)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Epoch, JournalOp, RecordKind};

    fn record(follows: u64, prev_hash: ChainHash, partition: u16) -> Vec<u8> {
        JournalRecord {
            partition,
            epoch: Epoch(3),
            node: "n1".into(),
            kind: RecordKind::Commit,
            follows,
            prev_hash,
            ops: vec![JournalOp::Delete { key: b"k".to_vec() }],
        }
        .encode()
    }

    #[test]
    fn a_position_round_trips_and_a_short_one_is_refused() {
        let p = JournalPosition::of(42, b"wire");
        assert_eq!(JournalPosition::decode(&p.encode()).unwrap(), p);
        assert!(JournalPosition::decode(&[1, 2, 3]).is_err());
    }

    #[test]
    fn records_are_followed_in_chain_order_only() {
        let first = record(0, GENESIS, 2);
        let (r, at) = JournalPosition::START.follow(2, 5, &first).unwrap();
        assert_eq!((r.ops.len(), at), (1, JournalPosition::of(5, &first)));
        let second = record(5, chain_hash(&first), 2);
        let (_, at2) = at.follow(2, 9, &second).unwrap();
        assert_eq!(at2.seq, 9);
        // Skipping a record, a wrong hash, another partition, a bad checksum.
        let err = JournalPosition::START.follow(2, 9, &second).unwrap_err();
        assert!(err.contains("does not continue"), "{err}");
        let forged = record(5, GENESIS, 2);
        assert!(at.follow(2, 9, &forged).is_err());
        assert!(at
            .follow(3, 9, &second)
            .unwrap_err()
            .contains("names partition 2"));
        let mut flipped = second.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(at.follow(2, 9, &flipped).unwrap_err().contains("checksum"));
    }
}
