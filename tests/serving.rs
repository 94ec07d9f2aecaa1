//! The engine serving a changing set of partitions (what a cluster node
//! does when leases change hands): a stopped partition refuses its
//! requests while the others go on, a started one recovers and finishes
//! its workflows, and a stop waits for the commit in flight.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;

use orchestrator::engine::{result_verdict, Error, Metrics};
use orchestrator::sim::SimConfig;
use orchestrator::storage::memory::MemoryStorage;
use orchestrator::storage::rocks::{RocksConfig, RocksStorage};
use orchestrator::storage::Storage;
use orchestrator::transport::ResultError;
use orchestrator::verify::verify_store;
use orchestrator::workflow::{Input, Outcome, Status, TaskOutcome, TaskResult, TaskSpec};

use crate::engine::GatedStorage;
use crate::support::{video_input, Harness, Options};

const WORKFLOWS: usize = 48;

/// An id of partition `p` (or of another one when `other`), by probing.
fn id_in(h: &Harness, prefix: &str, p: u16, other: bool) -> String {
    (0..)
        .map(|k| format!("{prefix}-{k}"))
        .find(|id| (h.store.partition_of(id) == p) != other)
        .expect("some id hashes there")
}

fn result_for(task_id: &str, step: &str) -> TaskResult {
    result_of(task_id, step, 1)
}

fn success(t: &TaskSpec) -> TaskResult {
    result_of(&t.task_id, &t.step, t.attempt)
}

fn result_of(task_id: &str, step: &str, attempt: u32) -> TaskResult {
    TaskResult {
        task_id: task_id.to_string(),
        step: step.to_string(),
        attempt,
        outcome: TaskOutcome::Succeeded(format!("{{\"{step}\":1}}")),
        worker: Some("test".into()),
        started_at_ms: None,
    }
}

fn is_not_served<T: std::fmt::Debug>(r: Result<T, Error>, p: u16) {
    match r {
        Err(e @ Error::NotServed(q)) if q == p => assert_eq!(
            e.to_string(),
            format!("unavailable: partition {p} is not served by this node")
        ),
        other => panic!("expected partition {p} not served, got {other:?}"),
    }
}

/// The workflow's status, waiting at most 60 s for it to be `want`.
async fn wait_status(h: &Harness, id: &str, want: Status) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let wf = h.engine.describe(id).await.unwrap().unwrap();
        if wf.status == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "{id} is {:?}, not {want:?}",
            wf.status
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn assert_completed_with_checked_output(h: &Harness, id: &str) {
    let wf = h.engine.describe(id).await.unwrap().unwrap();
    assert_eq!(wf.status, Status::Completed, "{id}");
    let n = wf
        .steps
        .last()
        .and_then(|s| s.output.as_deref())
        .and_then(|o| serde_json::from_str::<serde_json::Value>(o).ok())
        .and_then(|v| v.get("n")?.as_u64());
    assert_eq!(n, Some(17), "{id}: the video pipeline's checked output");
}

async fn stop_and_start_a_partition_while_its_workflows_run(storage: Arc<dyn Storage>) {
    let opts = Options {
        sim: SimConfig {
            latency_ms: 30,
            fail_rate: 0.1,
            seed: 7,
            ..SimConfig::default()
        },
        ..Options::default()
    };
    let h = Harness::start(storage, opts).await;
    let ids: Vec<String> = (0..WORKFLOWS).map(|i| format!("s-{i}")).collect();
    for id in &ids {
        h.engine
            .start_workflow("video", id, &video_input(id))
            .await
            .unwrap();
    }
    let p = h.store.partition_of(&ids[0]);
    let (mine, others): (Vec<&String>, Vec<&String>) =
        ids.iter().partition(|id| h.store.partition_of(id) == p);
    assert!(!others.is_empty());

    h.engine.stop_partition(p).await.unwrap();
    assert!(!h.engine.serves(p));
    assert_eq!(h.engine.served_partitions().len(), 3);
    let before = verify_store(&h.store).unwrap();
    assert!(
        before.running > 0,
        "the stop must hit workflows in progress: {before:?}"
    );

    // Every request for the stopped partition's workflows gets the clear
    // refusal; nothing about them changes.
    is_not_served(h.engine.describe(mine[0]).await, p);
    let new_here = id_in(&h, "new", p, false);
    is_not_served(
        h.engine
            .start_workflow("video", &new_here, &video_input(&new_here))
            .await,
        p,
    );
    is_not_served(
        h.engine
            .send(
                mine[0],
                Input::Cancel {
                    reason: "test".into(),
                },
            )
            .await,
        p,
    );
    let outcome = h
        .engine
        .deliver_result(mine[0], result_for("s-0:ingest:0:1", "ingest"))
        .await;
    // A worker's result is left for redelivery, not refused for good.
    assert!(matches!(
        result_verdict(mine[0], "s-0:ingest:0:1", outcome),
        Err(ResultError::Retry(m)) if m.contains("not served")
    ));
    // A bulk accept touching it accepts nothing, not even elsewhere.
    let elsewhere = id_in(&h, "bulk", p, true);
    let items = vec![
        (elsewhere.clone(), video_input(&elsewhere)),
        (new_here.clone(), video_input(&new_here)),
    ];
    is_not_served(h.engine.accept_many("video", items).await, p);
    assert!(h.engine.describe(&elsewhere).await.unwrap().is_none());

    // The other partitions' workflows keep completing.
    for id in &others {
        wait_status(&h, id, Status::Completed).await;
        assert_completed_with_checked_output(&h, id).await;
    }
    // The stopped partition made no progress: its timers, deadlines and
    // workers' results were not taken.
    let stopped = verify_store(&h.store).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = verify_store(&h.store).unwrap();
    assert_eq!(stopped.events, later.events, "{later:?}");
    assert!(later.running > 0 && later.running <= mine.len() as u64);
    // Its workflows left the status gauges with it.
    assert_eq!(
        h.metrics.workflows_running.get() + h.metrics.workflows_paused.get(),
        0
    );

    // Started again, it recovers and finishes every workflow, each step
    // accepted once.
    h.engine.start_partition(p).await.unwrap();
    assert!(h.engine.serves(p));
    assert_eq!(h.engine.served_partitions(), vec![0, 1, 2, 3]);
    for id in &ids {
        wait_status(&h, id, Status::Completed).await;
        assert_completed_with_checked_output(&h, id).await;
    }
    assert_eq!(Metrics::get(&h.metrics.output_errors), 0);
    assert_eq!(
        h.metrics.workflows_running.get() + h.metrics.workflows_paused.get(),
        0
    );
    crate::support::assert_all_completed(&h.store, WORKFLOWS as u64);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_partition_refuses_its_requests_and_finishes_once_started_in_memory() {
    stop_and_start_a_partition_while_its_workflows_run(Arc::new(MemoryStorage::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_partition_refuses_its_requests_and_finishes_once_started_on_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(RocksStorage::open(dir.path(), &RocksConfig::default()).unwrap());
    stop_and_start_a_partition_while_its_workflows_run(storage).await;
}

fn two_steps() -> orchestrator::pipeline::PipelineDef {
    crate::support::two_step_pipeline("two", "a", "b")
}

async fn next_task(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<orchestrator::transport::inproc::ToWorker>,
) -> TaskSpec {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a task within 10 s")
            .expect("transport open");
        if let orchestrator::transport::inproc::ToWorker::Task(t) = msg {
            return *t;
        }
    }
}

/// A stop returns only once the commit in flight is done: the result
/// being committed is applied and answered, and its effect (the next
/// step's task) goes out. Started again, the partition re-sends that task
/// with the same task id, and the first result, sent again, is a
/// duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_waits_for_the_commit_in_flight() {
    let storage = Arc::new(GatedStorage::new());
    let opts = Options {
        partitions: 1,
        config: orchestrator::engine::EngineConfig {
            partitions: 1,
            tick_ms: 5,
            ..Default::default()
        },
        pipelines: Some(vec![two_steps()]),
        test_is_worker: true,
        ..Options::default()
    };
    let mut h = Harness::start(storage.clone(), opts).await;
    let mut rx = h.tasks.take().expect("the test is the worker");
    let engine = h.engine.clone();
    engine.start_workflow("two", "w", "{}").await.unwrap();
    let a = next_task(&mut rx).await;
    assert_eq!(a.step, "a");

    storage.set_shut(true);
    let first = {
        let (engine, r) = (engine.clone(), success(&a));
        tokio::spawn(async move { engine.deliver_result("w", r).await })
    };
    for _ in 0..10_000 {
        if storage.waiting.load(SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(storage.waiting.load(SeqCst), 1, "the commit is held");
    let stop = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.stop_partition(0).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Intake stopped at once; the stop itself waits for the commit.
    is_not_served(engine.describe("w").await, 0);
    assert!(!stop.is_finished(), "the stop returned during the commit");
    assert!(!first.is_finished());

    storage.set_shut(false);
    stop.await.unwrap().unwrap();
    assert!(first.is_finished(), "the commit ended before the stop");
    assert_eq!(first.await.unwrap().unwrap(), Outcome::Applied);
    let b = next_task(&mut rx).await;
    assert_eq!(b.step, "b", "the commit's effect ran");
    let report = verify_store(&h.store).unwrap();
    assert_eq!((report.workflows, report.running), (1, 1));

    engine.start_partition(0).await.unwrap();
    let again = next_task(&mut rx).await;
    assert_eq!(
        (again.step.as_str(), again.task_id.as_str()),
        ("b", b.task_id.as_str()),
        "recovery re-sends the owed task with its task id"
    );
    assert!(matches!(
        engine.deliver_result("w", success(&a)).await.unwrap(),
        Outcome::Ignored(_)
    ));
    assert_eq!(
        engine.deliver_result("w", success(&b)).await.unwrap(),
        Outcome::Applied
    );
    let wf = engine.describe("w").await.unwrap().unwrap();
    assert_eq!(wf.status, Status::Completed);
    crate::support::assert_all_completed(&h.store, 1);
    h.stop().await;
}
