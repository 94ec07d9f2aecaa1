//! Who may report on an attempt: whoever holds its `attempt_token` (given
//! only to the worker that received the task), on the subject of the
//! partition that owns the workflow. Checked before the engine sees the
//! report, so a forged or misrouted one changes nothing and costs one HMAC.

use crate::transport::attempt_key::AttemptKey;
use crate::transport::{step_of_task, workflow_of_task};

/// Maps a workflow id to the partition that owns it.
pub use crate::transport::results::PartitionOf;

/// Why a report was refused; `reason()` is the metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "unauthenticated: attempt_token missing (echo the task's attempt_token; docs/protocol.md)"
    )]
    TokenMissing,
    #[error("unauthenticated: attempt_token does not match the task")]
    TokenWrong,
    #[error("unauthenticated: task_id does not name this workflow and step")]
    TaskMismatch,
    #[error("wrong partition: sent on partition {sent_on}'s subject, the workflow belongs to partition {owner}")]
    WrongPartition { sent_on: u16, owner: u16 },
}

impl Refused {
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::WrongPartition { .. } => "wrong_partition",
            _ => "unauthenticated",
        }
    }
}

/// The checks of one node: its key, and (with an engine) who owns what.
#[derive(Clone)]
pub struct ReportGuard {
    key: AttemptKey,
    partition_of: Option<PartitionOf>,
}

impl ReportGuard {
    pub fn new(key: AttemptKey, partition_of: Option<PartitionOf>) -> ReportGuard {
        ReportGuard { key, partition_of }
    }

    /// A report on `subject` (`<prefix>.<kind>.<partition>`) for `task_id`
    /// of `workflow_id` (and `step`, for results) carrying `token`.
    pub fn check(
        &self,
        subject: Option<&str>,
        workflow_id: &str,
        task_id: &str,
        step: Option<&str>,
        token: Option<&str>,
    ) -> Result<(), Refused> {
        let token = token.ok_or(Refused::TokenMissing)?;
        if !self.key.verify(task_id, token) {
            return Err(Refused::TokenWrong);
        }
        // The token names the task; the task id names its workflow and
        // step, which the engine routes by: they must agree.
        if workflow_of_task(task_id) != Some(workflow_id)
            || step.is_some_and(|s| step_of_task(task_id) != Some(s))
        {
            return Err(Refused::TaskMismatch);
        }
        if let (Some(partition_of), Some(sent_on)) =
            (&self.partition_of, subject.and_then(subject_partition))
        {
            let owner = partition_of(workflow_id);
            if owner != sent_on {
                return Err(Refused::WrongPartition { sent_on, owner });
            }
        }
        Ok(())
    }
}

/// The partition number that ends a results, direct-results or heartbeats
/// subject; `None` for any other subject.
fn subject_partition(subject: &str) -> Option<u16> {
    subject.rsplit('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn only_the_token_holder_on_the_owning_partition_passes() {
        let key = AttemptKey::from_bytes(&[1; 32]);
        let guard = ReportGuard::new(key.clone(), Some(Arc::new(|_: &str| 3)));
        let task = "wf-1:encode:0:1";
        let token = key.token(task);
        let ok = guard.check(
            Some("p.results.3"),
            "wf-1",
            task,
            Some("encode"),
            Some(&token),
        );
        assert_eq!(ok, Ok(()));
        assert_eq!(
            guard.check(Some("p.results.3"), "wf-1", task, None, None),
            Err(Refused::TokenMissing)
        );
        assert_eq!(
            guard.check(Some("p.results.3"), "wf-1", task, None, Some("00")),
            Err(Refused::TokenWrong)
        );
        assert_eq!(
            guard.check(Some("p.results.3"), "wf-2", task, None, Some(&token)),
            Err(Refused::TaskMismatch)
        );
        let wrong = guard
            .check(Some("p.rdirect.0"), "wf-1", task, None, Some(&token))
            .unwrap_err();
        assert_eq!(wrong.reason(), "wrong_partition");
    }
}
