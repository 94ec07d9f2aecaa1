//! `--record FILE.jsonl`: one line per execution, written before its
//! result leaves the worker.

use std::io::Write;

use parking_lot::Mutex;

use super::Shared;
use crate::protocol::TaskMessage;

/// One line of `--record FILE.jsonl`: what a worker did with one delivery.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecutionRecord {
    pub task_id: String,
    pub idempotency_key: String,
    pub workflow_id: String,
    pub step: String,
    pub attempt: u32,
    /// `succeeded`, `failed`, `hung`, `late` (held back, then answered) or `cancelled`.
    pub outcome: String,
    /// Result messages this execution set out to publish (0, 1 or 2). The
    /// line is written before the first of them is sent, so a worker killed
    /// mid-publish still leaves the line of every answer it may have sent; a
    /// publish that gave up is counted all the same.
    pub answers: u32,
    pub worker: String,
    /// When the worker started the execution (unix ms; its clock).
    pub at_ms: u64,
    /// When the line was written (unix ms; its clock): the execution's work
    /// is over, its answers not sent yet. `at_ms..ended_at_ms` is the time
    /// the execution held its worker slot. 0 in records written without it.
    #[serde(default)]
    pub ended_at_ms: u64,
}

/// Line-buffered, so a killed worker leaves whole lines behind.
pub(super) struct Recorder(Mutex<std::io::LineWriter<std::fs::File>>);

impl Recorder {
    pub(super) fn open(path: &std::path::Path) -> Result<Recorder, String> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open record file {}: {e}", path.display()))?;
        Ok(Recorder(Mutex::new(std::io::LineWriter::new(f))))
    }

    pub(super) fn write(&self, rec: &ExecutionRecord) {
        if let Ok(line) = serde_json::to_string(rec) {
            let mut w = self.0.lock();
            if let Err(e) = writeln!(w, "{line}") {
                tracing::error!(error = %e, "cannot write the execution record");
            }
        }
    }
}

impl Shared {
    /// Writes the execution's line; `at_ms` is when the worker started it.
    pub(super) fn record(&self, task: &TaskMessage, outcome: &str, answers: u32, at_ms: u64) {
        if let Some(r) = &self.recorder {
            r.write(&ExecutionRecord {
                task_id: task.task_id.clone(),
                idempotency_key: task.idempotency_key.clone(),
                workflow_id: task.workflow_id.clone(),
                step: task.step.clone(),
                attempt: task.attempt,
                outcome: outcome.to_owned(),
                answers,
                worker: self.sim.worker.clone(),
                at_ms,
                ended_at_ms: super::now_us() / 1000,
            });
        }
    }
}
