//! What the partition does for a workflow its actors cannot serve:
//! parking it as failed, and answering its messages without an actor.

use super::{PartitionState, StartReply};
use crate::engine::recovery::load;
use crate::engine::transition::{park_committed, prepare_park};
use crate::engine::workflow_actor::{InputError, Queued, WorkflowMsg};
use crate::engine::EngineCtx;
use crate::workflow::WorkflowState;

/// [`load`] on the partition's own task, where a panic in it must not take
/// the partition down: a panic becomes an error.
pub(super) fn load_caught(
    ctx: &EngineCtx,
    partition: u16,
    id: &str,
) -> Result<Option<WorkflowState>, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load(ctx, partition, id)))
        .unwrap_or_else(|_| Err(format!("workflow {id}: loading it panicked")))
}

impl PartitionState {
    /// Answers a message for a workflow whose actor cannot start without
    /// one: `describe` and a `start` of the same id from storage (a load
    /// that panics is an error), other requests refused with why, the way a
    /// terminal workflow refuses them. An input without a reply port (a
    /// fired timer, a late result) is dropped: no actor can take it in this
    /// run, and the tasks it concerns are sent again when a restarted node
    /// recovers the workflow.
    pub(super) fn refuse(&self, id: &str, msg: WorkflowMsg, error: &str) {
        let stored = || load_caught(&self.ctx, self.index, id);
        match msg {
            WorkflowMsg::Describe(reply) => {
                let _ = reply.send(stored());
            }
            WorkflowMsg::Input(Queued { reply, .. }) => match reply {
                Some(reply) => {
                    let _ = reply.send(Ok(crate::workflow::Outcome::Rejected(format!(
                        "workflow {id} is {error}; its actor cannot start in this run (restart the node once the cause is fixed)"
                    ))));
                }
                None => {
                    tracing::debug!(workflow_id = %id, "input for a workflow whose actor cannot start dropped");
                }
            },
            WorkflowMsg::Start { reply, .. } => {
                if let Some(reply) = reply {
                    let _ = reply.send(match stored() {
                        Ok(Some(wf)) => Ok(StartReply {
                            id: id.to_string(),
                            status: wf.status,
                            created: false,
                        }),
                        Ok(None) => Err(InputError::Rejected(format!("workflow {id}: {error}"))),
                        Err(e) => Err(InputError::Rejected(e)),
                    });
                }
            }
            WorkflowMsg::Drain => {}
        }
    }

    /// Writes the parking transition; false if there was none to write.
    pub(super) async fn park(&mut self, id: &str, reason: String) -> Result<bool, String> {
        let ctx = self.ctx.clone();
        // A workflow is parked when its actor keeps dying, possibly while it
        // loads: a panic in this load must not take the partition down too.
        let Some(wf) = load_caught(&ctx, self.index, id)? else {
            return Ok(false);
        };
        let Some(mut plan) = prepare_park(&ctx, self.index, wf, reason)? else {
            return Ok(false);
        };
        let ops = std::mem::take(&mut plan.prepared.ops);
        ctx.committer.commit(ops).await.map_err(|e| e.to_string())?;
        park_committed(&ctx, &self.shared, plan);
        Ok(true)
    }
}
