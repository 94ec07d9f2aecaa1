//! Child pipelines through the whole engine, the test being the worker: a
//! parent's child step starts one child and goes on with its output; a
//! failed child fails the parent's step; cancelling the parent cancels the
//! child; a restart in the middle (after the child started, or between the
//! parent journaling the start and the child existing) starts no second
//! child and loses nothing; and `verify` agrees with every journal.

use std::sync::Arc;
use std::time::Duration;

use orchestrator::engine::EngineConfig;
use orchestrator::pipeline::load::parse_pipeline;
use orchestrator::pipeline::{PipelineDef, PipelineLimits};
use orchestrator::storage::memory::MemoryStorage;
use orchestrator::storage::Storage;
use orchestrator::transport::inproc::ToWorker;
use orchestrator::verify::verify_store;
use orchestrator::workflow::{
    EventKind, Input, JournalRecord, Status, TaskError, TaskOutcome, TaskResult, TaskSpec,
};

use crate::support::{Harness, Options};

const CHILD_ID: &str = "p1~enrich~0";

fn pipelines() -> Vec<PipelineDef> {
    let parent = "[pipeline]\nname = \"parent\"\nversion = 1\n\n[[steps]]\nname = \"fetch\"\n\n[[steps]]\nname = \"enrich\"\nneeds = [\"fetch\"]\npipeline = \"enrichment\"\n\n[[steps]]\nname = \"index\"\nneeds = [\"enrich\"]\n";
    let child = "[pipeline]\nname = \"enrichment\"\nversion = 1\n\n[defaults.retry]\nmax_attempts = 1\n\n[[steps]]\nname = \"tag\"\n\n[[steps]]\nname = \"summarize\"\nneeds = [\"tag\"]\n";
    let limits = PipelineLimits::default();
    vec![
        parse_pipeline(parent, "parent.toml", &limits).unwrap(),
        parse_pipeline(child, "enrichment.toml", &limits).unwrap(),
    ]
}

fn opts() -> Options {
    Options {
        partitions: 4,
        config: EngineConfig {
            partitions: 4,
            tick_ms: 5,
            ..EngineConfig::default()
        },
        pipelines: Some(pipelines()),
        test_is_worker: true,
        ..Options::default()
    }
}

type Tasks = tokio::sync::mpsc::UnboundedReceiver<ToWorker>;

async fn next_task(rx: &mut Tasks) -> TaskSpec {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a task within 10 s")
            .expect("transport open");
        if let ToWorker::Task(t) = msg {
            return *t;
        }
    }
}

fn result(t: &TaskSpec, outcome: TaskOutcome) -> TaskResult {
    TaskResult {
        task_id: t.task_id.clone(),
        step: t.step.clone(),
        attempt: t.attempt,
        outcome,
        worker: Some("test".into()),
        started_at_ms: None,
    }
}

async fn succeed(h: &Harness, t: &TaskSpec, output: &str) {
    h.engine
        .deliver_result(
            &t.workflow_id,
            result(t, TaskOutcome::Succeeded(output.into())),
        )
        .await
        .unwrap();
}

async fn wait_status(h: &Harness, id: &str, want: Status) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = h.engine.describe(id).await.unwrap().map(|w| w.status);
        if s == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} is {s:?}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn child_events(h: &Harness, id: &str) -> (usize, usize) {
    let records = h
        .store
        .load_journal::<JournalRecord>(h.store.partition_of(id), id, 1)
        .unwrap();
    let events: Vec<&EventKind> = records
        .iter()
        .flat_map(|(_, r)| r.events.iter().map(|e| &e.kind))
        .collect();
    (
        events
            .iter()
            .filter(|k| matches!(k, EventKind::ChildStarted { .. }))
            .count(),
        events
            .iter()
            .filter(|k| matches!(k, EventKind::ChildFinished { .. }))
            .count(),
    )
}

fn assert_verified(h: &Harness, workflows: u64) {
    let report = verify_store(&h.store).unwrap();
    assert_eq!(
        (report.workflows, report.violations, report.corrupt),
        (workflows, 0, 0),
        "{:?}",
        report.details
    );
}

/// Runs `p1` until its child's first task is out; returns that task.
async fn until_child_runs(h: &Harness, rx: &mut Tasks) -> TaskSpec {
    h.engine
        .start_workflow("parent", "p1", r#"{"video":"v1"}"#)
        .await
        .unwrap();
    let fetch = next_task(rx).await;
    assert_eq!(
        (fetch.workflow_id.as_str(), fetch.step.as_str()),
        ("p1", "fetch")
    );
    succeed(h, &fetch, r#"{"url":"u1"}"#).await;
    let tag = next_task(rx).await;
    assert_eq!(
        (tag.workflow_id.as_str(), tag.step.as_str()),
        (CHILD_ID, "tag")
    );
    // The child's input is what a task of the step would get.
    let input: serde_json::Value = serde_json::from_str(&tag.input).unwrap();
    assert_eq!(input["workflow"]["workflow"]["video"], "v1");
    assert_eq!(input["workflow"]["deps"]["fetch"]["url"], "u1");
    tag
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parent_goes_on_with_the_childs_output() {
    let mut h = Harness::start(Arc::new(MemoryStorage::new()), opts()).await;
    let mut rx = h.tasks.take().unwrap();
    let tag = until_child_runs(&h, &mut rx).await;
    succeed(&h, &tag, r#"{"tags":["a"]}"#).await;
    let summarize = next_task(&mut rx).await;
    assert_eq!(summarize.workflow_id, CHILD_ID);
    succeed(&h, &summarize, r#"{"summary":"s"}"#).await;
    let index = next_task(&mut rx).await;
    assert_eq!(
        (index.workflow_id.as_str(), index.step.as_str()),
        ("p1", "index")
    );
    let input: serde_json::Value = serde_json::from_str(&index.input).unwrap();
    assert_eq!(input["deps"]["enrich"]["summarize"]["summary"], "s");
    succeed(&h, &index, "{}").await;
    wait_status(&h, "p1", Status::Completed).await;
    let child = h.engine.describe(CHILD_ID).await.unwrap().unwrap();
    assert_eq!(child.status, Status::Completed);
    assert_eq!(child_events(&h, "p1"), (1, 1));
    assert_verified(&h, 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_child_fails_the_parents_step() {
    let mut h = Harness::start(Arc::new(MemoryStorage::new()), opts()).await;
    let mut rx = h.tasks.take().unwrap();
    let tag = until_child_runs(&h, &mut rx).await;
    let error = TaskError {
        kind: "bad".into(),
        message: "no tags".into(),
        retryable: false,
    };
    h.engine
        .deliver_result(CHILD_ID, result(&tag, TaskOutcome::Failed(error)))
        .await
        .unwrap();
    wait_status(&h, "p1", Status::Failed).await;
    let p = h.engine.describe("p1").await.unwrap().unwrap();
    let reason = p.reason.unwrap();
    assert!(
        reason.starts_with("step enrich failed: child workflow p1~enrich~0 failed"),
        "{reason}"
    );
    assert_eq!(child_events(&h, "p1"), (1, 1));
    assert_verified(&h, 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_parent_cancels_the_child() {
    let mut h = Harness::start(Arc::new(MemoryStorage::new()), opts()).await;
    let mut rx = h.tasks.take().unwrap();
    until_child_runs(&h, &mut rx).await;
    h.engine
        .send(
            "p1",
            Input::Cancel {
                reason: "operator".into(),
            },
        )
        .await
        .unwrap();
    wait_status(&h, CHILD_ID, Status::Cancelled).await;
    let child = h.engine.describe(CHILD_ID).await.unwrap().unwrap();
    let reason = child.reason.unwrap();
    assert!(reason.starts_with("parent p1: operator"), "{reason}");
    assert_eq!(
        h.engine.describe("p1").await.unwrap().unwrap().status,
        Status::Cancelled
    );
    assert_verified(&h, 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_the_child_runs_starts_no_second_child_and_loses_nothing() {
    let storage = Arc::new(MemoryStorage::new());
    let mut h = Harness::start(storage.clone(), opts()).await;
    let mut rx = h.tasks.take().unwrap();
    until_child_runs(&h, &mut rx).await;
    h.stop().await;
    storage.crash();
    let mut h = Harness::start(storage.clone() as Arc<dyn Storage>, opts()).await;
    let mut rx = h.tasks.take().unwrap();
    // The child's task is sent again (same task id); the parent waits.
    let tag = next_task(&mut rx).await;
    assert_eq!(
        (tag.workflow_id.as_str(), tag.step.as_str()),
        (CHILD_ID, "tag")
    );
    succeed(&h, &tag, "{}").await;
    let summarize = next_task(&mut rx).await;
    succeed(&h, &summarize, r#"{"summary":"after restart"}"#).await;
    let index = next_task(&mut rx).await;
    assert_eq!(index.workflow_id, "p1");
    succeed(&h, &index, "{}").await;
    wait_status(&h, "p1", Status::Completed).await;
    assert_eq!(child_events(&h, "p1"), (1, 1), "one child, one outcome");
    assert_verified(&h, 2);
    h.stop().await;
}

/// The window between the parent journaling `child_started` and the child
/// existing: a journal that ends there (built by hand) is recovered by
/// starting the child; a second recovery finds it and starts nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_whose_start_was_lost_is_started_on_recovery() {
    let storage = Arc::new(MemoryStorage::new());
    let mut h = Harness::start(storage.clone(), opts()).await;
    let mut rx = h.tasks.take().unwrap();
    until_child_runs(&h, &mut rx).await;
    h.stop().await;
    storage.crash();
    // Lose the child: remove everything it wrote (its journal, snapshot,
    // status and timers), as if the crash came before its start.
    {
        let store = orchestrator::storage::store::WorkflowStore::open(
            storage.clone() as Arc<dyn Storage>,
            4,
        )
        .unwrap();
        let partition = store.partition_of(CHILD_ID);
        let mut ops = store.workflow_delete_ops(partition, CHILD_ID).unwrap();
        for status in Status::ALL {
            ops.push(
                store
                    .status_delete(partition, status.code(), CHILD_ID)
                    .unwrap(),
            );
        }
        ops.extend(
            store
                .timer_deletes_where(partition, &mut |id| id == CHILD_ID)
                .unwrap(),
        );
        storage.write(&ops, true).unwrap();
        assert!(store
            .load_journal::<JournalRecord>(partition, CHILD_ID, 1)
            .unwrap()
            .is_empty());
    }
    let mut h = Harness::start(storage.clone() as Arc<dyn Storage>, opts()).await;
    let mut rx = h.tasks.take().unwrap();
    let tag = next_task(&mut rx).await;
    assert_eq!(
        (tag.workflow_id.as_str(), tag.step.as_str()),
        (CHILD_ID, "tag")
    );
    succeed(&h, &tag, "{}").await;
    let summarize = next_task(&mut rx).await;
    succeed(&h, &summarize, "{}").await;
    let index = next_task(&mut rx).await;
    succeed(&h, &index, "{}").await;
    wait_status(&h, "p1", Status::Completed).await;
    assert_eq!(child_events(&h, "p1"), (1, 1));
    assert_verified(&h, 2);
    h.stop().await;
}
