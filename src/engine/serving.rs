//! Which partitions this node's engine serves, and changing that set while
//! it runs: what a cluster node does when its partition leases change
//! hands (docs/cluster.md). A single node serves every partition from
//! start to shutdown ([`Serve::All`]).
//!
//! **Stopping** a partition ([`Engine::stop_partition`]):
//!
//! 1. The root supervisor stops routing to it and forgets it, so requests
//!    for its workflows are refused with [`Error::NotServed`] from then on
//!    and a failure reported meanwhile does not restart it.
//! 2. The partition stops its intake: no tick (timers, deadlines, purges),
//!    and what still waits in its mailbox is dropped unanswered (a waiting
//!    caller is refused "not served"; a worker's result is not
//!    acknowledged, so it comes again).
//! 3. Its workflow actors stop, each after the message it handles: a
//!    commit in flight ends and its effects run (write-ahead holds: no
//!    effect without its commit, no commit left half done).
//! 4. The partition actor stops; its timers, liveness deadlines and
//!    admission-gate entries go with it (`Capacity::forget_partition`).
//!
//! The call returns after step 4: no commit of the partition is in flight
//! and none starts (the ownership core's `CommitFinished`).
//!
//! **Starting** one ([`Engine::start_partition`]) spawns its actor, which
//! recovers from the local store exactly as after a restart (durable
//! timers re-armed, owed tasks re-sent with their task ids), then routes to
//! it. In a cluster the store must first hold the partition's journal up
//! to its tail: the journal's term opening replays it
//! (`JetStreamJournal::start_serving`) before the engine is asked.
//!
//! Nothing accepted is lost or doubled by a stop and a start: every
//! accepted transition is in the store before it is answered, recovery
//! rebuilds the same state from it, an attempt re-sent keeps its task id,
//! and the workflow core ignores a second result of a step that succeeded.

use super::root::RootMsg;
use super::{Engine, Error};

/// The partitions an engine serves from its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serve {
    /// Every partition of the store (single-node mode).
    All,
    /// These partitions only (a cluster node: those whose leases it holds).
    Only(Vec<u16>),
}

impl Serve {
    /// The partitions to start, of `count`; one out of range is refused.
    pub(super) fn partitions(&self, count: u16) -> Result<Vec<u16>, Error> {
        match self {
            Serve::All => Ok((0..count).collect()),
            Serve::Only(ps) => {
                let mut ps = ps.clone();
                ps.sort_unstable();
                ps.dedup();
                match ps.iter().find(|&&p| p >= count) {
                    Some(p) => Err(out_of_range(*p, count)),
                    None => Ok(ps),
                }
            }
        }
    }
}

fn out_of_range(p: u16, count: u16) -> Error {
    Error::Start(format!(
        "partition {p} does not exist: the store has {count} partitions"
    ))
}

impl Engine {
    /// Whether this engine serves partition `p` now.
    pub fn serves(&self, p: u16) -> bool {
        self.router.serves(p)
    }

    /// The partitions this engine serves now, in index order.
    pub fn served_partitions(&self) -> Vec<u16> {
        self.router.served().into_iter().map(|(p, _)| p).collect()
    }

    /// Starts serving partition `p`: recovers it from the local store as a
    /// restart does, then takes its requests. Returns once it serves; a
    /// partition already served is left as it is.
    pub async fn start_partition(&self, p: u16) -> Result<(), Error> {
        let count = self.ctx.store.partitions();
        if p >= count {
            return Err(out_of_range(p, count));
        }
        let _changing = self.changing.lock().await;
        // Child effects its recovery asks for wait until it is routed to.
        self.lineage.hold();
        let r = self
            .root
            .call(|reply| RootMsg::Serve { index: p, reply }, None)
            .await;
        self.lineage.ready();
        self.count_served(true);
        match r {
            Ok(ractor::rpc::CallResult::Success(r)) => r.map_err(Error::Start),
            _ => Err(Error::Stopped),
        }
    }

    /// Sets the `partitions_served` gauge and tells the event outbox the
    /// partitions served (`started`: one joined).
    pub(super) fn count_served(&self, started: bool) {
        let served = self.served_partitions();
        let n = i64::try_from(served.len()).unwrap_or(i64::MAX);
        self.ctx
            .metrics
            .partitions_served
            .store(n, std::sync::atomic::Ordering::Relaxed);
        if let Some(outbox) = &self.ctx.hooks.outbox {
            outbox.serving(&served, started);
        }
    }

    /// Stops serving partition `p` (see the module docs): returns once no
    /// commit of it is in flight and its actors, timers, deadlines and
    /// gate entries are gone. A partition not served is left as it is.
    pub async fn stop_partition(&self, p: u16) -> Result<(), Error> {
        let _changing = self.changing.lock().await;
        let released = self
            .root
            .call(|reply| RootMsg::Release { index: p, reply }, None)
            .await;
        let actor = match released {
            Ok(ractor::rpc::CallResult::Success(actor)) => actor,
            _ => return Err(Error::Stopped),
        };
        let Some(actor) = actor else {
            return Ok(());
        };
        // Answered after the message in hand; an actor that is gone
        // already has nothing in flight.
        let _ = actor.call(super::PartitionMsg::StopIntake, None).await;
        // No timeout: returning earlier would report a commit finished
        // that may still be in flight.
        actor.stop_children_and_wait(None, None).await;
        let _ = actor.stop_and_wait(None, None).await;
        self.uncount(p);
        self.count_served(false);
        tracing::info!(partition = p, "partition no longer served by this node");
        Ok(())
    }

    /// Takes the partition's running and paused workflows out of the
    /// status gauges (its next start here counts them again). Nothing of
    /// it changes now, so the status index holds exactly what was counted.
    fn uncount(&self, p: u16) {
        let count = |status: crate::workflow::Status| {
            self.ctx
                .store
                .list_status::<crate::storage::StatusEntry>(p, status.code(), usize::MAX)
                .map(|ids| ids.len() as u64)
        };
        match (
            count(crate::workflow::Status::Running),
            count(crate::workflow::Status::Paused),
        ) {
            (Ok(running), Ok(paused)) => self.ctx.metrics.note_let_go(p, running, paused),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(partition = p, error = %e, "status gauges not updated for a partition let go");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_every_partition_and_only_is_sorted_without_repeats() {
        assert_eq!(Serve::All.partitions(3).unwrap(), vec![0, 1, 2]);
        assert_eq!(
            Serve::Only(vec![2, 0, 2]).partitions(3).unwrap(),
            vec![0, 2]
        );
        assert_eq!(
            Serve::Only(vec![]).partitions(3).unwrap(),
            Vec::<u16>::new()
        );
        let e = Serve::Only(vec![1, 3]).partitions(3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot start engine: partition 3 does not exist: the store has 3 partitions"
        );
    }
}
