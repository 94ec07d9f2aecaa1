//! The status index (`I | partition | status | id` → an entry the caller
//! chooses) and its queries: counts, and pages of one status in id order.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::WorkflowStore;
use crate::storage::keys::{self, KeyRange};
use crate::storage::{codec, Error, Op};

impl WorkflowStore {
    /// Number of workflows with `status` in `partition`, read from the status
    /// index without decoding its values.
    pub fn count_status(&self, partition: u16, status: u8) -> Result<u64, Error> {
        self.check_partition(partition)?;
        let range = keys::status_range(partition, status);
        let mut n = 0u64;
        self.storage.scan(&range.from, &range.to, &mut |_, _| {
            n += 1;
            true
        })?;
        Ok(n)
    }

    /// Index workflow `id` under `status`. The caller deletes the old status entry in
    /// the same batch when the status changes.
    pub fn status_put<T: Serialize>(
        &self,
        partition: u16,
        status: u8,
        id: &str,
        entry: &T,
    ) -> Result<Op, Error> {
        self.check_partition(partition)?;
        Ok(Op::Put(
            keys::status(partition, status, id)?,
            codec::encode(entry)?,
        ))
    }

    /// Remove workflow `id` from the `status` index.
    pub fn status_delete(&self, partition: u16, status: u8, id: &str) -> Result<Op, Error> {
        self.check_partition(partition)?;
        Ok(Op::Delete(keys::status(partition, status, id)?))
    }

    /// Up to `limit` workflows of `partition` indexed under `status`, with their index
    /// entries, in key order (ids by length, then bytes).
    pub fn list_status<T: DeserializeOwned>(
        &self,
        partition: u16,
        status: u8,
        limit: usize,
    ) -> Result<Vec<(String, T)>, Error> {
        self.check_partition(partition)?;
        self.list_status_range(&keys::status_range(partition, status), limit)
    }

    /// Like [`Self::list_status`], continuing strictly after workflow `after_id` (the
    /// last id of the previous page).
    pub fn list_status_after<T: DeserializeOwned>(
        &self,
        partition: u16,
        status: u8,
        after_id: &str,
        limit: usize,
    ) -> Result<Vec<(String, T)>, Error> {
        self.check_partition(partition)?;
        self.list_status_range(
            &keys::status_range_after(partition, status, after_id)?,
            limit,
        )
    }

    fn list_status_range<T: DeserializeOwned>(
        &self,
        range: &KeyRange,
        limit: usize,
    ) -> Result<Vec<(String, T)>, Error> {
        self.collect(range, limit, |k, v| {
            let key = keys::decode_status(k)?;
            Ok((key.id, codec::decode(k, v)?))
        })
    }
}
