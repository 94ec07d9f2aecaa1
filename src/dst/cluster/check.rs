//! The judge of a cluster run.

use std::collections::BTreeMap;

use super::journal::SimJournal;
use crate::cluster::{check_chain, fair_share, Epoch, NodeId, RecordKind, Revision};

/// What the run left for the checker to judge.
pub(super) struct Outcome<'a> {
    pub journal: &'a SimJournal,
    pub acquisitions: &'a BTreeMap<(u16, Revision), NodeId>,
    /// Every append a node saw acknowledged: (partition, seq, epoch, node).
    pub acked: &'a [(u16, u64, Epoch, NodeId)],
    /// The nodes alive at the end, each with the partitions it holds.
    pub live: Vec<(NodeId, usize)>,
    pub end_ms: u64,
    pub served_within_ms: u64,
}

/// Every violation of the run.
pub(super) fn check(o: &Outcome<'_>) -> Vec<String> {
    let mut violations = Vec::new();
    for (p, stored) in o.journal.partitions.iter().enumerate() {
        let p = p as u16;
        let records: Vec<_> = stored.iter().map(|s| s.record.clone()).collect();
        violations.extend(check_chain(p, &records));
        // Every epoch was acquired by CAS by the node that appended under it.
        let mut seen: BTreeMap<Epoch, &str> = BTreeMap::new();
        for r in &records {
            if seen.insert(r.epoch, &r.node).is_some() {
                continue;
            }
            match o.acquisitions.get(&(p, r.epoch.0)) {
                Some(n) if *n == r.node => {}
                other => violations.push(format!(
                    "partition {p}: {} appended at epoch {} which the bucket shows acquired by {other:?}",
                    r.node, r.epoch
                )),
            }
        }
        // Served again after the faults: an accepted commit near the end.
        let since = o.end_ms.saturating_sub(o.served_within_ms);
        if !stored
            .iter()
            .any(|s| s.record.kind == RecordKind::Commit && s.at_ms >= since)
        {
            violations.push(format!(
                "partition {p}: no commit accepted in the last {} ms of the run (not served again)",
                o.served_within_ms
            ));
        }
    }
    // Nothing acknowledged is lost.
    for (p, seq, epoch, node) in o.acked {
        let stored = o.journal.partitions[usize::from(*p)].get(*seq as usize - 1);
        if !stored.is_some_and(|s| s.record.epoch == *epoch && s.record.node == *node) {
            violations.push(format!(
                "partition {p}: seq {seq} acknowledged to {node} at epoch {epoch} is not in the journal"
            ));
        }
    }
    // The live nodes hold their fair shares.
    let ids: Vec<NodeId> = o.live.iter().map(|(n, _)| n.clone()).collect();
    let partitions = o.journal.partitions.len() as u16;
    for (node, held) in &o.live {
        let share = usize::from(fair_share(&ids, partitions, node));
        if *held != share {
            violations.push(format!(
                "{node} holds {held} partitions at the end, its fair share among {} live nodes is {share}",
                ids.len()
            ));
        }
    }
    violations
}
