//! The admin verbs in-process, for an adapter on the same node (the web
//! console): the same handlers the NATS verbs run, typed instead of JSON,
//! and the same batch runner, so a job made here is paced, stored and
//! resumed like one made over NATS.

use std::future::Future;
use std::sync::Arc;

use super::batch::{self, BatchCreateRequest, BatchHandle, BatchReply};
use super::history::history;
use super::list::list;
use super::signal::{signal, SignalReply, SignalRequest};
use super::wire::{
    HistoryReply, HistoryRequest, ListReply, ListRequest, RerunRequest, WorkflowReply,
};
use super::workflow::{control, describe, rerun, unknown};
use super::{code, AdminError};
use crate::engine::Engine;
use crate::workflow::{Input, ReopenMode};

/// One workflow's input and the shape of its pipeline version, which
/// `describe` does not carry: what the console draws the DAG from.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowShape {
    /// The caller's input, JSON text.
    pub input: String,
    /// The steps in pipeline order.
    pub steps: Vec<StepShape>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepShape {
    pub name: String,
    pub task_type: String,
    /// Positions of the steps this one waits for.
    pub needs: Vec<u16>,
    /// Attempts the retry policy allows.
    pub max_attempts: u32,
}

/// The admin verbs of one engine, in-process. Cheap to clone.
#[derive(Clone)]
pub struct LocalAdmin {
    engine: Arc<Engine>,
    batches: BatchHandle,
}

impl LocalAdmin {
    /// The verbs over `engine`, and the batch runner future, which whoever
    /// serves the verbs polls (see [`super::serve_with`]).
    pub fn start(engine: Arc<Engine>) -> (LocalAdmin, impl Future<Output = ()>) {
        let (batches, runner) = batch::runner(engine.clone());
        (LocalAdmin { engine, batches }, runner)
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub(super) fn batches(&self) -> &BatchHandle {
        &self.batches
    }

    pub async fn list(&self, r: ListRequest) -> Result<ListReply, AdminError> {
        list(r, &self.engine).await
    }

    pub async fn describe(&self, id: &str) -> Result<WorkflowReply, AdminError> {
        describe(id, &self.engine).await
    }

    pub async fn history(&self, r: HistoryRequest) -> Result<HistoryReply, AdminError> {
        history(r, &self.engine).await
    }

    /// `retry`: a new generation that retries the failed steps.
    pub async fn retry(&self, id: &str) -> Result<WorkflowReply, AdminError> {
        control(id, Input::Reopen(ReopenMode::RetryFailed), &self.engine).await
    }

    pub async fn rerun(&self, r: RerunRequest) -> Result<WorkflowReply, AdminError> {
        rerun(r, &self.engine).await
    }

    /// `signal`: the same handler (limits, idempotency by `signal_id`,
    /// metrics) as the NATS verb.
    pub async fn signal(&self, r: SignalRequest) -> Result<SignalReply, AdminError> {
        signal(r, &self.engine).await
    }

    pub async fn batch_create(&self, r: BatchCreateRequest) -> Result<BatchReply, AdminError> {
        self.batches.create(r).await
    }

    pub async fn batch_status(&self, job: &str) -> Result<BatchReply, AdminError> {
        self.batches.status(job).await
    }

    /// The input of workflow `id` and the steps of its pipeline version.
    pub async fn shape(&self, id: &str) -> Result<WorkflowShape, AdminError> {
        let wf = self.engine.describe(id).await?.ok_or_else(|| unknown(id))?;
        let def = self
            .engine
            .ctx()
            .pipelines
            .get(&wf.pipeline)
            .map_err(|e| AdminError::new(code::UNAVAILABLE, e))?;
        Ok(WorkflowShape {
            input: wf.input.to_string(),
            steps: def
                .steps
                .iter()
                .map(|s| StepShape {
                    name: s.name.clone(),
                    task_type: s.task_type.clone(),
                    needs: s.needs.clone(),
                    max_attempts: s.retry.max_attempts,
                })
                .collect(),
        })
    }
}
