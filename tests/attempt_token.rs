//! Results are bound to their attempt: over a real nats-server, a result
//! or heartbeat with a guessed task id but without the task's
//! `attempt_token` (or with a made-up one), or one sent on another
//! partition's subject, changes nothing and is counted; the workflow
//! completes with the real worker's output.

use std::sync::Arc;
use std::time::Duration;

use orchestrator::engine::Metrics;
use orchestrator::protocol::ResultReply;
use orchestrator::sim::SimConfig;
use orchestrator::storage::memory::MemoryStorage;
use orchestrator::workflow::Status;

use crate::support::nats::NatsServer;
use crate::support::{video_input, Harness, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_result_is_refused_counted_and_the_real_output_wins() {
    let server = NatsServer::start();
    // The real worker takes 300 ms, so the forgeries arrive first.
    let opts = Options {
        nats_url: Some(server.url()),
        sim: SimConfig {
            latency_ms: 300,
            seed: 7,
            worker: "nats-sim".into(),
            ..SimConfig::default()
        },
        ..Options::default()
    };
    let h = Harness::start(Arc::new(MemoryStorage::new()), opts).await;
    let id = "forge-1";
    h.engine
        .start_workflow("video", id, &video_input(id))
        .await
        .unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let p = h.store.partition_of(id);
    // Task ids are predictable: the first attempt of the first step.
    let task_id = format!("{id}:ingest:0:1");
    let forged = |token: Option<String>| {
        serde_json::to_vec(&serde_json::json!({
            "v": 1, "task_id": task_id, "attempt_token": token, "workflow_id": id,
            "step": "ingest", "attempt": 1, "status": "succeeded", "output": {"n": 999}
        }))
        .unwrap()
    };
    let ask = |subject: String, body: Vec<u8>| {
        let client = client.clone();
        async move {
            let reply = client.request(subject, body.into()).await.unwrap();
            serde_json::from_slice::<ResultReply>(&reply.payload).unwrap()
        }
    };
    // No token, by request: refused, not worth sending again.
    let reply = ask(format!("narralytica.rdirect.{p}"), forged(None)).await;
    assert!(!reply.ok && !reply.retry, "{reply:?}");
    assert!(reply.error.unwrap().contains("unauthenticated"));
    // A made-up token, through the RESULTS stream.
    js.publish(
        format!("narralytica.results.{p}"),
        forged(Some("0123456789abcdef0123456789abcdef".into())).into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    // The right token on a partition that does not own the workflow.
    let key = h.attempt_key.clone().unwrap();
    let other = (p + 1) % 4;
    let reply = ask(
        format!("narralytica.rdirect.{other}"),
        forged(Some(key.token(&task_id))),
    )
    .await;
    assert!(!reply.ok && !reply.retry, "{reply:?}");
    assert!(reply.error.unwrap().contains("wrong partition"));
    // A heartbeat without the token.
    client
        .publish(
            format!("narralytica.heartbeats.{p}"),
            serde_json::to_vec(&serde_json::json!({
                "v": 1, "task_id": task_id, "workflow_id": id
            }))
            .unwrap()
            .into(),
        )
        .await
        .unwrap();
    client.flush().await.unwrap();

    h.wait_terminal(1, Duration::from_secs(60)).await;
    let wf = h.engine.describe(id).await.unwrap().unwrap();
    assert_eq!(wf.status, Status::Completed);
    let ingest = wf.steps[0].output.as_deref().unwrap();
    assert!(ingest.contains("\"n\":1"), "{ingest}");
    assert_eq!(Metrics::get(&h.metrics.output_errors), 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while Metrics::get(&h.metrics.messages_unauthenticated) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "unauthenticated: {}",
            Metrics::get(&h.metrics.messages_unauthenticated)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(Metrics::get(&h.metrics.messages_unauthenticated), 3);
    assert_eq!(Metrics::get(&h.metrics.messages_wrong_partition), 1);
    h.stop().await;
}

/// A step output that is not a JSON object can never feed the next step:
/// refused by request with `retry: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_output_that_is_not_an_object_is_refused() {
    let server = NatsServer::start();
    let opts = Options {
        nats_url: Some(server.url()),
        sim: SimConfig {
            latency_ms: 300,
            worker: "nats-sim".into(),
            ..SimConfig::default()
        },
        ..Options::default()
    };
    let h = Harness::start(Arc::new(MemoryStorage::new()), opts).await;
    let id = "shape-1";
    h.engine
        .start_workflow("video", id, &video_input(id))
        .await
        .unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let key = h.attempt_key.clone().unwrap();
    let task_id = format!("{id}:ingest:0:1");
    let p = h.store.partition_of(id);
    for output in [r#""a string""#, "42", "[1,2]"] {
        let body = format!(
            r#"{{"v":1,"task_id":"{task_id}","attempt_token":"{}","workflow_id":"{id}","step":"ingest","attempt":1,"status":"succeeded","output":{output}}}"#,
            key.token(&task_id)
        );
        let reply = client
            .request(format!("narralytica.rdirect.{p}"), body.into_bytes().into())
            .await
            .unwrap();
        let reply: ResultReply = serde_json::from_slice(&reply.payload).unwrap();
        assert!(!reply.ok && !reply.retry, "{output}: {reply:?}");
        assert!(
            reply.error.unwrap().contains("must be a JSON object"),
            "{output}"
        );
    }
    h.wait_terminal(1, Duration::from_secs(60)).await;
    let wf = h.engine.describe(id).await.unwrap().unwrap();
    assert_eq!(wf.status, Status::Completed);
    h.stop().await;
}
