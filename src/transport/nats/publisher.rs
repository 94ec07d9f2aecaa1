//! The engine's side of sending: a bounded queue of tasks and cancels, a
//! publisher task with a window of publishes in flight, and the drain at a stop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::guard::ReportGuard;
use super::offer::send_outgoing;
use super::{NatsConfig, NatsStats};
use crate::protocol::subjects::Subjects;
use crate::protocol::Limits;
use crate::transport::attempt_key::AttemptKey;
use crate::transport::ResultHandler;
use crate::transport::{ReportSink, Transport};
use crate::workflow::TaskSpec;

pub(super) enum Outgoing {
    Task(Box<TaskSpec>),
    Cancel {
        task_id: String,
        task_type: String,
        reason: String,
    },
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
pub(super) struct Publisher {
    pub(super) js: jetstream::Context,
    pub(super) client: async_nats::Client,
    pub(super) subjects: Subjects,
    pub(super) partition_of: Arc<dyn Fn(&str) -> u16 + Send + Sync>,
    pub(super) attempts: u32,
    pub(super) results_direct: bool,
    /// `Some(timeout)` when tasks are offered to idle workers first.
    pub(super) offer_timeout: Option<Duration>,
    pub(super) stats: Arc<NatsStats>,
    pub(super) sink: Arc<std::sync::OnceLock<Arc<dyn ReportSink>>>,
    pub(super) results: Arc<std::sync::OnceLock<Arc<dyn ResultHandler>>>,
    /// `offer_result_within_ms` of an offer (0: none).
    pub(super) result_within_ms: u64,
    /// See [`NatsConfig::tasks_direct_result_apply_for`].
    pub(super) result_apply_for: Duration,
    /// Permits for offers running as their own tasks.
    pub(super) offers: Arc<tokio::sync::Semaphore>,
    /// The permits there are (`tasks_direct_in_flight_max`).
    pub(super) offers_max: usize,
    pub(super) limits: Limits,
    /// Signs each task's `attempt_token`.
    pub(super) attempt_key: AttemptKey,
    /// Checks a result that answers an offer.
    pub(super) guard: ReportGuard,
    /// Set by [`NatsTransport::drain`]: offered tasks are no longer sent.
    pub(super) closing: AtomicBool,
    /// Tasks not sent because the node was stopping.
    pub(super) held_at_stop: AtomicU64,
}

impl Publisher {
    /// While the node stops, a task that would be offered is not sent
    /// (counted): it is journaled as sent, and the next start sends it
    /// again. Sent now, a worker could run it while the node is down, and
    /// the re-send (an offer again, which nothing de-duplicates) would run
    /// it a second time. A task that only goes to the stream is still sent:
    /// the re-send carries the same `Nats-Msg-Id`, which JetStream drops.
    pub(super) fn hold_at_stop(&self, spec: &TaskSpec) -> bool {
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
    pub(super) fn offers(&self, spec: &TaskSpec) -> bool {
        self.offer_timeout.is_some() && spec.heartbeat_timeout_ms.is_some()
    }

    /// Whether `out` is a task that is offered first.
    pub(super) fn offered(&self, out: &Outgoing) -> bool {
        matches!(out, Outgoing::Task(spec) if self.offers(spec))
    }

    /// A permit to send `out` as a task of its own: only an offered task,
    /// and only while `tasks_direct_in_flight_max` allows.
    pub(super) fn offer_permit(&self, out: &Outgoing) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if !self.offered(out) {
            return None;
        }
        self.offers.clone().try_acquire_owned().ok()
    }

    /// Offers whose permit is taken: waiting for their answer, or finishing
    /// what it brought.
    pub(super) fn offers_out(&self) -> usize {
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
            attempt_key: cfg.attempt_key.clone(),
            guard: ReportGuard::new(cfg.attempt_key.clone(), None),
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

    fn cancel(&self, task_id: &str, task_type: &str, reason: &str) {
        let _ = self.tx.try_send(Outgoing::Cancel {
            task_id: task_id.to_string(),
            task_type: task_type.to_string(),
            reason: reason.to_string(),
        });
    }
}
