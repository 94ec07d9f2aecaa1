//! The appending side of the replicated journal, as pure state: for every
//! partition this node serves, the term's epoch and the tail it appends
//! after (the subject sequence and hash of the last record it knows).
//!
//! The shell builds each append here, publishes it with
//! `Nats-Expected-Last-Subject-Sequence` = [`Append::follows`], and reports
//! the stream's answer: [`Appender::acked`] moves the tail, and
//! [`Appender::stop`] (a refusal: the tail moved, another owner appended)
//! ends the term at once, so nothing more is appended for the partition
//! until the ownership core starts serving it again.

use std::collections::BTreeMap;

use super::record::{chain_hash, ChainHash, JournalOp, JournalRecord, GENESIS};
use super::{Epoch, NodeId, RecordKind};

/// One append, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    pub partition: u16,
    pub epoch: Epoch,
    pub kind: RecordKind,
    /// The subject sequence it must follow (the expected last sequence).
    pub follows: u64,
    /// The record's wire form.
    pub wire: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Term {
    epoch: Epoch,
    /// The open record is sent and not yet acknowledged: no commit may be
    /// built before it (it would name the tail the open record follows).
    opening: bool,
    last_seq: u64,
    last_hash: ChainHash,
}

/// The terms this node appends under.
#[derive(Debug, Clone)]
pub struct Appender {
    node: NodeId,
    terms: BTreeMap<u16, Term>,
}

/// Why an append cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendRefused {
    /// The node does not serve the partition (never did, was deposed, or
    /// handed it over).
    NotServing { partition: u16 },
    /// The journal's last record did not decode (corrupt or foreign).
    BadTail { partition: u16, reason: String },
}

impl std::fmt::Display for AppendRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppendRefused::NotServing { partition } => {
                write!(f, "this node does not serve partition {partition}")
            }
            AppendRefused::BadTail { partition, reason } => write!(
                f,
                "the replicated journal of partition {partition} ends in a bad record: {reason}"
            ),
        }
    }
}

impl Appender {
    pub fn new(node: NodeId) -> Appender {
        Appender {
            node,
            terms: BTreeMap::new(),
        }
    }

    /// The open record of a term at `epoch`, appended after the journal's
    /// tail as just read (`(sequence, wire form)`, `None` when the subject
    /// is empty). The term serves once [`acked`](Self::acked) confirms it.
    pub fn open(
        &mut self,
        partition: u16,
        epoch: Epoch,
        tail: Option<(u64, &[u8])>,
    ) -> Result<Append, AppendRefused> {
        let (last_seq, last_hash) = match tail {
            None => (0, GENESIS),
            Some((seq, wire)) => {
                let r = JournalRecord::decode(wire)
                    .map_err(|reason| AppendRefused::BadTail { partition, reason })?;
                if r.partition != partition {
                    return Err(AppendRefused::BadTail {
                        partition,
                        reason: format!("it names partition {}", r.partition),
                    });
                }
                (seq, chain_hash(wire))
            }
        };
        self.terms.insert(
            partition,
            Term {
                epoch,
                opening: true,
                last_seq,
                last_hash,
            },
        );
        self.build(partition, RecordKind::Open, Vec::new())
    }

    /// The record of one commit batch of `partition`.
    pub fn commit(&self, partition: u16, ops: Vec<JournalOp>) -> Result<Append, AppendRefused> {
        self.build(partition, RecordKind::Commit, ops)
    }

    fn build(
        &self,
        partition: u16,
        kind: RecordKind,
        ops: Vec<JournalOp>,
    ) -> Result<Append, AppendRefused> {
        let t = self
            .terms
            .get(&partition)
            .filter(|t| kind == RecordKind::Open || !t.opening)
            .ok_or(AppendRefused::NotServing { partition })?;
        let record = JournalRecord {
            partition,
            epoch: t.epoch,
            node: self.node.clone(),
            kind,
            follows: t.last_seq,
            prev_hash: t.last_hash,
            ops,
        };
        Ok(Append {
            partition,
            epoch: t.epoch,
            kind,
            follows: t.last_seq,
            wire: record.encode(),
        })
    }

    /// The stream stored `append` at subject sequence `seq`: the next
    /// append follows it. An answer for an ended term is ignored.
    pub fn acked(&mut self, append: &Append, seq: u64) {
        if let Some(t) = self.terms.get_mut(&append.partition) {
            if t.epoch == append.epoch && t.last_seq == append.follows {
                t.last_seq = seq;
                t.last_hash = chain_hash(&append.wire);
                t.opening = false;
            }
        }
    }

    /// Ends the term of `partition` at `epoch` (refused append, lost lease,
    /// handover); a later term's state is left alone. True when a term ended.
    pub fn stop(&mut self, partition: u16, epoch: Epoch) -> bool {
        if self.terms.get(&partition).is_some_and(|t| t.epoch == epoch) {
            self.terms.remove(&partition);
            return true;
        }
        false
    }

    /// Ends whatever term of `partition` this node has (it stopped serving).
    pub fn end(&mut self, partition: u16) {
        self.terms.remove(&partition);
    }

    /// The partitions whose terms have their open record in.
    pub fn served(&self) -> Vec<u16> {
        self.terms
            .iter()
            .filter(|(_, t)| !t.opening)
            .map(|(p, _)| *p)
            .collect()
    }

    /// The epoch the node appends under for `partition`, once its open
    /// record is in.
    pub fn epoch(&self, partition: u16) -> Option<Epoch> {
        self.terms
            .get(&partition)
            .filter(|t| !t.opening)
            .map(|t| t.epoch)
    }
}

#[cfg(test)]
#[path = "appender_tests.rs"]
mod tests;
