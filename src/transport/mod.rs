//! Transport: how tasks reach workers and how their reports come back.
//!
//! The engine only sees two small traits: [`Transport`] (engine → workers)
//! and [`ReportSink`] (workers → engine). Delivery is at least once and may
//! lose messages; the journal, timeouts and re-sends with the same task id
//! make that safe.

pub mod attempt_key;
pub mod inproc;
pub mod nats;
pub mod results;

pub use results::{PartitionOf, ResultError, ResultHandler};

use std::sync::Arc;

use crate::workflow::{TaskResult, TaskSpec};

/// Engine → workers.
pub trait Transport: Send + Sync + 'static {
    /// Hands an attempt to the workers of its task type. Must not block; a
    /// task that cannot be sent is healed by its timeout and a new attempt.
    fn dispatch(&self, task: Box<TaskSpec>);
    /// Asks workers to stop an attempt (cancelled workflow or superseded
    /// attempt); `reason` says why (an operator's cancel reason, say).
    fn cancel(&self, task_id: &str, task_type: &str, reason: &str);
}

/// What a worker can tell the engine about one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerReport {
    Started {
        task_id: String,
        worker: String,
    },
    Heartbeat {
        task_id: String,
    },
    /// The progress a heartbeat carried (JSON text, at most the output size limit).
    Progress {
        task_id: String,
        progress: Arc<str>,
    },
    Result(TaskResult),
}

/// Workers → engine. Implemented by the engine's router.
pub trait ReportSink: Send + Sync + 'static {
    fn report(&self, workflow_id: &str, report: WorkerReport);
}

/// The workflow id inside one of our task ids (`<workflow>:<step>:<gen>:<attempt>`).
/// Workflow ids may contain ':', step names may not, so split from the right.
pub fn workflow_of_task(task_id: &str) -> Option<&str> {
    let mut it = task_id.rsplitn(4, ':');
    let _attempt = it.next()?;
    let _generation = it.next()?;
    let _step = it.next()?;
    it.next()
}

/// The step name inside one of our task ids. A map element's task id
/// names its step with the element's index (`<step>[<i>]`); the step is
/// the name without it.
pub fn step_of_task(task_id: &str) -> Option<&str> {
    let mut it = task_id.rsplitn(4, ':');
    it.next()?;
    it.next()?;
    let step = it.next()?;
    it.next()?;
    let step = match step.strip_suffix(']').and_then(|s| s.rsplit_once('[')) {
        Some((name, index)) if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => step,
    };
    Some(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_split_from_the_right() {
        assert_eq!(workflow_of_task("a:b:c:ingest:0:3"), Some("a:b:c"));
        assert_eq!(step_of_task("a:b:c:ingest:0:3"), Some("ingest"));
        assert_eq!(workflow_of_task("x:1"), None);
        assert_eq!(workflow_of_task("v:1:enrich[12]:0:2"), Some("v:1"));
        assert_eq!(step_of_task("v:1:enrich[12]:0:2"), Some("enrich"));
        assert_eq!(step_of_task("v:enrich[]:0:2"), Some("enrich[]"));
    }
}
