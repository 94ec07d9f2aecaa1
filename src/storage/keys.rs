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

use super::Error;

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
    /// Hash of the definition, so two different files claiming one version coexist.
    pub hash: u64,
}

// ---------------------------------------------------------------------------------
// Encoding

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

/// Key of the journal record of workflow `id` whose first event has `seq`.
pub fn journal(partition: u16, id: &str, seq: u64) -> Result<Vec<u8>, Error> {
    let mut k = journal_prefix(partition, id)?;
    k.extend_from_slice(&seq.to_be_bytes());
    Ok(k)
}

/// The journal records of workflow `id` with `seq >= from_seq`, in seq order.
pub fn journal_range(partition: u16, id: &str, from_seq: u64) -> Result<KeyRange, Error> {
    let prefix = journal_prefix(partition, id)?;
    let to = prefix_end(&prefix);
    let mut from = prefix;
    from.extend_from_slice(&from_seq.to_be_bytes());
    Ok(KeyRange { from, to })
}

/// Every journal record of every workflow (offline verification).
pub fn all_journals() -> KeyRange {
    KeyRange::prefixed(vec![JOURNAL])
}

/// Key of the outbox entry of the journal record of workflow `id` starting at `seq`.
/// Same shape as the journal key, so a workflow's entries scan in journal order.
pub fn outbox(partition: u16, id: &str, seq: u64) -> Result<Vec<u8>, Error> {
    let mut k = vec![OUTBOX];
    k.extend_from_slice(&partition.to_be_bytes());
    push_name(&mut k, id, "workflow id")?;
    k.extend_from_slice(&seq.to_be_bytes());
    Ok(k)
}

/// Every outbox entry.
pub fn all_outbox() -> KeyRange {
    KeyRange::prefixed(vec![OUTBOX])
}

/// Decode an outbox key (same fields as a journal key).
pub fn decode_outbox(key: &[u8]) -> Result<JournalKey, Error> {
    let mut r = Reader::new(key, OUTBOX)?;
    let k = JournalKey {
        partition: r.u16()?,
        id: r.name()?,
        seq: r.u64()?,
    };
    r.end()?;
    Ok(k)
}

/// Key of the snapshot of workflow `id`.
pub fn snapshot(partition: u16, id: &str) -> Result<Vec<u8>, Error> {
    let mut k = vec![SNAPSHOT];
    k.extend_from_slice(&partition.to_be_bytes());
    push_name(&mut k, id, "workflow id")?;
    Ok(k)
}

/// Every snapshot of every workflow (offline verification).
pub fn all_snapshots() -> KeyRange {
    KeyRange::prefixed(vec![SNAPSHOT])
}

/// Key of the status index entry of workflow `id`.
pub fn status(partition: u16, status: u8, id: &str) -> Result<Vec<u8>, Error> {
    let mut k = status_prefix(partition, status);
    push_name(&mut k, id, "workflow id")?;
    Ok(k)
}

/// Every workflow of `partition` indexed under `status`.
pub fn status_range(partition: u16, status: u8) -> KeyRange {
    KeyRange::prefixed(status_prefix(partition, status))
}

/// Like [`status_range`] but starting strictly after workflow `after_id`: the cursor
/// for paging through a long listing.
pub fn status_range_after(partition: u16, status: u8, after_id: &str) -> Result<KeyRange, Error> {
    let mut from = self::status(partition, status, after_id)?;
    // The smallest key greater than `k` is `k` followed by a zero byte.
    from.push(0);
    Ok(KeyRange {
        from,
        to: prefix_end(&status_prefix(partition, status)),
    })
}

/// Key of one durable timer.
pub fn timer(partition: u16, due_ms: u64, id: &str, tag: u64) -> Result<Vec<u8>, Error> {
    let mut k = timer_prefix(partition);
    k.extend_from_slice(&due_ms.to_be_bytes());
    push_name(&mut k, id, "workflow id")?;
    k.extend_from_slice(&tag.to_be_bytes());
    Ok(k)
}

/// The timers of `partition` with `due_ms <= until_ms`, earliest first.
pub fn timers_due(partition: u16, until_ms: u64) -> KeyRange {
    let prefix = timer_prefix(partition);
    let to = match until_ms.checked_add(1) {
        Some(end) => {
            let mut to = prefix.clone();
            to.extend_from_slice(&end.to_be_bytes());
            to
        }
        None => prefix_end(&prefix),
    };
    KeyRange { from: prefix, to }
}

/// Key of the record of batch job `job`.
pub fn batch_job(job: &str) -> Result<Vec<u8>, Error> {
    let mut k = vec![BATCH_JOB];
    push_name(&mut k, job, "batch job id")?;
    Ok(k)
}

/// Every batch job record, in job id order (ids by length, then bytes).
pub fn all_batch_jobs() -> KeyRange {
    KeyRange::prefixed(vec![BATCH_JOB])
}

/// Key of chunk `chunk` of the frozen member list of batch job `job`.
pub fn batch_members(job: &str, chunk: u32) -> Result<Vec<u8>, Error> {
    let mut k = vec![BATCH_MEMBERS];
    push_name(&mut k, job, "batch job id")?;
    k.extend_from_slice(&chunk.to_be_bytes());
    Ok(k)
}

/// Key of the failed item at position `index` of batch job `job`.
pub fn batch_failure(job: &str, index: u64) -> Result<Vec<u8>, Error> {
    let mut k = batch_failures_prefix(job)?;
    k.extend_from_slice(&index.to_be_bytes());
    Ok(k)
}

/// Every failed item of batch job `job`, in member order.
pub fn batch_failures(job: &str) -> Result<KeyRange, Error> {
    Ok(KeyRange::prefixed(batch_failures_prefix(job)?))
}

fn batch_failures_prefix(job: &str) -> Result<Vec<u8>, Error> {
    let mut k = vec![BATCH_FAILURES];
    push_name(&mut k, job, "batch job id")?;
    Ok(k)
}

/// Decode a batch job key into the job id.
pub fn decode_batch_job(key: &[u8]) -> Result<String, Error> {
    let mut r = Reader::new(key, BATCH_JOB)?;
    let id = r.name()?;
    r.end()?;
    Ok(id)
}

fn pipeline_prefix(name: &str) -> Result<Vec<u8>, Error> {
    let mut k = vec![PIPELINE];
    push_name(&mut k, name, "pipeline name")?;
    Ok(k)
}

fn journal_prefix(partition: u16, id: &str) -> Result<Vec<u8>, Error> {
    let mut k = vec![JOURNAL];
    k.extend_from_slice(&partition.to_be_bytes());
    push_name(&mut k, id, "workflow id")?;
    Ok(k)
}

fn status_prefix(partition: u16, status: u8) -> Vec<u8> {
    let mut k = vec![STATUS];
    k.extend_from_slice(&partition.to_be_bytes());
    k.push(status);
    k
}

fn timer_prefix(partition: u16) -> Vec<u8> {
    let mut k = vec![TIMER];
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// Append `name` with its one-byte length prefix; empty and oversized names are
/// refused as values (they come from callers, so they are expected failures).
fn push_name(k: &mut Vec<u8>, name: &str, what: &str) -> Result<(), Error> {
    let len = u8::try_from(name.len())
        .ok()
        .filter(|&l| l > 0)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{what} must be 1..={MAX_NAME_LEN} bytes, got {} bytes",
                name.len()
            ))
        })?;
    k.push(len);
    k.extend_from_slice(name.as_bytes());
    Ok(())
}

/// The smallest key greater than every key that starts with `prefix`.
///
/// Every prefix built here starts with a table tag, and no tag is `0xFF`, so a byte
/// to increment always exists.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // Unreachable for tagged prefixes; an all-0xFF prefix has no finite successor,
    // so the best bound is "past every tag this layout uses".
    vec![u8::MAX]
}

// ---------------------------------------------------------------------------------
// Decoding

/// Decode a journal key.
pub fn decode_journal(key: &[u8]) -> Result<JournalKey, Error> {
    let mut r = Reader::new(key, JOURNAL)?;
    let k = JournalKey {
        partition: r.u16()?,
        id: r.name()?,
        seq: r.u64()?,
    };
    r.end()?;
    Ok(k)
}

/// Decode a snapshot key.
pub fn decode_snapshot(key: &[u8]) -> Result<SnapshotKey, Error> {
    let mut r = Reader::new(key, SNAPSHOT)?;
    let k = SnapshotKey {
        partition: r.u16()?,
        id: r.name()?,
    };
    r.end()?;
    Ok(k)
}

/// Decode a status index key.
pub fn decode_status(key: &[u8]) -> Result<StatusKey, Error> {
    let mut r = Reader::new(key, STATUS)?;
    let k = StatusKey {
        partition: r.u16()?,
        status: r.u8()?,
        id: r.name()?,
    };
    r.end()?;
    Ok(k)
}

/// Decode a timer key.
pub fn decode_timer(key: &[u8]) -> Result<TimerKey, Error> {
    let mut r = Reader::new(key, TIMER)?;
    let k = TimerKey {
        partition: r.u16()?,
        due_ms: r.u64()?,
        id: r.name()?,
        tag: r.u64()?,
    };
    r.end()?;
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

/// A cursor over a key being decoded; every failure is a `Corrupt` naming the key.
struct Reader<'a> {
    key: &'a [u8],
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(key: &'a [u8], tag: u8) -> Result<Self, Error> {
        let mut r = Reader { key, rest: key };
        let found = r.u8()?;
        if found != tag {
            return Err(r.corrupt(format!(
                "expected table tag {:?}, found {:?}",
                char::from(tag),
                char::from(found)
            )));
        }
        Ok(r)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.rest.len() < n {
            return Err(self.corrupt(format!(
                "key truncated: needed {n} more bytes, {} left",
                self.rest.len()
            )));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn name(&mut self) -> Result<String, Error> {
        let len = usize::from(self.u8()?);
        let bytes = self.take(len)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(self.corrupt(format!("name is not UTF-8: {e}"))),
        }
    }

    fn end(&self) -> Result<(), Error> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.corrupt(format!("{} unexpected trailing bytes", self.rest.len())))
        }
    }

    fn corrupt(&self, reason: String) -> Error {
        Error::Corrupt {
            key: printable(self.key),
            reason,
        }
    }
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
