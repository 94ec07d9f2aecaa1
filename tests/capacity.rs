//! The admission gate in a running engine: a cap on a task type holds at
//! every instant while every workflow completes; a reload raises a cap and
//! the waiting tasks go; a restart with tasks waiting loses none of them; a
//! task held past its step's queue timeout is never sent and its step
//! retries, then fails; a pipeline's in-progress limit bounds its bulk
//! workflows while another pipeline's run.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use orchestrator::capacity::{Limits, TypeLimits};
use orchestrator::storage::memory::MemoryStorage;
use orchestrator::transport::inproc::ToWorker;
use orchestrator::workflow::{Status, TaskOutcome, TaskResult, TaskSpec};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::support::{Harness, Options};

/// `transcribe` (capped in these tests) then `index` (not).
fn pipeline() -> orchestrator::pipeline::PipelineDef {
    crate::support::two_step_pipeline("cap", "transcribe", "index")
}

fn capped(cap: u32) -> Limits {
    let mut l = Limits::default();
    l.task_types.insert(
        "transcribe".into(),
        TypeLimits {
            max_in_flight: Some(cap),
            ..TypeLimits::default()
        },
    );
    l
}

fn opts(limits: Limits) -> Options {
    Options {
        pipelines: Some(vec![pipeline()]),
        test_is_worker: true,
        capacity: limits,
        ..Options::default()
    }
}

fn success(t: &TaskSpec) -> TaskResult {
    TaskResult {
        task_id: t.task_id.clone(),
        step: t.step.clone(),
        attempt: t.attempt,
        outcome: TaskOutcome::Succeeded("{}".into()),
        worker: Some("test".into()),
        started_at_ms: None,
    }
}

/// The next task sent within `wait`, if any.
async fn recv(rx: &mut UnboundedReceiver<ToWorker>, wait: Duration) -> Option<TaskSpec> {
    loop {
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(ToWorker::Task(t))) => return Some(*t),
            Ok(Some(ToWorker::Cancel { .. })) => continue,
            _ => return None,
        }
    }
}

/// Plays the workers: takes every task sent, answers `transcribe` tasks one
/// at a time (oldest first) after waiting long enough for any task sent
/// over the cap to show up, and asserts after every arrival that no more
/// than `cap` transcribe tasks are out. Returns the most seen out at once.
async fn work(h: &Harness, rx: &mut UnboundedReceiver<ToWorker>, cap: usize, done: usize) -> usize {
    let mut out: Vec<TaskSpec> = Vec::new();
    let mut peak = 0;
    let mut completed = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while completed.len() < done {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {done} done",
            completed.len()
        );
        while let Some(t) = recv(rx, Duration::from_millis(30)).await {
            if t.task_type == "transcribe" {
                if !out.iter().any(|o| o.task_id == t.task_id) {
                    out.push(t);
                }
                assert!(
                    out.len() <= cap,
                    "{} transcribe tasks out, cap {cap}",
                    out.len()
                );
                peak = peak.max(out.len());
            } else {
                let id = t.workflow_id.clone();
                h.engine.deliver_result(&id, success(&t)).await.unwrap();
                completed.insert(id);
            }
        }
        if !out.is_empty() {
            let t = out.remove(0);
            h.engine
                .deliver_result(&t.workflow_id, success(&t))
                .await
                .unwrap();
        }
    }
    peak
}

async fn start(h: &Harness, n: usize) {
    for i in 0..n {
        h.engine
            .start_workflow("cap", &format!("wf-{i}"), "{}")
            .await
            .unwrap();
    }
}

async fn all_completed(h: &Harness, n: usize) {
    for i in 0..n {
        let wf = h
            .engine
            .describe(&format!("wf-{i}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(wf.status, Status::Completed, "{}", wf.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_on_a_task_type_holds_at_every_instant_and_every_workflow_completes() {
    let mut h = Harness::start(Arc::new(MemoryStorage::new()), opts(capped(3))).await;
    let mut rx = h.tasks.take().unwrap();
    start(&h, 40).await;
    let peak = work(&h, &mut rx, 3, 40).await;
    assert_eq!(peak, 3, "the cap is used, not only respected");
    all_completed(&h, 40).await;
    let view = h.engine.ctx().capacity.view();
    assert_eq!(view.task_types[0].in_flight, 0);
    assert_eq!(view.task_types[0].queued, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_raises_a_cap_and_the_waiting_tasks_go() {
    let mut h = Harness::start(Arc::new(MemoryStorage::new()), opts(capped(1))).await;
    let mut rx = h.tasks.take().unwrap();
    start(&h, 10).await;
    let mut sent = Vec::new();
    while let Some(t) = recv(&mut rx, Duration::from_millis(200)).await {
        sent.push(t);
    }
    assert_eq!(sent.len(), 1, "one under a cap of 1");
    let ctx = h.engine.ctx();
    let w = ctx.capacity.view();
    assert_eq!((w.task_types[0].in_flight, w.task_types[0].queued), (1, 9));
    let ready = ctx.capacity.reconfigure(capped(4), ctx.clock.now_ms());
    orchestrator::engine::recovery::send_admitted(ctx, ready);
    while let Some(t) = recv(&mut rx, Duration::from_millis(200)).await {
        sent.push(t);
    }
    assert_eq!(sent.len(), 4, "three more under a cap of 4");
    for t in &sent {
        h.engine
            .deliver_result(&t.workflow_id, success(t))
            .await
            .unwrap();
    }
    work(&h, &mut rx, 4, 10).await;
    all_completed(&h, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_tasks_waiting_loses_none_and_keeps_the_cap() {
    let storage = Arc::new(MemoryStorage::new());
    let mut h = Harness::start(storage.clone(), opts(capped(2))).await;
    let mut rx = h.tasks.take().unwrap();
    start(&h, 12).await;
    let mut sent = 0;
    while recv(&mut rx, Duration::from_millis(200)).await.is_some() {
        sent += 1;
    }
    assert_eq!(sent, 2);
    assert_eq!(h.engine.ctx().capacity.view().task_types[0].queued, 10);
    h.engine.shutdown().await;
    drop(h);
    let mut h = Harness::start(storage, opts(capped(2))).await;
    let mut rx = h.tasks.take().unwrap();
    // Recovery owes all twelve again (the two sent ones with their ids);
    // the gate lets two go and the rest wait their turn.
    work(&h, &mut rx, 2, 12).await;
    all_completed(&h, 12).await;
}

/// `transcribe` may wait 10 s in the gate and has two attempts.
fn queue_timed_pipeline() -> orchestrator::pipeline::PipelineDef {
    let text = r#"
[pipeline]
name = "cap"
version = 1

[[steps]]
name = "transcribe"
[steps.retry]
max_attempts = 2
initial_backoff = "100ms"
jitter = 0.0
[steps.timeouts]
queue_timeout = "10s"

[[steps]]
name = "index"
needs = ["transcribe"]
"#;
    orchestrator::pipeline::load::parse_pipeline(text, "cap.toml", &Default::default()).unwrap()
}

/// Polls `describe` until `cond` holds for workflow `id`.
async fn until(
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

/// Waits until `n` tasks wait in the gate (the offer follows the
/// dispatch's journal append).
async fn queued(ctx: &orchestrator::engine::EngineCtx, n: usize) {
    for _ in 0..2_000 {
        if ctx.capacity.view().task_types[0].queued == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never {n} queued: {:?}", ctx.capacity.view());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_held_past_its_queue_timeout_is_never_sent_and_its_step_retries_then_fails() {
    use orchestrator::engine::ManualClock;
    use orchestrator::workflow::StepStatus;
    let clock = Arc::new(ManualClock::new(1_000_000));
    let opts = Options {
        pipelines: Some(vec![queue_timed_pipeline()]),
        clock: Some(clock.clone()),
        ..opts(capped(1))
    };
    let mut h = Harness::start(Arc::new(MemoryStorage::new()), opts).await;
    let mut rx = h.tasks.take().unwrap();
    h.engine.start_workflow("cap", "first", "{}").await.unwrap();
    let held = recv(&mut rx, Duration::from_secs(10)).await.unwrap();
    assert_eq!(held.workflow_id, "first");
    h.engine
        .start_workflow("cap", "second", "{}")
        .await
        .unwrap();
    until(&h, "second", "attempt 1 dispatched", |w| {
        w.steps[0].status == StepStatus::Dispatched
    })
    .await;
    let ctx = h.engine.ctx();
    queued(ctx, 1).await;

    // Within its queue timeout nothing happens to the waiting attempt.
    clock.advance(9_000);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let wf = h.engine.describe("second").await.unwrap().unwrap();
    assert_eq!(
        (wf.steps[0].status, wf.steps[0].attempt),
        (StepStatus::Dispatched, 1)
    );
    // Past it: the attempt ends as a queue timeout and backs off.
    clock.advance(1_500);
    let wf = until(&h, "second", "backoff", |w| {
        w.steps[0].status == StepStatus::Backoff
    })
    .await;
    let err = wf.steps[0].last_error.clone().unwrap();
    assert_eq!(
        (err.kind.as_str(), err.message.as_str()),
        ("timeout", "queue timeout")
    );
    // Attempt 2 waits behind the same held slot, and times out too: the
    // attempts are spent and the workflow fails.
    clock.advance(200);
    until(&h, "second", "attempt 2 dispatched", |w| {
        w.steps[0].attempt == 2 && w.steps[0].status == StepStatus::Dispatched
    })
    .await;
    queued(ctx, 1).await;
    clock.advance(10_500);
    let wf = until(&h, "second", "failed", |w| w.status == Status::Failed).await;
    let reason = wf.reason.unwrap();
    assert!(
        reason.contains("step transcribe failed after 2 attempt(s)")
            && reason.contains("queue timeout"),
        "{reason}"
    );
    let view = ctx.capacity.view();
    assert_eq!(
        (view.task_types[0].in_flight, view.task_types[0].queued),
        (1, 0),
        "the held slot is the first workflow's; nothing waits"
    );

    // The gate never sent the timed-out attempts; the first workflow's
    // slot frees and it completes.
    h.engine
        .deliver_result(&held.workflow_id, success(&held))
        .await
        .unwrap();
    let index = recv(&mut rx, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        (index.workflow_id.as_str(), index.step.as_str()),
        ("first", "index")
    );
    h.engine
        .deliver_result(&index.workflow_id, success(&index))
        .await
        .unwrap();
    until(&h, "first", "completed", |w| w.status == Status::Completed).await;
    if let Some(t) = recv(&mut rx, Duration::from_millis(100)).await {
        panic!(
            "sent after its queue timeout: {} {}",
            t.workflow_id, t.task_id
        );
    }
    assert_eq!(ctx.capacity.view().task_types[0].in_flight, 0);
}

/// `name`: transcribe then index, with `in_progress_max` when given.
fn bulk_pipeline(name: &str, in_progress_max: Option<u32>) -> orchestrator::pipeline::PipelineDef {
    let limit = in_progress_max.map_or(String::new(), |n| format!("in_progress_max = {n}\n"));
    let text = format!(
        "[pipeline]\nname = \"{name}\"\nversion = 1\n{limit}\n[[steps]]\nname = \"transcribe\"\n\n\
         [[steps]]\nname = \"index\"\nneeds = [\"transcribe\"]\n"
    );
    orchestrator::pipeline::load::parse_pipeline(&text, "bulk.toml", &Default::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_in_progress_limit_bounds_its_bulk_workflows_while_others_run() {
    use orchestrator::engine::{EngineConfig, Metrics};
    let opts = Options {
        partitions: 1,
        config: EngineConfig {
            partitions: 1,
            tick_ms: 5,
            ..EngineConfig::default()
        },
        pipelines: Some(vec![
            bulk_pipeline("limited", Some(2)),
            bulk_pipeline("free", None),
        ]),
        test_is_worker: true,
        ..Options::default()
    };
    let mut h = Harness::start(Arc::new(MemoryStorage::new()), opts).await;
    let mut rx = h.tasks.take().unwrap();
    let items = |prefix: &str, n: usize| -> Vec<(String, String)> {
        (0..n)
            .map(|i| (format!("{prefix}-{i}"), "{}".to_string()))
            .collect()
    };
    h.engine
        .accept_many("limited", items("l", 10))
        .await
        .unwrap();
    h.engine.accept_many("free", items("f", 4)).await.unwrap();
    h.engine.release_held();
    // Plays the workers, answering the oldest task after each lull, and
    // counts the limited pipeline's workflows in progress (a task seen,
    // its index step not answered).
    let mut out: Vec<TaskSpec> = Vec::new();
    let mut live: BTreeSet<String> = BTreeSet::new();
    let mut completed = 0;
    let mut peak = 0;
    let mut free_first = 0;
    while completed < 14 {
        while let Some(t) = recv(&mut rx, Duration::from_millis(50)).await {
            if t.pipeline == "limited" {
                live.insert(t.workflow_id.clone());
                assert!(live.len() <= 2, "{live:?} in progress, limit 2");
                peak = peak.max(live.len());
            } else if completed == 0 && t.step == "transcribe" {
                free_first += 1;
            }
            out.push(t);
        }
        let ctx = h.engine.ctx();
        let gauge = ctx
            .metrics
            .by_pipeline
            .with("limited", |p| Metrics::get(&p.in_progress));
        assert!(gauge <= 2, "gauge {gauge}");
        assert!(!out.is_empty(), "nothing sent with {completed} of 14 done");
        let t = out.remove(0);
        h.engine
            .deliver_result(&t.workflow_id, success(&t))
            .await
            .unwrap();
        if t.step == "index" {
            completed += 1;
            live.remove(&t.workflow_id);
        }
    }
    assert_eq!(peak, 2, "the limit is used");
    assert_eq!(
        free_first, 4,
        "the other pipeline's bulk work is not held back"
    );
    for i in 0..10 {
        let wf = h.engine.describe(&format!("l-{i}")).await.unwrap().unwrap();
        assert_eq!(wf.status, Status::Completed);
    }
    let ctx = h.engine.ctx();
    let gauges = || {
        ctx.metrics.by_pipeline.with("limited", |p| {
            (Metrics::get(&p.in_progress), p.in_progress_limit.get())
        })
    };
    for _ in 0..2_000 {
        if gauges() == (0, 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(gauges(), (0, 2), "the last ends reach the gauge");
}

/// Real processes: `run` with `[task_types.transcribe] max_in_flight = 8`,
/// one simulated worker that could take 64 tasks at once, 200 workflows.
/// From the worker's execution records (start and end of each), at no
/// instant were more than 8 transcribe executions running, 8 were at some
/// point, and every workflow completed (`verify`).
#[test]
fn capacity_process_a_cap_of_8_holds_across_real_workers_and_all_200_complete() {
    use crate::cli::{bin, Bench};
    use orchestrator::worker::ExecutionRecord;
    use std::process::Stdio;

    let pdir = tempfile::tempdir().unwrap();
    std::fs::write(
        pdir.path().join("capt.toml"),
        "[pipeline]\nname = \"capt\"\nversion = 1\n\n[[steps]]\nname = \"transcribe\"\n\n\
         [[steps]]\nname = \"index\"\nneeds = [\"transcribe\"]\n",
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("orchestrator.toml");
    std::fs::write(&cfg, "[task_types.transcribe]\nmax_in_flight = 8\n").unwrap();
    let record = work.path().join("w.jsonl");
    let inputs = work.path().join("in.jsonl");
    let n = 200;
    let lines: String = (0..n).map(|i| format!("{{\"id\":\"c-{i}\"}}\n")).collect();
    std::fs::write(&inputs, lines).unwrap();

    let mut b = Bench::new(Some(pdir.path().to_path_buf()));
    let mut c = bin();
    c.args(["run", "--nats-url", &b.url(), "--data-dir"])
        .arg(b.dir.path())
        .arg("--pipelines")
        .arg(pdir.path())
        .arg("--config")
        .arg(&cfg)
        .args(["--http-addr", "off"]);
    b.orch = Some(crate::cli::Reaper(
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    b.start_worker(&[
        "--latency-ms",
        "40",
        "--concurrency",
        "64",
        "--record",
        record.to_str().unwrap(),
    ]);
    let url = b.url();
    let backfill = || {
        bin()
            .args(["backfill", "capt", "--input-file"])
            .arg(&inputs)
            .args(["--id-field", "id", "--rate", "1000/s", "--nats-url", &url])
            .output()
            .unwrap()
    };
    let mut out = backfill();
    for _ in 0..100 {
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !(err.contains("no reply") || err.contains("no orchestrator")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        out = backfill();
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let read = || -> Vec<ExecutionRecord> {
        std::fs::read_to_string(&record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let done = read().iter().filter(|r| r.step == "index").count();
        if done >= n {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{done} of {n} indexed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The last results reach the journal after their record line.
    std::thread::sleep(Duration::from_millis(500));
    b.stop();
    let v = b.verify();
    assert_eq!(v["completed"], n.to_string(), "{v:?}");
    assert_eq!(v["violations"], "0", "{v:?}");

    // Executions as [start, end) intervals; at equal times an end comes
    // before a start (the slot is freed before the next task is sent).
    let mut edges: Vec<(u64, i32)> = read()
        .iter()
        .filter(|r| r.step == "transcribe")
        .flat_map(|r| [(r.at_ms, 1), (r.ended_at_ms, -1)])
        .collect();
    edges.sort();
    let (mut running, mut peak) = (0i32, 0i32);
    for (_, d) in edges {
        running += d;
        peak = peak.max(running);
    }
    eprintln!("capacity_process: workflows={n} cap=8 peak_transcribe_running={peak}");
    assert!(
        peak <= 8,
        "{peak} transcribe executions ran at once under a cap of 8"
    );
    assert_eq!(peak, 8, "the cap is used");
}
