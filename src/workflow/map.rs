//! The state of a map step's fan-out: one [`ElementState`] per element of
//! the array it runs over, and the names its element tasks go by.
//!
//! An element is an ordinary task: its own attempts, retries and
//! timeouts. Its task id is `<wf>:<step>[<i>]:<gen>:<attempt>` and its
//! idempotency key `<wf>:<step>[<i>]:<gen>`, so every element of every
//! generation is a distinct task and the transport's "workflow of a task
//! id" rule (split from the right) still holds.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::event::TaskError;
use super::state::StepStatus;

/// Task id of one attempt of one element.
pub fn element_task_id(
    workflow_id: &str,
    step: &str,
    index: u32,
    generation: u32,
    attempt: u32,
) -> String {
    format!("{workflow_id}:{step}[{index}]:{generation}:{attempt}")
}

/// Idempotency key of one element in one generation.
pub fn element_idempotency_key(
    workflow_id: &str,
    step: &str,
    index: u32,
    generation: u32,
) -> String {
    format!("{workflow_id}:{step}[{index}]:{generation}")
}

/// The parts of an element task id of workflow `workflow_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementTaskRef<'a> {
    pub step: &'a str,
    pub index: u32,
    pub generation: u32,
    pub attempt: u32,
}

/// Splits an element task id of `workflow_id`; `None` for anything else
/// (a plain step's task id included).
pub fn parse_element_task_id<'a>(
    workflow_id: &str,
    task_id: &'a str,
) -> Option<ElementTaskRef<'a>> {
    let rest = task_id.strip_prefix(workflow_id)?.strip_prefix(':')?;
    let mut parts = rest.rsplitn(3, ':');
    let attempt = parts.next()?.parse().ok()?;
    let generation = parts.next()?.parse().ok()?;
    let element = parts.next()?;
    let (step, index) = element.strip_suffix(']')?.split_once('[')?;
    let index = index.parse().ok()?;
    Some(ElementTaskRef {
        step,
        index,
        generation,
        attempt,
    })
}

/// One element of a map step in the current generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElementState {
    /// `Pending`, `Dispatched`, `Backoff`, `Succeeded`, `Failed` (gave up)
    /// or `Cancelled` (the workflow ended while it was out).
    pub status: StepStatus,
    /// Attempts dispatched in the current generation.
    pub attempt: u32,
    /// JSON text of the element's output, once succeeded.
    pub output: Option<Arc<str>>,
    pub last_error: Option<TaskError>,
    /// When the next attempt is due, while in `Backoff`.
    pub retry_due_ms: Option<u64>,
    /// The latest attempt ended by a timeout: a late answer to it is stale,
    /// not a duplicate.
    pub timed_out: bool,
}

impl ElementState {
    pub fn new() -> Self {
        ElementState {
            status: StepStatus::Pending,
            attempt: 0,
            output: None,
            last_error: None,
            retry_due_ms: None,
            timed_out: false,
        }
    }
}

impl Default for ElementState {
    fn default() -> Self {
        Self::new()
    }
}

/// The fan-out of one map step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapRun {
    /// The step whose output holds the array.
    pub over_step: u16,
    /// JSON text of each element of the array, in index order; shared, not
    /// copied, when the state is cloned.
    pub inputs: Arc<[Arc<str>]>,
    pub elements: Vec<ElementState>,
}

impl MapRun {
    /// Elements out with workers or waiting for a retry: what `max_parallel` bounds.
    pub fn active(&self) -> usize {
        self.elements
            .iter()
            .filter(|e| matches!(e.status, StepStatus::Dispatched | StepStatus::Backoff))
            .count()
    }

    /// Indices of the elements that gave up, ascending.
    pub fn failed(&self) -> Vec<u32> {
        self.indices_with(StepStatus::Failed)
    }

    pub fn indices_with(&self, status: StepStatus) -> Vec<u32> {
        self.elements
            .iter()
            .enumerate()
            .filter(|(_, e)| e.status == status)
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// The step's output: the element outputs in index order, `null` for an
    /// element that failed. Its length in bytes is what `max_output_bytes` bounds.
    pub fn assembled_output(&self) -> String {
        let len: usize = self
            .elements
            .iter()
            .map(|e| e.output.as_deref().map_or(4, str::len) + 1)
            .sum();
        let mut out = String::with_capacity(len + 2);
        out.push('[');
        for (i, e) in self.elements.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(e.output.as_deref().unwrap_or("null"));
        }
        out.push(']');
        out
    }

    /// Bytes [`Self::assembled_output`] would have, without building it.
    pub fn assembled_len(&self) -> u64 {
        let items: usize = self
            .elements
            .iter()
            .map(|e| e.output.as_deref().map_or(4, str::len))
            .sum();
        (items + self.elements.len().saturating_sub(1) + 2) as u64
    }
}

/// Why the array of a map step could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArrayError {
    /// The dependency's output is not JSON.
    NotJson(String),
    /// The pointer does not lead anywhere in the output.
    Missing,
    /// The pointer leads to something that is not an array (its JSON type).
    NotArray(&'static str),
}

impl std::fmt::Display for ArrayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArrayError::NotJson(e) => write!(f, "the output is not JSON ({e})"),
            ArrayError::Missing => f.write_str("nothing at that pointer"),
            ArrayError::NotArray(t) => write!(f, "expected an array, found {t}"),
        }
    }
}

/// The elements (as JSON text) of the array at `pointer` in `output`.
pub fn array_at(output: &str, pointer: &str) -> Result<Vec<Arc<str>>, ArrayError> {
    let value: serde_json::Value =
        serde_json::from_str(output).map_err(|e| ArrayError::NotJson(e.to_string()))?;
    match value.pointer(pointer) {
        None => Err(ArrayError::Missing),
        Some(serde_json::Value::Array(items)) => Ok(items
            .iter()
            .map(|v| Arc::from(v.to_string().as_str()))
            .collect()),
        Some(other) => Err(ArrayError::NotArray(json_type(other))),
    }
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
