//! The engine end to end over in-memory storage: supervision, recovery,
//! operator inputs, bad requests.

use std::sync::Arc;
use std::time::Duration;

use orchestrator::engine::{EngineConfig, Faults, Metrics};
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

/// `id` completed with the video pipeline's checked output (`n = 17`).
async fn assert_video_completed(h: &Harness, id: &str) {
    let wf = h.engine.describe(id).await.unwrap().unwrap();
    assert_eq!(wf.status, Status::Completed);
    assert_eq!(index_n(&wf), Some(17));
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
    assert_video_completed(&h, "v-7").await;
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
    assert_video_completed(&h, "p-3").await;
    let report = verify_store(&h.store).unwrap();
    assert_eq!(
        (report.violations, report.corrupt),
        (0, 0),
        "{:?}",
        report.details
    );
    h.stop().await;
}

/// A record's lifecycle message is handed to the publisher after the
/// tasks it dispatched, by a drop guard: a panic in between (here in the
/// terminal hook, after the completion is durable) must not strand it,
/// since the outbox row would only be read back at the next start and the
/// consumers would see the workflow's later messages first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_after_a_commit_still_hands_its_event_to_the_publisher() {
    let opts = Options {
        events: true,
        panic_on_terminal: true,
        ..sim(0, 0.0)
    };
    let mut h = Harness::start(Arc::new(MemoryStorage::new()), opts).await;
    h.engine
        .start_workflow("video", "ev-1", &video_input("ev-1"))
        .await
        .unwrap();
    h.wait_terminal(1, Duration::from_secs(30)).await;
    let mut rx = h.events.take().unwrap();
    let mut seen = Vec::new();
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
        let done = item.subject.contains(".workflow_completed.");
        seen.push((item.seq, item.subject));
        if done {
            break;
        }
    }
    assert_eq!(
        h.terminal_hook_panics
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the terminal hook panicked"
    );
    assert!(
        seen.last()
            .is_some_and(|(_, s)| s.contains(".workflow_completed.")),
        "the completion record was handed over: {seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "in journal order: {seen:?}"
    );
    h.stop().await;
}

/// The first actor of a workflow panics while it loads: that counts as a
/// crash and the actor is started again with the request waiting for it,
/// so the request is served, and an input without a reply port is not
/// dropped either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_actor_spawn_counts_as_a_crash_and_the_request_is_served() {
    let h = Harness::start(Arc::new(MemoryStorage::new()), sim(1, 0.0)).await;
    h.faults.panic_on_load_once("spawn-1");
    let first = tokio::time::timeout(
        Duration::from_secs(10),
        h.engine
            .start_workflow("video", "spawn-1", &video_input("spawn-1")),
    )
    .await
    .expect("an answer, not a wait for the request timeout");
    assert!(first.unwrap().created);
    assert_eq!(Metrics::get(&h.metrics.actor_restarts), 1);
    h.wait_terminal(1, Duration::from_secs(30)).await;
    assert_video_completed(&h, "spawn-1").await;
    assert_eq!(Metrics::get(&h.metrics.workflows_parked), 0);
    h.stop().await;
}

/// A workflow actor crashes on a result, and the actor started in its place
/// panics while it loads: that counts as another crash, and the next one
/// takes the result the first never finished (it has no reply port: an
/// in-process worker's report), so the workflow completes at once. Before,
/// that result was dropped with the entry, and since the partition stops
/// watching an attempt when its result arrives, the workflow waited (the
/// test fails at its 10 s limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_fails_to_start_counts_as_a_crash_and_loses_no_input() {
    let h = Harness::start(Arc::new(MemoryStorage::new()), sim(20, 0.0)).await;
    h.engine
        .start_workflow("video", "rf-1", &video_input("rf-1"))
        .await
        .unwrap();
    // The first result (after 20 ms) crashes the actor; its successor's load panics.
    h.faults.panic_once("rf-1");
    h.faults.panic_on_load_once("rf-1");
    h.wait_terminal(1, Duration::from_secs(10)).await;
    assert_video_completed(&h, "rf-1").await;
    assert_eq!(Metrics::get(&h.metrics.actor_restarts), 2);
    assert_eq!(Metrics::get(&h.metrics.workflows_parked), 0);
    h.stop().await;
}

/// Starts `nostart` and two others; the first result crashes `nostart`'s
/// actor and `fault` keeps every later start of it from succeeding, so the
/// restart budget (3) runs out on failed starts. Returns once it has.
async fn never_starting(fault: impl Fn(&Faults)) -> Harness {
    let h = Harness::start(Arc::new(MemoryStorage::new()), sim(20, 0.0)).await;
    for id in ["nostart", "ok-1", "ok-2"] {
        h.engine
            .start_workflow("video", id, &video_input(id))
            .await
            .unwrap();
    }
    h.faults.panic_once("nostart");
    fault(&h.faults);
    // The two healthy workflows complete; `nostart` may be parked (failed)
    // before or after them, so it must not count towards the two.
    let give_up = std::time::Instant::now() + Duration::from_secs(20);
    while Metrics::get(&h.metrics.workflows_completed) < 2 {
        assert!(
            std::time::Instant::now() < give_up,
            "the healthy workflows did not complete"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    while Metrics::get(&h.metrics.actor_restarts) < 4 {
        assert!(
            std::time::Instant::now() < give_up,
            "the budget never ran out"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_video_completed(&h, "ok-1").await;
    assert_video_completed(&h, "ok-2").await;
    h
}

/// Later requests for `nostart` are answered at once, without an actor:
/// no restart is tried for them.
async fn answered_without_an_actor(h: &Harness) {
    let sent = tokio::time::timeout(
        Duration::from_secs(5),
        h.engine.send("nostart", Input::Pause),
    )
    .await
    .expect("an input for it is answered");
    match sent {
        Ok(Outcome::Rejected(why)) => assert!(why.contains("cannot start"), "{why}"),
        other => panic!("refused, not {other:?}"),
    }
    assert_eq!(
        Metrics::get(&h.metrics.actor_restarts),
        4,
        "no actor was tried again for them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_that_never_start_spend_the_budget_and_park_the_workflow() {
    // Its actor cannot start, but its state still loads: it is parked.
    let h = never_starting(|f| f.panic_on_start_always("nostart")).await;
    // Parking follows the last failed restart; it is not the same step.
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    while Metrics::get(&h.metrics.workflows_parked) == 0 {
        assert!(std::time::Instant::now() < give_up, "never parked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(Metrics::get(&h.metrics.workflows_parked), 1);
    let wf = tokio::time::timeout(Duration::from_secs(5), h.engine.describe("nostart"))
        .await
        .expect("describe of a parked workflow answers")
        .unwrap()
        .unwrap();
    assert_eq!(wf.status, Status::Failed);
    let reason = wf.reason.unwrap();
    assert!(
        reason.contains("parked after 4 crashes") && reason.contains("panic while loading"),
        "{reason}"
    );
    // A start of the same id is answered as for any existing workflow.
    let again = h
        .engine
        .start_workflow("video", "nostart", &video_input("nostart"))
        .await
        .unwrap();
    assert_eq!((again.created, again.status), (false, Status::Failed));
    answered_without_an_actor(&h).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_whose_load_always_panics_is_answered_without_an_actor() {
    // Its load panics wherever it runs, parking included: it cannot be
    // parked and stays running in storage, but it is not tried again.
    let h = never_starting(|f| f.panic_in_load_always("nostart")).await;
    assert_eq!(Metrics::get(&h.metrics.workflows_parked), 0);
    let described = tokio::time::timeout(Duration::from_secs(5), h.engine.describe("nostart"))
        .await
        .expect("describe answers");
    let error = described.expect_err("its state cannot be read").to_string();
    assert!(error.contains("loading it panicked"), "{error}");
    answered_without_an_actor(&h).await;
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

/// A one-step pipeline with short, explicit timeouts for time-driven tests.
fn short_pipeline(version: u32, max_attempts: u32) -> orchestrator::pipeline::PipelineDef {
    let text = format!(
        r#"
[pipeline]
name = "short"
version = {version}

[defaults.retry]
max_attempts = {max_attempts}
initial_backoff = "100ms"
max_backoff = "100ms"
jitter = 0.0

[defaults.timeouts]
schedule_to_start = "1s"
start_to_close = "2s"

[[steps]]
name = "a"

[[steps]]
name = "b"
needs = ["a"]
"#
    );
    orchestrator::pipeline::load::parse_pipeline(&text, "short.toml", &Default::default()).unwrap()
}

/// Waits until `n` attempts were sent. The state says dispatched once an
/// attempt is journaled; its start-to-close watch starts when it is sent,
/// just after, so a manual clock advanced in between would move the
/// deadline along with it.
async fn wait_sent(h: &Harness, n: u64) {
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    while Metrics::get(&h.metrics.tasks_dispatched) < n {
        assert!(
            std::time::Instant::now() < give_up,
            "attempt {n} never sent"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_for(
    h: &Harness,
    id: &str,
    what: &str,
    cond: impl Fn(&orchestrator::workflow::WorkflowState) -> bool,
) -> orchestrator::workflow::WorkflowState {
    for _ in 0..2_000 {
        if let Some(wf) = h.engine.describe(id).await.unwrap() {
            if cond(&wf) {
                return wf;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{id}: never reached: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_to_close_timeouts_retry_on_manual_time_then_fail_the_workflow() {
    use orchestrator::engine::ManualClock;
    let clock = Arc::new(ManualClock::new(1_000_000));
    let opts = Options {
        pipelines: Some(vec![short_pipeline(1, 2)]),
        clock: Some(clock.clone()),
        // Workers take the task and never answer within the test.
        ..sim(3_600_000, 0.0)
    };
    let h = Harness::start(Arc::new(MemoryStorage::new()), opts).await;
    h.engine.start_workflow("short", "t-1", "{}").await.unwrap();
    let wf = wait_for(&h, "t-1", "attempt 1 out", |w| {
        w.steps[0].status == StepStatus::Dispatched
    })
    .await;
    assert_eq!(wf.steps[0].attempt, 1);
    wait_sent(&h, 1).await;
    // Nothing happens while time stands still.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(Metrics::get(&h.metrics.task_timeouts), 0);
    // Past start-to-close: the attempt times out and backs off.
    clock.advance(2_500);
    let wf = wait_for(&h, "t-1", "backoff", |w| {
        w.steps[0].status == StepStatus::Backoff
    })
    .await;
    assert_eq!(wf.steps[0].last_error.as_ref().unwrap().kind, "timeout");
    // Past the backoff: attempt 2 goes out.
    clock.advance(150);
    wait_for(&h, "t-1", "attempt 2 out", |w| {
        w.steps[0].attempt == 2 && w.steps[0].status == StepStatus::Dispatched
    })
    .await;
    wait_sent(&h, 2).await;
    // Attempt 2 times out too: attempts exhausted, the workflow fails.
    clock.advance(2_500);
    let wf = wait_for(&h, "t-1", "failed", |w| w.status == Status::Failed).await;
    let reason = wf.reason.unwrap();
    assert!(
        reason.contains("step a failed after 2 attempt(s)") && reason.contains("start_to_close"),
        "{reason}"
    );
    assert_eq!(Metrics::get(&h.metrics.task_timeouts), 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_keeps_the_pipeline_version_it_started_with() {
    let storage = Arc::new(MemoryStorage::new());
    let v1 = Options {
        pipelines: Some(vec![short_pipeline(1, 3)]),
        ..sim(3_600_000, 0.0)
    };
    let h = Harness::start(storage.clone(), v1).await;
    h.engine
        .start_workflow("short", "pinned", "{}")
        .await
        .unwrap();
    wait_for(&h, "pinned", "dispatched", |w| {
        w.steps[0].status == StepStatus::Dispatched
    })
    .await;
    h.stop().await;
    // The file changes: version 2 allows 7 attempts. New workflows get it,
    // the one in flight keeps version 1.
    let v2 = Options {
        pipelines: Some(vec![short_pipeline(2, 7)]),
        ..sim(10, 0.0)
    };
    let h = Harness::start(
        storage.clone() as Arc<dyn orchestrator::storage::Storage>,
        v2,
    )
    .await;
    h.engine
        .start_workflow("short", "fresh", "{}")
        .await
        .unwrap();
    h.wait_terminal(2, Duration::from_secs(20)).await;
    let pinned = h.engine.describe("pinned").await.unwrap().unwrap();
    let fresh = h.engine.describe("fresh").await.unwrap().unwrap();
    assert_eq!((pinned.pipeline.version, fresh.pipeline.version), (1, 2));
    assert_eq!(
        (pinned.status, fresh.status),
        (Status::Completed, Status::Completed)
    );
    let report = verify_store(&h.store).unwrap();
    assert_eq!(
        (report.violations, report.corrupt),
        (0, 0),
        "{:?}",
        report.details
    );
    h.stop().await;
}

/// Memory storage whose writes wait while the gate is shut (a long fsync on
/// demand), and can be told to fail one write.
pub(crate) struct GatedStorage {
    inner: MemoryStorage,
    shut: parking_lot::Mutex<bool>,
    opened: parking_lot::Condvar,
    /// Writes blocked at the gate right now.
    pub(crate) waiting: std::sync::atomic::AtomicU64,
    /// Writes that passed the gate (failed or not).
    pub(crate) writes: std::sync::atomic::AtomicU64,
    /// The write with this number (counted in `writes`, from 1) fails.
    fail_write: std::sync::atomic::AtomicU64,
}

impl GatedStorage {
    pub(crate) fn new() -> Self {
        GatedStorage {
            inner: MemoryStorage::new(),
            shut: parking_lot::Mutex::new(false),
            opened: parking_lot::Condvar::new(),
            waiting: Default::default(),
            writes: Default::default(),
            fail_write: Default::default(),
        }
    }
    pub(crate) fn set_shut(&self, shut: bool) {
        *self.shut.lock() = shut;
        self.opened.notify_all();
    }
}

impl Storage for GatedStorage {
    fn write(
        &self,
        ops: &[orchestrator::storage::Op],
        sync: bool,
    ) -> Result<(), orchestrator::storage::Error> {
        use std::sync::atomic::Ordering::SeqCst;
        {
            let mut shut = self.shut.lock();
            self.waiting.fetch_add(1, SeqCst);
            while *shut {
                self.opened.wait(&mut shut);
            }
            self.waiting.fetch_sub(1, SeqCst);
        }
        let n = self.writes.fetch_add(1, SeqCst) + 1;
        if self.fail_write.load(SeqCst) == n {
            return Err(orchestrator::storage::Error::Io("injected".into()));
        }
        self.inner.write(ops, sync)
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, orchestrator::storage::Error> {
        self.inner.get(key)
    }
    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), orchestrator::storage::Error> {
        self.inner.scan(from, to, visit)
    }
    fn wal_syncs(&self) -> u64 {
        self.inner.wal_syncs()
    }
    fn checkpoint(&self, dir: &std::path::Path) -> Result<(), orchestrator::storage::Error> {
        self.inner.checkpoint(dir)
    }
}

fn fan_pipeline() -> orchestrator::pipeline::PipelineDef {
    let text = r#"
[pipeline]
name = "fan"
version = 1

[[steps]]
name = "a"

[[steps]]
name = "b"
needs = ["a"]

[[steps]]
name = "c"
needs = ["a"]

[[steps]]
name = "d"
needs = ["a"]

[[steps]]
name = "e"
needs = ["b", "c", "d"]
"#;
    orchestrator::pipeline::load::parse_pipeline(text, "fan.toml", &Default::default()).unwrap()
}

async fn next_task(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<orchestrator::transport::inproc::ToWorker>,
) -> orchestrator::workflow::TaskSpec {
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

fn success(t: &orchestrator::workflow::TaskSpec) -> orchestrator::workflow::TaskResult {
    orchestrator::workflow::TaskResult {
        task_id: t.task_id.clone(),
        step: t.step.clone(),
        attempt: t.attempt,
        outcome: orchestrator::workflow::TaskOutcome::Succeeded(format!("{{\"{}\":1}}", t.step)),
        worker: Some("test".into()),
        started_at_ms: None,
    }
}

/// Results of parallel steps that arrive while their workflow's actor awaits
/// a commit are decided together and journaled in one commit; each still
/// gets its own answer, the join step is dispatched once, and when the
/// commit of such a batch fails, the state goes back and each result is
/// tried again alone, the one nobody would send again included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_queued_behind_a_commit_share_the_next_one() {
    use std::sync::atomic::Ordering::SeqCst;
    let storage = Arc::new(GatedStorage::new());
    let opts = Options {
        partitions: 1,
        config: EngineConfig {
            partitions: 1,
            tick_ms: 5,
            ..EngineConfig::default()
        },
        pipelines: Some(vec![fan_pipeline()]),
        test_is_worker: true,
        ..Options::default()
    };
    let mut h = Harness::start(storage.clone(), opts).await;
    let mut rx = h.tasks.take().expect("the test is the worker");
    let (engine, metrics) = (h.engine.clone(), h.metrics.clone());
    for (round, id) in ["fan-ok", "fan-fail"].into_iter().enumerate() {
        engine.start_workflow("fan", id, "{}").await.unwrap();
        let a = next_task(&mut rx).await;
        assert_eq!(a.step, "a");
        assert_eq!(
            engine.deliver_result(id, success(&a)).await.unwrap(),
            Outcome::Applied
        );
        let mut parallel = [
            next_task(&mut rx).await,
            next_task(&mut rx).await,
            next_task(&mut rx).await,
        ];
        parallel.sort_by(|x, y| x.step.cmp(&y.step));
        assert_eq!(
            parallel.iter().map(|t| t.step.as_str()).collect::<Vec<_>>(),
            ["b", "c", "d"]
        );
        // The first result's commit is held at the storage; the other two
        // queue behind it.
        storage.set_shut(true);
        let deliver = |t: &orchestrator::workflow::TaskSpec| {
            let (engine, r, id) = (engine.clone(), success(t), id.to_string());
            tokio::spawn(async move { engine.deliver_result(&id, r).await })
        };
        let first = deliver(&parallel[0]);
        for _ in 0..10_000 {
            if storage.waiting.load(SeqCst) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(storage.waiting.load(SeqCst), 1, "the first commit is held");
        let rest = if round == 0 {
            vec![deliver(&parallel[1]), deliver(&parallel[2])]
        } else {
            // The second round's last result comes the way a JetStream
            // result does: a report without a reply port, that nobody
            // would send again.
            engine.sink().report(
                id,
                orchestrator::transport::WorkerReport::Result(success(&parallel[2])),
            );
            vec![deliver(&parallel[1])]
        };
        // Both reach the inbox while the first commit is held.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let folded_before = metrics.inputs_folded.load(SeqCst);
        let writes_before = storage.writes.load(SeqCst);
        if round == 1 {
            // The held write passes, the batch of the two queued results fails.
            storage.fail_write.store(writes_before + 2, SeqCst);
        }
        storage.set_shut(false);
        assert_eq!(first.await.unwrap().unwrap(), Outcome::Applied);
        for r in futures_util::future::join_all(rest).await {
            assert_eq!(r.unwrap().unwrap(), Outcome::Applied);
        }
        if round == 0 {
            // Two writes for three results: the held one, then both queued ones.
            assert_eq!(storage.writes.load(SeqCst), writes_before + 2);
            assert_eq!(metrics.inputs_folded.load(SeqCst), folded_before + 1);
        } else {
            // The failed batch is undone and each result is tried alone:
            // the held write, the failed one, then one each.
            let wf = wait_for(&h, id, "b, c and d succeeded", |wf| {
                wf.steps[1..4]
                    .iter()
                    .all(|s| s.status == StepStatus::Succeeded)
            })
            .await;
            assert_eq!(wf.steps[4].status, StepStatus::Dispatched, "{wf:?}");
            assert_eq!(storage.writes.load(SeqCst), writes_before + 4);
            assert_eq!(metrics.inputs_folded.load(SeqCst), folded_before);
        }
        let e = next_task(&mut rx).await;
        assert_eq!(e.step, "e");
        assert_eq!(
            engine.deliver_result(id, success(&e)).await.unwrap(),
            Outcome::Applied
        );
        let wf = engine.describe(id).await.unwrap().unwrap();
        assert_eq!(wf.status, Status::Completed, "{id}");
        // Nothing else was dispatched: the join went out once.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(rx.try_recv().is_err(), "{id}: a second dispatch");
    }
    // The journal holds what the actor answered, record by record.
    let report = verify_store(&h.store).unwrap();
    assert_eq!(
        (
            report.workflows,
            report.completed,
            report.violations,
            report.corrupt
        ),
        (2, 2, 0, 0),
        "{:?}",
        report.details
    );
    h.stop().await;
}
