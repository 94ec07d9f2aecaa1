//! `orchestrator worker --simulate`: simulated workers over NATS, speaking
//! the same protocol a real worker does (see `docs/protocol.md`). One pull
//! consumer per task type, so a busy worker pulls only when it has a free slot.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use crate::protocol::subjects::Subjects;
use crate::protocol::trace::{span_id, TraceParent, TRACEPARENT, TRACESTATE};
use crate::protocol::{
    ErrorBody, HeartbeatMessage, ResultMessage, ResultReply, ResultStatus, TaskMessage, VERSION,
};
use crate::sim::{draw, output_from, SimConfig};
use crate::transport::nats::{stream_name, NatsConfig};

/// Misbehaviour a simulated worker can be asked for, each a share of
/// executions in [0, 1], drawn from the seed and the task id (so a run
/// reproduces) independently of `fail_rate` and of each other.
#[derive(Debug, Clone, Default)]
pub struct WorkerFaults {
    /// Never answers: acks the task message (the worker took it), then no
    /// heartbeat and no result. The orchestrator's timeouts must notice.
    pub hang_rate: f64,
    /// Answers twice (two result messages with different `Nats-Msg-Id`s, so
    /// JetStream de-duplication does not hide the second one).
    pub duplicate_rate: f64,
    /// Answers late: the result is held back (no heartbeats) and published
    /// only once the attempt is superseded — a cancel for it arrives, or a
    /// newer attempt with the same idempotency key — as a slow worker would.
    pub stale_rate: f64,
    /// Appends one JSON line per execution here (see [`ExecutionRecord`]).
    pub record: Option<PathBuf>,
    /// Late answers held at once, at most (beyond it they are sent at once).
    pub stale_max: usize,
    /// Succeeds with a wrong output: `n` off by 1000 (so every check
    /// downstream of it must notice), for testing output checks.
    pub corrupt_rate: f64,
    /// Outages of task types (`--fail-for`): every execution of the type
    /// fails, retryably, within its time span, then the type recovers.
    pub fail_for: Vec<Outage>,
}

/// A span of time (from when the workers started) in which every execution
/// of `task_type` fails retryably.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    pub task_type: String,
    /// The outage begins this long after the workers started.
    pub after_ms: u64,
    /// And lasts this long.
    pub for_ms: u64,
}

impl Outage {
    fn covers(&self, task_type: &str, since_start: Duration) -> bool {
        let ms = since_start.as_millis() as u64;
        self.task_type == task_type && ms >= self.after_ms && ms - self.after_ms < self.for_ms
    }
}

/// Parses `--fail-for TYPE=DURATION[@AFTER]` (`transcribe=30s`, `transcribe=30s@10s`).
pub fn parse_fail_for(s: &str) -> Result<Outage, String> {
    let (task_type, span) = s.split_once('=').ok_or_else(|| {
        format!("expected TYPE=DURATION[@AFTER] (e.g. transcribe=30s@10s), got {s:?}")
    })?;
    if !crate::protocol::subjects::valid_token(task_type) {
        return Err(format!("invalid task type {task_type:?} in --fail-for"));
    }
    let (dur, after) = span.split_once('@').unwrap_or((span, "0s"));
    let ms = |d: &str| crate::durations::parse_ms(d).map_err(|e| format!("--fail-for {s:?}: {e}"));
    Ok(Outage {
        task_type: task_type.to_owned(),
        after_ms: ms(after)?,
        for_ms: ms(dur)?,
    })
}

/// What an observer of the workers learns of each answered execution (an
/// in-process load generator splits task time into queue wait and run with it).
#[derive(Debug, Clone, Copy)]
pub struct Execution<'a> {
    pub task_id: &'a str,
    /// Unix µs when the worker started it (after the pull).
    pub started_us: u64,
    /// Unix µs when its result was ready, just before the result is published.
    pub finished_us: u64,
    pub succeeded: bool,
}

/// Called once per answered execution, before its result is published (so
/// the call happens before the orchestrator can have seen the result).
pub type Observer = Arc<dyn Fn(&Execution<'_>) + Send + Sync>;

/// Unix time in µs.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl WorkerFaults {
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("--hang-rate", self.hang_rate),
            ("--duplicate-rate", self.duplicate_rate),
            ("--stale-rate", self.stale_rate),
            ("--corrupt-rate", self.corrupt_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be within [0, 1], got {rate}"));
            }
        }
        Ok(())
    }
}

/// One line of `--record FILE.jsonl`: what a worker did with one delivery.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecutionRecord {
    pub task_id: String,
    pub idempotency_key: String,
    pub workflow_id: String,
    pub step: String,
    pub attempt: u32,
    /// `succeeded`, `failed`, `hung`, `late` (held back, then answered) or `cancelled`.
    pub outcome: String,
    /// Result messages this execution set out to publish (0, 1 or 2). The
    /// line is written before the first of them is sent, so a worker killed
    /// mid-publish still leaves the line of every answer it may have sent; a
    /// publish that gave up is counted all the same.
    pub answers: u32,
    pub worker: String,
    /// When the worker started the execution (unix ms; its clock).
    pub at_ms: u64,
    /// When the line was written (unix ms; its clock): the execution's work
    /// is over, its answers not sent yet. `at_ms..ended_at_ms` is the time
    /// the execution held its worker slot. 0 in records written without it.
    #[serde(default)]
    pub ended_at_ms: u64,
}

/// Line-buffered, so a killed worker leaves whole lines behind.
struct Recorder(Mutex<std::io::LineWriter<std::fs::File>>);

impl Recorder {
    fn open(path: &std::path::Path) -> Result<Recorder, String> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open record file {}: {e}", path.display()))?;
        Ok(Recorder(Mutex::new(std::io::LineWriter::new(f))))
    }

    fn write(&self, rec: &ExecutionRecord) {
        if let Ok(line) = serde_json::to_string(rec) {
            let mut w = self.0.lock();
            if let Err(e) = writeln!(w, "{line}") {
                tracing::error!(error = %e, "cannot write the execution record");
            }
        }
    }
}

/// A held-back answer of a `stale` execution, keyed by idempotency key.
struct Withheld {
    task_id: String,
    route: Route,
    payload: bytes::Bytes,
    headers: async_nats::HeaderMap,
}

/// Where a result goes: the RESULTS stream (`reply_to`), or a request on
/// `result_direct_to` that the orchestrator answers once the result is
/// durable in its journal.
#[derive(Debug, Clone)]
enum Route {
    JetStream(String),
    Direct(String),
}

impl Route {
    fn of(task: &TaskMessage, direct: bool) -> Route {
        match (&task.result_direct_to, direct) {
            (Some(subject), true) => Route::Direct(subject.clone()),
            _ => Route::JetStream(task.reply_to.clone()),
        }
    }
}

/// How long a worker keeps trying to hand a result over (NATS or the
/// orchestrator may be restarting); after that the orchestrator's timeout
/// re-runs the attempt.
const RESULT_RETRY_FOR: Duration = Duration::from_secs(120);
/// Wait for the orchestrator's answer to one direct result request.
const DIRECT_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

struct Shared {
    js: jetstream::Context,
    client: async_nats::Client,
    sim: SimConfig,
    faults: WorkerFaults,
    cancelled: Mutex<HashSet<String>>,
    withheld: Mutex<HashMap<String, Withheld>>,
    recorder: Option<Recorder>,
    limits: crate::protocol::Limits,
    observer: Option<Observer>,
    /// Send results by request when the task offers `result_direct_to`.
    direct: bool,
    /// When the workers started (for `fail_for`).
    began: tokio::time::Instant,
}

impl Shared {
    /// Writes the execution's line; `at_ms` is when the worker started it.
    fn record(&self, task: &TaskMessage, outcome: &str, answers: u32, at_ms: u64) {
        if let Some(r) = &self.recorder {
            r.write(&ExecutionRecord {
                task_id: task.task_id.clone(),
                idempotency_key: task.idempotency_key.clone(),
                workflow_id: task.workflow_id.clone(),
                step: task.step.clone(),
                attempt: task.attempt,
                outcome: outcome.to_owned(),
                answers,
                worker: self.sim.worker.clone(),
                at_ms,
                ended_at_ms: now_us() / 1000,
            });
        }
    }

    /// Publishes the held-back answer of `key`, if any (the attempt was superseded).
    async fn release_withheld(&self, key: &str, only_task: Option<&str>) {
        let w = {
            let mut map = self.withheld.lock();
            match only_task {
                Some(t) if map.get(key).is_some_and(|w| w.task_id != t) => None,
                _ => map.remove(key),
            }
        };
        if let Some(w) = w {
            self.send_result(&w.route, &w.task_id, "", w.payload, w.headers, None)
                .await;
        }
    }

    /// Hands a result over by `route`, retrying for [`RESULT_RETRY_FOR`].
    /// While it retries, `task_msg` (the task's JetStream message) is kept
    /// in progress so the task is not redelivered meanwhile.
    async fn send_result(
        &self,
        route: &Route,
        task_id: &str,
        suffix: &str,
        payload: bytes::Bytes,
        headers: async_nats::HeaderMap,
        task_msg: Option<&jetstream::Message>,
    ) -> bool {
        let give_up = tokio::time::Instant::now() + RESULT_RETRY_FOR;
        let mut backoff = Duration::from_millis(50);
        let mut progress_at = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let sent = match route {
                Route::JetStream(subject) => {
                    let msg = jetstream::message::PublishMessage::build()
                        .payload(payload.clone())
                        .headers(headers.clone())
                        .message_id(format!("r:{task_id}{suffix}"));
                    match self.js.send_publish(subject.clone(), msg).await {
                        Ok(ack) => ack.await.is_ok(),
                        Err(_) => false,
                    }
                }
                Route::Direct(subject) => {
                    let request = async_nats::Request::new()
                        .payload(payload.clone())
                        .headers(headers.clone())
                        .timeout(Some(DIRECT_REPLY_TIMEOUT));
                    match self.client.send_request(subject.clone(), request).await {
                        Ok(reply) => match serde_json::from_slice::<ResultReply>(&reply.payload) {
                            Ok(r) if r.ok => true,
                            Ok(r) if !r.retry => {
                                tracing::error!(
                                    task_id,
                                    error = r.error.as_deref().unwrap_or(""),
                                    "result refused by the orchestrator"
                                );
                                return false;
                            }
                            _ => false,
                        },
                        Err(_) => false,
                    }
                }
            };
            if sent {
                return true;
            }
            let now = tokio::time::Instant::now();
            if now >= give_up {
                break;
            }
            if let Some(m) = task_msg.filter(|_| now >= progress_at) {
                let _ = m.ack_with(jetstream::AckKind::Progress).await;
                progress_at = now + Duration::from_secs(10);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
        tracing::error!(
            task_id,
            "result not handed over; the orchestrator's timeout will retry the attempt"
        );
        false
    }
}

/// Runs simulated workers for `task_types` until the connection closes or
/// `shutdown` resolves.
pub async fn run(
    nats: NatsConfig,
    sim: SimConfig,
    faults: WorkerFaults,
    task_types: Vec<String>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    run_observed(nats, sim, faults, task_types, None, shutdown).await
}

/// The durable consumer `config` on the stream `stream`, made again after
/// it was deleted; waits (and retries) until the stream is back.
async fn reopen_consumer(
    js: &jetstream::Context,
    stream: &str,
    config: &consumer::pull::Config,
) -> consumer::PullConsumer {
    loop {
        let made = match js.get_stream(stream).await {
            Ok(s) => s
                .get_or_create_consumer(
                    config.durable_name.as_deref().unwrap_or_default(),
                    config.clone(),
                )
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match made {
            Ok(c) => return c,
            Err(e) => {
                tracing::warn!(stream, error = %e, "tasks consumer not available yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// [`run`], telling `observer` about every answered execution.
pub async fn run_observed(
    nats: NatsConfig,
    sim: SimConfig,
    faults: WorkerFaults,
    task_types: Vec<String>,
    observer: Option<Observer>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    faults.validate()?;
    let recorder = faults.record.as_deref().map(Recorder::open).transpose()?;
    let (client, js) = crate::transport::nats::connect(&nats).await?;
    crate::transport::nats::ensure_streams(&js, &nats).await?;
    let subjects = Subjects::new(&nats.prefix)?;
    let shared = Arc::new(Shared {
        js: js.clone(),
        client: client.clone(),
        sim: sim.clone(),
        faults,
        cancelled: Mutex::default(),
        withheld: Mutex::default(),
        recorder,
        limits: nats.limits.clone(),
        observer,
        direct: nats.results_direct,
        began: tokio::time::Instant::now(),
    });
    // Only the cancels of the task types served: with per-type NATS
    // users (deploy/nats/) a worker may read no others.
    let mut per_type = Vec::with_capacity(task_types.len());
    for task_type in &task_types {
        per_type.push(
            client
                .subscribe(subjects.cancel(task_type))
                .await
                .map_err(|e| format!("cannot subscribe to cancels: {e}"))?,
        );
    }
    let mut cancels = futures_util::stream::select_all(per_type);
    let s2 = shared.clone();
    tokio::spawn(async move {
        while let Some(m) = cancels.next().await {
            if let Ok(c) = serde_json::from_slice::<crate::protocol::CancelMessage>(&m.payload) {
                // A superseded attempt that was held back answers now, late.
                if let Some(key) = idempotency_key_of(&c.task_id) {
                    s2.release_withheld(key, Some(&c.task_id)).await;
                }
                let mut set = s2.cancelled.lock();
                if set.len() > 100_000 {
                    set.clear();
                }
                set.insert(c.task_id);
            }
        }
    });
    let stream = js
        .get_stream(stream_name(&nats.prefix, "TASKS"))
        .await
        .map_err(|e| format!("tasks stream: {e}"))?;
    let slots = Arc::new(Semaphore::new(sim.concurrency.max(1)));
    let mut handles = Vec::new();
    for task_type in task_types {
        if !crate::protocol::subjects::valid_token(&task_type) {
            return Err(format!("invalid task type {task_type:?}"));
        }
        let name = format!("worker-{task_type}");
        let consumer_config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: subjects.tasks(&task_type),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: i64::try_from(sim.concurrency.max(1)).unwrap_or(1000),
            ..Default::default()
        };
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(&name, consumer_config.clone())
            .await
            .map_err(|e| format!("consumer {name}: {e}"))?;
        if nats.tasks_direct {
            let offers = client
                .queue_subscribe(subjects.tasks_direct(&task_type), "workers".into())
                .await
                .map_err(|e| format!("cannot subscribe to task offers: {e}"))?;
            handles.push(tokio::spawn(take_offers(
                offers,
                slots.clone(),
                shared.clone(),
            )));
        }
        let slots = slots.clone();
        let shared = shared.clone();
        let stream_id = stream_name(&nats.prefix, "TASKS");
        handles.push(tokio::spawn(async move {
            // A stream error (NATS restarting, a missed idle heartbeat) is
            // not the end: skip it, and re-open the stream if it ended. An
            // earlier version stopped pulling at the first error, so a NATS
            // restart left every later task of the type unanswered.
            let mut consumer = consumer;
            loop {
                let mut messages = match consumer.messages().await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "tasks consumer; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                while let Some(next) = messages.next().await {
                    let msg = match next {
                        Ok(m) => m,
                        Err(e) if crate::transport::nats::consumer_gone(&e) => {
                            // Deleted, alone or with its stream: make it
                            // again once the stream is back.
                            tracing::warn!(error = %e, "tasks consumer gone; opening it again");
                            consumer =
                                reopen_consumer(&shared.js, &stream_id, &consumer_config).await;
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "tasks consumer error");
                            continue;
                        }
                    };
                    let Ok(permit) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        let task = match TaskMessage::decode(&msg.payload, &shared.limits) {
                            Ok(t) => t,
                            Err(e) => {
                                tracing::warn!(error = %e, "task refused");
                                let _ = msg.ack_with(jetstream::AckKind::Term).await;
                                return;
                            }
                        };
                        execute(&shared, &task, msg.headers.as_ref(), Some(&msg), None).await;
                        let _ = msg.ack().await;
                    });
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
    }
    let aborts: Vec<_> = handles.iter().map(|h| h.abort_handle()).collect();
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => {}
        _ = futures_util::future::join_all(handles) => {}
    }
    // Graceful stop: pull nothing more, and let the tasks in hand finish and
    // hand their results over (up to the grace), so a stopped worker leaves
    // no result behind that the orchestrator already has — nor one it lacks.
    for a in aborts {
        a.abort();
    }
    let all = u32::try_from(sim.concurrency.max(1)).unwrap_or(u32::MAX);
    let grace = Duration::from_millis(sim.shutdown_grace_ms);
    if tokio::time::timeout(grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            in_hand = all as usize - slots.available_permits(),
            "shutdown grace over; tasks in hand are left to JetStream redelivery"
        );
    }
    client.flush().await.ok();
    Ok(())
}

/// Serves one task type's direct offers (`<prefix>.tdirect.<type>`, a
/// queue group): with a free slot the worker takes the task and runs it,
/// answering `taken` at once or, when the offer has
/// `offer_result_within_ms`, with the result if it has it by then (else
/// `taken` when that window closes); without a free slot, or for an
/// unreadable task, it declines at once and the orchestrator publishes the
/// task to the stream. The subscription ends
/// (and NATS stops offering to this worker) when the task is aborted at
/// shutdown.
async fn take_offers(
    mut offers: async_nats::Subscriber,
    slots: Arc<Semaphore>,
    shared: Arc<Shared>,
) {
    while let Some(msg) = offers.next().await {
        let Some(reply_to) = msg.reply.clone() else {
            continue;
        };
        let answer = |taken: bool, error: Option<String>| offer_reply(&shared, taken, error, None);
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            let _ = shared.client.publish(reply_to, answer(false, None)).await;
            continue;
        };
        let task = match TaskMessage::decode(&msg.payload, &shared.limits) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "task offer refused");
                let _ = shared
                    .client
                    .publish(reply_to, answer(false, Some(e.to_string())))
                    .await;
                continue;
            }
        };
        let shared = shared.clone();
        match task.offer_result_within_ms.filter(|&ms| ms > 0) {
            // The orchestrator takes the result as the answer if it comes
            // soon enough: one message instead of "taken", a result
            // request and its answer.
            Some(ms) => {
                tokio::spawn(async move {
                    let _permit = permit;
                    let offer = OfferAnswer {
                        reply_to,
                        answered: AtomicBool::new(false),
                    };
                    run_offered(&shared, &task, msg.headers.as_ref(), &offer, ms).await;
                });
            }
            None => {
                let _ = shared.client.publish(reply_to, answer(true, None)).await;
                tokio::spawn(async move {
                    let _permit = permit;
                    execute(&shared, &task, msg.headers.as_ref(), None, None).await;
                });
            }
        }
    }
}

/// Bytes kept free for the answer around a result in it (its other fields).
const OFFER_ANSWER_ROOM: usize = 512;

/// The body of an answer to an offer.
fn offer_reply(
    shared: &Shared,
    taken: bool,
    error: Option<String>,
    result: Option<Box<serde_json::value::RawValue>>,
) -> bytes::Bytes {
    let body = crate::protocol::TaskOfferReply {
        v: VERSION,
        taken,
        worker: taken.then(|| shared.sim.worker.clone()),
        error,
        result,
    };
    bytes::Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// A taken offer that has not been answered yet: answered once, with the
/// result when it is ready within the offer's window, else `taken`.
struct OfferAnswer {
    reply_to: async_nats::Subject,
    answered: AtomicBool,
}

impl OfferAnswer {
    /// True for the one caller that gets to answer.
    fn claim(&self) -> bool {
        !self.answered.swap(true, Ordering::AcqRel)
    }

    /// Answers `taken`, with `result` if given; false if it could not be sent.
    async fn answer(
        &self,
        shared: &Shared,
        result: Option<Box<serde_json::value::RawValue>>,
        headers: Option<async_nats::HeaderMap>,
    ) -> bool {
        let body = offer_reply(shared, true, None, result);
        let sent = match headers {
            Some(h) => {
                shared
                    .client
                    .publish_with_headers(self.reply_to.clone(), h, body)
                    .await
            }
            None => shared.client.publish(self.reply_to.clone(), body).await,
        };
        sent.is_ok()
    }
}

/// Runs an offered task whose result may answer the offer: if it is not
/// ready within `within_ms`, the offer is answered `taken` then and the
/// result goes its own way when ready. An attempt that ends without a
/// result to send (cancelled, hung, held back) answers `taken` at its end.
async fn run_offered(
    shared: &Shared,
    task: &TaskMessage,
    headers: Option<&async_nats::HeaderMap>,
    offer: &OfferAnswer,
    within_ms: u64,
) {
    {
        let run = execute(shared, task, headers, None, Some(offer));
        tokio::pin!(run);
        tokio::select! {
            biased;
            () = &mut run => {}
            () = tokio::time::sleep(Duration::from_millis(within_ms)) => {
                if offer.claim() {
                    offer.answer(shared, None, None).await;
                }
                run.await;
            }
        }
    }
    if offer.claim() {
        offer.answer(shared, None, None).await;
    }
}

/// The idempotency key inside a task id (`<workflow>:<step>:<gen>:<attempt>` → without the attempt).
fn idempotency_key_of(task_id: &str) -> Option<&str> {
    task_id.rsplit_once(':').map(|(key, _)| key)
}

/// Independent draws per fault kind: salts keep them uncorrelated.
fn drawn(sim: &SimConfig, salt: u64, task_id: &str, rate: f64) -> bool {
    rate > 0.0 && draw(sim.seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15), task_id) < rate
}

/// Runs one attempt. `headers` are the task message's; `stream_msg` is
/// its JetStream message (kept in progress while the task runs), `None`
/// for a task taken from a direct offer; `offer`, for an offer that the
/// result may answer (if nobody answered it yet).
async fn execute(
    shared: &Shared,
    task: &TaskMessage,
    task_headers: Option<&async_nats::HeaderMap>,
    stream_msg: Option<&jetstream::Message>,
    offer: Option<&OfferAnswer>,
) {
    let (sim, faults, client) = (&shared.sim, &shared.faults, &shared.client);
    // An older attempt of this step held back by `stale_rate` answers now, late.
    if faults.stale_rate > 0.0 {
        shared.release_withheld(&task.idempotency_key, None).await;
    }
    if shared.cancelled.lock().remove(&task.task_id) {
        shared.record(task, "cancelled", 0, now_us() / 1000);
        return;
    }
    if drawn(sim, 1, &task.task_id, faults.hang_rate) {
        shared.record(task, "hung", 0, now_us() / 1000);
        return;
    }
    let beat = |task: &TaskMessage| HeartbeatMessage {
        v: VERSION,
        task_id: task.task_id.clone(),
        attempt_token: task.attempt_token.clone(),
        workflow_id: task.workflow_id.clone(),
        worker: Some(sim.worker.clone()),
        progress: None,
    };
    let stale = drawn(sim, 3, &task.task_id, faults.stale_rate);
    let started_us = now_us();
    let started_at_ms = started_us / 1000;
    let every = task
        .heartbeat_timeout_ms
        .map(|h| Duration::from_millis((h / 3).max(1)))
        .unwrap_or(Duration::MAX);
    // The first heartbeat says "started"; it is sent only once the task has
    // run for `started_after` (the result itself carries `started_at_ms`),
    // so short tasks cost no heartbeat message. A held-back one stays silent.
    let started_after = Duration::from_millis(sim.started_after_ms);
    if !stale && started_after.is_zero() {
        if let Ok(p) = serde_json::to_vec(&beat(task)) {
            let _ = client.publish(task.heartbeat_to.clone(), p.into()).await;
        }
    }
    let mut next_beat = if started_after.is_zero() {
        every
    } else {
        started_after.min(every)
    };
    let mut left = sim.latency_for(&task.task_id);
    while !left.is_zero() {
        let step = left.min(next_beat);
        next_beat = every;
        tokio::time::sleep(step).await;
        left -= step;
        if shared.cancelled.lock().remove(&task.task_id) {
            shared.record(task, "cancelled", 0, started_at_ms);
            return;
        }
        if !left.is_zero() && !stale {
            if let Ok(p) = serde_json::to_vec(&beat(task)) {
                let _ = client.publish(task.heartbeat_to.clone(), p.into()).await;
            }
            // Keep JetStream from redelivering a long task (docs/protocol.md).
            if let Some(msg) = stream_msg {
                let _ = msg.ack_with(jetstream::AckKind::Progress).await;
            }
        }
    }
    let outage = faults
        .fail_for
        .iter()
        .any(|o| o.covers(&task.task_type, shared.began.elapsed()));
    let fail = outage || draw(sim.seed, &task.task_id) < sim.fail_rate;
    let (status, output, error) = if fail {
        let e = ErrorBody {
            kind: "simulated".into(),
            message: "injected failure".into(),
            retryable: true,
        };
        (ResultStatus::Failed, None, Some(e))
    } else {
        match output_from(task.input.get(), &task.workflow_id, &task.step)
            .ok()
            .map(|o| {
                if drawn(sim, 4, &task.task_id, faults.corrupt_rate) {
                    crate::sim::corrupt_output(&o)
                } else {
                    o
                }
            })
            .and_then(|o| serde_json::value::RawValue::from_string(o).ok())
        {
            Some(o) => (ResultStatus::Succeeded, Some(o), None),
            None => {
                let e = ErrorBody {
                    kind: "invalid_input".into(),
                    message: "task input unreadable".into(),
                    retryable: false,
                };
                (ResultStatus::Failed, None, Some(e))
            }
        }
    };
    let outcome = if fail || error.is_some() {
        "failed"
    } else {
        "succeeded"
    };
    let result = ResultMessage {
        v: VERSION,
        task_id: task.task_id.clone(),
        attempt_token: task.attempt_token.clone(),
        workflow_id: task.workflow_id.clone(),
        step: task.step.clone(),
        attempt: task.attempt,
        status,
        output,
        error,
        worker: Some(sim.worker.clone()),
        started_at_ms: Some(started_at_ms),
    };
    if let Some(observe) = &shared.observer {
        observe(&Execution {
            task_id: &task.task_id,
            started_us,
            finished_us: now_us(),
            succeeded: outcome == "succeeded",
        });
    }
    // Trace context: the result is a child span of the task's.
    let mut headers = async_nats::HeaderMap::new();
    if let Some(h) = task_headers {
        if let Some(tp) = h
            .get(TRACEPARENT)
            .and_then(|v| TraceParent::parse(v.as_str()))
        {
            headers.insert(
                TRACEPARENT,
                tp.child(&span_id(&format!("{}/worker", task.task_id))),
            );
        }
        if let Some(ts) = h.get(TRACESTATE) {
            headers.insert(TRACESTATE, ts.as_str());
        }
    }
    let route = Route::of(task, shared.direct);
    let duplicate = drawn(sim, 2, &task.task_id, faults.duplicate_rate);
    // The answer to the offer, if it is still open and the result fits in
    // one message with room for the answer around it.
    let inline = offer.filter(|_| !stale).and_then(|o| {
        let raw = serde_json::value::to_raw_value(&result).ok()?;
        let fits = raw.get().len() + OFFER_ANSWER_ROOM <= shared.limits.message_max_bytes;
        (fits && o.claim()).then_some((o, raw))
    });
    // Record before anything leaves: the system checker matches every
    // accepted result to a line, and a SIGKILL may land between the
    // publish and a line written after it.
    let planned = 1 + u32::from(duplicate);
    let (published, payload) = match inline {
        Some((offer, raw)) => {
            shared.record(task, outcome, planned, started_at_ms);
            // An injected duplicate goes the usual way after the answer.
            let copy = duplicate.then(|| bytes::Bytes::copy_from_slice(raw.get().as_bytes()));
            let answer_headers = if duplicate {
                headers.clone()
            } else {
                std::mem::take(&mut headers)
            };
            let sent = offer.answer(shared, Some(raw), Some(answer_headers)).await;
            (sent, copy)
        }
        None => {
            let Ok(payload) = serde_json::to_vec(&result) else {
                return;
            };
            let payload: bytes::Bytes = payload.into();
            if stale {
                let mut map = shared.withheld.lock();
                if map.len() < faults.stale_max.max(1) {
                    map.insert(
                        task.idempotency_key.clone(),
                        Withheld {
                            task_id: task.task_id.clone(),
                            route: route.clone(),
                            payload,
                            headers,
                        },
                    );
                    drop(map);
                    shared.record(task, "late", 1, started_at_ms);
                    return;
                }
            }
            shared.record(task, outcome, planned, started_at_ms);
            let published = shared
                .send_result(
                    &route,
                    &task.task_id,
                    "",
                    payload.clone(),
                    headers.clone(),
                    stream_msg,
                )
                .await;
            (published, Some(payload))
        }
    };
    if let (true, true, Some(payload)) = (published, duplicate, payload) {
        shared
            .send_result(&route, &task.task_id, ":dup", payload, headers, stream_msg)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_for_parses_a_span_and_covers_only_it() {
        let o = parse_fail_for("flaky=30s@5s").unwrap();
        assert_eq!((o.after_ms, o.for_ms), (5_000, 30_000));
        assert!(!o.covers("flaky", Duration::from_millis(4_999)));
        assert!(o.covers("flaky", Duration::from_secs(5)));
        assert!(o.covers("flaky", Duration::from_millis(34_999)));
        assert!(!o.covers("flaky", Duration::from_secs(35)));
        assert!(!o.covers("other", Duration::from_secs(6)));
        assert_eq!(parse_fail_for("x=2s").unwrap().after_ms, 0);
        for bad in ["flaky", "flaky=soon", "fl aky=1s", "flaky=1s@later"] {
            let e = parse_fail_for(bad).unwrap_err();
            assert!(!e.is_empty() && !e.contains('\n'), "{bad}: {e}");
        }
    }
}
