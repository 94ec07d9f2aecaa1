//! Checks across journals for child pipelines: a parent's step took a
//! child's success only once that child had completed, a failure only from
//! a child that failed or was cancelled (or could not start), and every
//! child's journal is linked to by its parent.

use std::collections::HashMap;

use crate::workflow::lineage::{parent_of, ChildOutcome};
use crate::workflow::{Event, EventKind, Status};

/// What the lineage checks need of one journal.
#[derive(Default)]
pub(super) struct LineageFacts {
    status: Option<Status>,
    /// When the workflow last completed.
    completed_at: Option<u64>,
    /// Children it started.
    started: Vec<String>,
    /// Child outcomes it took: (child id, outcome, when).
    finished: Vec<(String, ChildOutcome, u64)>,
}

impl LineageFacts {
    pub(super) fn of(events: &[(u64, Event)], status: Option<Status>) -> Self {
        let mut f = LineageFacts {
            status,
            ..LineageFacts::default()
        };
        for (_, e) in events {
            match &e.kind {
                EventKind::WorkflowCompleted => f.completed_at = Some(e.at_ms),
                EventKind::ChildStarted { child_id, .. } => f.started.push(child_id.to_string()),
                EventKind::ChildFinished {
                    child_id, outcome, ..
                } => f
                    .finished
                    .push((child_id.to_string(), outcome.clone(), e.at_ms)),
                _ => {}
            }
        }
        f
    }

    /// Only journals that take part in a lineage are kept.
    pub(super) fn relevant(&self, id: &str) -> bool {
        !self.started.is_empty() || parent_of(id).is_some()
    }
}

/// The violations across the journals `facts` (by workflow id).
pub(super) fn check_lineage(facts: &HashMap<String, LineageFacts>) -> Vec<String> {
    let mut bad = Vec::new();
    let mut ids: Vec<&String> = facts.keys().collect();
    ids.sort();
    for id in ids {
        let f = &facts[id];
        if let Some(link) = parent_of(id) {
            let linked = facts
                .get(link.parent)
                .is_some_and(|p| p.started.iter().any(|c| c == id));
            if !linked {
                bad.push(format!(
                    "workflow {id}: its parent {} (step {}) never started it",
                    link.parent, link.step
                ));
            }
        }
        for (child, outcome, at) in &f.finished {
            let c = facts.get(child);
            match outcome {
                ChildOutcome::Succeeded { .. } => {
                    let done = c.and_then(|c| c.completed_at);
                    if done.is_none_or(|d| d > *at) {
                        bad.push(format!(
                            "workflow {id}: took the success of child {child} before it completed"
                        ));
                    }
                }
                ChildOutcome::Failed { reason } | ChildOutcome::Cancelled { reason } => {
                    let ended = match c.and_then(|c| c.status) {
                        Some(s) => matches!(s, Status::Failed | Status::Cancelled),
                        // A child that could not start has no journal.
                        None => reason.starts_with("cannot start child pipeline"),
                    };
                    if !ended {
                        bad.push(format!(
                            "workflow {id}: took the {} of child {child}, which did not end so",
                            outcome.as_str()
                        ));
                    }
                }
            }
        }
    }
    bad
}
