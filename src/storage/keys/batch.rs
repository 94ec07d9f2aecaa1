//! Keys of the batch-job tables: the job, its member chunks and its failed
//! items.

use super::bytes::{push_name, Reader};
use super::{KeyRange, BATCH_FAILURES, BATCH_JOB, BATCH_MEMBERS};
use crate::storage::Error;

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

/// Every chunk of the member list of batch job `job`.
pub fn batch_members_all(job: &str) -> Result<KeyRange, Error> {
    let mut k = vec![BATCH_MEMBERS];
    push_name(&mut k, job, "batch job id")?;
    Ok(KeyRange::prefixed(k))
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

pub(super) fn batch_failures_prefix(job: &str) -> Result<Vec<u8>, Error> {
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
