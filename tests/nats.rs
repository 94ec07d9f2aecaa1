//! The engine over a real `nats-server` (started per test on a random port).

use std::sync::Arc;
use std::time::Duration;

use orchestrator::engine::Metrics;
use orchestrator::sim::SimConfig;
use orchestrator::storage::memory::MemoryStorage;
use orchestrator::verify::verify_store;
use orchestrator::workflow::Status;

use crate::support::nats::NatsServer;
use crate::support::{video_input, Harness, Options};

fn over(server: &NatsServer, latency_ms: u64, fail_rate: f64) -> Options {
    Options {
        nats_url: Some(server.url()),
        sim: SimConfig {
            latency_ms,
            fail_rate,
            seed: 7,
            worker: "nats-sim".into(),
            ..SimConfig::default()
        },
        ..Options::default()
    }
}

/// Runs video workflows `<prefix>-0`, `<prefix>-1`, … one at a time until
/// `ready()` (up to 10, else fails with `never`); returns how many ran.
/// Until the simulated worker listens for offers, tasks go to the stream.
async fn one_at_a_time_until(
    h: &Harness,
    prefix: &str,
    never: &str,
    ready: impl Fn() -> bool,
) -> u64 {
    let mut n = 0;
    while !ready() {
        assert!(n < 10, "{never}");
        let id = format!("{prefix}-{n}");
        h.engine
            .start_workflow("video", &id, &video_input(&id))
            .await
            .unwrap();
        n += 1;
        h.wait_terminal(n, Duration::from_secs(60)).await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_video_pipeline_runs_over_nats_with_failures_and_correct_outputs() {
    use std::sync::atomic::Ordering::Relaxed;
    let server = NatsServer::start();
    let h = Harness::start(Arc::new(MemoryStorage::new()), over(&server, 5, 0.1)).await;
    for i in 0..20 {
        let id = format!("n-{i}");
        h.engine
            .start_workflow("video", &id, &video_input(&id))
            .await
            .unwrap();
    }
    h.wait_terminal(20, Duration::from_secs(90)).await;
    assert_eq!(Metrics::get(&h.metrics.workflows_completed), 20);
    assert_eq!(Metrics::get(&h.metrics.output_errors), 0);
    let wf = h.engine.describe("n-3").await.unwrap().unwrap();
    assert_eq!(wf.status, Status::Completed);
    assert_eq!(wf.steps[8].worker.as_deref(), Some("nats-sim"));
    // 5 ms tasks, within `tasks_direct_result_within` (50 ms): each offer
    // a worker took was answered with the task's result.
    let stats = h.nats_stats.clone().expect("over NATS");
    let direct = stats.tasks_direct.load(Relaxed);
    assert!(direct > 0, "no task went by offer");
    // (Not all: on a loaded machine a 5 ms task may overrun the window.)
    let inline = stats.results_in_offer_reply.load(Relaxed);
    assert!(inline > 0 && inline <= direct, "{inline} of {direct}");
    let report = verify_store(&h.store).unwrap();
    assert_eq!(
        (report.completed, report.violations, report.corrupt),
        (20, 0, 0),
        "{:?}",
        report.details
    );
    h.stop().await;
}

/// A task that runs longer than `tasks_direct_result_within`: the worker
/// answers the offer `taken` when the window closes and sends the result on
/// its own when it has it; the workflows complete all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_longer_than_the_offer_window_send_their_results_on_their_own() {
    use std::sync::atomic::Ordering::Relaxed;
    let server = NatsServer::start();
    let h = Harness::start(Arc::new(MemoryStorage::new()), over(&server, 80, 0.0)).await;
    for i in 0..3 {
        let id = format!("slow-{i}");
        h.engine
            .start_workflow("video", &id, &video_input(&id))
            .await
            .unwrap();
    }
    h.wait_terminal(3, Duration::from_secs(60)).await;
    assert_eq!(Metrics::get(&h.metrics.workflows_completed), 3);
    assert_eq!(Metrics::get(&h.metrics.output_errors), 0);
    let stats = h.nats_stats.clone().expect("over NATS");
    assert!(stats.tasks_direct.load(Relaxed) > 0, "no offer was taken");
    assert_eq!(stats.results_in_offer_reply.load(Relaxed), 0);
    let report = verify_store(&h.store).unwrap();
    assert_eq!(
        (report.completed, report.violations),
        (3, 0),
        "{:?}",
        report.details
    );
    h.stop().await;
}

/// A result that answered its offer but cannot be journaled: the transport
/// tries again until `tasks_direct_result_apply_for` runs out (the engine
/// no longer watches the attempt, and the result exists nowhere else),
/// then publishes the task to the stream, where it runs again; the
/// workflow completes and the journal is sound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_in_an_offer_answer_the_journal_refuses_runs_its_task_again_via_the_stream() {
    use std::sync::atomic::Ordering::Relaxed;
    let server = NatsServer::start();
    let mut opts = over(&server, 5, 0.0);
    opts.nats_tune = Some(|c| c.tasks_direct_result_apply_for = Duration::from_millis(200));
    let store = Arc::new(MemoryStorage::new());
    let h = Harness::start(store.clone(), opts).await;
    let stats = h.nats_stats.clone().expect("over NATS");
    // Until the worker listens for offers, tasks go to the stream.
    let warm = one_at_a_time_until(&h, "warm", "no result ever answered an offer", || {
        stats.results_in_offer_reply.load(Relaxed) > 0
    })
    .await;
    let (streamed, inline) = (
        stats.tasks_stream.load(Relaxed),
        stats.results_in_offer_reply.load(Relaxed),
    );
    h.engine
        .start_workflow("video", "jf", &video_input("jf"))
        .await
        .unwrap();
    // The next writes fail: the first task's result, tried again for
    // 200 ms (20, 40, 80 ms backoff), then its run from the stream, whose
    // direct result its worker sends again until one is journaled.
    store.fail_next_writes(8);
    h.wait_terminal(warm + 1, Duration::from_secs(60)).await;
    assert_eq!(Metrics::get(&h.metrics.workflows_completed), warm + 1);
    assert_eq!(Metrics::get(&h.metrics.output_errors), 0);
    assert!(stats.results_in_offer_reply.load(Relaxed) > inline);
    assert!(
        stats.tasks_stream.load(Relaxed) > streamed,
        "the task whose result was not journaled did not go to the stream"
    );
    let report = verify_store(&h.store).unwrap();
    assert_eq!(
        (report.completed, report.violations),
        (warm + 1, 0),
        "{:?}",
        report.details
    );
    h.stop().await;
}

/// Direct task offers end to end: a worker with one slot takes an offer
/// while it is free and declines the ones that arrive while it is busy;
/// those reach it through the TASKS stream, and every workflow completes
/// with the right outputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_declines_offers_and_the_stream_delivers_them() {
    use orchestrator::transport::nats::OfferDeclined;
    use std::sync::atomic::Ordering::Relaxed;
    let server = NatsServer::start();
    let mut opts = over(&server, 30, 0.0);
    opts.sim.concurrency = 1;
    let h = Harness::start(Arc::new(MemoryStorage::new()), opts).await;
    let stats = h.nats_stats.clone().expect("over NATS");
    // Workflows one at a time first, until the worker listens for offers:
    // its idle slot then takes them (tasks sent before went to the stream).
    let alone = one_at_a_time_until(&h, "alone", "the worker never took an offer", || {
        stats.tasks_direct.load(Relaxed) > 0
    })
    .await;
    // Then six at once: offers that arrive while the slot is busy are declined.
    for i in 0..6 {
        let id = format!("busy-{i}");
        h.engine
            .start_workflow("video", &id, &video_input(&id))
            .await
            .unwrap();
    }
    let all = alone + 6;
    h.wait_terminal(all, Duration::from_secs(90)).await;
    assert_eq!(Metrics::get(&h.metrics.workflows_completed), all);
    assert_eq!(Metrics::get(&h.metrics.output_errors), 0);
    let (direct, stream, busy) = (
        stats.tasks_direct.load(Relaxed),
        stats.tasks_stream.load(Relaxed),
        stats.offers_declined[OfferDeclined::Busy as usize].load(Relaxed),
    );
    assert!(direct > 0, "no offer was taken");
    assert!(busy > 0, "a worker with one slot declined nothing");
    assert_eq!(direct + stream, 9 * all, "each task went one way");
    let declined: u64 = stats.offers_declined.iter().map(|c| c.load(Relaxed)).sum();
    assert_eq!(stream, declined, "each declined offer went to the stream");
    let report = verify_store(&h.store).unwrap();
    assert_eq!(
        (report.completed, report.violations),
        (all, 0),
        "{:?}",
        report.details
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_and_unknown_results_change_nothing_and_are_counted() {
    let server = NatsServer::start();
    let h = Harness::start(Arc::new(MemoryStorage::new()), over(&server, 0, 0.0)).await;
    h.engine
        .start_workflow("video", "ok-1", &video_input("ok-1"))
        .await
        .unwrap();
    h.wait_terminal(1, Duration::from_secs(30)).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let key = h.attempt_key.clone().unwrap();
    let p = h.store.partition_of("ok-1");
    let subject = format!("narralytica.results.{p}");
    let big = format!(r#"{{"v":1,"pad":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
    // An unknown workflow of the same partition (its results subject).
    let ghost = (0..)
        .map(|i| format!("ghost-{i}"))
        .find(|g| h.store.partition_of(g) == p)
        .unwrap();
    let with_token = |task_id: &str, body: &str| {
        format!(
            r#"{{"v":1,"task_id":"{task_id}","attempt_token":"{}",{body}}}"#,
            key.token(task_id)
        )
        .into_bytes()
    };
    let bad: Vec<Vec<u8>> = vec![
        b"{not json".to_vec(),
        br#"{"v":9,"task_id":"t","workflow_id":"ok-1","step":"ingest","attempt":1,"status":"succeeded","output":{}}"#.to_vec(),
        br#"{"v":1,"task_id":"t","workflow_id":"ok-1","step":"ingest","attempt":1,"status":"succeeded"}"#.to_vec(),
        big.into_bytes(),
        with_token(
            &format!("{ghost}:ingest:0:1"),
            &format!(
                r#""workflow_id":"{ghost}","step":"ingest","attempt":1,"status":"succeeded","output":{{}}"#
            ),
        ),
        with_token(
            "ok-1:ingest:0:1",
            r#""workflow_id":"ok-1","step":"ingest","attempt":1,"status":"succeeded","output":{"n":99}"#,
        ),
    ];
    for b in bad {
        // The oversized one is refused by the server itself (stream max message size).
        if let Ok(ack) = js.publish(subject.clone(), b.into()).await {
            let _ = ack.await;
        }
    }
    let m = &h.metrics;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let refused = Metrics::get(&m.messages_malformed)
            + Metrics::get(&m.messages_unsupported_version)
            + Metrics::get(&m.messages_invalid);
        let ignored = Metrics::get(&m.unknown_tasks) + Metrics::get(&m.late_results);
        if refused >= 3 && ignored >= 2 {
            assert_eq!(Metrics::get(&m.messages_malformed), 1);
            assert_eq!(Metrics::get(&m.messages_unsupported_version), 1);
            assert_eq!(Metrics::get(&m.messages_invalid), 1);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "refused {refused}, ignored {ignored}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wf = h.engine.describe("ok-1").await.unwrap().unwrap();
    assert_eq!(wf.status, Status::Completed);
    assert!(
        wf.steps[0].output.as_deref().unwrap().contains("\"n\":1"),
        "state unchanged"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_mid_run_loses_nothing() {
    let mut server = NatsServer::start();
    let h = Harness::start(Arc::new(MemoryStorage::new()), over(&server, 100, 0.0)).await;
    for i in 0..20 {
        let id = format!("o-{i}");
        h.engine
            .start_workflow("video", &id, &video_input(&id))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(h.terminal() < 20, "the outage must hit a run in progress");
    server.kill();
    tokio::time::sleep(Duration::from_secs(10)).await;
    server.restart();
    h.wait_terminal(20, Duration::from_secs(120)).await;
    assert_eq!(Metrics::get(&h.metrics.workflows_completed), 20);
    assert_eq!(Metrics::get(&h.metrics.output_errors), 0);
    let report = verify_store(&h.store).unwrap();
    assert_eq!(
        (report.completed, report.violations, report.corrupt),
        (20, 0, 0),
        "{:?}",
        report.details
    );
    h.stop().await;
}

fn beat_pipeline() -> orchestrator::pipeline::PipelineDef {
    let text = "[pipeline]\nname = \"beat\"\nversion = 1\n[defaults.retry]\nmax_attempts = 3\n\
                initial_backoff = \"100ms\"\nmax_backoff = \"100ms\"\n[defaults.timeouts]\n\
                heartbeat = \"1s\"\nstart_to_close = \"10m\"\n[[steps]]\nname = \"slow\"\n";
    orchestrator::pipeline::load::parse_pipeline(text, "beat.toml", &Default::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_long_task_alive_past_its_heartbeat_timeout() {
    let server = NatsServer::start();
    let opts = Options {
        pipelines: Some(vec![beat_pipeline()]),
        ..over(&server, 3_500, 0.0)
    };
    let h = Harness::start(Arc::new(MemoryStorage::new()), opts).await;
    h.engine
        .start_workflow("beat", "long-1", "{}")
        .await
        .unwrap();
    h.wait_terminal(1, Duration::from_secs(30)).await;
    let wf = h.engine.describe("long-1").await.unwrap().unwrap();
    assert_eq!(wf.status, Status::Completed);
    assert_eq!(
        wf.steps[0].attempt, 1,
        "3.5 s of work with a 1 s heartbeat timeout, done in one attempt"
    );
    assert_eq!(Metrics::get(&h.metrics.task_timeouts), 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_workflows_running_task_receives_the_cancel_message() {
    use futures_util::StreamExt;
    let server = NatsServer::start();
    let opts = Options {
        pipelines: Some(vec![beat_pipeline()]),
        ..over(&server, 60_000, 0.0)
    };
    let h = Harness::start(Arc::new(MemoryStorage::new()), opts).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut cancels = client.subscribe("narralytica.cancel.slow").await.unwrap();
    client.flush().await.unwrap();
    h.engine
        .start_workflow("beat", "doomed-1", "{}")
        .await
        .unwrap();
    // Wait until the worker has started it (its heartbeat reached the engine).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let outcome = h
        .engine
        .send(
            "doomed-1",
            orchestrator::workflow::Input::Cancel {
                reason: "ops".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(outcome, orchestrator::workflow::Outcome::Applied);
    let msg = tokio::time::timeout(Duration::from_secs(5), cancels.next())
        .await
        .expect("a cancel message")
        .unwrap();
    let cancel: orchestrator::protocol::CancelMessage =
        serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(
        (cancel.task_id.as_str(), cancel.workflow_id.as_str()),
        ("doomed-1:slow:0:1", "doomed-1")
    );
    assert_eq!(
        h.engine.describe("doomed-1").await.unwrap().unwrap().status,
        Status::Cancelled
    );
    h.stop().await;
}

/// Three steps with short timeouts, so hung and late attempts are noticed fast.
fn faulty_pipeline() -> orchestrator::pipeline::PipelineDef {
    let text = "[pipeline]\nname = \"faulty\"\nversion = 1\n[defaults.retry]\nmax_attempts = 20\n\
                initial_backoff = \"20ms\"\nmax_backoff = \"100ms\"\n[defaults.timeouts]\n\
                schedule_to_start = \"700ms\"\nheartbeat = \"700ms\"\nstart_to_close = \"2s\"\n\
                [[steps]]\nname = \"a\"\n[[steps]]\nname = \"b\"\nneeds = [\"a\"]\n\
                [[steps]]\nname = \"c\"\nneeds = [\"b\"]\n";
    orchestrator::pipeline::load::parse_pipeline(text, "faulty.toml", &Default::default()).unwrap()
}

/// Workers that hang, answer twice and answer superseded attempts late: every
/// workflow still completes, each extra answer is recognised (duplicate or
/// stale attempt) and changes nothing, and the journal verifies clean. The
/// workers' `--record` accounts for every execution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_duplicate_and_stale_answers_over_nats_change_nothing() {
    use orchestrator::worker::{ExecutionRecord, WorkerFaults};
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("executions.jsonl");
    let opts = Options {
        pipelines: Some(vec![faulty_pipeline()]),
        worker_faults: WorkerFaults {
            hang_rate: 0.15,
            duplicate_rate: 0.3,
            stale_rate: 0.2,
            record: Some(record.clone()),
            stale_max: 1000,
            ..WorkerFaults::default()
        },
        ..over(&server, 0, 0.0)
    };
    let h = Harness::start(Arc::new(MemoryStorage::new()), opts).await;
    let n = 30;
    for i in 0..n {
        h.engine
            .start_workflow("faulty", &format!("f-{i}"), "{}")
            .await
            .unwrap();
    }
    h.wait_terminal(n, Duration::from_secs(90)).await;
    assert_eq!(Metrics::get(&h.metrics.workflows_completed), n);
    let report = verify_store(&h.store).unwrap();
    assert_eq!(
        (report.violations, report.corrupt),
        (0, 0),
        "{:?}",
        report.details
    );
    // Give the last late answers time to arrive and be classified.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let recs: Vec<ExecutionRecord> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("record line is JSON"))
        .collect();
    let count = |o: &str| recs.iter().filter(|r| r.outcome == o).count() as u64;
    let doubled = recs.iter().filter(|r| r.answers == 2).count() as u64;
    assert!(
        count("hung") > 0 && count("late") > 0 && doubled > 0,
        "faults drawn: {recs:?}"
    );
    assert!(
        Metrics::get(&h.metrics.task_timeouts) >= count("hung"),
        "every hung execution timed out"
    );
    eprintln!(
        "hung={} late={} doubled={} timeouts={} stale={} dup={} unknown={} late_results={}",
        count("hung"),
        count("late"),
        doubled,
        Metrics::get(&h.metrics.task_timeouts),
        Metrics::get(&h.metrics.stale_attempts),
        Metrics::get(&h.metrics.duplicates),
        Metrics::get(&h.metrics.unknown_tasks),
        Metrics::get(&h.metrics.late_results)
    );
    assert!(
        Metrics::get(&h.metrics.stale_attempts) > 0,
        "late answers of superseded attempts are stale"
    );
    assert!(Metrics::get(&h.metrics.duplicates) > 0);
    // Every extra answer was recognised and ignored: a second answer is a
    // duplicate (or, after the workflow ended, a late result); a held-back
    // answer is a stale attempt (or a late result).
    let ignored = Metrics::get(&h.metrics.duplicates)
        + Metrics::get(&h.metrics.stale_attempts)
        + Metrics::get(&h.metrics.late_results);
    assert!(
        ignored >= doubled + count("late"),
        "ignored {ignored} < extra answers {}",
        doubled + count("late")
    );
    assert_eq!(Metrics::get(&h.metrics.unknown_tasks), 0);
    // Each completed step's accepted attempt is an execution the workers recorded.
    for i in 0..n {
        let wf = h.engine.describe(&format!("f-{i}")).await.unwrap().unwrap();
        for s in &wf.steps {
            let id = s
                .task_id
                .as_deref()
                .expect("a dispatched step has a task id");
            assert!(
                recs.iter()
                    .any(|r| r.task_id == id && (r.outcome == "succeeded" || r.outcome == "late")),
                "accepted attempt {id} was executed"
            );
        }
    }
    h.stop().await;
}

/// A task whose message exceeds the server's `max_payload` can never be
/// published: its attempt fails at once, not retryably, with the sizes
/// named, and the other workflows run on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_over_the_servers_max_payload_fails_its_step_at_once_with_the_reason() {
    use std::sync::atomic::Ordering::Relaxed;
    let server = NatsServer::start_with_config(|port, store| {
        format!(
            "listen: 127.0.0.1:{port}\nmax_payload: 16384\njetstream {{ store_dir: {store:?} }}\n"
        )
    });
    let h = Harness::start(Arc::new(MemoryStorage::new()), over(&server, 1, 0.0)).await;
    let notes = "x".repeat(20_000);
    let big = format!(r#"{{"video_id":"big","video_url":"s3://media/big.mp4","notes":"{notes}"}}"#);
    h.engine.start_workflow("video", "big", &big).await.unwrap();
    h.engine
        .start_workflow("video", "small", &video_input("small"))
        .await
        .unwrap();
    h.wait_terminal(2, Duration::from_secs(60)).await;
    let wf = h.engine.describe("big").await.unwrap().unwrap();
    assert_eq!(wf.status, Status::Failed);
    let reason = format!("{:?}", wf.reason);
    assert!(reason.contains("max_payload of 16384 bytes"), "{reason}");
    assert_eq!(wf.steps[0].attempt, 1, "no retry of a task that cannot fit");
    let stats = h.nats_stats.clone().expect("over NATS");
    assert_eq!(stats.tasks_too_large.load(Relaxed), 1);
    let small = h.engine.describe("small").await.unwrap().unwrap();
    assert_eq!(small.status, Status::Completed);
    h.stop().await;
}
