//! The tables of batch jobs: the job record, its frozen member list in
//! chunks, and its failed items.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::WorkflowStore;
use crate::storage::keys;
use crate::storage::{codec, Error, Op};

impl WorkflowStore {
    /// Store (or replace) the record of batch job `job` (not partitioned).
    pub fn batch_job_put<T: Serialize>(&self, job: &str, record: &T) -> Result<Op, Error> {
        Ok(Op::Put(keys::batch_job(job)?, codec::encode(record)?))
    }

    /// Store chunk `chunk` of the frozen member list of batch job `job`.
    pub fn batch_members_put<T: Serialize>(
        &self,
        job: &str,
        chunk: u32,
        members: &T,
    ) -> Result<Op, Error> {
        Ok(Op::Put(
            keys::batch_members(job, chunk)?,
            codec::encode(members)?,
        ))
    }

    /// Record the failed item at position `index` of batch job `job`.
    pub fn batch_failure_put<T: Serialize>(
        &self,
        job: &str,
        index: u64,
        failure: &T,
    ) -> Result<Op, Error> {
        Ok(Op::Put(
            keys::batch_failure(job, index)?,
            codec::encode(failure)?,
        ))
    }

    /// Delete ops for every row of batch job `job`: its record, member chunks
    /// and failed items (retention; keys only).
    pub fn batch_job_delete_ops(&self, job: &str) -> Result<Vec<Op>, Error> {
        let mut ops = vec![Op::Delete(keys::batch_job(job)?)];
        for range in [keys::batch_members_all(job)?, keys::batch_failures(job)?] {
            self.storage.scan(&range.from, &range.to, &mut |k, _| {
                ops.push(Op::Delete(k.to_vec()));
                true
            })?;
        }
        Ok(ops)
    }

    /// The record of batch job `job`, if any.
    pub fn load_batch_job<T: DeserializeOwned>(&self, job: &str) -> Result<Option<T>, Error> {
        self.load(&keys::batch_job(job)?)
    }

    /// Up to `limit` batch job records with their ids, in id order.
    pub fn list_batch_jobs<T: DeserializeOwned>(
        &self,
        limit: usize,
    ) -> Result<Vec<(String, T)>, Error> {
        self.collect(&keys::all_batch_jobs(), limit, |k, v| {
            Ok((keys::decode_batch_job(k)?, codec::decode(k, v)?))
        })
    }

    /// Chunk `chunk` of the frozen member list of batch job `job`, if stored.
    pub fn load_batch_members<T: DeserializeOwned>(
        &self,
        job: &str,
        chunk: u32,
    ) -> Result<Option<T>, Error> {
        self.load(&keys::batch_members(job, chunk)?)
    }

    /// Up to `limit` failed items of batch job `job`, in member order.
    pub fn list_batch_failures<T: DeserializeOwned>(
        &self,
        job: &str,
        limit: usize,
    ) -> Result<Vec<T>, Error> {
        self.collect(&keys::batch_failures(job)?, limit, |k, v| {
            codec::decode(k, v)
        })
    }
}
