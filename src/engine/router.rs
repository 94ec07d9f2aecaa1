//! Routing by workflow id: the [`Router`] maps a workflow's partition to
//! the partition actor that serves it on this node, or to nothing when
//! this node does not serve that partition (in a cluster, another node
//! owns it; see [`super::serving`]).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use ractor::{ActorRef, RpcReplyPort};

use super::partition::PartitionMsg;
use super::{progress, Clock, Error};
use crate::storage::store::WorkflowStore;
use crate::transport::{ReportSink, WorkerReport};

/// Routes worker reports and requests to partitions by workflow id.
pub struct Router {
    /// One entry per partition of the store; `None` where this node does
    /// not serve the partition (it is stopped, or was never started).
    partitions: RwLock<Vec<Option<ActorRef<PartitionMsg>>>>,
    store: WorkflowStore,
    /// Progress never reaches a partition: it changes no workflow state.
    pub(super) progress: progress::ProgressBoard,
    clock: Arc<dyn Clock>,
}

impl Router {
    pub(super) fn new(store: WorkflowStore, clock: Arc<dyn Clock>) -> Router {
        Router {
            partitions: RwLock::new(vec![None; usize::from(store.partitions())]),
            store,
            progress: progress::ProgressBoard::default(),
            clock,
        }
    }

    /// The actor serving the partition of `id`, if this node serves it.
    pub(super) fn partition(&self, id: &str) -> Option<ActorRef<PartitionMsg>> {
        self.actor(self.store.partition_of(id))
    }

    /// The actor serving partition `p`, if this node serves it.
    pub(super) fn actor(&self, p: u16) -> Option<ActorRef<PartitionMsg>> {
        self.partitions
            .read()
            .get(usize::from(p))
            .cloned()
            .flatten()
    }

    /// Whether this node serves partition `p` now.
    pub(super) fn serves(&self, p: u16) -> bool {
        self.partitions
            .read()
            .get(usize::from(p))
            .is_some_and(Option::is_some)
    }

    /// Every partition this node serves, with its actor, in index order.
    pub(super) fn served(&self) -> Vec<(u16, ActorRef<PartitionMsg>)> {
        self.partitions
            .read()
            .iter()
            .enumerate()
            .filter_map(|(i, a)| Some((u16::try_from(i).ok()?, a.clone()?)))
            .collect()
    }

    pub(crate) fn set(&self, index: u16, actor: ActorRef<PartitionMsg>) {
        if let Some(slot) = self.partitions.write().get_mut(usize::from(index)) {
            *slot = Some(actor);
        }
    }

    /// Partition `index` is no longer served here: requests for its
    /// workflows are refused from now on. Returns its actor.
    pub(crate) fn unset(&self, index: u16) -> Option<ActorRef<PartitionMsg>> {
        self.partitions
            .write()
            .get_mut(usize::from(index))
            .and_then(Option::take)
    }

    /// Forgets every partition (the engine stopped).
    pub(super) fn clear(&self) {
        for slot in self.partitions.write().iter_mut() {
            *slot = None;
        }
    }

    /// Sends the request `build` makes to the partition of `id` and waits
    /// for its answer. A partition this node does not serve, or stops
    /// serving before it answers, is refused with [`Error::NotServed`].
    pub(super) async fn call<T: Send + 'static, E: Into<Error> + Send + 'static>(
        &self,
        id: &str,
        build: impl FnOnce(RpcReplyPort<Result<T, E>>) -> PartitionMsg,
        timeout: Duration,
    ) -> Result<T, Error> {
        let p = self.store.partition_of(id);
        let actor = self.actor(p).ok_or(Error::NotServed(p))?;
        let r = actor.call(build, Some(timeout)).await;
        match flatten(r) {
            // The partition stopped while the request waited in it.
            Err(Error::Stopped) if !self.serves(p) => Err(Error::NotServed(p)),
            r => r,
        }
    }
}

impl ReportSink for Router {
    fn report(&self, workflow_id: &str, report: WorkerReport) {
        if let WorkerReport::Progress { task_id, progress } = report {
            self.progress
                .record(&task_id, self.clock.now_ms(), progress);
            return;
        }
        match self.partition(workflow_id) {
            Some(p) => {
                let _ = p.cast(PartitionMsg::Report {
                    id: workflow_id.to_string(),
                    report,
                });
            }
            // Nothing is acknowledged here: the partition's next owner
            // re-sends the attempt when it recovers the workflow.
            None => tracing::debug!(
                workflow_id,
                "worker report for a partition this node does not serve; not taken"
            ),
        }
    }
}

pub(super) fn flatten<T, E: Into<Error>>(
    r: Result<ractor::rpc::CallResult<Result<T, E>>, ractor::MessagingErr<PartitionMsg>>,
) -> Result<T, Error> {
    match r {
        Ok(ractor::rpc::CallResult::Success(Ok(v))) => Ok(v),
        Ok(ractor::rpc::CallResult::Success(Err(e))) => Err(e.into()),
        Ok(ractor::rpc::CallResult::Timeout) => Err(Error::Timeout),
        Ok(ractor::rpc::CallResult::SenderError) => Err(Error::Stopped),
        Err(_) => Err(Error::Stopped),
    }
}
