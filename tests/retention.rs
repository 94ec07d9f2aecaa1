//! Retention (terminal workflows purged after `retention.after`, on a manual
//! clock) and backup (a checkpoint of a live `orchestrator run`, restored
//! into a new node).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator::engine::{EngineConfig, ManualClock, Metrics, RetentionConfig};
use orchestrator::sim::SimConfig;
use orchestrator::storage::memory::MemoryStorage;
use orchestrator::storage::store::WorkflowStore;
use orchestrator::verify::verify_store;
use orchestrator::workflow::{Input, Outcome, ReopenMode, Status, StepStatus, WorkflowState};

use crate::cli::{bin, fields, num, wait_exit, Bench};
use crate::support::{Harness, Options};

const AFTER_MS: u64 = 600_000;

fn two_steps() -> orchestrator::pipeline::PipelineDef {
    let text = r#"
[pipeline]
name = "short"
version = 1
[[steps]]
name = "a"
[[steps]]
name = "b"
needs = ["a"]
"#;
    orchestrator::pipeline::load::parse_pipeline(text, "short.toml", &Default::default()).unwrap()
}

async fn wait_for(
    h: &Harness,
    id: &str,
    what: &str,
    cond: impl Fn(&WorkflowState) -> bool,
) -> WorkflowState {
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

/// Advances the manual clock in 1 s steps (one sweep round each) until
/// `n` workflows were purged in all.
async fn purge_until(h: &Harness, clock: &ManualClock, n: u64) {
    for _ in 0..150 {
        if Metrics::get(&h.metrics.workflows_purged) >= n {
            return;
        }
        clock.advance(1_000);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "only {} of {n} purged",
        Metrics::get(&h.metrics.workflows_purged)
    );
}

/// Nothing of workflow `id` is left in storage: journal, snapshot, status
/// index entries, timers.
fn assert_no_rows(store: &WorkflowStore, id: &str) {
    let p = store.partition_of(id);
    let journal: Vec<(u64, orchestrator::workflow::JournalRecord)> =
        store.load_journal(p, id, 0).unwrap();
    assert!(journal.is_empty(), "{id}: journal left");
    assert!(
        store.load_snapshot::<WorkflowState>(p, id).unwrap().is_none(),
        "{id}: snapshot left"
    );
    assert!(!store.workflow_exists(p, id).unwrap());
    for s in Status::ALL {
        let listed: Vec<(String, orchestrator::engine::transition::StatusEntry)> =
            store.list_status(p, s.code(), usize::MAX).unwrap();
        assert!(listed.iter().all(|(i, _)| i != id), "{id}: index entry left");
    }
    let timers = store
        .timer_deletes_where(p, &mut |t| t == id)
        .unwrap();
    assert!(timers.is_empty(), "{id}: timers left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_workflows_are_purged_after_retention_and_live_or_reopened_ones_stay() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let opts = Options {
        pipelines: Some(vec![two_steps()]),
        clock: Some(clock.clone()),
        sim: SimConfig {
            latency_ms: 50,
            ..SimConfig::default()
        },
        config: EngineConfig {
            partitions: 4,
            tick_ms: 5,
            retention: RetentionConfig {
                after_ms: Some(AFTER_MS),
                sweep_every_ms: 1_000,
                // Small, so a round takes several batches and ticks.
                batch_max: 3,
                scan_max: 4,
            },
            ..EngineConfig::default()
        },
        ..Options::default()
    };
    let storage = Arc::new(MemoryStorage::new());
    let h = Harness::start(storage.clone(), opts).await;
    let e = &h.engine;
    let done: Vec<String> = (0..10).map(|i| format!("done-{i}")).collect();
    for id in &done {
        e.start_workflow("short", id, "{}").await.unwrap();
    }
    // Paused: not terminal, never purged.
    let held: Vec<String> = (0..3).map(|i| format!("held-{i}")).collect();
    for id in &held {
        e.start_workflow("short", id, "{}").await.unwrap();
        assert_eq!(e.send(id, Input::Pause).await.unwrap(), Outcome::Applied);
    }
    // Cancelled: terminal.
    let cancelled: Vec<String> = (0..2).map(|i| format!("gone-{i}")).collect();
    for id in &cancelled {
        e.start_workflow("short", id, "{}").await.unwrap();
        let r = e
            .send(
                id,
                Input::Cancel {
                    reason: "test".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(r, Outcome::Applied);
    }
    e.start_workflow("short", "reopened", "{}").await.unwrap();
    for id in done.iter().chain(["reopened".to_string()].iter()) {
        wait_for(&h, id, "completed", |w| w.status == Status::Completed).await;
    }
    for id in &held {
        wait_for(&h, id, "paused with step a done", |w| {
            w.status == Status::Paused && w.steps[0].status == StepStatus::Succeeded
        })
        .await;
    }
    assert_eq!(Metrics::get(&h.metrics.workflows_purged), 0);

    // Half-way to the deadline `reopened` is rerun: terminal again later,
    // so its retention starts again from then.
    clock.advance(AFTER_MS / 2);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(Metrics::get(&h.metrics.workflows_purged), 0, "nothing due yet");
    let r = e
        .send("reopened", Input::Reopen(ReopenMode::RerunFrom("a".into())))
        .await
        .unwrap();
    assert_eq!(r, Outcome::Applied);
    wait_for(&h, "reopened", "completed again", |w| {
        w.status == Status::Completed && w.generation == 1
    })
    .await;

    // Past the first deadline: the ten completed and two cancelled go.
    clock.advance(AFTER_MS / 2 + 1_000);
    purge_until(&h, &clock, 12).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(Metrics::get(&h.metrics.workflows_purged), 12);
    for id in done.iter().chain(&cancelled) {
        assert!(e.describe(id).await.unwrap().is_none(), "{id} still there");
        assert_no_rows(&h.store, id);
    }
    for id in &held {
        let wf = e.describe(id).await.unwrap().expect("paused stays");
        assert_eq!(wf.status, Status::Paused);
    }
    let wf = e.describe("reopened").await.unwrap().expect("reopened stays");
    assert_eq!(wf.status, Status::Completed);
    // A reopen after the purge finds nothing.
    let err = e
        .send("done-0", Input::Reopen(ReopenMode::RerunFrom("a".into())))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown workflow"), "{err}");
    let report = verify_store(&h.store).unwrap();
    assert_eq!(
        (report.workflows, report.violations, report.corrupt),
        (4, 0, 0),
        "{:?}",
        report.details
    );

    // The rerun's own deadline passes: it goes too; paused ones stay.
    clock.advance(AFTER_MS / 2);
    purge_until(&h, &clock, 13).await;
    assert!(e.describe("reopened").await.unwrap().is_none());
    assert_no_rows(&h.store, "reopened");
    let report = verify_store(&h.store).unwrap();
    assert_eq!(
        (report.workflows, report.running, report.violations),
        (3, 3, 0),
        "{report}"
    );
    // A purged id can be started afresh.
    let s = e.start_workflow("short", "done-1", "{}").await.unwrap();
    assert!(s.created);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_off_keeps_everything_and_memory_storage_refuses_checkpoints() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let opts = Options {
        pipelines: Some(vec![two_steps()]),
        clock: Some(clock.clone()),
        config: EngineConfig {
            partitions: 4,
            tick_ms: 5,
            retention: RetentionConfig {
                after_ms: None,
                ..RetentionConfig::default()
            },
            ..EngineConfig::default()
        },
        ..Options::default()
    };
    let storage = Arc::new(MemoryStorage::new());
    let h = Harness::start(storage.clone(), opts).await;
    h.engine.start_workflow("short", "w", "{}").await.unwrap();
    wait_for(&h, "w", "completed", |w| w.status == Status::Completed).await;
    clock.advance(400 * 86_400_000);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(h.engine.describe("w").await.unwrap().is_some());
    assert_eq!(Metrics::get(&h.metrics.workflows_purged), 0);
    let dir = tempfile::tempdir().unwrap();
    let err = h
        .engine
        .checkpoint(&dir.path().join("cp"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unsupported"), "{err}");
    h.stop().await;
}
