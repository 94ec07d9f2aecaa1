//! The rules of a partition's replicated journal: an append names the
//! sequence it expects to follow (JetStream's
//! `Nats-Expected-Last-Subject-Sequence`) and carries its owner's epoch; a
//! journal that followed those rules is one chain in which epochs only grow.
//!
//! [`accepts`] is the stream's side of the rule, [`check_chain`] the
//! checker's: it reads a partition's records in sequence order and reports
//! every place where the chain forks or goes back in epoch.

use std::collections::BTreeMap;

use super::{Epoch, NodeId};

/// Whether the stream takes an append that expects to follow
/// `expected_last`, when its last sequence is `last` (0 when empty).
pub fn accepts(last: u64, expected_last: u64) -> bool {
    last == expected_last
}

/// What a journal record is, as far as ownership goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// The first record of an ownership term: the new owner read the tail
    /// and appended this after it, so a deposed owner's later append (which
    /// expects an older tail) is refused.
    Open,
    /// A group-commit batch.
    Commit,
}

/// One record of a partition's journal, as the checker needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRecord {
    /// The stream sequence (1-based, contiguous within the partition).
    pub seq: u64,
    pub epoch: Epoch,
    /// The node that appended it.
    pub node: NodeId,
    pub kind: RecordKind,
}

/// Every violation of the chain rules in one partition's records, in
/// sequence order: a gap or repeat in the sequence, an epoch lower than an
/// earlier one (an append from a deposed owner), an epoch used by two nodes,
/// and a term whose first record is not its `Open`.
pub fn check_chain(partition: u16, records: &[ChainRecord]) -> Vec<String> {
    check_chain_after(partition, None, records)
}

/// [`check_chain`] of the records that follow a trimmed part of the
/// journal: `after` is the epoch and node of the last record before
/// `records` (the one a snapshot covers), whose term `records` may go on
/// without an open record of their own.
pub fn check_chain_after(
    partition: u16,
    after: Option<(Epoch, &str)>,
    records: &[ChainRecord],
) -> Vec<String> {
    let mut violations = Vec::new();
    let mut owner_of: BTreeMap<Epoch, &str> = BTreeMap::new();
    let mut highest: Option<Epoch> = None;
    if let Some((epoch, node)) = after {
        owner_of.insert(epoch, node);
        highest = Some(epoch);
    }
    for (i, r) in records.iter().enumerate() {
        let want = i as u64 + 1;
        if r.seq != want {
            violations.push(format!(
                "partition {partition}: record {} has sequence {}, expected {want}",
                i + 1,
                r.seq
            ));
        }
        if let Some(h) = highest {
            if r.epoch < h {
                violations.push(format!(
                    "partition {partition}: seq {} by {} at epoch {} after epoch {h}: a deposed owner's append was accepted (fork)",
                    r.seq, r.node, r.epoch
                ));
            }
        }
        match owner_of.get(&r.epoch) {
            Some(n) if *n != r.node => violations.push(format!(
                "partition {partition}: epoch {} used by {n} and by {} (seq {})",
                r.epoch, r.node, r.seq
            )),
            Some(_) => {}
            None => {
                owner_of.insert(r.epoch, &r.node);
                if r.kind != RecordKind::Open {
                    violations.push(format!(
                        "partition {partition}: epoch {} starts at seq {} without its open record",
                        r.epoch, r.seq
                    ));
                }
            }
        }
        highest = Some(highest.map_or(r.epoch, |h| h.max(r.epoch)));
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, epoch: u64, node: &str, kind: RecordKind) -> ChainRecord {
        ChainRecord {
            seq,
            epoch: Epoch(epoch),
            node: node.into(),
            kind,
        }
    }

    #[test]
    fn the_stream_takes_only_an_append_that_follows_its_tail() {
        assert!(accepts(0, 0));
        assert!(accepts(7, 7));
        assert!(!accepts(7, 6));
        assert!(!accepts(7, 8));
    }

    #[test]
    fn a_chain_of_growing_epochs_passes() {
        let chain = [
            rec(1, 3, "a", RecordKind::Open),
            rec(2, 3, "a", RecordKind::Commit),
            rec(3, 9, "b", RecordKind::Open),
            rec(4, 9, "b", RecordKind::Commit),
        ];
        assert!(check_chain(0, &chain).is_empty());
        assert!(check_chain(0, &[]).is_empty());
    }

    #[test]
    fn a_deposed_owners_append_after_the_new_term_is_a_fork() {
        let chain = [
            rec(1, 3, "a", RecordKind::Open),
            rec(2, 9, "b", RecordKind::Open),
            rec(3, 3, "a", RecordKind::Commit),
        ];
        let v = check_chain(4, &chain);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("fork"), "{v:?}");
    }

    #[test]
    fn an_epoch_shared_by_two_nodes_or_without_its_open_is_caught() {
        let chain = [
            rec(1, 3, "a", RecordKind::Open),
            rec(2, 3, "b", RecordKind::Commit),
            rec(3, 5, "b", RecordKind::Commit),
        ];
        let v = check_chain(0, &chain);
        assert!(v.iter().any(|m| m.contains("used by a and by b")), "{v:?}");
        assert!(v.iter().any(|m| m.contains("without its open")), "{v:?}");
    }

    #[test]
    fn a_gap_in_the_sequence_is_caught() {
        let chain = [
            rec(1, 3, "a", RecordKind::Open),
            rec(3, 3, "a", RecordKind::Commit),
        ];
        assert_eq!(check_chain(0, &chain).len(), 1);
    }
}
