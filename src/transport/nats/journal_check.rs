//! The checker's reading of a prefix's replicated journal (`orchestrator
//! verify --journal-from`): every partition subject of `<PREFIX>_JOURNAL`,
//! read in stream order and judged by [`check_replicated`]: checksums,
//! one hash chain per partition, epochs that only grow, one node per
//! epoch, an open record first in every term. A partition with a
//! snapshot in `<PREFIX>_SNAPSHOTS` is checked from the record its
//! snapshot covers when the journal was trimmed below it, and its
//! snapshot must decode (checksum) and name a record of the journal.

use std::collections::BTreeSet;

use async_nats::jetstream;
use futures_util::TryStreamExt;

use super::journal::{journal_stream, read_partition};
use super::journal_snapshot::{read_snapshot, snapshot_bucket};
use crate::cluster::{check_replicated, JournalRecord};

/// What the check of a replicated journal found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalReport {
    /// Partitions with at least one record.
    pub partitions: usize,
    pub records: u64,
    /// Ownership terms (distinct epochs) over all partitions.
    pub terms: u64,
    /// Partitions with a snapshot.
    pub snapshots: usize,
    /// Empty when the journal is sound.
    pub violations: Vec<String>,
}

impl std::fmt::Display for JournalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "journal partitions={} records={} terms={} snapshots={} violations={}",
            self.partitions,
            self.records,
            self.terms,
            self.snapshots,
            self.violations.len()
        )
    }
}

/// Reads and checks every partition of `prefix`'s journal.
pub async fn check_journal(js: &jetstream::Context, prefix: &str) -> Result<JournalReport, String> {
    let name = journal_stream(prefix);
    let stream = js
        .get_stream_no_info(&name)
        .await
        .map_err(|e| format!("cannot open stream {name}: {e}"))?;
    let filter = format!("{prefix}.journal.>");
    let subjects: Vec<(String, usize)> = stream
        .info_with_subjects(&filter)
        .await
        .map_err(|e| format!("cannot list the subjects of {name}: {e}"))?
        .try_collect()
        .await
        .map_err(|e| format!("cannot list the subjects of {name}: {e}"))?;
    let mut report = JournalReport::default();
    let head = format!("{prefix}.journal.");
    let mut partitions = BTreeSet::new();
    for (subject, _) in subjects {
        match subject
            .strip_prefix(&head)
            .and_then(|p| p.parse::<u16>().ok())
        {
            Some(p) => {
                partitions.insert(p);
            }
            None => report
                .violations
                .push(format!("subject {subject} is not a partition's journal")),
        }
    }
    // No bucket: nothing was ever trimmed.
    let snapshots = js.get_object_store(snapshot_bucket(prefix)).await.ok();
    for p in partitions {
        let messages = read_partition(js, prefix, p).await?;
        let snapshot = match &snapshots {
            Some(store) => match read_snapshot(store, p).await {
                Ok(s) => s.map(|s| s.position),
                Err(e) => {
                    report.violations.push(e);
                    None
                }
            },
            None => None,
        };
        report.snapshots += usize::from(snapshot.is_some());
        report.partitions += 1;
        report.records += messages.len() as u64;
        let epochs: BTreeSet<u64> = messages
            .iter()
            .filter_map(|(_, w)| JournalRecord::decode(w).ok())
            .map(|r| r.epoch.0)
            .collect();
        report.terms += epochs.len() as u64;
        report
            .violations
            .extend(check_replicated(p, snapshot.as_ref(), &messages));
    }
    Ok(report)
}
