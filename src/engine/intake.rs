//! The NATS intake's view of the engine: results are handed to their
//! workflow and answered once the transition is durable, or refused.

use std::sync::Arc;

use super::{Engine, Error};
use crate::transport::ResultError;
use crate::workflow::{IgnoreReason, Outcome};

/// What the NATS intake tells a worker about its result. Applied (durable)
/// and ignored results (duplicates, stale attempts, a terminal workflow)
/// are done: the worker may forget them. A result for a workflow or task
/// the orchestrator does not know is refused for good, so that a worker
/// sending to the wrong orchestrator (or with a mangled task id) hears of
/// it instead of being told all is well. Anything else is transient.
pub fn result_verdict(
    workflow_id: &str,
    task_id: &str,
    outcome: Result<Outcome, Error>,
) -> Result<(), ResultError> {
    match outcome {
        Ok(Outcome::Ignored(IgnoreReason::UnknownTask)) => Err(ResultError::Refused(format!(
            "unknown task {task_id} of workflow {workflow_id}"
        ))),
        Ok(_) => Ok(()),
        // Unknown workflow or unreadable state: final.
        Err(e @ Error::UnknownWorkflow(_)) => Err(ResultError::Refused(e.to_string())),
        Err(Error::Rejected(m)) => Err(ResultError::Refused(m)),
        // Journal failure, timeout, stopping: send it again.
        Err(e) => Err(ResultError::Retry(e.to_string())),
    }
}

/// The NATS intake's view of the engine: results are applied durably before
/// the intake acknowledges them.
pub struct ResultIntake(pub Arc<Engine>);

impl crate::transport::ResultHandler for ResultIntake {
    fn handle(
        &self,
        workflow_id: String,
        result: crate::workflow::TaskResult,
    ) -> futures_util::future::BoxFuture<'static, Result<(), ResultError>> {
        let engine = self.0.clone();
        Box::pin(async move {
            let task_id = result.task_id.clone();
            let outcome = engine.deliver_result(&workflow_id, result).await;
            result_verdict(&workflow_id, &task_id, outcome)
        })
    }

    fn rejected(&self, reason: &'static str) {
        self.0.ctx.metrics.rejected_message(reason);
    }

    fn partition_of(&self) -> Option<crate::transport::PartitionOf> {
        let store = self.0.ctx.store.clone();
        Some(Arc::new(move |id: &str| store.partition_of(id)))
    }
}

/// [`ResultIntake`] for the transport itself (results that answer an
/// offer): the engine holds the transport, so the transport holds the
/// engine weakly. A strong reference would be a cycle that keeps the
/// engine, and with it the storage, alive after shutdown.
pub struct WeakResultIntake(pub std::sync::Weak<Engine>);

impl crate::transport::ResultHandler for WeakResultIntake {
    fn handle(
        &self,
        workflow_id: String,
        result: crate::workflow::TaskResult,
    ) -> futures_util::future::BoxFuture<'static, Result<(), ResultError>> {
        match self.0.upgrade() {
            Some(engine) => ResultIntake(engine).handle(workflow_id, result),
            None => Box::pin(async { Err(ResultError::Retry(Error::Stopped.to_string())) }),
        }
    }

    fn rejected(&self, reason: &'static str) {
        if let Some(engine) = self.0.upgrade() {
            engine.ctx.metrics.rejected_message(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_tasks_and_workflows_are_refused_for_good_duplicates_are_done() {
        let verdict = |o| result_verdict("wf", "wf:a:0:1", o);
        assert_eq!(verdict(Ok(Outcome::Applied)), Ok(()));
        for done in [
            IgnoreReason::Duplicate,
            IgnoreReason::StaleAttempt,
            IgnoreReason::WorkflowTerminal,
        ] {
            assert_eq!(verdict(Ok(Outcome::Ignored(done))), Ok(()));
        }
        assert_eq!(
            verdict(Ok(Outcome::Ignored(IgnoreReason::UnknownTask))),
            Err(ResultError::Refused(
                "unknown task wf:a:0:1 of workflow wf".into()
            ))
        );
        assert!(matches!(
            verdict(Err(Error::UnknownWorkflow("wf".into()))),
            Err(ResultError::Refused(m)) if m == "unknown workflow wf"
        ));
        assert!(matches!(
            verdict(Err(Error::Rejected("state unreadable".into()))),
            Err(ResultError::Refused(_))
        ));
        assert!(matches!(
            verdict(Err(Error::Journal("disk full".into()))),
            Err(ResultError::Retry(_))
        ));
        assert!(matches!(
            verdict(Err(Error::Timeout)),
            Err(ResultError::Retry(_))
        ));
        // A partition another node serves, or one being handed over: the
        // result is not acknowledged and comes again.
        assert!(matches!(
            verdict(Err(Error::NotServed(3))),
            Err(ResultError::Retry(m)) if m == "unavailable: partition 3 is not served by this node"
        ));
    }
}
