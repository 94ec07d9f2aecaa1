//! Durable timers, keyed by due time so a partition reads the due ones in
//! order.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::WorkflowStore;
use crate::storage::keys;
use crate::storage::{codec, Error, Op};

/// One durable timer returned by [`WorkflowStore::due_timers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer<T> {
    /// When it fires, in milliseconds since the Unix epoch.
    pub due_ms: u64,
    /// Workflow the timer belongs to.
    pub id: String,
    /// Engine-chosen discriminator among one workflow's timers.
    pub tag: u64,
    /// The stored timer payload.
    pub value: T,
}

impl WorkflowStore {
    /// Delete ops for every durable timer of `partition` whose workflow id
    /// `select` picks (keys only; a malformed key is left alone).
    pub fn timer_deletes_where(
        &self,
        partition: u16,
        select: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Vec<Op>, Error> {
        self.check_partition(partition)?;
        let range = keys::timers_due(partition, u64::MAX);
        let mut ops = Vec::new();
        self.storage.scan(&range.from, &range.to, &mut |k, _| {
            if let Ok(t) = keys::decode_timer(k) {
                if select(&t.id) {
                    ops.push(Op::Delete(k.to_vec()));
                }
            }
            true
        })?;
        Ok(ops)
    }

    /// Arm a durable timer.
    pub fn timer_put<T: Serialize>(
        &self,
        partition: u16,
        due_ms: u64,
        id: &str,
        tag: u64,
        timer: &T,
    ) -> Result<Op, Error> {
        self.check_partition(partition)?;
        Ok(Op::Put(
            keys::timer(partition, due_ms, id, tag)?,
            codec::encode(timer)?,
        ))
    }

    /// Disarm (or acknowledge) a durable timer; the full key is needed, so the caller
    /// keeps `due_ms` and `tag` of the timers it armed.
    pub fn timer_delete(
        &self,
        partition: u16,
        due_ms: u64,
        id: &str,
        tag: u64,
    ) -> Result<Op, Error> {
        self.check_partition(partition)?;
        Ok(Op::Delete(keys::timer(partition, due_ms, id, tag)?))
    }

    /// Up to `limit` timers of `partition` with `due_ms <= until_ms`, earliest first.
    pub fn due_timers<T: DeserializeOwned>(
        &self,
        partition: u16,
        until_ms: u64,
        limit: usize,
    ) -> Result<Vec<DueTimer<T>>, Error> {
        self.check_partition(partition)?;
        self.collect(&keys::timers_due(partition, until_ms), limit, |k, v| {
            let key = keys::decode_timer(k)?;
            Ok(DueTimer {
                due_ms: key.due_ms,
                id: key.id,
                tag: key.tag,
                value: codec::decode(k, v)?,
            })
        })
    }
}
