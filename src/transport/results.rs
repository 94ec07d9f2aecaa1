//! The port through which a transport hands worker results to the engine
//! and learns how they were taken. The engine implements it; transports
//! (NATS) hold it. It lives with the other transport traits, below both.

use std::sync::Arc;

/// Which partition owns a workflow id.
pub type PartitionOf = Arc<dyn Fn(&str) -> u16 + Send + Sync>;

/// Why a result was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultError {
    /// A transient failure (journal error, timeout, stopping): the same
    /// result may succeed when sent again.
    Retry(String),
    /// It never will be applied: a workflow or a task the orchestrator
    /// does not know. Duplicates and stale answers are not refused: they
    /// are handled (ignored), so the worker may forget them.
    Refused(String),
}

impl std::fmt::Display for ResultError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResultError::Retry(e) | ResultError::Refused(e) => f.write_str(e),
        }
    }
}

/// Where results go: the engine, which answers once the transition is durable.
pub trait ResultHandler: Send + Sync + 'static {
    fn handle(
        &self,
        workflow_id: String,
        result: crate::workflow::TaskResult,
    ) -> futures_util::future::BoxFuture<'static, Result<(), ResultError>>;
    /// Counts a message that was refused, by reason.
    fn rejected(&self, reason: &'static str);
    /// Which partition owns a workflow, so a report on another partition's
    /// subject is refused; `None`: not checked.
    fn partition_of(&self) -> Option<PartitionOf> {
        None
    }
}
