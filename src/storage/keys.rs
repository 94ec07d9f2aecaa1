//! Key layout of every table, and the scan ranges over them.
//!
//! All integers are big-endian so that byte order equals logical order: a RocksDB
//! iterator (or the memory twin's `BTreeMap`) then returns a workflow's journal in
//! `seq` order and the timers of a partition in due-time order without any sorting.
//!
//! Variable-length strings (workflow ids, pipeline names) carry a `u8` length prefix.
//! Without it, a prefix scan for workflow `"a"` would also return the journal of
//! workflow `"ab"`; with it, `[1]"a"` and `[2]"ab"` are distinct prefixes. A side
//! effect worth knowing: within one table, ids sort by length first, then bytes.
//!
//! | table | tag | key |
//! | --- | --- | --- |
//! | meta | `M` | `M name` |
//! | pipeline definitions | `P` | `P len name version:u32 hash:u64` |
//! | journal | `J` | `J partition:u16 len id seq:u64` |
//! | snapshot | `S` | `S partition:u16 len id` |
//! | status index | `I` | `I partition:u16 status:u8 len id` |
//! | timers | `T` | `T partition:u16 due_ms:u64 len id tag:u64` |
//! | event outbox | `O` | `O partition:u16 len id seq:u64` |
//! | batch jobs | `B` | `B len job` |
//! | batch job members | `K` | `K len job chunk:u32` |
//! | batch job failed items | `F` | `F len job index:u64` |
//!
//! Architecture invariant: this layout is persistent. Changing any of it requires a
//! migration of existing stores; adding a new table means picking an unused tag.
//!
//! This file holds the tags, the decoded key types and the store-wide keys (meta,
//! pipeline definitions); the per-workflow keys are in `workflow`, the batch-job
//! keys in `batch`, and the byte encoding they share in `bytes`.

use super::Error;

mod batch;
mod bytes;
mod workflow;

pub use batch::{
    all_batch_jobs, batch_failure, batch_failures, batch_job, batch_members, batch_members_all,
    decode_batch_job,
};
use bytes::{prefix_end, push_name, Reader};
pub use workflow::{
    all_journals, all_outbox, all_snapshots, decode_journal, decode_outbox, decode_snapshot,
    decode_status, decode_timer, journal, journal_range, outbox, partition_outbox, snapshot,
    status, status_range, status_range_after, timer, timers_due,
};

/// Tag of the meta table (store-wide settings such as the partition count).
pub const META: u8 = b'M';
/// Tag of the pipeline definitions table.
pub const PIPELINE: u8 = b'P';
/// Tag of the journal table.
pub const JOURNAL: u8 = b'J';
/// Tag of the snapshot table.
pub const SNAPSHOT: u8 = b'S';
/// Tag of the status index table.
pub const STATUS: u8 = b'I';
/// Tag of the durable timers table.
pub const TIMER: u8 = b'T';
/// Tag of the batch job table (one record per job).
pub const BATCH_JOB: u8 = b'B';
/// Tag of the frozen member lists of batch jobs, in chunks.
pub const BATCH_MEMBERS: u8 = b'K';
/// Tag of the failed items of batch jobs.
pub const BATCH_FAILURES: u8 = b'F';
/// Tag of the lifecycle-event outbox (journal records not yet published).
pub const OUTBOX: u8 = b'O';

/// The tables whose keys carry a partition right after the tag: a
/// partition's replicated journal and its snapshot hold these.
pub const PARTITIONED: [u8; 5] = [JOURNAL, SNAPSHOT, STATUS, TIMER, OUTBOX];

/// Every key of `partition` in the [`PARTITIONED`] tables, one range per
/// table.
pub fn partition_ranges(partition: u16) -> Vec<KeyRange> {
    PARTITIONED
        .iter()
        .map(|tag| {
            let mut prefix = vec![*tag];
            prefix.extend_from_slice(&partition.to_be_bytes());
            KeyRange::prefixed(prefix)
        })
        .collect()
}

/// Longest workflow id or pipeline name, in bytes: the length prefix is one byte.
pub const MAX_NAME_LEN: usize = u8::MAX as usize;

/// A half-open key range `[from, to)`, ready for [`super::Storage::scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// First key included.
    pub from: Vec<u8>,
    /// First key excluded.
    pub to: Vec<u8>,
}

impl KeyRange {
    /// Every key that starts with `prefix`.
    fn prefixed(prefix: Vec<u8>) -> Self {
        let to = prefix_end(&prefix);
        KeyRange { from: prefix, to }
    }
}

/// A decoded journal key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalKey {
    /// Partition of the workflow.
    pub partition: u16,
    /// Workflow id.
    pub id: String,
    /// Seq of the record's first event.
    pub seq: u64,
}

/// A decoded snapshot key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotKey {
    /// Partition of the workflow.
    pub partition: u16,
    /// Workflow id.
    pub id: String,
}

/// A decoded status index key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusKey {
    /// Partition of the workflow.
    pub partition: u16,
    /// Status code, as chosen by the engine.
    pub status: u8,
    /// Workflow id.
    pub id: String,
}

/// A decoded timer key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerKey {
    /// Partition of the workflow.
    pub partition: u16,
    /// When the timer fires, in milliseconds since the Unix epoch.
    pub due_ms: u64,
    /// Workflow id.
    pub id: String,
    /// Distinguishes several timers of one workflow (chosen by the engine).
    pub tag: u64,
}

/// A decoded pipeline definition key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineKey {
    /// Pipeline name.
    pub name: String,
    /// Pipeline version.
    pub version: u32,
    /// Hash of the definition: a workflow pins its definition by (name, version, hash).
    pub hash: u64,
}

// ---------------------------------------------------------------------------------
// Meta, pipeline definitions and rendering

/// Key of the meta entry `name`. Meta names are the remainder of the key, so they
/// need no length prefix.
pub fn meta(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(META);
    k.extend_from_slice(name.as_bytes());
    k
}

/// Key of one pipeline definition.
pub fn pipeline(name: &str, version: u32, hash: u64) -> Result<Vec<u8>, Error> {
    let mut k = pipeline_prefix(name)?;
    k.extend_from_slice(&version.to_be_bytes());
    k.extend_from_slice(&hash.to_be_bytes());
    Ok(k)
}

/// Every stored definition of pipeline `name`, ordered by version then hash.
pub fn pipeline_versions(name: &str) -> Result<KeyRange, Error> {
    Ok(KeyRange::prefixed(pipeline_prefix(name)?))
}

fn pipeline_prefix(name: &str) -> Result<Vec<u8>, Error> {
    let mut k = vec![PIPELINE];
    push_name(&mut k, name, "pipeline name")?;
    Ok(k)
}

/// Decode a pipeline definition key.
pub fn decode_pipeline(key: &[u8]) -> Result<PipelineKey, Error> {
    let mut r = Reader::new(key, PIPELINE)?;
    let k = PipelineKey {
        name: r.name()?,
        version: r.u32()?,
        hash: r.u64()?,
    };
    r.end()?;
    Ok(k)
}

/// Render a key for error messages and logs: printable ASCII as is, everything else
/// (and the backslash) escaped as `\xNN` / `\\`.
pub fn printable(key: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(key.len());
    for &b in key {
        match b {
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(char::from(b)),
            _ => {
                // Writing into a String cannot fail.
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn in_range(r: &KeyRange, k: &[u8]) -> bool {
        r.from.as_slice() <= k && k < r.to.as_slice()
    }

    #[test]
    fn journal_round_trip_and_prefix_ids_are_disjoint() {
        let k = journal(3, "a", 7).unwrap();
        assert_eq!(
            decode_journal(&k).unwrap(),
            JournalKey {
                partition: 3,
                id: "a".into(),
                seq: 7
            }
        );
        let r = journal_range(3, "a", 0).unwrap();
        assert!(in_range(&r, &k));
        assert!(in_range(&r, &journal(3, "a", u64::MAX).unwrap()));
        assert!(!in_range(&r, &journal(3, "ab", 0).unwrap()));
        assert!(!in_range(&r, &journal(4, "a", 0).unwrap()));
        let from5 = journal_range(3, "a", 5).unwrap();
        assert!(!in_range(&from5, &journal(3, "a", 4).unwrap()));
        assert!(in_range(&from5, &journal(3, "a", 5).unwrap()));
    }

    #[test]
    fn oversized_and_empty_names_are_refused() {
        let long = "x".repeat(256);
        assert!(matches!(
            journal(0, &long, 0),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(snapshot(0, ""), Err(Error::InvalidArgument(_))));
        assert!(journal(0, &"x".repeat(255), 0).is_ok());
        assert!(matches!(
            pipeline(&long, 1, 2),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn timers_due_is_inclusive_and_ordered() {
        let r = timers_due(1, 100);
        assert!(in_range(&r, &timer(1, 0, "w", 0).unwrap()));
        assert!(in_range(&r, &timer(1, 100, "w", u64::MAX).unwrap()));
        assert!(!in_range(&r, &timer(1, 101, "w", 0).unwrap()));
        assert!(!in_range(&r, &timer(2, 0, "w", 0).unwrap()));
        let all = timers_due(1, u64::MAX);
        assert!(in_range(&all, &timer(1, u64::MAX, "w", u64::MAX).unwrap()));
        assert!(!in_range(&all, &timer(2, 0, "w", 0).unwrap()));
    }

    #[test]
    fn status_range_after_skips_the_cursor() {
        let r = status_range_after(0, 2, "b").unwrap();
        assert!(!in_range(&r, &status(0, 2, "b").unwrap()));
        assert!(in_range(&r, &status(0, 2, "c").unwrap()));
        assert!(in_range(&r, &status(0, 2, "ba").unwrap()));
        assert!(!in_range(&r, &status(0, 3, "c").unwrap()));
    }

    #[test]
    fn malformed_keys_are_corrupt_not_panics() {
        for bad in [
            &b""[..],
            b"J",
            b"J\x00",
            b"J\x00\x01\x05ab",
            b"S\x00\x01\x01a\x00",
            b"X\x00\x01",
            b"J\x00\x01\x01\xff\x00\x00\x00\x00\x00\x00\x00\x00",
        ] {
            assert!(
                matches!(decode_journal(bad), Err(Error::Corrupt { .. }))
                    || matches!(decode_snapshot(bad), Err(Error::Corrupt { .. })),
                "{}",
                printable(bad)
            );
        }
        assert!(matches!(
            decode_snapshot(b"S\x00\x01\x01a\x00"),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn batch_keys_round_trip_and_do_not_overlap() {
        let k = batch_job("b-1").unwrap();
        assert_eq!(decode_batch_job(&k).unwrap(), "b-1");
        assert!(in_range(&all_batch_jobs(), &k));
        assert!(!in_range(
            &all_batch_jobs(),
            &batch_members("b-1", 0).unwrap()
        ));
        let f = batch_failures("b-1").unwrap();
        assert!(in_range(&f, &batch_failure("b-1", u64::MAX).unwrap()));
        assert!(!in_range(&f, &batch_failure("b-10", 0).unwrap()));
        assert!(batch_failure("b-1", 1).unwrap() < batch_failure("b-1", 2).unwrap());
    }

    #[test]
    fn printable_escapes() {
        assert_eq!(printable(b"J\x00a\\\xff"), "J\\x00a\\\\\\xff");
    }

    proptest! {
        #[test]
        fn byte_order_is_logical_order(
            p1 in 0u16..4, p2 in 0u16..4,
            id1 in "[a-c]{1,3}", id2 in "[a-c]{1,3}",
            s1 in any::<u64>(), s2 in any::<u64>(),
        ) {
            let k1 = journal(p1, &id1, s1).unwrap();
            let k2 = journal(p2, &id2, s2).unwrap();
            if p1 == p2 && id1 == id2 {
                prop_assert_eq!(k1.cmp(&k2), s1.cmp(&s2));
            }
            if p1 != p2 {
                prop_assert_eq!(k1.cmp(&k2), p1.cmp(&p2));
            }
            prop_assert_eq!(decode_journal(&k1).unwrap(), JournalKey { partition: p1, id: id1, seq: s1 });
        }

        #[test]
        fn timer_order_is_due_order(d1 in any::<u64>(), d2 in any::<u64>(), id in "[a-z]{1,8}", tag in any::<u64>()) {
            let k1 = timer(0, d1, &id, tag).unwrap();
            let k2 = timer(0, d2, "zzzzzzzzz", 0).unwrap();
            if d1 != d2 {
                prop_assert_eq!(k1.cmp(&k2), d1.cmp(&d2));
            }
            prop_assert_eq!(decode_timer(&k1).unwrap(), TimerKey { partition: 0, due_ms: d1, id, tag });
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode_journal(&bytes);
            let _ = decode_snapshot(&bytes);
            let _ = decode_status(&bytes);
            let _ = decode_timer(&bytes);
            let _ = decode_pipeline(&bytes);
        }
    }
}
