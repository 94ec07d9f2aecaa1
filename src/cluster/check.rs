//! The replicated journal's checker: one partition's records, read in
//! stream order, judged as one hash chain under the ownership rules.
//!
//! A trimmed journal starts after its partition's snapshot: the owner
//! purges the records below the one the snapshot covers and keeps that
//! one, so the subject is never empty and the next append still names a
//! last sequence. The checker then starts the chain at the snapshot's
//! record (its hash must be the one the snapshot names) instead of at the
//! genesis.

use super::record::{chain_hash, ChainHash, JournalRecord, GENESIS};
use super::{check_chain_after, ChainRecord, Epoch, JournalPosition, NodeId};

/// Every violation in one partition's replicated journal, read in stream
/// order as `(subject sequence, wire form)`: a record that fails its
/// checksum or names another partition, a record that does not follow the
/// one before it (its `follows` or its `prev_hash` differ: an append that
/// skipped the expected-sequence check), and the ownership rules of
/// [`super::check_chain`] (epochs only grow, one node per epoch, an open
/// record first in every term).
///
/// `snapshot` is the position the partition's snapshot covers, if it has
/// one. A journal whose first record follows the genesis is checked whole
/// (and must hold the snapshot's record); a trimmed one is checked from
/// the snapshot's record on, and is a violation when it lacks that record
/// or when no snapshot covers what was removed.
pub fn check_replicated(
    partition: u16,
    snapshot: Option<&JournalPosition>,
    messages: &[(u64, Vec<u8>)],
) -> Vec<String> {
    let mut violations = Vec::new();
    let head = |i: usize| -> Option<JournalRecord> {
        messages
            .get(i)
            .and_then(|(_, w)| JournalRecord::decode(w).ok())
    };
    let whole = head(0).is_none_or(|r| r.follows == 0);
    // Where the checked chain starts: the first record, or the one after
    // the record the chain is anchored at.
    let anchor = match snapshot.filter(|s| s.seq > 0) {
        Some(s) => match messages.iter().position(|(seq, _)| *seq == s.seq) {
            None => {
                violations.push(format!(
                    "partition {partition}: the snapshot covers seq {}, which is not in the journal (records it needs were removed, or the snapshot is of another stream)",
                    s.seq
                ));
                return violations;
            }
            Some(i) if chain_hash(&messages[i].1) != s.hash => {
                violations.push(format!(
                    "partition {partition}: the snapshot covers seq {} but names another record's hash",
                    s.seq
                ));
                return violations;
            }
            Some(_) if whole => None,
            Some(i) => Some(i),
        },
        None if whole => None,
        None => {
            let first = head(0).map_or(0, |r| r.follows);
            violations.push(format!(
                "partition {partition}: the journal starts after seq {first} and no snapshot covers the records removed"
            ));
            Some(0)
        }
    };
    let (from, mut prev, after) = match anchor {
        None => (0, None::<(u64, ChainHash)>, None::<(Epoch, NodeId)>),
        Some(i) => {
            let (seq, wire) = &messages[i];
            let after = match JournalRecord::decode(wire) {
                Ok(r) => Some((r.epoch, r.node)),
                Err(e) => {
                    violations.push(format!("partition {partition}: seq {seq}: {e}"));
                    None
                }
            };
            (i + 1, Some((*seq, chain_hash(wire))), after)
        }
    };
    let mut chain = Vec::with_capacity(messages.len());
    for (seq, wire) in &messages[from.min(messages.len())..] {
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
        chain.push(ChainRecord {
            seq: chain.len() as u64 + 1,
            epoch: r.epoch,
            node: r.node,
            kind: r.kind,
        });
        prev = Some((*seq, chain_hash(wire)));
    }
    let after = after.as_ref().map(|(e, n)| (*e, n.as_str()));
    violations.extend(check_chain_after(partition, after, &chain));
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Appender, JournalOp};

    /// A partition's journal of an open record and `commits` commits at
    /// odd sequences (another subject takes the even ones).
    fn journal(commits: usize) -> Vec<(u64, Vec<u8>)> {
        let mut a = Appender::new("n1".into());
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        let open = a.open(0, Epoch(4), None).unwrap();
        a.acked(&open, 1);
        out.push((1, open.wire));
        for i in 0..commits {
            let c = a
                .commit(0, vec![JournalOp::Delete { key: vec![i as u8] }])
                .unwrap();
            let seq = out.last().unwrap().0 + 2;
            a.acked(&c, seq);
            out.push((seq, c.wire));
        }
        out
    }

    fn at(messages: &[(u64, Vec<u8>)], i: usize) -> JournalPosition {
        JournalPosition::of(messages[i].0, &messages[i].1)
    }

    #[test]
    fn a_journal_trimmed_below_its_snapshots_record_passes() {
        let full = journal(6);
        let snap = at(&full, 3);
        assert!(check_replicated(0, None, &full).is_empty());
        assert!(check_replicated(0, Some(&snap), &full).is_empty());
        // Trimmed below the snapshot's record: the term goes on without
        // its open record, which was removed.
        let trimmed = &full[3..];
        assert!(check_replicated(0, Some(&snap), trimmed).is_empty());
        // A purge left half done (a newer snapshot, older records kept).
        assert!(check_replicated(0, Some(&at(&full, 5)), &full[2..]).is_empty());
    }

    #[test]
    fn a_trim_without_a_matching_snapshot_is_a_violation() {
        let full = journal(6);
        let trimmed = &full[3..];
        let v = check_replicated(0, None, trimmed);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("no snapshot covers"), "{v:?}");
        // The snapshot covers a record that was removed.
        let v = check_replicated(0, Some(&at(&full, 2)), trimmed);
        assert!(v[0].contains("not in the journal"), "{v:?}");
        // The snapshot names another record at its sequence.
        let forged = JournalPosition {
            seq: full[3].0,
            hash: chain_hash(b"other"),
        };
        let v = check_replicated(0, Some(&forged), trimmed);
        assert!(v[0].contains("another record's hash"), "{v:?}");
    }

    #[test]
    fn a_fork_after_the_snapshot_is_still_caught() {
        let full = journal(6);
        let snap = at(&full, 3);
        let mut trimmed = full[3..].to_vec();
        // The last record replaced by one that names an older predecessor.
        let mut a = Appender::new("n1".into());
        let open = a.open(0, Epoch(4), None).unwrap();
        a.acked(&open, 1);
        let stale = a.commit(0, Vec::new()).unwrap();
        let last = trimmed.len() - 1;
        trimmed[last].1 = stale.wire;
        let v = check_replicated(0, Some(&snap), &trimmed);
        assert!(v.iter().any(|m| m.contains("fork")), "{v:?}");
    }
}
