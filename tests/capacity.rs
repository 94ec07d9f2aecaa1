//! The admission gate in a running engine: a cap on a task type holds at
//! every instant while every workflow completes; a reload raises a cap and
//! the waiting tasks go; a restart with tasks waiting loses none of them.

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
    let text = r#"
[pipeline]
name = "cap"
version = 1

[[steps]]
name = "transcribe"

[[steps]]
name = "index"
needs = ["transcribe"]
"#;
    orchestrator::pipeline::load::parse_pipeline(text, "cap.toml", &Default::default()).unwrap()
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
