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

    /// The epoch the node appends under for `partition`, once its open
    /// record is in.
    pub fn epoch(&self, partition: u16) -> Option<Epoch> {
        self.terms
            .get(&partition)
            .filter(|t| !t.opening)
            .map(|t| t.epoch)
    }
}

/// Every violation in one partition's replicated journal, read in stream
/// order as `(subject sequence, wire form)`: a record that fails its
/// checksum or names another partition, a record that does not follow the
/// one before it (its `follows` or its `prev_hash` differ: an append that
/// skipped the expected-sequence check), and the ownership rules of
/// [`super::check_chain`] (epochs only grow, one node per epoch, an open
/// record first in every term).
pub fn check_replicated(partition: u16, messages: &[(u64, Vec<u8>)]) -> Vec<String> {
    let mut violations = Vec::new();
    let mut chain = Vec::with_capacity(messages.len());
    let mut prev: Option<(u64, ChainHash)> = None;
    for (seq, wire) in messages {
        let r = match JournalRecord::decode(wire) {
            Ok(r) => r,
            Err(e) => {
                violations.push(format!("partition {partition}: seq {seq}: {e}"));
                prev = Some((*seq, chain_hash(wire)));
                continue;
            }
        };
        if r.partition != partition {
            violations.push(format!(
                "partition {partition}: seq {seq} names partition {}",
                r.partition
            ));
        }
        let (want_seq, want_hash) = prev.unwrap_or((0, GENESIS));
        if r.follows != want_seq {
            violations.push(format!(
                "partition {partition}: seq {seq} by {} at epoch {} was appended after seq {} but follows seq {want_seq} (fork: appended without the expected-sequence check)",
                r.node, r.epoch, r.follows
            ));
        } else if r.prev_hash != want_hash {
            violations.push(format!(
                "partition {partition}: seq {seq} names a previous hash that is not the hash of seq {want_seq}"
            ));
        }
        chain.push(super::ChainRecord {
            seq: chain.len() as u64 + 1,
            epoch: r.epoch,
            node: r.node,
            kind: r.kind,
        });
        prev = Some((*seq, chain_hash(wire)));
    }
    violations.extend(super::check_chain(partition, &chain));
    violations
}

#[cfg(test)]
#[path = "appender_tests.rs"]
mod tests;
