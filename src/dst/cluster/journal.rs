//! The simulated journal stream: one subject per partition, appends checked
//! against the expected last sequence as JetStream does.

use crate::cluster::{accepts, ChainRecord, Epoch, NodeId, RecordKind};

/// A record with the virtual time the stream accepted it.
#[derive(Debug, Clone)]
pub(super) struct Stored {
    pub record: ChainRecord,
    pub at_ms: u64,
}

pub(super) struct SimJournal {
    pub partitions: Vec<Vec<Stored>>,
    /// Accept every append whatever it expects (a planted bug).
    check_expected: bool,
}

impl SimJournal {
    pub fn new(partitions: u16, check_expected: bool) -> SimJournal {
        SimJournal {
            partitions: vec![Vec::new(); usize::from(partitions)],
            check_expected,
        }
    }

    /// The partition's last sequence (0 when empty).
    pub fn last(&self, partition: u16) -> u64 {
        self.partitions[usize::from(partition)].len() as u64
    }

    /// Appends when `expected_last` is the tail; returns the new sequence.
    pub fn append(
        &mut self,
        now: u64,
        partition: u16,
        expected_last: u64,
        epoch: Epoch,
        node: &NodeId,
        kind: RecordKind,
    ) -> Option<u64> {
        let last = self.last(partition);
        if self.check_expected && !accepts(last, expected_last) {
            return None;
        }
        let seq = last + 1;
        self.partitions[usize::from(partition)].push(Stored {
            record: ChainRecord {
                seq,
                epoch,
                node: node.clone(),
                kind,
            },
            at_ms: now,
        });
        Some(seq)
    }
}
