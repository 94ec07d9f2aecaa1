//! `verify`: one illegal journal per invariant, and corrupt records.

use std::sync::Arc;

use orchestrator::pipeline::PipelineDef;
use orchestrator::verify::check_journal;
use orchestrator::workflow::{AfterFailure, Event, EventKind, PipelineRef, ReopenMode, TaskError};

use crate::support::video_v1_pipelines;

fn video() -> PipelineDef {
    video_v1_pipelines()
        .into_iter()
        .find(|p| p.name == "video")
        .unwrap()
}

fn ev(kind: EventKind) -> Event {
    Event { at_ms: 1, kind }
}

fn started(p: &PipelineDef) -> EventKind {
    started_as(p, "w")
}

pub(crate) fn started_as(p: &PipelineDef, id: &str) -> EventKind {
    EventKind::WorkflowStarted {
        id: id.into(),
        pipeline: PipelineRef {
            name: p.name.clone(),
            version: p.version,
            hash: p.content_hash(),
        },
        input: "{}".into(),
        steps: p.steps.len() as u16,
        deadline_ms: None,
    }
}

fn dispatch(p: &PipelineDef, step: usize, generation: u32, attempt: u32) -> EventKind {
    EventKind::TaskDispatched {
        step: step as u16,
        attempt,
        task_id: format!("w:{}:{generation}:{attempt}", p.steps[step].name).into(),
    }
}

fn success(step: usize, attempt: u32) -> EventKind {
    EventKind::TaskSucceeded {
        step: step as u16,
        attempt,
        output: "{}".into(),
        worker: None,
        started_at_ms: None,
    }
}

fn failure(step: usize, attempt: u32, retryable: bool, then: AfterFailure) -> EventKind {
    EventKind::TaskFailed {
        step: step as u16,
        attempt,
        error: TaskError {
            kind: "x".into(),
            message: "m".into(),
            retryable,
        },
        worker: None,
        then,
    }
}

fn run(p: &PipelineDef, kinds: Vec<EventKind>) -> Vec<String> {
    let events: Vec<(u64, Event)> = kinds
        .into_iter()
        .enumerate()
        .map(|(i, k)| (i as u64 + 1, ev(k)))
        .collect();
    check_journal("w", p, &events)
        .violations
        .into_iter()
        .map(|v| v.message)
        .collect()
}

fn assert_violates(p: &PipelineDef, kinds: Vec<EventKind>, needle: &str) {
    let v = run(p, kinds);
    assert!(
        v.iter().any(|m| m.contains(needle)),
        "expected a violation containing {needle:?}, got {v:?}"
    );
}

#[test]
fn a_legal_journal_has_no_violations() {
    let p = video();
    let mut k = vec![
        started(&p),
        dispatch(&p, 0, 0, 1),
        failure(0, 1, true, AfterFailure::RetryAt(5)),
        dispatch(&p, 0, 0, 2),
        success(0, 2),
    ];
    k.push(dispatch(&p, 1, 0, 1));
    k.push(success(1, 1));
    assert_eq!(run(&p, k), Vec::<String>::new());
}

#[test]
fn dispatch_before_dependencies_succeeded_is_a_violation() {
    let p = video();
    assert_violates(
        &p,
        vec![started(&p), dispatch(&p, 1, 0, 1)],
        "before its dependency ingest succeeded",
    );
}

#[test]
fn a_step_succeeding_twice_in_a_generation_is_a_violation() {
    let p = video();
    assert_violates(
        &p,
        vec![
            started(&p),
            dispatch(&p, 0, 0, 1),
            success(0, 1),
            success(0, 1),
        ],
        "succeeded twice",
    );
}

#[test]
fn attempts_beyond_the_policy_are_a_violation() {
    let p = video();
    let max = p.steps[0].retry.max_attempts;
    let mut k = vec![started(&p)];
    for a in 1..=max {
        k.push(dispatch(&p, 0, 0, a));
        k.push(failure(0, a, true, AfterFailure::RetryAt(9)));
    }
    k.push(dispatch(&p, 0, 0, max + 1));
    assert_violates(&p, k, "exceeds max_attempts");
}

#[test]
fn a_terminal_workflow_changing_without_reopen_is_a_violation() {
    let p = video();
    assert_violates(
        &p,
        vec![
            started(&p),
            EventKind::WorkflowCancelled { reason: "x".into() },
            dispatch(&p, 0, 0, 1),
        ],
        "after the workflow became cancelled",
    );
}

#[test]
fn a_reopen_must_start_the_next_generation_from_a_terminal_state() {
    let p = video();
    let reopen = |generation| EventKind::WorkflowReopened {
        generation,
        mode: ReopenMode::RetryFailed,
        reset: (0..9).collect(),
        deadline_ms: None,
    };
    assert_violates(&p, vec![started(&p), reopen(1)], "reopened while running");
    assert_violates(
        &p,
        vec![
            started(&p),
            EventKind::WorkflowFailed {
                step: None,
                reason: "x".into(),
            },
            reopen(3),
        ],
        "generation 3 after 0",
    );
}

#[test]
fn gaps_wrong_task_ids_retried_fatal_errors_and_early_completion_are_violations() {
    let p = video();
    let events = vec![(1, ev(started(&p))), (3, ev(dispatch(&p, 0, 0, 1)))];
    assert!(check_journal("w", &p, &events)
        .violations
        .iter()
        .any(|v| v.message.contains("sequence gap")));
    let bad_id = EventKind::TaskDispatched {
        step: 0,
        attempt: 1,
        task_id: "other".into(),
    };
    assert_violates(&p, vec![started(&p), bad_id], "task id");
    assert_violates(
        &p,
        vec![
            started(&p),
            dispatch(&p, 0, 0, 1),
            failure(0, 1, false, AfterFailure::RetryAt(3)),
        ],
        "retried a non-retryable",
    );
    assert_violates(
        &p,
        vec![started(&p), EventKind::WorkflowCompleted],
        "completed while step ingest",
    );
    assert_violates(&p, vec![dispatch(&p, 0, 0, 1)], "not workflow_started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_stored_record_is_reported_as_corrupt() {
    use orchestrator::storage::rocks::{RocksConfig, RocksStorage};
    use orchestrator::storage::{Op, Storage};
    let dir = tempfile::tempdir().unwrap();
    {
        let storage: Arc<dyn Storage> =
            Arc::new(RocksStorage::open(dir.path(), &RocksConfig::default()).unwrap());
        let h = crate::support::Harness::start(storage.clone(), crate::support::Options::default())
            .await;
        for i in 0..5 {
            let id = format!("b-{i}");
            h.engine
                .start_workflow("video", &id, &crate::support::video_input(&id))
                .await
                .unwrap();
        }
        h.wait_terminal(5, std::time::Duration::from_secs(30)).await;
        let clean = orchestrator::verify::verify_store(&h.store).unwrap();
        assert_eq!(
            (clean.completed, clean.violations, clean.corrupt),
            (5, 0, 0),
            "{:?}",
            clean.details
        );
        h.stop().await;
        // Flip one byte in the middle of the first journal record.
        let mut first: Option<(Vec<u8>, Vec<u8>)> = None;
        storage
            .scan(b"J", b"K", &mut |k, v| {
                first = Some((k.to_vec(), v.to_vec()));
                false
            })
            .unwrap();
        let (key, mut value) = first.expect("a journal record");
        let mid = value.len() / 2;
        value[mid] ^= 0x5a;
        storage.write(&[Op::Put(key, value)], true).unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["verify", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "verify must fail: {stdout}");
    assert!(stdout.contains("corrupt=1"), "{stdout}");
    assert!(stdout.contains("workflows=5"), "{stdout}");
}

/// The same illegal journals, written into a store: `verify_store` (what
/// `orchestrator verify` runs) reports a violation for each of them.
#[test]
fn verify_reports_each_illegal_journal_written_to_a_store() {
    use orchestrator::storage::memory::MemoryStorage;
    use orchestrator::storage::store::WorkflowStore;
    use orchestrator::storage::Storage;
    use orchestrator::workflow::JournalRecord;

    let p = video();
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let store = WorkflowStore::open(storage.clone(), 4).unwrap();
    let max = p.steps[0].retry.max_attempts;
    let mut too_many = vec![];
    for a in 1..=max {
        too_many.push(dispatch(&p, 0, 0, a));
        too_many.push(failure(0, a, true, AfterFailure::RetryAt(9)));
    }
    too_many.push(dispatch(&p, 0, 0, max + 1));
    let cases: Vec<(&str, Vec<EventKind>)> = vec![
        ("early-dispatch", vec![dispatch(&p, 1, 0, 1)]),
        (
            "double-success",
            vec![dispatch(&p, 0, 0, 1), success(0, 1), success(0, 1)],
        ),
        ("too-many-attempts", too_many),
        (
            "after-terminal",
            vec![
                EventKind::WorkflowCancelled { reason: "x".into() },
                dispatch(&p, 0, 0, 1),
            ],
        ),
        (
            "fatal-retried",
            vec![
                dispatch(&p, 0, 0, 1),
                failure(0, 1, false, AfterFailure::RetryAt(3)),
            ],
        ),
        ("early-complete", vec![EventKind::WorkflowCompleted]),
    ];
    let mut ops = vec![store
        .pipeline_put(&p.name, p.version, p.content_hash(), &p)
        .unwrap()];
    for (id, kinds) in &cases {
        let mut events = vec![ev(started_as(&p, id))];
        events.extend(kinds.iter().cloned().map(ev));
        // Task ids in these journals name workflow "w"; rewrite them for this id.
        for e in &mut events {
            if let EventKind::TaskDispatched { task_id, .. } = &mut e.kind {
                *task_id = task_id.replacen("w:", &format!("{id}:"), 1).into();
            }
        }
        let part = store.partition_of(id);
        let record = JournalRecord {
            first_seq: 1,
            events,
        };
        ops.push(store.journal_put(part, id, 1, &record).unwrap());
    }
    storage.write(&ops, true).unwrap();
    let report = orchestrator::verify::verify_store(&store).unwrap();
    assert_eq!(report.workflows, cases.len() as u64);
    assert_eq!(report.corrupt, 0);
    for (id, _) in &cases {
        assert!(
            report
                .details
                .iter()
                .any(|d| d.starts_with(&format!("workflow {id} "))),
            "no violation reported for {id}: {:?}",
            report.details
        );
    }
    assert!(report.violations >= cases.len() as u64);
}

/// The raw journal records of `id`, in seq order.
fn journal_records(
    storage: &dyn orchestrator::storage::Storage,
    store: &orchestrator::storage::store::WorkflowStore,
    id: &str,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let r = orchestrator::storage::keys::journal_range(store.partition_of(id), id, 1).unwrap();
    let mut out = Vec::new();
    storage
        .scan(&r.from, &r.to, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        })
        .unwrap();
    out
}

/// Disk corruption: a journal record with a flipped byte, a torn (truncated)
/// journal record and a snapshot with a flipped byte, each in a different
/// workflow. `verify` names exactly those workflows; a restarted engine
/// refuses to serve them (never a state built around the damage) and runs
/// every other workflow, recovered or new, to completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_records_are_reported_and_never_served_while_the_rest_runs() {
    use std::time::Duration;

    use orchestrator::engine::Metrics;
    use orchestrator::storage::memory::MemoryStorage;
    use orchestrator::storage::{Op, Storage};
    use orchestrator::workflow::{Input, Status};

    use crate::support::{video_input, Harness, Options};

    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    // Four workflows run to completion (each ends with a snapshot)...
    let h = Harness::start(storage.clone(), Options::default()).await;
    for i in 0..4 {
        let id = format!("done-{i}");
        h.engine
            .start_workflow("video", &id, &video_input(&id))
            .await
            .unwrap();
    }
    h.wait_terminal(4, Duration::from_secs(30)).await;
    h.stop().await;
    // ...and four stay mid-flight: their workers never answer.
    let mut opts = Options::default();
    opts.sim.latency_ms = 3_600_000;
    let h = Harness::start(storage.clone(), opts).await;
    for i in 0..4 {
        let id = format!("run-{i}");
        h.engine
            .start_workflow("video", &id, &video_input(&id))
            .await
            .unwrap();
    }
    let store = h.store.clone();
    h.stop().await;
    let clean = orchestrator::verify::verify_store(&store).unwrap();
    assert_eq!(
        (
            clean.workflows,
            clean.completed,
            clean.running,
            clean.corrupt
        ),
        (8, 4, 4, 0),
        "{:?}",
        clean.details
    );

    // run-0: a flipped byte in its (only, snapshot-less) journal record.
    let (key, mut value) = journal_records(&*storage, &store, "run-0").pop().unwrap();
    let mid = value.len() / 2;
    value[mid] ^= 0x01;
    let mut ops = vec![Op::Put(key, value)];
    // run-1: its last journal record torn in half.
    let (key, mut value) = journal_records(&*storage, &store, "run-1").pop().unwrap();
    value.truncate(value.len() / 2);
    ops.push(Op::Put(key, value));
    // done-1: a flipped byte in its terminal snapshot.
    let key =
        orchestrator::storage::keys::snapshot(store.partition_of("done-1"), "done-1").unwrap();
    let mut value = storage.get(&key).unwrap().expect("done-1 has a snapshot");
    let last = value.len() - 1;
    value[last] ^= 0x80;
    ops.push(Op::Put(key, value));
    storage.write(&ops, true).unwrap();

    let corrupt = ["run-0", "run-1", "done-1"];
    let assert_verify_names_exactly_the_corrupt = |when: &str| {
        let report = orchestrator::verify::verify_store(&store).unwrap();
        assert_eq!(report.corrupt, 3, "{when}: {:?}", report.details);
        for id in corrupt {
            assert!(
                report
                    .details
                    .iter()
                    .any(|d| d.starts_with(&format!("workflow {id}: corrupt"))),
                "{when}: {id} not reported: {:?}",
                report.details
            );
        }
        for i in 0..4 {
            for id in [format!("done-{i}"), format!("run-{i}")] {
                if !corrupt.contains(&id.as_str()) {
                    assert!(
                        !report.details.iter().any(|d| d.contains(&format!(" {id}"))),
                        "{when}: healthy {id} reported: {:?}",
                        report.details
                    );
                }
            }
        }
    };
    assert_verify_names_exactly_the_corrupt("before restart");

    // Restart with answering workers.
    let h = Harness::start(storage.clone(), Options::default()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    // Recovery flags the two corrupt running workflows.
    while Metrics::get(&h.metrics.corrupt_workflows) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "recovery did not flag run-0 and run-1"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for id in corrupt {
        let d = h.engine.describe(id).await;
        assert!(d.is_err(), "{id} served despite corruption: {d:?}");
        let sent = h
            .engine
            .send(
                id,
                Input::Cancel {
                    reason: "poke".into(),
                },
            )
            .await;
        assert!(sent.is_err(), "{id} accepted an input: {sent:?}");
    }
    h.engine
        .start_workflow("video", "new-0", &video_input("new-0"))
        .await
        .unwrap();
    // Everything else completes: the two healthy recovered ones and the new one.
    for id in ["run-2", "run-3", "new-0", "done-0", "done-2", "done-3"] {
        loop {
            let wf = h.engine.describe(id).await.unwrap().expect("exists");
            if wf.status == Status::Completed {
                break;
            }
            assert_eq!(wf.status, Status::Running, "{id}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} did not complete"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    h.stop().await;
    // The engine did not write over the damage (nor around it).
    assert_verify_names_exactly_the_corrupt("after restart");
}
