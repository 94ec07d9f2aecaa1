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
mod options;
pub mod procstat;
mod report;
mod start;
pub mod track;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::admin::{DescribeRequest, StartRequest};
use crate::protocol::subjects::Subjects;
use crate::protocol::VERSION;
use crate::transport::nats::{stream_name, NatsConfig};
use hist::round2;
use report::{build_report, text_summary};
use start::start_one;

pub use options::*;
use track::{Class, Timings, Tracker};

/// Start errors echoed on stderr (the rest are only counted).
const START_ERRORS_SHOWN: u64 = 5;

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

struct Starter {
    client: async_nats::Client,
    subject: String,
    pipeline: String,
    segments: Option<u32>,
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
            input: match self.segments {
                Some(k) => {
                    json!({"video_url": format!("s3://media/{id}.mp4"), "video_id": id, "segments": k})
                }
                None => json!({"video_url": format!("s3://media/{id}.mp4"), "video_id": id}),
            },
            id: id.clone(),
            pipeline_version: None,
            priority: None,
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
    tokio::spawn(async move {
        // On a terminal the line is redrawn in place; in logs and CI each
        // interval is a line of its own.
        let mut status = crate::progress::Progress::line();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tick.tick().await;
            let line = progress_line(&mut tracker.lock(), t0.elapsed(), every);
            if status.visible() {
                status.say(line);
            } else {
                eprintln!("{line}");
            }
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
        segments: opts.segments,
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
    // Aborting drops the status line, which ends its line on screen.
    progress.abort();
    let _ = progress.await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_rates_parse_with_limits() {
        assert_eq!(parse_span("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_span("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_span("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_span("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_span("24h").unwrap(), SPAN_MAX);
        for bad in ["", "x", "3", "-1s", "25h", "24h1us", "NaNs", "1e400s"] {
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
