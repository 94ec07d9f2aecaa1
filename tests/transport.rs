//! One conformance suite for every transport: what the engine relies on from
//! `Transport` (engine → workers) and the report path (workers → engine),
//! run against the in-process channel and against a real `nats-server`.
//!
//! The contract: a dispatched attempt reaches a worker of its task type with
//! every field intact, at least once (a re-dispatch with the same task id may
//! arrive again or be de-duplicated, never become a different task); a
//! cancel reaches the workers of that task type; a worker's result and
//! heartbeats reach the engine side unchanged.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use orchestrator::protocol::trace::{TraceParent, TRACEPARENT};
use orchestrator::protocol::{
    HeartbeatMessage, ResultMessage, ResultReply, ResultStatus, TaskMessage, TaskOfferReply,
};
use orchestrator::transport::inproc::{InProcTransport, ToWorker};
use orchestrator::transport::nats::{
    connect, ensure_streams, run_intake, stream_name, NatsConfig, NatsStats, NatsTransport,
    OfferDeclined, ResultError, ResultHandler,
};
use orchestrator::transport::{ReportSink, Transport, WorkerReport};
use orchestrator::workflow::{TaskOutcome, TaskResult, TaskSpec};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::support::nats::NatsServer;

/// What a worker sees of one delivery.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    task_id: String,
    idempotency_key: String,
    workflow_id: String,
    step: String,
    task_type: String,
    attempt: u32,
    input: serde_json::Value,
    heartbeat_timeout_ms: Option<u64>,
    traceparent: Option<String>,
}

/// The engine side's view: every report, in arrival order.
#[derive(Default)]
struct Collector {
    reports: Mutex<Vec<(String, WorkerReport)>>,
    /// Reasons of refused messages, in order.
    rejected: Mutex<Vec<&'static str>>,
}

impl ReportSink for Collector {
    fn report(&self, workflow_id: &str, report: WorkerReport) {
        self.reports.lock().push((workflow_id.to_owned(), report));
    }
}

struct CollectingHandler(Arc<Collector>);

impl ResultHandler for CollectingHandler {
    fn handle(
        &self,
        workflow_id: String,
        result: TaskResult,
    ) -> futures_util::future::BoxFuture<'static, Result<(), ResultError>> {
        self.0
            .reports
            .lock()
            .push((workflow_id, WorkerReport::Result(result)));
        Box::pin(async { Ok(()) })
    }
    fn rejected(&self, reason: &'static str) {
        self.0.rejected.lock().push(reason);
    }
}

/// A transport plus a fake worker fleet on its far side.
trait Rig {
    fn transport(&self) -> Arc<dyn Transport>;
    fn collector(&self) -> Arc<Collector>;
    /// The next delivery to a worker of `task_type`.
    async fn next_task(&mut self, task_type: &str) -> Option<Seen>;
    /// The next cancel a worker of `task_type` hears (its task id).
    async fn next_cancel(&mut self, task_type: &str) -> Option<String>;
    /// The worker answers `seen` / heartbeats it.
    async fn answer(&mut self, seen: &Seen, result: TaskResult);
    async fn heartbeat(&mut self, seen: &Seen);
}

fn spec(wf: &str, step: &str, task_type: &str, attempt: u32) -> Box<TaskSpec> {
    Box::new(TaskSpec {
        task_id: format!("{wf}:{step}:0:{attempt}"),
        idempotency_key: format!("{wf}:{step}:0"),
        workflow_id: wf.to_owned(),
        pipeline: "video".into(),
        pipeline_version: 1,
        step: step.to_owned(),
        step_index: 0,
        task_type: task_type.to_owned(),
        attempt,
        max_attempts: 5,
        input: format!(r#"{{"workflow":{{"video_id":"{wf}"}},"deps":{{}}}}"#),
        deadline_ms: Some(1_900_000_000_000),
        schedule_to_start_ms: None,
        start_to_close_ms: None,
        heartbeat_timeout_ms: Some(60_000),
        queue_timeout_ms: None,
    })
}

fn success(seen: &Seen) -> TaskResult {
    TaskResult {
        task_id: seen.task_id.clone(),
        step: seen.step.clone(),
        attempt: seen.attempt,
        outcome: TaskOutcome::Succeeded(format!(r#"{{"for":"{}"}}"#, seen.task_id)),
        worker: Some("probe".into()),
        started_at_ms: Some(1),
    }
}

async fn wait_reports(c: &Collector, n: usize) -> Vec<(String, WorkerReport)> {
    for _ in 0..500 {
        if c.reports.lock().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.reports.lock().clone()
}

async fn conformance<R: Rig>(mut rig: R, name: &str) {
    let t = rig.transport();
    // 1. Every field arrives intact, at the workers of the right type only.
    let a = spec("wf-a", "transcribe", "transcribe", 1);
    let b = spec("wf-b", "embed", "embed", 2);
    t.dispatch(a.clone());
    t.dispatch(b.clone());
    let got_a = rig.next_task("transcribe").await.expect("task a delivered");
    let got_b = rig.next_task("embed").await.expect("task b delivered");
    for (want, got) in [(&a, &got_a), (&b, &got_b)] {
        assert_eq!(
            (
                &got.task_id,
                &got.idempotency_key,
                &got.workflow_id,
                &got.step,
                &got.task_type,
                got.attempt,
                got.heartbeat_timeout_ms
            ),
            (
                &want.task_id,
                &want.idempotency_key,
                &want.workflow_id,
                &want.step,
                &want.task_type,
                want.attempt,
                want.heartbeat_timeout_ms
            ),
            "{name}: delivered task differs"
        );
        let input: serde_json::Value = serde_json::from_str(&want.input).unwrap();
        assert_eq!(got.input, input, "{name}: input differs");
    }
    assert!(
        rig.next_task("transcribe").await.is_none(),
        "{name}: one dispatch, one delivery"
    );
    // 2. A re-dispatch with the same id (recovery re-sends owed tasks) is the
    //    same task, delivered again or de-duplicated — never something else.
    t.dispatch(a.clone());
    if let Some(again) = rig.next_task("transcribe").await {
        assert_eq!(again, got_a, "{name}: a re-sent task must be identical");
    }
    // 3. Cancels reach the workers of the task type.
    t.cancel(&a.task_id, "transcribe", "operator: wrong upload");
    assert_eq!(
        rig.next_cancel("transcribe").await.as_deref(),
        Some(a.task_id.as_str()),
        "{name}: cancel not heard"
    );
    // 4. Heartbeats and results come back unchanged, with the workflow id.
    rig.heartbeat(&got_b).await;
    let result = success(&got_b);
    rig.answer(&got_b, result.clone()).await;
    let reports = wait_reports(&rig.collector(), 2).await;
    assert!(
        reports.iter().any(|(wf, r)| wf == "wf-b"
            && matches!(r, WorkerReport::Heartbeat { task_id } if *task_id == got_b.task_id)),
        "{name}: heartbeat lost: {reports:?}"
    );
    assert!(
        reports
            .iter()
            .any(|(wf, r)| wf == "wf-b" && *r == WorkerReport::Result(result.clone())),
        "{name}: result lost or changed: {reports:?}"
    );
}

// ---------------------------------------------------------------- in-process

struct InProcRig {
    transport: Arc<InProcTransport>,
    rx: mpsc::UnboundedReceiver<ToWorker>,
    pending: Vec<ToWorker>,
    collector: Arc<Collector>,
}

impl InProcRig {
    async fn next(&mut self, pick: impl Fn(&ToWorker) -> bool) -> Option<ToWorker> {
        loop {
            if let Some(i) = self.pending.iter().position(&pick) {
                return Some(self.pending.remove(i));
            }
            match tokio::time::timeout(Duration::from_millis(300), self.rx.recv()).await {
                Ok(Some(m)) => self.pending.push(m),
                _ => return None,
            }
        }
    }
}

impl Rig for InProcRig {
    fn transport(&self) -> Arc<dyn Transport> {
        self.transport.clone()
    }
    fn collector(&self) -> Arc<Collector> {
        self.collector.clone()
    }
    async fn next_task(&mut self, task_type: &str) -> Option<Seen> {
        match self
            .next(|m| matches!(m, ToWorker::Task(t) if t.task_type == task_type))
            .await?
        {
            ToWorker::Task(t) => Some(Seen {
                task_id: t.task_id,
                idempotency_key: t.idempotency_key,
                workflow_id: t.workflow_id,
                step: t.step,
                task_type: t.task_type,
                attempt: t.attempt,
                input: serde_json::from_str(&t.input).unwrap(),
                heartbeat_timeout_ms: t.heartbeat_timeout_ms,
                traceparent: None,
            }),
            ToWorker::Cancel { .. } => None,
        }
    }
    async fn next_cancel(&mut self, _task_type: &str) -> Option<String> {
        match self.next(|m| matches!(m, ToWorker::Cancel { .. })).await? {
            ToWorker::Cancel { task_id } => Some(task_id),
            ToWorker::Task(_) => None,
        }
    }
    async fn answer(&mut self, seen: &Seen, result: TaskResult) {
        self.collector
            .report(&seen.workflow_id, WorkerReport::Result(result));
    }
    async fn heartbeat(&mut self, seen: &Seen) {
        self.collector.report(
            &seen.workflow_id,
            WorkerReport::Heartbeat {
                task_id: seen.task_id.clone(),
            },
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_transport_conforms() {
    let (t, rx) = InProcTransport::new();
    let rig = InProcRig {
        transport: Arc::new(t),
        rx,
        pending: Vec::new(),
        collector: Arc::default(),
    };
    conformance(rig, "inproc").await;
}

// ---------------------------------------------------------------------- NATS

struct NatsRig {
    _server: NatsServer,
    transport: Arc<NatsTransport>,
    client: async_nats::Client,
    js: jetstream::Context,
    cfg: NatsConfig,
    collector: Arc<Collector>,
    consumers: std::collections::HashMap<String, consumer::pull::Stream>,
    cancels: std::collections::HashMap<String, async_nats::Subscriber>,
    /// `result_direct_to` of each task seen, by task id.
    direct_to: std::collections::HashMap<String, String>,
    /// Direct task offers by task type, when the probe takes them.
    offers: std::collections::HashMap<String, async_nats::Subscriber>,
    /// How the probe answers an offer: take it, or decline (no free slot).
    take_offers: bool,
    stats: Arc<NatsStats>,
    _intake: tokio::task::JoinHandle<()>,
}

/// How the probe worker of a [`NatsRig`] gets tasks.
#[derive(Clone, Copy, PartialEq)]
enum Offers {
    /// It does not listen for direct offers: every task goes to the stream.
    Ignore,
    /// It takes every direct offer.
    Take,
    /// It listens and declines every offer (as a worker without a free slot).
    Decline,
}

impl NatsRig {
    /// `direct`: the orchestrator offers `result_direct_to` and the probe
    /// answers by request on it; otherwise results go through JetStream.
    async fn start(direct: bool) -> NatsRig {
        NatsRig::start_with(direct, Offers::Ignore).await
    }

    async fn start_with(direct: bool, offers: Offers) -> NatsRig {
        let server = NatsServer::start();
        let cfg = NatsConfig {
            url: server.url(),
            results_direct: direct,
            ..NatsConfig::default()
        };
        let (client, js) = connect(&cfg).await.expect("connect");
        ensure_streams(&js, &cfg).await.expect("streams");
        let stats = Arc::new(NatsStats::default());
        let transport = Arc::new(
            NatsTransport::start(
                cfg.clone(),
                client.clone(),
                js.clone(),
                Arc::new(|_| 0),
                stats.clone(),
            )
            .expect("transport"),
        );
        let collector: Arc<Collector> = Arc::default();
        // A taken offer is reported as the attempt's start.
        transport.set_sink(collector.clone());
        let intake = run_intake(
            cfg.clone(),
            client.clone(),
            js.clone(),
            Arc::new(CollectingHandler(collector.clone())),
            collector.clone(),
            None,
        );
        let intake = tokio::spawn(async move {
            let _ = intake.await;
        });
        let mut rig = NatsRig {
            _server: server,
            transport,
            client,
            js,
            cfg,
            collector,
            consumers: Default::default(),
            cancels: Default::default(),
            direct_to: Default::default(),
            offers: Default::default(),
            take_offers: offers == Offers::Take,
            stats,
            _intake: intake,
        };
        // Workers subscribe before anything is dispatched (as a real fleet would).
        for tt in ["transcribe", "embed"] {
            rig.subscribe(tt).await;
            if offers != Offers::Ignore {
                let subjects =
                    orchestrator::protocol::subjects::Subjects::new(&rig.cfg.prefix).unwrap();
                let sub = rig
                    .client
                    .queue_subscribe(subjects.tasks_direct(tt), "workers".into())
                    .await
                    .unwrap();
                rig.client.flush().await.unwrap();
                rig.offers.insert(tt.to_owned(), sub);
            }
        }
        rig
    }

    /// The next direct offer of `task_type` (answered as configured), or
    /// `None` within `wait`.
    async fn next_offer(&mut self, task_type: &str, wait: Duration) -> Option<Seen> {
        let sub = self.offers.get_mut(task_type)?;
        let msg = tokio::time::timeout(wait, sub.next()).await.ok()??;
        assert_eq!(
            msg.subject.as_str(),
            format!("narralytica.tdirect.{task_type}")
        );
        let answer = TaskOfferReply {
            v: 1,
            taken: self.take_offers,
            worker: self.take_offers.then(|| "probe".to_owned()),
            error: None,
            result: None,
        };
        self.client
            .publish(
                msg.reply.clone().expect("an offer is a request"),
                serde_json::to_vec(&answer).unwrap().into(),
            )
            .await
            .unwrap();
        self.client.flush().await.unwrap();
        if !self.take_offers {
            return None;
        }
        Some(self.seen(&msg.payload, msg.headers.as_ref()))
    }

    /// Decodes a delivered task, checks what every delivery must carry, and
    /// keeps its direct-result subject.
    fn seen(&mut self, payload: &[u8], headers: Option<&async_nats::HeaderMap>) -> Seen {
        let t = TaskMessage::decode(payload, &self.cfg.limits).expect("task decodes");
        // Every task carries its attempt's token.
        assert_eq!(
            t.attempt_token,
            Some(self.cfg.attempt_key.token(&t.task_id))
        );
        let traceparent = headers
            .and_then(|h| h.get(TRACEPARENT))
            .map(|v| v.as_str().to_owned());
        // The direct subject is offered exactly when configured, and names
        // the partition like `reply_to` does.
        match &t.result_direct_to {
            Some(subject) => {
                assert!(self.cfg.results_direct, "offered although disabled");
                assert_eq!(subject, "narralytica.rdirect.0");
                self.direct_to.insert(t.task_id.clone(), subject.clone());
            }
            None => assert!(!self.cfg.results_direct, "not offered although enabled"),
        }
        // The trace is the workflow's.
        let tp = TraceParent::parse(traceparent.as_deref().expect("traceparent header"))
            .expect("valid traceparent");
        assert_eq!(
            tp.trace_id,
            orchestrator::protocol::trace::trace_id(&t.workflow_id)
        );
        Seen {
            task_id: t.task_id,
            idempotency_key: t.idempotency_key,
            workflow_id: t.workflow_id,
            step: t.step,
            task_type: t.task_type,
            attempt: t.attempt,
            input: serde_json::from_str(t.input.get()).unwrap(),
            heartbeat_timeout_ms: t.heartbeat_timeout_ms,
            traceparent,
        }
    }

    /// The next task of `task_type` from the stream, or `None` within `wait`.
    async fn next_from_stream(&mut self, task_type: &str, wait: Duration) -> Option<Seen> {
        let stream = self.consumers.get_mut(task_type)?;
        let msg = tokio::time::timeout(wait, stream.next())
            .await
            .ok()??
            .ok()?;
        msg.ack().await.unwrap();
        // The subject names the task type.
        assert_eq!(
            msg.subject.as_str(),
            format!("narralytica.tasks.{task_type}")
        );
        Some(self.seen(&msg.payload, msg.headers.as_ref()))
    }

    async fn subscribe(&mut self, task_type: &str) {
        let subjects = orchestrator::protocol::subjects::Subjects::new(&self.cfg.prefix).unwrap();
        let stream = self
            .js
            .get_stream(stream_name(&self.cfg.prefix, "TASKS"))
            .await
            .unwrap();
        let c: consumer::PullConsumer = stream
            .get_or_create_consumer(
                task_type,
                consumer::pull::Config {
                    durable_name: Some(format!("probe-{task_type}")),
                    filter_subject: subjects.tasks(task_type),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        self.consumers
            .insert(task_type.to_owned(), c.messages().await.unwrap());
        let sub = self
            .client
            .subscribe(subjects.cancel(task_type))
            .await
            .unwrap();
        self.client.flush().await.unwrap();
        self.cancels.insert(task_type.to_owned(), sub);
    }
}

impl Rig for NatsRig {
    fn transport(&self) -> Arc<dyn Transport> {
        self.transport.clone()
    }
    fn collector(&self) -> Arc<Collector> {
        self.collector.clone()
    }
    async fn next_task(&mut self, task_type: &str) -> Option<Seen> {
        // A taken offer, else the stream (where declined offers go).
        if self.take_offers {
            if let Some(seen) = self
                .next_offer(task_type, Duration::from_millis(1500))
                .await
            {
                return Some(seen);
            }
        }
        self.next_from_stream(task_type, Duration::from_millis(1500))
            .await
    }
    async fn next_cancel(&mut self, task_type: &str) -> Option<String> {
        let sub = self.cancels.get_mut(task_type)?;
        let msg = tokio::time::timeout(Duration::from_secs(3), sub.next())
            .await
            .ok()??;
        let c: orchestrator::protocol::CancelMessage =
            serde_json::from_slice(&msg.payload).expect("cancel decodes");
        Some(c.task_id)
    }
    async fn answer(&mut self, seen: &Seen, result: TaskResult) {
        let TaskOutcome::Succeeded(out) = &result.outcome else {
            panic!("the probe only answers successes")
        };
        let msg = ResultMessage {
            v: 1,
            task_id: result.task_id.clone(),
            attempt_token: Some(self.cfg.attempt_key.token(&result.task_id)),
            workflow_id: seen.workflow_id.clone(),
            step: result.step.clone(),
            attempt: result.attempt,
            status: ResultStatus::Succeeded,
            output: Some(serde_json::value::RawValue::from_string(out.clone()).unwrap()),
            error: None,
            worker: result.worker.clone(),
            started_at_ms: result.started_at_ms,
        };
        if let Some(subject) = self.direct_to.get(&result.task_id) {
            // Answered only once the engine side has taken the result.
            let reply = self
                .client
                .request(subject.clone(), serde_json::to_vec(&msg).unwrap().into())
                .await
                .expect("direct result answered");
            let reply: ResultReply = serde_json::from_slice(&reply.payload).unwrap();
            assert!(reply.ok, "direct result refused: {reply:?}");
            return;
        }
        let subjects = orchestrator::protocol::subjects::Subjects::new(&self.cfg.prefix).unwrap();
        self.js
            .publish(
                subjects.results(0),
                serde_json::to_vec(&msg).unwrap().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    async fn heartbeat(&mut self, seen: &Seen) {
        let subjects = orchestrator::protocol::subjects::Subjects::new(&self.cfg.prefix).unwrap();
        let hb = HeartbeatMessage {
            v: 1,
            task_id: seen.task_id.clone(),
            attempt_token: Some(self.cfg.attempt_key.token(&seen.task_id)),
            workflow_id: seen.workflow_id.clone(),
            worker: Some("probe".into()),
            progress: None,
        };
        self.client
            .publish(
                subjects.heartbeats(0),
                serde_json::to_vec(&hb).unwrap().into(),
            )
            .await
            .unwrap();
        self.client.flush().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_transport_conforms() {
    let rig = NatsRig::start(false).await;
    conformance(rig, "nats").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_transport_conforms_with_direct_results() {
    let rig = NatsRig::start(true).await;
    conformance(rig, "nats-direct").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_transport_conforms_with_direct_task_offers() {
    use std::sync::atomic::Ordering::Relaxed;
    let rig = NatsRig::start_with(true, Offers::Take).await;
    let (stats, collector) = (rig.stats.clone(), rig.collector.clone());
    conformance(rig, "nats-offers").await;
    // Every task was taken from an offer; none went through the stream.
    assert!(stats.tasks_direct.load(Relaxed) >= 2, "offers not taken");
    assert_eq!(stats.tasks_stream.load(Relaxed), 0);
    // A taken offer counts as the attempt's start, with the worker's name
    // (so the step's heartbeat timeout watches it from now on).
    let reports = collector.reports.lock().clone();
    assert!(
        reports.iter().any(|(wf, r)| wf == "wf-a"
            && matches!(r, WorkerReport::Started { task_id, worker }
                if task_id == "wf-a:transcribe:0:1" && worker == "probe")),
        "no start reported for a taken offer: {reports:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_declined_unanswered_or_not_made_leave_the_task_to_the_stream() {
    use std::sync::atomic::Ordering::Relaxed;
    let mut rig = NatsRig::start_with(false, Offers::Decline).await;
    let t = rig.transport();
    let wait = Duration::from_secs(3);
    // The only worker declines (no free slot): the task comes from the stream.
    t.dispatch(spec("wf-d", "transcribe", "transcribe", 1));
    assert!(rig.next_offer("transcribe", wait).await.is_none());
    let got = rig.next_from_stream("transcribe", wait).await;
    assert_eq!(
        got.map(|s| s.task_id).as_deref(),
        Some("wf-d:transcribe:0:1")
    );
    // An offer nobody answers within tasks_direct_timeout: the stream too.
    t.dispatch(spec("wf-u", "embed", "embed", 1));
    let unanswered = tokio::time::timeout(wait, rig.offers.get_mut("embed").unwrap().next())
        .await
        .expect("offered");
    assert!(unanswered.is_some());
    let got = rig.next_from_stream("embed", wait).await;
    assert_eq!(got.map(|s| s.task_id).as_deref(), Some("wf-u:embed:0:1"));
    // Nobody listens for offers of this type: straight to the stream.
    rig.subscribe("segment").await;
    t.dispatch(spec("wf-s", "segment", "segment", 1));
    let got = rig.next_from_stream("segment", wait).await;
    assert_eq!(got.map(|s| s.task_id).as_deref(), Some("wf-s:segment:0:1"));
    // A step without a heartbeat timeout is never offered: a worker dying
    // with it would go unnoticed, while a stream message is redelivered.
    let mut quiet = spec("wf-q", "transcribe", "transcribe", 1);
    quiet.heartbeat_timeout_ms = None;
    t.dispatch(quiet);
    let got = rig.next_from_stream("transcribe", wait).await;
    assert_eq!(
        got.map(|s| s.task_id).as_deref(),
        Some("wf-q:transcribe:0:1")
    );
    let offered = tokio::time::timeout(
        Duration::from_millis(300),
        rig.offers.get_mut("transcribe").unwrap().next(),
    )
    .await;
    assert!(
        offered.is_err(),
        "a task without heartbeat timeout was offered"
    );
    let declined = |why: OfferDeclined| rig.stats.offers_declined[why as usize].load(Relaxed);
    assert_eq!(
        (
            declined(OfferDeclined::Busy),
            declined(OfferDeclined::Timeout),
            declined(OfferDeclined::NoWorker),
            declined(OfferDeclined::Error),
        ),
        (1, 1, 1, 0)
    );
    assert_eq!(rig.stats.tasks_stream.load(Relaxed), 4);
    assert_eq!(rig.stats.tasks_direct.load(Relaxed), 0);
    // Nothing was reported started: no worker took anything.
    assert!(!rig
        .collector
        .reports
        .lock()
        .iter()
        .any(|(_, r)| matches!(r, WorkerReport::Started { .. })));
}

/// Applies results after a delay; refuses (transiently) task ids starting with `fail`.
struct SlowHandler {
    applied: Arc<Mutex<Vec<String>>>,
}

impl ResultHandler for SlowHandler {
    fn handle(
        &self,
        _workflow_id: String,
        result: TaskResult,
    ) -> futures_util::future::BoxFuture<'static, Result<(), ResultError>> {
        let applied = self.applied.clone();
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if result.task_id.starts_with("fail") {
                return Err(ResultError::Retry(
                    "journal append failed: disk full".into(),
                ));
            }
            applied.lock().push(result.task_id);
            Ok(())
        })
    }
    fn rejected(&self, _reason: &'static str) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_results_are_answered_only_once_applied_and_refusals_say_whether_to_retry() {
    let server = NatsServer::start();
    let cfg = NatsConfig {
        url: server.url(),
        ..NatsConfig::default()
    };
    let (client, js) = connect(&cfg).await.expect("connect");
    ensure_streams(&js, &cfg).await.expect("streams");
    let applied: Arc<Mutex<Vec<String>>> = Arc::default();
    let intake = run_intake(
        cfg.clone(),
        client.clone(),
        js.clone(),
        Arc::new(SlowHandler {
            applied: applied.clone(),
        }),
        Arc::new(Collector::default()),
        None,
    );
    let _intake = tokio::spawn(async move {
        let _ = intake.await;
    });
    let subject = orchestrator::protocol::subjects::Subjects::new(&cfg.prefix)
        .unwrap()
        .results_direct(3);
    let ask = |payload: Vec<u8>| {
        let (client, subject) = (client.clone(), subject.clone());
        async move {
            // The intake may still be subscribing: retry "no responders".
            for _ in 0..50 {
                match client
                    .request(subject.clone(), payload.clone().into())
                    .await
                {
                    Ok(m) => return serde_json::from_slice::<ResultReply>(&m.payload).unwrap(),
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            panic!("no answer on {subject}")
        }
    };
    let result = |task_id: &str| {
        serde_json::to_vec(&serde_json::json!({
            "v": 1, "task_id": task_id, "workflow_id": task_id.split(':').next().unwrap(),
            "step": "transcribe", "attempt_token": cfg.attempt_key.token(task_id),
            "attempt": 1, "status": "succeeded", "output": {"n": 1}
        }))
        .unwrap()
    };
    // Applied: `ok` comes after the handler finished, never before.
    let t0 = std::time::Instant::now();
    let reply = ask(result("wf-1:transcribe:1:1")).await;
    assert!(reply.ok && reply.error.is_none(), "{reply:?}");
    assert!(t0.elapsed() >= Duration::from_millis(200));
    assert_eq!(*applied.lock(), vec!["wf-1:transcribe:1:1".to_string()]);
    // Not applied (journal error): not ok, worth retrying, with the reason.
    let reply = ask(result("fail:transcribe:1:1")).await;
    assert!(!reply.ok && reply.retry, "{reply:?}");
    assert!(reply.error.unwrap().contains("disk full"));
    // Malformed: not ok, never worth retrying, with a clear error.
    let reply = ask(b"{\"v\": 1, \"task_id\": ".to_vec()).await;
    assert!(!reply.ok && !reply.retry, "{reply:?}");
    assert!(!reply.error.unwrap().is_empty());
    assert_eq!(applied.lock().len(), 1);
}

/// The offer answered with the task's result: the result goes to the
/// engine's intake (not a "started" report), and the offer carries the
/// window only once an intake is set. A result of another task in the
/// answer is refused, and the attempt counts as started so its heartbeat
/// timeout brings a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_in_the_answer_to_an_offer_goes_to_the_intake_and_a_wrong_one_is_refused() {
    use std::sync::atomic::Ordering::Relaxed;
    let mut rig = NatsRig::start_with(true, Offers::Take).await;
    let wait = Duration::from_secs(5);
    let collector = rig.collector.clone();
    // An offer for `wf`: the task, and where to answer it.
    async fn offered(
        rig: &mut NatsRig,
        wf: &str,
        wait: Duration,
    ) -> (TaskMessage, async_nats::Subject) {
        rig.transport()
            .dispatch(spec(wf, "transcribe", "transcribe", 1));
        let sub = rig.offers.get_mut("transcribe").unwrap();
        let msg = tokio::time::timeout(wait, sub.next())
            .await
            .expect("offered")
            .unwrap();
        let task = TaskMessage::decode(&msg.payload, &rig.cfg.limits).expect("task decodes");
        (task, msg.reply.expect("an offer is a request"))
    }
    async fn answer(rig: &NatsRig, to: async_nats::Subject, result: &str) {
        let body = TaskOfferReply {
            v: 1,
            taken: true,
            worker: Some("probe".into()),
            error: None,
            result: Some(serde_json::value::RawValue::from_string(result.to_owned()).unwrap()),
        };
        rig.client
            .publish(to, serde_json::to_vec(&body).unwrap().into())
            .await
            .unwrap();
        rig.client.flush().await.unwrap();
    }
    let result_of = |task: &TaskMessage, task_id: &str| {
        serde_json::to_string(&ResultMessage {
            v: 1,
            task_id: task_id.to_owned(),
            attempt_token: task.attempt_token.clone(),
            workflow_id: task.workflow_id.clone(),
            step: task.step.clone(),
            attempt: task.attempt,
            status: ResultStatus::Succeeded,
            output: Some(serde_json::value::RawValue::from_string(r#"{"n":1}"#.into()).unwrap()),
            error: None,
            worker: Some("probe".into()),
            started_at_ms: Some(1),
        })
        .unwrap()
    };

    // No intake yet: the offer does not invite a result.
    let (task, to) = offered(&mut rig, "wf-0", wait).await;
    assert_eq!(task.offer_result_within_ms, None);
    answer(&rig, to, &result_of(&task, &task.task_id)).await;
    let reports = wait_reports(&collector, 1).await;
    assert!(
        matches!(&reports[0].1, WorkerReport::Started { task_id, .. } if task_id == "wf-0:transcribe:0:1")
    );
    assert_eq!(rig.stats.results_in_offer_reply.load(Relaxed), 0);

    rig.transport
        .set_results(Arc::new(CollectingHandler(collector.clone())));
    // The result answers the offer: the intake gets it, and no start is
    // reported for the attempt (its result is already there).
    let (task, to) = offered(&mut rig, "wf-i", wait).await;
    assert_eq!(task.offer_result_within_ms, Some(50));
    answer(&rig, to, &result_of(&task, &task.task_id)).await;
    let reports = wait_reports(&collector, 2).await;
    match &reports[1] {
        (wf, WorkerReport::Result(r)) => {
            assert_eq!(
                (wf.as_str(), r.task_id.as_str()),
                ("wf-i", "wf-i:transcribe:0:1")
            );
            assert!(matches!(&r.outcome, TaskOutcome::Succeeded(o) if o == r#"{"n":1}"#));
        }
        other => panic!("expected the result, got {other:?}"),
    }
    assert_eq!(rig.stats.results_in_offer_reply.load(Relaxed), 1);

    // Another task's result in the answer: refused; the attempt counts as
    // started (the worker has it), so its heartbeat timeout watches it.
    let (task, to) = offered(&mut rig, "wf-j", wait).await;
    answer(&rig, to, &result_of(&task, "wf-j:transcribe:0:7")).await;
    let reports = wait_reports(&collector, 3).await;
    assert!(
        matches!(&reports[2], (wf, WorkerReport::Started { task_id, worker })
            if wf == "wf-j" && task_id == "wf-j:transcribe:0:1" && worker == "probe"),
        "{reports:?}"
    );
    // An unreadable result: refused as malformed, the offer still taken.
    let (_, to) = offered(&mut rig, "wf-m", wait).await;
    answer(&rig, to, r#"{"v":1,"task_id":"wf-m:transcribe:0:1"}"#).await;
    let reports = wait_reports(&collector, 4).await;
    assert!(
        matches!(&reports[3], (wf, WorkerReport::Started { task_id, .. })
            if wf == "wf-m" && task_id == "wf-m:transcribe:0:1"),
        "{reports:?}"
    );
    assert_eq!(
        *collector.rejected.lock(),
        vec!["unauthenticated", "malformed"]
    );
    assert_eq!(rig.stats.results_in_offer_reply.load(Relaxed), 1);
    assert_eq!(rig.stats.tasks_direct.load(Relaxed), 4);
    assert_eq!(rig.stats.tasks_stream.load(Relaxed), 0);
    // Declined: the copy in the stream does not invite a result.
    let (_, to) = offered(&mut rig, "wf-d", wait).await;
    let decline = TaskOfferReply {
        v: 1,
        taken: false,
        worker: None,
        error: None,
        result: None,
    };
    rig.client
        .publish(to, serde_json::to_vec(&decline).unwrap().into())
        .await
        .unwrap();
    let stream = rig.consumers.get_mut("transcribe").unwrap();
    let msg = tokio::time::timeout(wait, stream.next())
        .await
        .expect("in the stream")
        .unwrap()
        .unwrap();
    msg.ack().await.unwrap();
    let task = TaskMessage::decode(&msg.payload, &rig.cfg.limits).unwrap();
    assert_eq!(
        (task.task_id.as_str(), task.offer_result_within_ms),
        ("wf-d:transcribe:0:1", None)
    );
}
