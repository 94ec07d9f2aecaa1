//! NATS transport: tasks and results on JetStream, heartbeats and cancel on
//! core NATS (see `docs/protocol.md`).
//!
//! * Tasks go to the `<prefix>_TASKS` work-queue stream on
//!   `<prefix>.tasks.<task_type>`, with `Nats-Msg-Id = task_id` so a re-send
//!   of the same attempt inside the duplicate window is dropped by the server.
//! * Results come back on `<prefix>.results.<partition>` into the
//!   `<prefix>_RESULTS` stream; the orchestrator's durable consumer acks a
//!   result only after the engine made its transition durable.
//! * NATS is a transport, not storage: a publish that fails is retried a few
//!   times and then dropped; the attempt's timeout heals it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{workflow_of_task, ReportSink, Transport, WorkerReport};
use crate::protocol::subjects::Subjects;
use crate::protocol::trace::{task_traceparent, TraceParent, TRACEPARENT};
use crate::protocol::{
    CancelMessage, HeartbeatMessage, Limits, ResultMessage, ResultReply, TaskMessage,
    TaskOfferReply, VERSION,
};
use crate::workflow::TaskSpec;

/// Connection and stream settings; every limit has a default.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    pub url: String,
    pub prefix: String,
    /// Tasks and results older than this are dropped by the server.
    pub stream_max_age: Duration,
    /// Window in which a re-published task id is dropped as a duplicate.
    pub duplicate_window: Duration,
    /// How long a delivered result may stay unacknowledged before redelivery.
    pub results_ack_wait: Duration,
    /// Results delivered and not yet acknowledged, at most.
    pub results_max_ack_pending: i64,
    /// Offer workers `result_direct_to`: results by core NATS request,
    /// answered after the journal append (docs/protocol.md).
    pub results_direct: bool,
    /// Direct results being applied at once; more wait in the subscription
    /// (and a worker whose request times out sends again).
    pub results_direct_in_flight_max: usize,
    /// Offer each task (whose step has a heartbeat timeout) to an idle
    /// worker by core NATS request before using the TASKS stream.
    pub tasks_direct: bool,
    /// Wait for a worker's answer to a task offer, at most.
    pub tasks_direct_timeout: Duration,
    /// A worker that has the result within this long of an offer may
    /// answer the offer with it (two NATS messages per task instead of
    /// four); zero: workers answer `taken` and send results on their own.
    /// Below `tasks_direct_timeout`, so the answer is not taken for a
    /// timeout and the task sent again.
    pub tasks_direct_result_within: Duration,
    /// How long to keep trying to apply a result that answered its offer
    /// when the journal fails (the result exists nowhere else); after that
    /// the task is published to the TASKS stream and runs again.
    pub tasks_direct_result_apply_for: Duration,
    /// Offers waiting for their answer at once (each is its own task, so a
    /// worker that holds an offer while it runs does not hold up other
    /// sends); beyond it, an offer waits in the publish window for a
    /// permit, so every offer out holds one and a graceful stop's drain
    /// waits for all of them.
    pub tasks_direct_in_flight_max: usize,
    /// Tasks and cancels waiting to be published, at most (beyond: dropped, healed by timeouts).
    pub publish_queue_max: usize,
    /// Task publishes with their acknowledgements in flight at once. An
    /// offer past `tasks_direct_in_flight_max` also takes a place here while
    /// it waits for a permit and then runs, so with every permit out, stream
    /// publishes and cancels queue behind such offers (an overload state:
    /// each offer ends within `tasks_direct_timeout`).
    pub publish_window: usize,
    /// Publish attempts of one task before it is left to its timeout; with the
    /// backoff capped at 2 s, 40 attempts ride out about a minute of outage.
    pub publish_attempts: u32,
    pub limits: Limits,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            prefix: "narralytica".into(),
            stream_max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
            results_ack_wait: Duration::from_secs(5),
            results_max_ack_pending: 10_000,
            results_direct: true,
            results_direct_in_flight_max: 10_000,
            tasks_direct: true,
            tasks_direct_timeout: Duration::from_millis(500),
            tasks_direct_result_within: Duration::from_millis(50),
            tasks_direct_result_apply_for: Duration::from_secs(60),
            tasks_direct_in_flight_max: 4096,
            publish_queue_max: 100_000,
            publish_attempts: 40,
            publish_window: 256,
            limits: Limits::default(),
        }
    }
}

/// Stream names derived from the prefix (dots are not allowed in them).
pub fn stream_name(prefix: &str, what: &str) -> String {
    format!("{}_{what}", prefix.replace('.', "_").to_uppercase())
}

/// Connection state of a NATS client, kept by its event callback; read by
/// the metrics exposition and by readiness.
#[derive(Debug, Default)]
pub struct NatsStats {
    connected: AtomicBool,
    /// Successful connections, the first one included.
    connects: AtomicU64,
    disconnects: AtomicU64,
    /// Tasks taken by a worker from a direct offer.
    pub tasks_direct: AtomicU64,
    /// Tasks published to the TASKS stream (offer declined, or not offered).
    pub tasks_stream: AtomicU64,
    /// Results that came as the answer to their task's offer.
    pub results_in_offer_reply: AtomicU64,
    /// Direct offers that went to the stream, by [`OfferDeclined`] reason.
    pub offers_declined: [AtomicU64; OfferDeclined::ALL.len()],
}

/// Why a direct task offer was not taken (the task then goes to the stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferDeclined {
    /// No worker listens on the task type's `tdirect` subject.
    NoWorker,
    /// The worker that got the offer had no free slot.
    Busy,
    /// No answer within `tasks_direct_timeout`.
    Timeout,
    /// The request failed otherwise, or the answer was unreadable.
    Error,
}

impl OfferDeclined {
    pub const ALL: [OfferDeclined; 4] = [
        OfferDeclined::NoWorker,
        OfferDeclined::Busy,
        OfferDeclined::Timeout,
        OfferDeclined::Error,
    ];

    pub fn label(self) -> &'static str {
        match self {
            OfferDeclined::NoWorker => "no_worker",
            OfferDeclined::Busy => "busy",
            OfferDeclined::Timeout => "timeout",
            OfferDeclined::Error => "error",
        }
    }
}

impl NatsStats {
    /// The client (re)connected.
    pub fn note_connected(&self) {
        self.connected.store(true, Ordering::Relaxed);
        self.connects.fetch_add(1, Ordering::Relaxed);
    }

    /// The client lost its connection (it keeps trying to reconnect).
    pub fn note_disconnected(&self) {
        self.connected.store(false, Ordering::Relaxed);
        self.disconnects.fetch_add(1, Ordering::Relaxed);
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Connections after the first one.
    pub fn reconnects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed).saturating_sub(1)
    }

    pub fn disconnects(&self) -> u64 {
        self.disconnects.load(Ordering::Relaxed)
    }

    fn declined(&self, why: OfferDeclined) {
        self.offers_declined[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Connects with unlimited reconnects (the orchestrator keeps running while
/// NATS is down). Returns at once even while NATS is unreachable.
pub async fn connect(cfg: &NatsConfig) -> Result<(async_nats::Client, jetstream::Context), String> {
    connect_with_stats(cfg, None).await
}

/// [`connect`], keeping `stats` up to date from the client's connection events.
pub async fn connect_with_stats(
    cfg: &NatsConfig,
    stats: Option<Arc<NatsStats>>,
) -> Result<(async_nats::Client, jetstream::Context), String> {
    let mut options = async_nats::ConnectOptions::new()
        .name("narralytica-orchestrator")
        .retry_on_initial_connect()
        .max_reconnects(None);
    if let Some(stats) = stats {
        options = options.event_callback(move |event| {
            match event {
                async_nats::Event::Connected => stats.note_connected(),
                async_nats::Event::Disconnected => stats.note_disconnected(),
                _ => {}
            }
            std::future::ready(())
        });
    }
    let client = options
        .connect(&cfg.url)
        .await
        .map_err(|e| format!("cannot connect to NATS at {}: {e}", cfg.url))?;
    let js = jetstream::new(client.clone());
    Ok((client, js))
}

/// Creates (or updates) the task and result streams.
pub async fn ensure_streams(js: &jetstream::Context, cfg: &NatsConfig) -> Result<(), String> {
    let subjects = Subjects::new(&cfg.prefix)?;
    let max_msg = i32::try_from(cfg.limits.message_max_bytes).unwrap_or(i32::MAX);
    for (what, subject) in [
        ("TASKS", subjects.tasks_all()),
        ("RESULTS", subjects.results_all()),
    ] {
        let config = stream::Config {
            name: stream_name(&cfg.prefix, what),
            subjects: vec![subject],
            retention: stream::RetentionPolicy::WorkQueue,
            max_age: cfg.stream_max_age,
            max_message_size: max_msg,
            duplicate_window: cfg.duplicate_window,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        js.get_or_create_stream(config).await.map_err(|e| {
            format!(
                "cannot create stream {}: {e}",
                stream_name(&cfg.prefix, what)
            )
        })?;
    }
    Ok(())
}

enum Outgoing {
    Task(Box<TaskSpec>),
    Cancel { task_id: String, task_type: String },
}

/// Engine side of NATS: implements [`Transport`].
pub struct NatsTransport {
    tx: mpsc::Sender<Outgoing>,
    /// Told when a worker takes a direct offer (the attempt counts as
    /// started); set once the engine exists.
    sink: Arc<std::sync::OnceLock<Arc<dyn ReportSink>>>,
    /// Where results that answer an offer go; until it is set, offers do
    /// not invite them.
    results: Arc<std::sync::OnceLock<Arc<dyn ResultHandler>>>,
    /// The publisher task's shared part: [`drain`](Self::drain) sets its
    /// stop flag and watches its offer permits.
    publisher: Arc<Publisher>,
}

/// What [`NatsTransport::drain`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Offers out when the stop began.
    pub offers_at_stop: usize,
    /// Offers not finished when the wait ended: still waiting for their
    /// answer, applying the result it brought, or publishing a declined
    /// task to the stream (NATS down, say).
    pub offers_left: usize,
    /// Tasks not sent since the stop began; they are sent at the next start.
    pub tasks_held: u64,
}

/// What the publisher needs for one task, shared by every send.
struct Publisher {
    js: jetstream::Context,
    client: async_nats::Client,
    subjects: Subjects,
    partition_of: Arc<dyn Fn(&str) -> u16 + Send + Sync>,
    attempts: u32,
    results_direct: bool,
    /// `Some(timeout)` when tasks are offered to idle workers first.
    offer_timeout: Option<Duration>,
    stats: Arc<NatsStats>,
    sink: Arc<std::sync::OnceLock<Arc<dyn ReportSink>>>,
    results: Arc<std::sync::OnceLock<Arc<dyn ResultHandler>>>,
    /// `offer_result_within_ms` of an offer (0: none).
    result_within_ms: u64,
    /// See [`NatsConfig::tasks_direct_result_apply_for`].
    result_apply_for: Duration,
    /// Permits for offers running as their own tasks.
    offers: Arc<tokio::sync::Semaphore>,
    /// The permits there are (`tasks_direct_in_flight_max`).
    offers_max: usize,
    limits: Limits,
    /// Set by [`NatsTransport::drain`]: offered tasks are no longer sent.
    closing: AtomicBool,
    /// Tasks not sent because the node was stopping.
    held_at_stop: AtomicU64,
}

impl Publisher {
    /// While the node stops, a task that would be offered is not sent
    /// (counted): it is journaled as sent, and the next start sends it
    /// again. Sent now, a worker could run it while the node is down, and
    /// the re-send (an offer again, which nothing de-duplicates) would run
    /// it a second time. A task that only goes to the stream is still sent:
    /// the re-send carries the same `Nats-Msg-Id`, which JetStream drops.
    fn hold_at_stop(&self, spec: &TaskSpec) -> bool {
        if !self.offers(spec) {
            return false;
        }
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.closing.load(Ordering::SeqCst) {
            self.held_at_stop.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Whether this task is offered to an idle worker first: only an
    /// attempt with a heartbeat timeout, since if the worker dies holding
    /// it, that timeout (not a stream redelivery) brings the retry.
    fn offers(&self, spec: &TaskSpec) -> bool {
        self.offer_timeout.is_some() && spec.heartbeat_timeout_ms.is_some()
    }

    /// Whether `out` is a task that is offered first.
    fn offered(&self, out: &Outgoing) -> bool {
        matches!(out, Outgoing::Task(spec) if self.offers(spec))
    }

    /// A permit to send `out` as a task of its own: only an offered task,
    /// and only while `tasks_direct_in_flight_max` allows.
    fn offer_permit(&self, out: &Outgoing) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if !self.offered(out) {
            return None;
        }
        self.offers.clone().try_acquire_owned().ok()
    }

    /// Offers whose permit is taken: waiting for their answer, or finishing
    /// what it brought.
    fn offers_out(&self) -> usize {
        self.offers_max - self.offers.available_permits()
    }
}

impl NatsTransport {
    /// Starts the publisher task. `partition_of` maps a workflow id to the
    /// partition whose result subject its tasks name; `stats` counts the
    /// tasks by route.
    pub fn start(
        cfg: NatsConfig,
        client: async_nats::Client,
        js: jetstream::Context,
        partition_of: Arc<dyn Fn(&str) -> u16 + Send + Sync>,
        stats: Arc<NatsStats>,
    ) -> Result<NatsTransport, String> {
        let (tx, mut rx) = mpsc::channel::<Outgoing>(cfg.publish_queue_max.max(1));
        let window = cfg.publish_window.max(1);
        let sink = Arc::new(std::sync::OnceLock::new());
        let results = Arc::new(std::sync::OnceLock::new());
        let offers_max = cfg.tasks_direct_in_flight_max.max(1);
        let publisher = Arc::new(Publisher {
            js,
            client,
            subjects: Subjects::new(&cfg.prefix)?,
            partition_of,
            attempts: cfg.publish_attempts.max(1),
            results_direct: cfg.results_direct,
            offer_timeout: cfg
                .tasks_direct
                .then_some(cfg.tasks_direct_timeout.max(Duration::from_millis(1))),
            stats,
            sink: sink.clone(),
            results: results.clone(),
            result_within_ms: (cfg.tasks_direct_result_within.as_millis() as u64)
                .min(cfg.tasks_direct_timeout.as_millis() as u64 / 2),
            result_apply_for: cfg.tasks_direct_result_apply_for,
            offers: Arc::new(tokio::sync::Semaphore::new(offers_max)),
            offers_max,
            limits: cfg.limits.clone(),
            closing: AtomicBool::new(false),
            held_at_stop: AtomicU64::new(0),
        });
        let shared = publisher.clone();
        tokio::spawn(async move {
            // Up to `window` publishes with their acknowledgements in flight;
            // the next one starts as soon as any acknowledgement returns (no
            // waiting for a whole window). Order between tasks does not
            // matter: each is its own attempt.
            let mut in_flight = futures_util::stream::FuturesUnordered::new();
            loop {
                tokio::select! {
                    biased;
                    Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                    out = rx.recv(), if in_flight.len() < window => match out {
                        // An offer waits for a worker's answer, which may
                        // carry the result (up to `tasks_direct_result_within`
                        // later): it runs as its own task while permits
                        // last, so it does not hold a place in the window.
                        Some(out) => match publisher.offer_permit(&out) {
                            Some(permit) => {
                                let publisher = publisher.clone();
                                tokio::spawn(async move {
                                    send_outgoing(publisher, out).await;
                                    drop(permit);
                                });
                            }
                            // Past the permits, an offer waits its turn
                            // for one here, in the window, so the drain at
                            // a stop sees every offer out (each answer may
                            // carry a result that exists nowhere else).
                            None => {
                                let publisher = publisher.clone();
                                in_flight.push(async move {
                                    // The semaphore is never closed; if it
                                    // were, the offer would go out without
                                    // a permit rather than not at all.
                                    let _permit = if publisher.offered(&out) {
                                        publisher.offers.clone().acquire_owned().await.ok()
                                    } else {
                                        None
                                    };
                                    send_outgoing(publisher, out).await;
                                });
                            }
                        },
                        None => break,
                    },
                }
            }
            while in_flight.next().await.is_some() {}
        });
        Ok(NatsTransport {
            tx,
            sink,
            results,
            publisher: shared,
        })
    }

    /// The first step of a graceful stop, while the engine still runs:
    /// stops sending tasks that would be offered (each one not sent is
    /// journaled as sent and goes out again at the next start, with the
    /// same task id; see [`Publisher::hold_at_stop`]), then waits up to
    /// `within` for the offers in flight. An offer's answer may carry the
    /// task's result, which exists nowhere else: applied now, it is not
    /// lost with the process and the task does not run a second time after
    /// the restart.
    pub async fn drain(&self, within: Duration) -> Drained {
        // SeqCst on both sides (here, and `send_outgoing`'s check, made with
        // the permit held): either it sees the flag, or this sees its permit.
        let publisher = &self.publisher;
        publisher.closing.store(true, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        let offers_at_stop = publisher.offers_out();
        let give_up = tokio::time::Instant::now() + within;
        loop {
            let offers_left = publisher.offers_out();
            if offers_left == 0 || tokio::time::Instant::now() >= give_up {
                return Drained {
                    offers_at_stop,
                    offers_left,
                    tasks_held: publisher.held_at_stop.load(Ordering::Relaxed),
                };
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Where to report that a worker took a direct offer (the engine's sink).
    pub fn set_sink(&self, sink: Arc<dyn ReportSink>) {
        let _ = self.sink.set(sink);
    }

    /// Where a result that answers its task's offer goes (the engine's
    /// intake, as for results on their own). Until this is set, offers do
    /// not invite results (`offer_result_within_ms` is left out).
    pub fn set_results(&self, handler: Arc<dyn ResultHandler>) {
        let _ = self.results.set(handler);
    }
}

async fn send_outgoing(publisher: Arc<Publisher>, out: Outgoing) {
    let Publisher {
        js,
        client,
        subjects,
        partition_of,
        attempts,
        ..
    } = &*publisher;
    match out {
        Outgoing::Task(spec) => {
            // Checked here, with the offer's permit already held, so a stop
            // that began meanwhile either is seen here or sees this offer
            // out (see `NatsTransport::drain`).
            if publisher.hold_at_stop(&spec) {
                return;
            }
            let p = partition_of(&spec.workflow_id);
            let mut msg = match TaskMessage::from_spec(
                &spec,
                subjects.results(p),
                subjects.heartbeats(p),
                publisher.results_direct.then(|| subjects.results_direct(p)),
            ) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(task_id = %spec.task_id, error = %e, "task cannot be encoded");
                    return;
                }
            };
            let offered = publisher.offers(&spec);
            if offered && publisher.result_within_ms > 0 && publisher.results.get().is_some() {
                msg.offer_result_within_ms = Some(publisher.result_within_ms);
            }
            let Ok(payload) = serde_json::to_vec(&msg) else {
                return;
            };
            let payload: bytes::Bytes = payload.into();
            let traceparent = task_traceparent(&spec.workflow_id, &spec.task_id);
            // Only an attempt with a heartbeat timeout is offered: a worker
            // that dies holding it is noticed by that timeout, as a stream
            // message would have been redelivered.
            if let (true, Some(timeout)) = (offered, publisher.offer_timeout) {
                match offer_task(&publisher, &spec, &traceparent, payload.clone(), timeout).await {
                    Ok(taken) => {
                        publisher.stats.tasks_direct.fetch_add(1, Ordering::Relaxed);
                        let outcome = match taken.result {
                            Some(answer) => deliver_offer_result(&publisher, &spec, answer).await,
                            None => OfferResultOutcome::Refused,
                        };
                        match outcome {
                            OfferResultOutcome::Applied => return,
                            // The worker has the task (or had it): the
                            // attempt counts as started, so its heartbeat
                            // timeout watches it.
                            OfferResultOutcome::Refused => {
                                if let Some(sink) = publisher.sink.get() {
                                    sink.report(
                                        &spec.workflow_id,
                                        WorkerReport::Started {
                                            task_id: spec.task_id.clone(),
                                            worker: taken.worker.unwrap_or_default(),
                                        },
                                    );
                                }
                                return;
                            }
                            // The engine no longer watches the attempt (it
                            // took the result, then failed to journal it):
                            // run the task again through the stream.
                            OfferResultOutcome::NotApplied => {}
                        }
                    }
                    Err(why) => publisher.stats.declined(why),
                }
                if publisher.hold_at_stop(&spec) {
                    return;
                }
            }
            // The stream's copy does not invite a result in an answer.
            let payload = if msg.offer_result_within_ms.take().is_some() {
                match serde_json::to_vec(&msg) {
                    Ok(p) => p.into(),
                    Err(_) => return,
                }
            } else {
                payload
            };
            publisher.stats.tasks_stream.fetch_add(1, Ordering::Relaxed);
            publish_task(
                js,
                subjects.tasks(&spec.task_type),
                &spec,
                &traceparent,
                payload,
                *attempts,
            )
            .await;
        }
        Outgoing::Cancel { task_id, task_type } => {
            let msg = CancelMessage {
                v: VERSION,
                workflow_id: workflow_of_task(&task_id).unwrap_or_default().to_string(),
                task_id,
                reason: "cancelled".into(),
            };
            if let Ok(payload) = serde_json::to_vec(&msg) {
                // Core NATS: a lost cancel only means a worker finishes a useless task.
                let _ = client
                    .publish(subjects.cancel(&task_type), payload.into())
                    .await;
            }
        }
    }
}

/// A worker's yes to an offer: its name, and the result if it came with
/// the answer (with the answer's headers, for the trace log).
struct Taken {
    worker: Option<String>,
    result: Option<OfferResult>,
}

/// A result that came with the answer to its offer, undecoded.
struct OfferResult {
    raw: Box<serde_json::value::RawValue>,
    headers: Option<async_nats::HeaderMap>,
}

/// What became of a result that answered its offer.
enum OfferResultOutcome {
    /// Durable in the journal (or ignored as stale or duplicate).
    Applied,
    /// Refused (unreadable, over a limit, another task's): the engine never
    /// saw it and still watches the attempt.
    Refused,
    /// The engine took it but could not journal it within
    /// `tasks_direct_result_apply_for`.
    NotApplied,
}

/// Decodes and checks a result that answered its offer and hands it to
/// the engine. A journal failure is tried again (with backoff, for up to
/// `tasks_direct_result_apply_for`): this result exists nowhere else, and
/// the engine stopped watching the attempt when it took the result.
async fn deliver_offer_result(
    publisher: &Publisher,
    spec: &TaskSpec,
    answer: OfferResult,
) -> OfferResultOutcome {
    let Some(handler) = publisher.results.get() else {
        return OfferResultOutcome::Refused;
    };
    let result = match ResultMessage::decode(answer.raw.get().as_bytes(), &publisher.limits) {
        Ok(r) => r,
        Err(e) => {
            handler.rejected(e.reason());
            tracing::warn!(task_id = %spec.task_id, reason = e.reason(), error = %e, "result in an offer answer refused");
            return OfferResultOutcome::Refused;
        }
    };
    if result.task_id != spec.task_id
        || result.workflow_id != spec.workflow_id
        || result.step != spec.step
        || result.attempt != spec.attempt
    {
        handler.rejected("invalid");
        tracing::warn!(task_id = %spec.task_id, answered = %result.task_id, "offer answered with another task's result");
        return OfferResultOutcome::Refused;
    }
    let headers = answer.headers;
    crate::failpoints::point("result.received");
    publisher
        .stats
        .results_in_offer_reply
        .fetch_add(1, Ordering::Relaxed);
    log_received(&result, headers.as_ref());
    let (wf, result) = result.into_task_result();
    let give_up = tokio::time::Instant::now() + publisher.result_apply_for;
    let mut backoff = Duration::from_millis(20);
    loop {
        let left = give_up.saturating_duration_since(tokio::time::Instant::now());
        let error =
            match tokio::time::timeout(left, handler.handle(wf.clone(), result.clone())).await {
                Ok(Ok(())) => return OfferResultOutcome::Applied,
                Ok(Err(e)) => e,
                Err(_) => "not applied in time".to_owned(),
            };
        if tokio::time::Instant::now() + backoff >= give_up {
            tracing::error!(task_id = %spec.task_id, error = %error, "result in an offer answer not applied; publishing the task to the stream to run it again");
            return OfferResultOutcome::NotApplied;
        }
        tracing::warn!(task_id = %spec.task_id, error = %error, "result in an offer answer not applied; trying again");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Offers a task to an idle worker of its type: [`Taken`] once one took
/// it, else why not (the caller then publishes it to the stream).
async fn offer_task(
    publisher: &Publisher,
    spec: &TaskSpec,
    traceparent: &str,
    payload: bytes::Bytes,
    timeout: Duration,
) -> Result<Taken, OfferDeclined> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(TRACEPARENT, traceparent);
    let request = async_nats::Request::new()
        .payload(payload)
        .headers(headers)
        .timeout(Some(timeout));
    let reply = publisher
        .client
        .send_request(publisher.subjects.tasks_direct(&spec.task_type), request)
        .await
        .map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => OfferDeclined::NoWorker,
            async_nats::RequestErrorKind::TimedOut => OfferDeclined::Timeout,
            _ => OfferDeclined::Error,
        })?;
    match TaskOfferReply::decode(&reply.payload) {
        Ok(r) if r.taken => Ok(Taken {
            worker: r.worker,
            result: r.result.map(|raw| OfferResult {
                raw,
                headers: reply.headers,
            }),
        }),
        Ok(r) => {
            if let Some(error) = r.error {
                tracing::debug!(task_id = %spec.task_id, error, "task offer declined");
            }
            Err(OfferDeclined::Busy)
        }
        Err(_) => Err(OfferDeclined::Error),
    }
}

async fn publish_task(
    js: &jetstream::Context,
    subject: String,
    spec: &TaskSpec,
    traceparent: &str,
    payload: bytes::Bytes,
    attempts: u32,
) {
    let mut backoff = Duration::from_millis(50);
    let (task_id, workflow_id, step) = (
        spec.task_id.as_str(),
        spec.workflow_id.as_str(),
        spec.step.as_str(),
    );
    for publish_attempt in 1..=attempts {
        let msg = jetstream::message::PublishMessage::build()
            .payload(payload.clone())
            .message_id(task_id)
            .header(TRACEPARENT, traceparent);
        let error = match js.send_publish(subject.clone(), msg).await {
            Ok(ack) => match ack.await {
                Ok(_) => return,
                Err(e) => format!("not acknowledged: {e}"),
            },
            Err(e) => e.to_string(),
        };
        tracing::warn!(
            workflow_id,
            step,
            attempt = spec.attempt,
            task_id,
            publish_attempt,
            error = %error,
            "task publish failed"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    tracing::error!(
        workflow_id,
        step,
        attempt = spec.attempt,
        task_id,
        "task not published; its timeout will retry it"
    );
}

impl Transport for NatsTransport {
    fn dispatch(&self, task: Box<TaskSpec>) {
        match self.tx.try_send(Outgoing::Task(task)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Outgoing::Task(t)))
            | Err(mpsc::error::TrySendError::Closed(Outgoing::Task(t))) => tracing::error!(
                workflow_id = %t.workflow_id,
                step = %t.step,
                attempt = t.attempt,
                task_id = %t.task_id,
                "publish queue full or closed; the task's timeout will retry it"
            ),
            Err(_) => {}
        }
    }

    fn cancel(&self, task_id: &str, task_type: &str) {
        let _ = self.tx.try_send(Outgoing::Cancel {
            task_id: task_id.to_string(),
            task_type: task_type.to_string(),
        });
    }
}

/// Where results go: the engine, which answers once the transition is durable.
pub trait ResultHandler: Send + Sync + 'static {
    fn handle(
        &self,
        workflow_id: String,
        result: crate::workflow::TaskResult,
    ) -> futures_util::future::BoxFuture<'static, Result<(), String>>;
    /// Counts a message that was refused, by reason.
    fn rejected(&self, reason: &'static str);
}

/// Consumes results (JetStream, acked after the durable transition) and
/// heartbeats (core NATS) until the client closes.
pub async fn run_intake(
    cfg: NatsConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    handler: Arc<dyn ResultHandler>,
    sink: Arc<dyn ReportSink>,
) -> Result<(), String> {
    let subjects = Subjects::new(&cfg.prefix)?;
    let limits = cfg.limits.clone();
    // Heartbeats: loss is fine, so core NATS.
    let mut beats = client
        .subscribe(subjects.heartbeats_all())
        .await
        .map_err(|e| format!("cannot subscribe to heartbeats: {e}"))?;
    let hb_limits = limits.clone();
    let hb_handler = handler.clone();
    // Stopped with the intake: it holds the engine through the handler.
    let _heartbeats = AbortOnDrop(tokio::spawn(async move {
        while let Some(msg) = beats.next().await {
            match HeartbeatMessage::decode(&msg.payload, &hb_limits) {
                Ok(h) => sink.report(
                    &h.workflow_id,
                    WorkerReport::Heartbeat { task_id: h.task_id },
                ),
                Err(e) => {
                    hb_handler.rejected(e.reason());
                    tracing::warn!(reason = e.reason(), error = %e, "heartbeat refused");
                }
            }
        }
    }));
    // Results by request-reply: answered once applied (durable or ignored).
    let _direct = if cfg.results_direct {
        let sub = client
            .subscribe(subjects.results_direct_all())
            .await
            .map_err(|e| format!("cannot subscribe to direct results: {e}"))?;
        Some(AbortOnDrop(tokio::spawn(serve_direct_results(
            sub,
            client.clone(),
            handler.clone(),
            limits.clone(),
            cfg.results_direct_in_flight_max.max(1),
        ))))
    } else {
        None
    };
    let stream = js
        .get_stream(stream_name(&cfg.prefix, "RESULTS"))
        .await
        .map_err(|e| format!("results stream: {e}"))?;
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            "orchestrator",
            consumer::pull::Config {
                durable_name: Some("orchestrator".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: cfg.results_ack_wait,
                max_ack_pending: cfg.results_max_ack_pending,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("results consumer: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("results consumer: {e}"))?;
    while let Some(msg) = messages.next().await {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "results consumer error");
                continue;
            }
        };
        crate::failpoints::point("result.received");
        match ResultMessage::decode(&msg.payload, &limits) {
            Ok(r) => {
                log_received(&r, msg.headers.as_ref());
                let task_id = r.task_id.clone();
                let (wf, result) = r.into_task_result();
                let handler = handler.clone();
                // Each result is acked only once its transition is durable;
                // concurrently, bounded by the consumer's max_ack_pending.
                tokio::spawn(async move {
                    match handler.handle(wf, result).await {
                        Ok(()) => {
                            let _ = msg.ack().await;
                        }
                        Err(e) => {
                            // Not acked: JetStream redelivers after ack_wait.
                            tracing::warn!(task_id = %task_id, error = %e, "result not applied; it will be redelivered");
                        }
                    }
                });
            }
            Err(e) => {
                handler.rejected(e.reason());
                tracing::warn!(reason = e.reason(), error = %e, "result refused");
                // A malformed message never becomes valid: terminate it.
                let _ = msg.ack_with(jetstream::AckKind::Term).await;
            }
        }
    }
    Ok(())
}

/// Logs a received result with the worker's span, a child of the task's,
/// so a trace can be followed through the logs.
fn log_received(r: &ResultMessage, headers: Option<&async_nats::HeaderMap>) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let trace = headers
        .and_then(|h| h.get(TRACEPARENT))
        .and_then(|v| TraceParent::parse(v.as_str()));
    if let Some(t) = &trace {
        tracing::debug!(
            workflow_id = %r.workflow_id,
            step = %r.step,
            attempt = r.attempt,
            task_id = %r.task_id,
            trace_id = %t.trace_id,
            span_id = %t.parent_id,
            "result received"
        );
    }
}

/// The body of a reply to a direct result.
fn result_reply(ok: bool, retry: bool, error: Option<String>) -> bytes::Bytes {
    let reply = ResultReply {
        v: VERSION,
        ok,
        retry,
        error,
    };
    serde_json::to_vec(&reply).unwrap_or_default().into()
}

/// Serves `<prefix>.rdirect.>`: each request carries one result; the reply
/// (`ResultReply`) says `ok` once the result's transition is durable or the
/// result was ignored, so the worker can forget it. At most `in_flight_max`
/// are applied at once; the rest wait in the subscription.
async fn serve_direct_results(
    mut sub: async_nats::Subscriber,
    client: async_nats::Client,
    handler: Arc<dyn ResultHandler>,
    limits: Limits,
    in_flight_max: usize,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(in_flight_max));
    while let Some(msg) = sub.next().await {
        let Some(reply_to) = msg.reply.clone() else {
            // A plain publish cannot be answered: the worker would not know
            // whether it was applied. Count and drop it.
            handler.rejected("direct_without_reply");
            continue;
        };
        crate::failpoints::point("result.received");
        let r = match ResultMessage::decode(&msg.payload, &limits) {
            Ok(r) => r,
            Err(e) => {
                handler.rejected(e.reason());
                tracing::warn!(reason = e.reason(), error = %e, "direct result refused");
                let _ = client
                    .publish(reply_to, result_reply(false, false, Some(e.to_string())))
                    .await;
                continue;
            }
        };
        log_received(&r, msg.headers.as_ref());
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (handler, client) = (handler.clone(), client.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let task_id = r.task_id.clone();
            let (wf, result) = r.into_task_result();
            let payload = match handler.handle(wf, result).await {
                Ok(()) => result_reply(true, false, None),
                Err(e) => {
                    tracing::warn!(task_id = %task_id, error = %e, "direct result not applied; the worker will send it again");
                    result_reply(false, true, Some(e))
                }
            };
            let _ = client.publish(reply_to, payload).await;
        });
    }
}

/// Aborts a background task when dropped (its owner was cancelled).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
