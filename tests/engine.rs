//! The engine end to end over in-memory storage: supervision, recovery,
//! operator inputs, bad requests.

use std::sync::Arc;
use std::time::Duration;

use orchestrator::engine::{EngineConfig, Metrics};
use orchestrator::sim::SimConfig;
use orchestrator::storage::memory::MemoryStorage;
use orchestrator::storage::Storage;
use orchestrator::verify::verify_store;
use orchestrator::workflow::{Input, Outcome, ReopenMode, Status, StepStatus};

use crate::support::{video_input, Harness, Options};

fn sim(latency_ms: u64, fail_rate: f64) -> Options {
    Options {
        sim: SimConfig {
            latency_ms,
            fail_rate,
            seed: 42,
            ..SimConfig::default()
        },
        ..Options::default()
    }
}

fn index_n(h: &orchestrator::workflow::WorkflowState) -> Option<u64> {
    let out = h.steps.last()?.output.as_deref()?;
    serde_json::from_str::<serde_json::Value>(out)
        .ok()?
        .get("n")?
        .as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_workflows_complete_with_correct_outputs_despite_failures() {
    let storage = Arc::new(MemoryStorage::new());
    let h = Harness::start(storage.clone(), sim(0, 0.2)).await;
    for i in 0..200 {
        let id = format!("v-{i}");
        let r = h
            .engine
            .start_workflow("video", &id, &video_input(&id))
            .await
            .unwrap();
        assert!(r.created);
    }
    h.wait_terminal(200, Duration::from_secs(60)).await;
    assert_eq!(Metrics::get(&h.metrics.workflows_completed), 200);
    assert_eq!(Metrics::get(&h.metrics.output_errors), 0);
    assert!(
        Metrics::get(&h.metrics.task_retries) > 0,
        "fail rate 0.2 must cause retries"
    );
    let wf = h.engine.describe("v-7").await.unwrap().unwrap();
    assert_eq!(wf.status, Status::Completed);
    assert_eq!(index_n(&wf), Some(17));
    let report = verify_store(&h.store).unwrap();
    assert_eq!(
        (
            report.workflows,
            report.completed,
            report.violations,
            report.corrupt
        ),
        (200, 200, 0, 0)
    );
    let commits = h.committer.stats();
    assert!(
        commits.batches < commits.requests,
        "appends are group-committed: {commits:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_an_existing_id_returns_it_instead_of_a_second_one() {
    let h = Harness::start(Arc::new(MemoryStorage::new()), sim(0, 0.0)).await;
    let a = h
        .engine
        .start_workflow("video", "same", &video_input("same"))
        .await
        .unwrap();
    assert!(a.created);
    h.wait_terminal(1, Duration::from_secs(10)).await;
    let b = h
        .engine
        .start_workflow("video", "same", r#"{"other":1}"#)
        .await
        .unwrap();
    assert!(!b.created);
    assert_eq!(b.status, Status::Completed);
    let wf = h.engine.describe("same").await.unwrap().unwrap();
    assert_eq!(
        &*wf.input,
        video_input("same").as_str(),
        "the first input stays"
    );
    assert_eq!(Metrics::get(&h.metrics.workflows_started), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_restarts_only_that_workflow_which_then_completes() {
    let h = Harness::start(Arc::new(MemoryStorage::new()), sim(30, 0.0)).await;
    for i in 0..40 {
        let id = format!("p-{i}");
        h.engine
            .start_workflow("video", &id, &video_input(&id))
            .await
            .unwrap();
    }
    // Mid-run: the next input of p-3 (a task result) panics its actor once.
    tokio::time::sleep(Duration::from_millis(80)).await;
    h.faults.panic_once("p-3");
    h.wait_terminal(40, Duration::from_secs(60)).await;
    assert_eq!(
        Metrics::get(&h.metrics.actor_restarts),
        1,
        "exactly one restart"
    );
    assert_eq!(
        Metrics::get(&h.metrics.workflows_completed),
        40,
        "every workflow completes"
    );
    assert_eq!(Metrics::get(&h.metrics.workflows_parked), 0);
    let wf = h.engine.describe("p-3").await.unwrap().unwrap();
    assert_eq!(wf.status, Status::Completed);
    assert_eq!(index_n(&wf), Some(17));
    let report = verify_store(&h.store).unwrap();
    assert_eq!(
        (report.violations, report.corrupt),
        (0, 0),
        "{:?}",
        report.details
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_that_keeps_crashing_is_parked_and_others_are_unaffected() {
    let h = Harness::start(Arc::new(MemoryStorage::new()), sim(20, 0.0)).await;
    h.faults.panic_always("poison");
    h.engine
        .start_workflow("video", "poison", &video_input("poison"))
        .await
        .unwrap();
    for i in 0..20 {
        let id = format!("ok-{i}");
        h.engine
            .start_workflow("video", &id, &video_input(&id))
            .await
            .unwrap();
    }
    h.wait_terminal(21, Duration::from_secs(60)).await;
    let wf = h.engine.describe("poison").await.unwrap().unwrap();
    assert_eq!(wf.status, Status::Failed);
    let reason = wf.reason.unwrap();
    assert!(
        reason.contains("parked after 4 crashes") && reason.contains("poison workflow"),
        "{reason}"
    );
    assert_eq!(Metrics::get(&h.metrics.workflows_parked), 1);
    assert_eq!(Metrics::get(&h.metrics.workflows_completed), 20);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_that_drops_unsynced_writes_loses_no_accepted_workflow() {
    let storage = Arc::new(MemoryStorage::new());
    let h = Harness::start(storage.clone(), sim(40, 0.1)).await;
    for i in 0..60 {
        let id = format!("c-{i}");
        h.engine
            .start_workflow("video", &id, &video_input(&id))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(h.terminal() < 60, "the crash must hit a run in progress");
    h.stop().await;
    storage.crash();
    let h = Harness::start(storage.clone() as Arc<dyn Storage>, sim(5, 0.0)).await;
    let resumed = Metrics::get(&h.metrics.workflows_resumed);
    assert!(resumed > 0, "unfinished workflows are found at start-up");
    h.wait_terminal(resumed, Duration::from_secs(60)).await;
    let report = verify_store(&h.store).unwrap();
    assert_eq!(
        (report.workflows, report.completed, report.running),
        (60, 60, 0),
        "{:?}",
        report.details
    );
    assert_eq!(
        (report.violations, report.corrupt),
        (0, 0),
        "{:?}",
        report.details
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_pause_resume_cancel_and_rerun_from_a_step() {
    let h = Harness::start(Arc::new(MemoryStorage::new()), sim(60, 0.0)).await;
    h.engine
        .start_workflow("video", "ops", &video_input("ops"))
        .await
        .unwrap();
    assert_eq!(
        h.engine.send("ops", Input::Pause).await.unwrap(),
        Outcome::Applied
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let wf = h.engine.describe("ops").await.unwrap().unwrap();
    assert_eq!(wf.status, Status::Paused);
    assert_eq!(
        wf.steps[0].status,
        StepStatus::Succeeded,
        "the running task finishes"
    );
    assert_eq!(
        wf.steps[1].status,
        StepStatus::Pending,
        "nothing new starts while paused"
    );
    assert_eq!(
        h.engine.send("ops", Input::Resume).await.unwrap(),
        Outcome::Applied
    );
    h.wait_terminal(1, Duration::from_secs(20)).await;
    let before = h.engine.describe("ops").await.unwrap().unwrap();
    let rerun = Input::Reopen(ReopenMode::RerunFrom("enrich_topics".into()));
    assert_eq!(h.engine.send("ops", rerun).await.unwrap(), Outcome::Applied);
    h.wait_terminal(2, Duration::from_secs(20)).await;
    let after = h.engine.describe("ops").await.unwrap().unwrap();
    assert_eq!(after.status, Status::Completed);
    assert_eq!(after.generation, 1);
    for (i, name) in [
        "ingest",
        "extract_audio",
        "transcribe",
        "segment",
        "enrich_entities",
        "enrich_sentiment",
    ]
    .iter()
    .enumerate()
    {
        let _ = i;
        let k = [
            "ingest",
            "extract_audio",
            "transcribe",
            "segment",
            "enrich_topics",
            "enrich_entities",
            "enrich_sentiment",
            "embed",
            "index",
        ]
        .iter()
        .position(|s| s == name)
        .unwrap();
        assert_eq!(
            after.steps[k].finished_at_ms, before.steps[k].finished_at_ms,
            "{name} is not re-run"
        );
    }
    assert_eq!(
        after.steps[4].task_id.as_deref(),
        Some("ops:enrich_topics:1:1")
    );
    assert_eq!(index_n(&after), Some(17));

    h.engine
        .start_workflow("video", "doomed", &video_input("doomed"))
        .await
        .unwrap();
    let cancel = Input::Cancel {
        reason: "test".into(),
    };
    assert_eq!(
        h.engine.send("doomed", cancel.clone()).await.unwrap(),
        Outcome::Applied
    );
    assert!(matches!(
        h.engine.send("doomed", cancel).await.unwrap(),
        Outcome::Rejected(_)
    ));
    assert_eq!(
        h.engine.describe("doomed").await.unwrap().unwrap().status,
        Status::Cancelled
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_are_counted() {
    let h = Harness::start(Arc::new(MemoryStorage::new()), sim(0, 0.0)).await;
    let e = h
        .engine
        .start_workflow("nope", "x", "{}")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("unknown pipeline \"nope\""), "{e}");
    let e = h
        .engine
        .start_workflow("video", "x", "{not json")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not valid JSON"), "{e}");
    let e = h
        .engine
        .start_workflow("video", "", "{}")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("workflow id"), "{e}");
    let e = h.engine.send("missing", Input::Pause).await.unwrap_err();
    assert!(e.to_string().contains("unknown workflow missing"), "{e}");
    assert!(h.engine.describe("missing").await.unwrap().is_none());
    assert!(Metrics::get(&h.metrics.rejected_inputs) >= 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passivation_keeps_resident_actors_under_the_cap() {
    let opts = Options {
        config: EngineConfig {
            resident_max: 8,
            state_cache_max: 4,
            tick_ms: 5,
            ..EngineConfig::default()
        },
        ..sim(20, 0.0)
    };
    let h = Harness::start(Arc::new(MemoryStorage::new()), opts).await;
    for i in 0..100 {
        let id = format!("r-{i}");
        h.engine
            .start_workflow("video", &id, &video_input(&id))
            .await
            .unwrap();
        assert!(Metrics::get(&h.metrics.resident) <= 8);
    }
    h.wait_terminal(100, Duration::from_secs(60)).await;
    assert_eq!(Metrics::get(&h.metrics.workflows_completed), 100);
    assert_eq!(Metrics::get(&h.metrics.output_errors), 0);
    assert!(Metrics::get(&h.metrics.passivations) >= 100);
    h.stop().await;
}
