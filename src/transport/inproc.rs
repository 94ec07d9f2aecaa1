//! In-process transport: tasks go over a tokio channel to workers living in
//! the same process (the simulated workers of `orchestrator dev` and of the
//! tests). Same contract as NATS: fire and forget, reports come back through
//! the [`ReportSink`](super::ReportSink).

use tokio::sync::mpsc;

use super::Transport;
use crate::workflow::TaskSpec;

/// A message from the engine to in-process workers.
#[derive(Debug, Clone)]
pub enum ToWorker {
    Task(Box<TaskSpec>),
    Cancel { task_id: String },
}

/// Engine side of the in-process channel.
#[derive(Debug, Clone)]
pub struct InProcTransport {
    tx: mpsc::UnboundedSender<ToWorker>,
}

impl InProcTransport {
    /// A transport and the receiving end its workers read from.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<ToWorker>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (InProcTransport { tx }, rx)
    }
}

impl Transport for InProcTransport {
    fn dispatch(&self, task: Box<TaskSpec>) {
        // A closed channel means the workers are gone (shutdown); the attempt
        // is healed by its timeout after a restart, exactly like a lost NATS message.
        let _ = self.tx.send(ToWorker::Task(task));
    }

    fn cancel(&self, task_id: &str, _task_type: &str, _reason: &str) {
        let _ = self.tx.send(ToWorker::Cancel {
            task_id: task_id.to_string(),
        });
    }
}
