//! `orchestrator loadgen`: drives a live `orchestrator run` over NATS and
//! measures it.
//!
//! * **Starts** go through the admin `start` verb, at most
//!   `max_in_flight_starts` requests at once, with ids `lg-<run id>-<n>`.
//! * **Open loop** (`--rate`): workflow `i`'s slot is fixed in advance at
//!   `t0 + i / rate`; its latency counts from that slot even when the start is
//!   sent late (no coordinated omission). A `--burst` of N workflows all share
//!   the slot `t0 + burst_at` and are started as fast as the start limit allows.
//! * **Closed loop** (`--concurrency`): N users each start a workflow and
//!   start the next one when theirs is terminal; latency counts from the moment
//!   the user was free.
//! * **Completions** come from the lifecycle event stream
//!   (`<prefix>.events.<pipeline>.>`), which also carries each step's output:
//!   every completed workflow's outputs are checked with `sim::check_outputs`.
//! * With in-process workers ([`crate::worker::run_observed`] on their own
//!   runtime, threads named `lg-workers`), task time is split into queue
//!   wait and run, and their CPU is told apart from the load generator's.

pub mod hist;
pub mod procstat;
pub mod track;

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::admin::{DescribeRequest, StartRequest, WorkflowReply};
use crate::pipeline::PipelineDef;
use crate::protocol::subjects::Subjects;
use crate::protocol::VERSION;
use crate::sim::SimConfig;
use crate::transport::nats::{stream_name, NatsConfig};
use crate::worker::WorkerFaults;
use hist::{round2, Hist};
use track::{Class, Timings, Tracker};

/// Most workflows one run may start (the tracker holds ~40 bytes each).
pub const WORKFLOWS_MAX: u64 = 10_000_000;
/// Highest `--rate`, workflows per second.
pub const RATE_MAX: f64 = 1_000_000.0;
/// Longest `--duration`, `--drain`, `--burst-at`, ... (24 h).
pub const SPAN_MAX: Duration = Duration::from_secs(24 * 3600);
/// Thread-name prefix of the in-process workers' runtime.
pub const WORKER_THREADS: &str = "lg-workers";
/// Start errors echoed on stderr (the rest are only counted).
const START_ERRORS_SHOWN: u64 = 5;

/// How workflows are offered.
#[derive(Debug, Clone)]
pub enum Mode {
    Open {
        rate: f64,
        duration: Duration,
        /// `(workflows, at)`: a backfill started as fast as allowed at `t0 + at`.
        burst: Option<(u64, Duration)>,
    },
    Closed {
        concurrency: u64,
        workflows: u64,
    },
}

impl Mode {
    /// `(live, burst)` workflows the run will start.
    pub fn totals(&self) -> (u64, u64) {
        match self {
            Mode::Open {
                rate,
                duration,
                burst,
            } => (
                (rate * duration.as_secs_f64()).floor() as u64,
                burst.map_or(0, |b| b.0),
            ),
            Mode::Closed { workflows, .. } => (*workflows, 0),
        }
    }
}

/// Where completions are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventsVia {
    /// An ordered JetStream consumer on `<PREFIX>_EVENTS` (deliver new): no gaps.
    Jetstream,
    /// A core NATS subscription on the same subjects: lighter, but a slow
    /// reader can lose messages (counted as lost workflows).
    Core,
}

/// Simulated workers run inside the load generator.
pub struct InProcessWorkers {
    pub sim: SimConfig,
    pub faults: WorkerFaults,
    /// A runtime of their own, threads named [`WORKER_THREADS`].
    pub runtime: tokio::runtime::Handle,
}

pub struct Options {
    pub nats: NatsConfig,
    pub pipeline: Arc<PipelineDef>,
    pub mode: Mode,
    pub max_in_flight_starts: usize,
    pub start_timeout: Duration,
    pub ready_timeout: Duration,
    pub drain: Duration,
    pub run_id: String,
    pub events: EventsVia,
    pub workers: Option<InProcessWorkers>,
    pub orchestrator_pid: Option<u32>,
    pub progress_every: Duration,
    /// The flags as given, echoed into the report.
    pub config: serde_json::Value,
}

/// The outcome: the JSON report, the text summary and the error count.
pub struct Outcome {
    pub report: serde_json::Value,
    pub text: String,
    pub errors: u64,
}

/// Parses `10s`, `500ms`, `2m`, `1h`, `250us` (at most [`SPAN_MAX`]).
pub fn parse_span(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0) // bare number: seconds
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 10s, 500ms, 2m)"))?;
    let secs = v * scale;
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!("{text:?} is not a duration (e.g. 10s, 500ms, 2m)"));
    }
    if secs > SPAN_MAX.as_secs_f64() {
        return Err(format!("{text:?} is above the limit of 24h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `500/s`, `30/m`, `2/h` or a bare `500` (per second), in (0, [`RATE_MAX`]].
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (num, per) = match t.split_once('/') {
        Some((n, "s")) => (n, 1.0),
        Some((n, "m")) => (n, 60.0),
        Some((n, "h")) => (n, 3600.0),
        Some(_) => return Err(format!("{text:?}: the rate unit is /s, /m or /h")),
        None => (t, 1.0),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a rate (e.g. 500/s)"))?;
    let r = v / per;
    if !(r.is_finite() && r > 0.0 && r <= RATE_MAX) {
        return Err(format!(
            "{text:?}: the rate must be above 0 and at most {RATE_MAX}/s"
        ));
    }
    Ok(r)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

async fn connect(nats: &NatsConfig) -> Result<async_nats::Client, String> {
    let cfg = NatsConfig {
        client_name: "narralytica-loadgen".into(),
        ..nats.clone()
    };
    // Room for bursts of events while the reader is busy.
    let (client, _) =
        crate::transport::nats::connect_tuned(&cfg, None, |o| o.subscription_capacity(1 << 20))
            .await?;
    Ok(client)
}

/// Waits until an orchestrator answers admin requests and (for JetStream)
/// the events stream exists.
async fn wait_ready(
    client: &async_nats::Client,
    subjects: &Subjects,
    opts: &Options,
) -> Result<(), String> {
    let deadline = Instant::now() + opts.ready_timeout;
    let probe = serde_json::to_vec(&DescribeRequest {
        v: VERSION,
        id: "lg-readiness-probe".into(),
    })
    .map_err(|e| e.to_string())?;
    loop {
        let last = match tokio::time::timeout(
            Duration::from_secs(2),
            client.request(subjects.admin("describe"), probe.clone().into()),
        )
        .await
        {
            Ok(Ok(_)) => break, // any reply: an orchestrator is serving admin
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no reply within 2 s".to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "no orchestrator answers on {} after {:?} ({last}); is `orchestrator run` up?",
                subjects.admin("describe"),
                opts.ready_timeout
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if opts.events == EventsVia::Jetstream {
        let js = async_nats::jetstream::new(client.clone());
        let name = stream_name(&opts.nats.prefix, "EVENTS");
        loop {
            match js.get_stream(&name).await {
                Ok(_) => break,
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!(
                        "events stream {name} not found ({e}): this orchestrator does not \
                         publish lifecycle events, so completions cannot be observed"
                    ))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    Ok(())
}

/// Feeds every event message to the tracker until the subscription ends.
async fn subscribe_events(
    client: &async_nats::Client,
    opts: &Options,
    tracker: Arc<Mutex<Tracker>>,
    t0: Instant,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let filter = format!("{}.events.{}.>", opts.nats.prefix, opts.pipeline.name);
    let apply = move |payload: &[u8]| {
        let now = micros(t0.elapsed());
        tracker.lock().on_message(payload, now);
    };
    match opts.events {
        EventsVia::Core => {
            let mut sub = client
                .subscribe(filter.clone())
                .await
                .map_err(|e| format!("cannot subscribe to {filter}: {e}"))?;
            // The subscription is registered on the server before any start.
            client
                .flush()
                .await
                .map_err(|e| format!("cannot subscribe to {filter}: {e}"))?;
            Ok(tokio::spawn(async move {
                while let Some(m) = sub.next().await {
                    apply(&m.payload);
                }
            }))
        }
        EventsVia::Jetstream => {
            use async_nats::jetstream::consumer::{push, DeliverPolicy};
            let js = async_nats::jetstream::new(client.clone());
            let name = stream_name(&opts.nats.prefix, "EVENTS");
            let stream = js
                .get_stream(&name)
                .await
                .map_err(|e| format!("events stream {name}: {e}"))?;
            let consumer = stream
                .create_consumer(push::OrderedConfig {
                    deliver_subject: client.new_inbox(),
                    filter_subject: filter.clone(),
                    deliver_policy: DeliverPolicy::New,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("cannot create an ordered consumer on {name}: {e}"))?;
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| format!("cannot read {name}: {e}"))?;
            Ok(tokio::spawn(async move {
                while let Some(m) = messages.next().await {
                    match m {
                        Ok(m) => apply(&m.payload),
                        Err(e) => tracing::warn!(error = %e, "events consumer"),
                    }
                }
            }))
        }
    }
}

/// Starts the in-process workers and waits until their consumers exist.
async fn start_workers(
    opts: &Options,
    client: &async_nats::Client,
    timings: Timings,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<tokio::task::JoinHandle<Result<(), String>>, String> {
    let Some(w) = &opts.workers else {
        return Err("no in-process workers configured".into());
    };
    let task_types = crate::pipeline::task_types(std::slice::from_ref(opts.pipeline.as_ref()));
    let observer: crate::worker::Observer = Arc::new(move |e: &crate::worker::Execution<'_>| {
        let mut t = timings.lock();
        if t.len() < track::TIMINGS_MAX {
            t.insert(e.task_id.into(), (e.started_us, e.finished_us));
        }
    });
    let handle = w.runtime.spawn(crate::worker::run_observed(
        opts.nats.clone(),
        w.sim.clone(),
        w.faults.clone(),
        task_types.clone(),
        Some(observer),
        async move {
            let _ = stop.await;
        },
    ));
    let js = async_nats::jetstream::new(client.clone());
    let name = stream_name(&opts.nats.prefix, "TASKS");
    let deadline = Instant::now() + opts.ready_timeout;
    'types: for t in &task_types {
        loop {
            if handle.is_finished() {
                return match handle.await {
                    Ok(Err(e)) => Err(format!("in-process workers: {e}")),
                    _ => Err("in-process workers stopped".into()),
                };
            }
            if let Ok(s) = js.get_stream(&name).await {
                if s.consumer_info(format!("worker-{t}")).await.is_ok() {
                    continue 'types;
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("in-process worker for {t} not ready"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(handle)
}

/// Sends one `start`; `Ok` only for a newly created workflow.
async fn start_one(
    client: &async_nats::Client,
    subject: String,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<(), String> {
    let msg = tokio::time::timeout(timeout, client.request(subject, body.into()))
        .await
        .map_err(|_| format!("no start reply within {timeout:?}"))?
        .map_err(|e| format!("start request failed: {e}"))?;
    let reply: WorkflowReply =
        serde_json::from_slice(&msg.payload).map_err(|e| format!("bad start reply: {e}"))?;
    if let Some(e) = reply.error {
        return Err(e);
    }
    if reply.created != Some(true) {
        return Err("the id already existed (created=false)".into());
    }
    Ok(())
}

struct Starter {
    client: async_nats::Client,
    subject: String,
    pipeline: String,
    timeout: Duration,
    tracker: Arc<Mutex<Tracker>>,
    permits: Arc<Semaphore>,
    t0: Instant,
    errors_shown: std::sync::atomic::AtomicU64,
}

impl Starter {
    /// Registers workflow `n` with its intended start, then sends its start
    /// (holding a start permit until the reply).
    async fn launch(self: &Arc<Self>, n: usize, class: Class, intended_us: u64) -> bool {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return false;
        };
        let id = {
            let mut t = self.tracker.lock();
            t.register(n, class, intended_us);
            t.id(n)
        };
        let body = serde_json::to_vec(&StartRequest {
            v: VERSION,
            pipeline: self.pipeline.clone(),
            input: json!({"video_url": format!("s3://media/{id}.mp4"), "video_id": id}),
            id: id.clone(),
        });
        let me = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let r = match body {
                Ok(b) => start_one(&me.client, me.subject.clone(), b, me.timeout).await,
                Err(e) => Err(e.to_string()),
            };
            let now = micros(me.t0.elapsed());
            match r {
                Ok(()) => me.tracker.lock().started(n, now),
                Err(e) => {
                    me.tracker.lock().start_failed(n, now);
                    let shown = me
                        .errors_shown
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if shown < START_ERRORS_SHOWN {
                        eprintln!("start of {id} failed: {e}");
                    }
                }
            }
        });
        true
    }
}

/// One progress line: counts, completion rate and latency of the last interval.
fn progress_line(t: &mut Tracker, elapsed: Duration, every: Duration) -> String {
    let c = &t.classes;
    let started: u64 = c.iter().map(|c| c.started).sum();
    let completed: u64 = c.iter().map(|c| c.completed).sum();
    let failed: u64 = c.iter().map(|c| c.failed + c.cancelled).sum();
    let errors: u64 = c.iter().map(|c| c.start_failed + c.output_mismatch).sum();
    let rate = t.recent_completed as f64 / every.as_secs_f64().max(1e-3);
    let line = format!(
        "[{:>6.1}s] started={started} completed={completed} failed={failed} in_flight={} rate={rate:.0}/s p50={:.1}ms p99={:.1}ms errors={errors}",
        elapsed.as_secs_f64(),
        t.in_flight(),
        t.recent.quantile(0.5) as f64 / 1000.0,
        t.recent.quantile(0.99) as f64 / 1000.0,
    );
    t.recent.clear();
    t.recent_completed = 0;
    line
}

fn spawn_progress(
    tracker: Arc<Mutex<Tracker>>,
    t0: Instant,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let tty = std::io::stderr().is_terminal();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tick.tick().await;
            let line = progress_line(&mut tracker.lock(), t0.elapsed(), every);
            let mut err = std::io::stderr().lock();
            let _ = if tty {
                write!(err, "\r\x1b[2K{line}")
            } else {
                writeln!(err, "{line}")
            };
            let _ = err.flush();
        }
    })
}

/// Runs the load; `shutdown` resolving stops starting and skips the drain.
pub async fn run(
    opts: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Outcome, String> {
    let subjects = Subjects::new(&opts.nats.prefix)?;
    let (live, burst) = opts.mode.totals();
    let total = live + burst;
    if total == 0 {
        return Err("nothing to start: the run would start 0 workflows".into());
    }
    if total > WORKFLOWS_MAX {
        return Err(format!(
            "the run would start {total} workflows, above the limit of {WORKFLOWS_MAX}"
        ));
    }
    let total = total as usize;
    let client = connect(&opts.nats).await?;
    wait_ready(&client, &subjects, &opts).await?;

    let users = match opts.mode {
        Mode::Closed { .. } => Some(Arc::new(Semaphore::new(0))),
        Mode::Open { .. } => None,
    };
    let timings: Option<Timings> = opts.workers.as_ref().map(|_| Timings::default());
    let tracker = Arc::new(Mutex::new(Tracker::new(
        opts.pipeline.clone(),
        &opts.run_id,
        total,
        timings.clone(),
        users.clone(),
    )));
    let (stop_workers, workers_stop_rx) = tokio::sync::oneshot::channel();
    let workers = match &timings {
        Some(t) => Some(start_workers(&opts, &client, t.clone(), workers_stop_rx).await?),
        None => None,
    };
    // t0, the first slot, is just after the subscription is in place; every
    // time the run measures is relative to it.
    let t0 = Instant::now() + Duration::from_millis(100);
    let events_task = subscribe_events(&client, &opts, tracker.clone(), t0).await?;
    let orch_before = match opts.orchestrator_pid {
        Some(pid) => Some(procstat::sample(&pid.to_string())?),
        None => None,
    };
    let self_before = procstat::sample("self").unwrap_or_default();
    let workers_cpu_before = procstat::threads_cpu_s(WORKER_THREADS);
    let wall_start = Instant::now();
    let progress = spawn_progress(tracker.clone(), t0, opts.progress_every);

    let permits_max = opts.max_in_flight_starts.max(1);
    let starter = Arc::new(Starter {
        client: client.clone(),
        subject: subjects.admin("start"),
        pipeline: opts.pipeline.name.clone(),
        timeout: opts.start_timeout,
        tracker: tracker.clone(),
        permits: Arc::new(Semaphore::new(permits_max)),
        t0,
        errors_shown: Default::default(),
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopper = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |rx: &tokio::sync::watch::Receiver<bool>| *rx.borrow();
    let mut stalled = false;
    tokio::time::sleep_until(t0.into()).await;

    match opts.mode {
        Mode::Open {
            rate,
            duration: _,
            burst: burst_cfg,
        } => {
            let burst_task = burst_cfg.map(|(n, at)| {
                let starter = starter.clone();
                let mut stop = stop_rx.clone();
                let first = live as usize;
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::time::sleep_until((t0 + at).into()) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    for j in 0..n as usize {
                        if *stop.borrow()
                            || !starter.launch(first + j, Class::Burst, micros(at)).await
                        {
                            return;
                        }
                    }
                })
            });
            let mut stop = stop_rx.clone();
            let period_us = 1e6 / rate;
            for i in 0..live as usize {
                let slot_us = (i as f64 * period_us) as u64;
                let slot = t0 + Duration::from_micros(slot_us);
                if slot > Instant::now() {
                    tokio::select! {
                        _ = tokio::time::sleep_until(slot.into()) => {}
                        _ = stop.wait_for(|s| *s) => break,
                    }
                }
                if stopped(&stop) {
                    break;
                }
                tokio::select! {
                    ok = starter.launch(i, Class::Live, slot_us) => if !ok { break },
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
            if let Some(b) = burst_task {
                let _ = b.await;
            }
        }
        Mode::Closed {
            concurrency,
            workflows,
        } => {
            let users = users.clone().unwrap_or_else(|| Arc::new(Semaphore::new(0)));
            users.add_permits(
                usize::try_from(concurrency)
                    .unwrap_or(usize::MAX)
                    .min(Semaphore::MAX_PERMITS),
            );
            let mut stop = stop_rx.clone();
            for n in 0..workflows as usize {
                // A user is free when its last workflow ended; with every user's
                // workflow lost, stop after --drain instead of waiting forever.
                tokio::select! {
                    r = tokio::time::timeout(opts.drain, users.acquire()) => match r {
                        Ok(Ok(p)) => p.forget(),
                        _ => { stalled = true; break }
                    },
                    _ = stop.wait_for(|s| *s) => break,
                }
                let intended = micros(t0.elapsed());
                tokio::select! {
                    ok = starter.launch(n, Class::Live, intended) => if !ok { break },
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        }
    }
    // Every start answered (or timed out).
    let _ = starter
        .permits
        .acquire_many(u32::try_from(permits_max).unwrap_or(u32::MAX))
        .await;
    let last_start = Instant::now();
    // Drain: wait for the workflows in flight, at most --drain.
    let mut stop = stop_rx.clone();
    while !stopped(&stop) && tracker.lock().in_flight() > 0 && last_start.elapsed() < opts.drain {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    let interrupted = stopped(&stop);
    let wall = wall_start.elapsed();
    progress.abort();
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let self_after = procstat::sample("self").unwrap_or_default();
    let workers_cpu = procstat::threads_cpu_s(WORKER_THREADS) - workers_cpu_before;
    let orch = match (opts.orchestrator_pid, orch_before) {
        (Some(pid), Some(before)) => Some(match procstat::sample(&pid.to_string()) {
            Ok(after) => json!({
                "pid": pid,
                "cpu_s": round2(after.cpu_s - before.cpu_s),
                "cpu_share": round2((after.cpu_s - before.cpu_s) / wall.as_secs_f64().max(1e-9)),
                "rss_mib_start": before.rss_kib / 1024,
                "rss_mib_end": after.rss_kib / 1024,
                "peak_rss_mib": after.hwm_kib / 1024,
            }),
            Err(e) => json!({"pid": pid, "error": e}),
        }),
        _ => None,
    };
    stopper.abort();
    events_task.abort();
    let _ = stop_workers.send(());
    if let Some(w) = workers {
        let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
    }
    let _ = client.flush().await;

    let mut t = tracker.lock();
    let lost = t.finish();
    let loadgen_cpu = self_after.cpu_s - self_before.cpu_s;
    let mut report = build_report(&opts, &t, lost, wall);
    report["orchestrator"] = orch.unwrap_or(serde_json::Value::Null);
    report["loadgen"] = json!({
        "cpu_s": round2(loadgen_cpu),
        "workers_cpu_s": round2(workers_cpu),
        "core_cpu_s": round2(loadgen_cpu - workers_cpu),
        "core_cpu_share": round2((loadgen_cpu - workers_cpu) / wall.as_secs_f64().max(1e-9)),
        "peak_rss_mib": self_after.hwm_kib / 1024,
    });
    report["interrupted"] = json!(interrupted);
    report["stalled"] = json!(stalled);
    report["lost_samples"] = json!(t.lost_samples(10));
    let errors = report["errors"].as_u64().unwrap_or(0);
    let text = text_summary(&report);
    Ok(Outcome {
        report,
        text,
        errors,
    })
}

fn class_json(c: &track::ClassFigures, lost: u64) -> serde_json::Value {
    let window_s = c
        .last_terminal_us
        .saturating_sub(c.first_intended_us.unwrap_or(0)) as f64
        / 1e6;
    json!({
        "started": c.started,
        "completed": c.completed,
        "failed": c.failed,
        "cancelled": c.cancelled,
        "lost": lost,
        "errors": c.output_mismatch + c.start_failed + lost,
        "workflows_per_s": if window_s > 0.0 { round2(c.completed as f64 / window_s) } else { 0.0 },
        "latency_ms": c.latency.summary_ms(),
    })
}

fn build_report(opts: &Options, t: &Tracker, lost: [u64; 2], wall: Duration) -> serde_json::Value {
    let sum = |f: fn(&track::ClassFigures) -> u64| t.classes.iter().map(f).sum::<u64>();
    let completed = sum(|c| c.completed);
    let mismatch = sum(|c| c.output_mismatch);
    let start_failed = sum(|c| c.start_failed);
    let lost_all = lost[0] + lost[1];
    let first = t
        .classes
        .iter()
        .filter_map(|c| c.first_intended_us)
        .min()
        .unwrap_or(0);
    let last = t
        .classes
        .iter()
        .map(|c| c.last_terminal_us)
        .max()
        .unwrap_or(0)
        .max(t.last_task_us);
    let window_s = last.saturating_sub(first) as f64 / 1e6;
    let per_s = |n: u64| {
        if window_s > 0.0 {
            round2(n as f64 / window_s)
        } else {
            0.0
        }
    };
    let mut latency = Hist::default();
    for c in &t.classes {
        latency.merge(&c.latency);
    }
    let mut lat = latency.summary_ms();
    lat["mean"] = json!(round2(latency.mean() / 1000.0));
    let mode = match &opts.mode {
        Mode::Open { .. } => "open",
        Mode::Closed { .. } => "closed",
    };
    let mut report = json!({
        "v": 1,
        "run_id": opts.run_id,
        "mode": mode,
        "pipeline": opts.pipeline.name,
        "config": opts.config,
        "workflows": sum(|c| c.started),
        "completed": completed,
        "failed": sum(|c| c.failed),
        "cancelled": sum(|c| c.cancelled),
        "lost": lost_all,
        "errors": mismatch + start_failed + lost_all,
        "errors_detail": {
            "output_mismatch": mismatch,
            "lost": lost_all,
            "start_failed": start_failed,
        },
        "error_samples": t.mismatch_samples,
        "workflows_per_s": per_s(completed),
        "tasks": t.tasks,
        "tasks_per_s": per_s(t.tasks),
        "window_s": round2(window_s),
        "wall_s": round2(wall.as_secs_f64()),
        "latency_ms": lat,
        "stages": {
            "definition": "start: intended start -> start reply; task: task_dispatched.at -> the attempt's result event .at; \
                queue_wait: task_dispatched.at -> worker start; run: worker start -> result ready; \
                result: result ready -> task_succeeded.at (journaled); overhead: per completed workflow, end-to-end \
                minus the sum along its critical path (the step that finished last, back through the dependency that \
                finished last) of queue_wait + run (in-process workers) or of task (external workers). \
                queue_wait, run and result need --workers-in-process.",
            "start_ms": t.stages.start.summary_ms(),
            "task_ms": t.stages.task.summary_ms(),
            "queue_wait_ms": t.stages.queue_wait.summary_ms(),
            "run_ms": t.stages.run.summary_ms(),
            "result_ms": t.stages.result.summary_ms(),
            "overhead_ms": t.stages.overhead.summary_ms(),
        },
        "event_messages": {
            "applied": t.messages,
            "duplicate_events": t.duplicates,
            "refused": t.refused,
        },
    });
    if matches!(opts.mode, Mode::Open { burst: Some(_), .. }) {
        let mut per = serde_json::Map::new();
        for class in Class::ALL {
            per.insert(
                class.name().into(),
                class_json(&t.classes[class as usize], lost[class as usize]),
            );
        }
        report["per_class"] = serde_json::Value::Object(per);
    }
    report
}

/// The report as text: one `loadgen key=value ...` line, then detail lines.
fn text_summary(r: &serde_json::Value) -> String {
    let l = &r["latency_ms"];
    let mut out = format!(
        "loadgen run={} mode={} pipeline={} workflows={} completed={} failed={} cancelled={} lost={} errors={} \
         wf_per_s={} tasks_per_s={} p50_ms={} p90_ms={} p99_ms={} max_ms={}\n",
        r["run_id"].as_str().unwrap_or(""),
        r["mode"].as_str().unwrap_or(""),
        r["pipeline"].as_str().unwrap_or(""),
        r["workflows"], r["completed"], r["failed"], r["cancelled"], r["lost"], r["errors"],
        r["workflows_per_s"], r["tasks_per_s"], l["p50"], l["p90"], l["p99"], l["max"],
    );
    for s in ["start", "task", "queue_wait", "run", "result", "overhead"] {
        let h = &r["stages"][format!("{s}_ms")];
        if h["count"].as_u64().unwrap_or(0) > 0 {
            out += &format!(
                "stage {s} count={} p50_ms={} p90_ms={} p99_ms={} max_ms={}\n",
                h["count"], h["p50"], h["p90"], h["p99"], h["max"]
            );
        }
    }
    if let Some(per) = r["per_class"].as_object() {
        for (name, c) in per {
            out += &format!(
                "class {name} started={} completed={} failed={} lost={} errors={} wf_per_s={} p50_ms={} p99_ms={} max_ms={}\n",
                c["started"], c["completed"], c["failed"], c["lost"], c["errors"],
                c["workflows_per_s"], c["latency_ms"]["p50"], c["latency_ms"]["p99"], c["latency_ms"]["max"],
            );
        }
    }
    let o = &r["orchestrator"];
    if o.is_object() {
        out += &format!(
            "orchestrator pid={} cpu_s={} cpu_share={} rss_mib_start={} rss_mib_end={} peak_rss_mib={}\n",
            o["pid"], o["cpu_s"], o["cpu_share"], o["rss_mib_start"], o["rss_mib_end"], o["peak_rss_mib"]
        );
    }
    let g = &r["loadgen"];
    out += &format!(
        "loadgen_cpu cpu_s={} core_cpu_s={} core_cpu_share={} workers_cpu_s={} peak_rss_mib={}\n",
        g["cpu_s"], g["core_cpu_s"], g["core_cpu_share"], g["workers_cpu_s"], g["peak_rss_mib"]
    );
    if let Some(samples) = r["error_samples"].as_array() {
        for s in samples {
            out += &format!("mismatch {}\n", s.as_str().unwrap_or(""));
        }
    }
    if let Some(samples) = r["lost_samples"].as_array() {
        for s in samples {
            out += &format!("lost {}\n", s.as_str().unwrap_or(""));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_rates_parse_with_limits() {
        assert_eq!(parse_span("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_span("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_span("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_span("3").unwrap(), Duration::from_secs(3));
        for bad in ["", "x", "-1s", "25h", "NaNs", "1e400s"] {
            assert!(parse_span(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_rate("500/s").unwrap(), 500.0);
        assert_eq!(parse_rate("60/m").unwrap(), 1.0);
        assert_eq!(parse_rate("20").unwrap(), 20.0);
        for bad in ["0/s", "-5/s", "5/d", "lots", "2000000/s", "inf"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
