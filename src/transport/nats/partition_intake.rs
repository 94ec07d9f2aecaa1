//! Results in cluster mode: each partition's results are read by the node
//! that serves the partition, and only while it does.
//!
//! Workers publish a result on `<prefix>.results.<partition>` (JetStream)
//! or send it to `<prefix>.rdirect.<partition>` (request-reply). A cluster
//! node binds, for each partition its engine serves, the durable consumer
//! `orchestrator-p<partition>` (filtered on that partition's subject) and
//! subscribes to the partition's direct subject; when the partition leaves
//! the node, both are dropped and its next owner binds them. A result
//! taken while its partition was being stopped is not applied: a JetStream
//! one is handed back with a short delayed nak, a direct one is answered
//! "retry" and the worker sends it again, reaching the new owner.
//!
//! The results stream is a work queue, on which consumers may not overlap:
//! the single consumer of single-node mode (`orchestrator`, every
//! partition) is deleted when a cluster node starts; its unacknowledged
//! results stay in the stream for the partition consumers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use tokio::sync::watch;

use super::guard::ReportGuard;
use super::intake::{
    consumer_gone, open_results, results_consumer_config, serve_direct_results, take_result,
    AbortOnDrop, REOPEN_AFTER, RESULTS_CONSUMER,
};
use super::{stream_name, NatsConfig};
use crate::protocol::subjects::Subjects;
use crate::transport::results::ResultHandler;

/// The durable consumer of partition `p`'s results.
pub fn partition_consumer_name(p: u16) -> String {
    format!("{RESULTS_CONSUMER}-p{p}")
}

/// The configuration of partition `p`'s results consumer.
pub fn partition_consumer_config(
    cfg: &NatsConfig,
    subjects: &Subjects,
    p: u16,
) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(partition_consumer_name(p)),
        filter_subject: subjects.results(p),
        ..results_consumer_config(cfg)
    }
}

/// Reads the results of the partitions in `served`, following its changes,
/// until aborted.
pub(super) async fn run_partition_results(
    cfg: NatsConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    handler: Arc<dyn ResultHandler>,
    guard: ReportGuard,
    mut served: watch::Receiver<BTreeSet<u16>>,
) -> Result<(), String> {
    let subjects = Arc::new(Subjects::new(&cfg.prefix)?);
    remove_shared_consumer(&js, &cfg).await;
    let shared = Shared {
        cfg,
        client,
        js,
        handler,
        guard,
        subjects,
        served: served.clone(),
    };
    let mut running: BTreeMap<u16, Vec<AbortOnDrop>> = BTreeMap::new();
    loop {
        let want = served.borrow_and_update().clone();
        running.retain(|p, _| want.contains(p));
        for p in want {
            running.entry(p).or_insert_with(|| shared.read_partition(p));
        }
        if served.changed().await.is_err() {
            // The node's lease shell is gone: it is shutting down.
            std::future::pending::<()>().await;
        }
    }
}

/// What every partition's readers share.
#[derive(Clone)]
struct Shared {
    cfg: NatsConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    handler: Arc<dyn ResultHandler>,
    guard: ReportGuard,
    subjects: Arc<Subjects>,
    served: watch::Receiver<BTreeSet<u16>>,
}

impl Shared {
    /// Starts reading partition `p`'s results; they stop when the returned
    /// handles are dropped.
    fn read_partition(&self, p: u16) -> Vec<AbortOnDrop> {
        tracing::debug!(partition = p, "reading the partition's results");
        let mut tasks = vec![AbortOnDrop(tokio::spawn(self.clone().consume(p)))];
        if self.cfg.results_direct {
            let s = self.clone();
            tasks.push(AbortOnDrop(tokio::spawn(async move {
                let sub = loop {
                    match s.client.subscribe(s.subjects.results_direct(p)).await {
                        Ok(sub) => break sub,
                        Err(e) => {
                            tracing::warn!(partition = p, error = %e, "cannot subscribe to the partition's direct results; retrying");
                            tokio::time::sleep(REOPEN_AFTER).await;
                        }
                    }
                };
                serve_direct_results(
                    sub,
                    s.client.clone(),
                    s.handler.clone(),
                    s.cfg.limits.clone(),
                    s.guard.clone(),
                    s.cfg.results_direct_in_flight_max.max(1),
                )
                .await;
            })));
        }
        tasks
    }

    /// Pulls partition `p`'s consumer, opening it again whenever it goes
    /// away, until aborted.
    async fn consume(self, p: u16) {
        let served = self.served.clone();
        let moved: Arc<dyn Fn() -> bool + Send + Sync> =
            Arc::new(move || !served.borrow().contains(&p));
        loop {
            let config = partition_consumer_config(&self.cfg, &self.subjects, p);
            let mut messages = match open_results(&self.js, &self.cfg.prefix, config).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "results consumer not available; retrying");
                    tokio::time::sleep(REOPEN_AFTER).await;
                    continue;
                }
            };
            while let Some(msg) = messages.next().await {
                match msg {
                    Ok(msg) => take_result(
                        msg,
                        &self.cfg.limits,
                        &self.guard,
                        &self.handler,
                        Some(moved.clone()),
                    ),
                    Err(e) if consumer_gone(&e) => {
                        tracing::warn!(partition = p, error = %e, "results consumer gone; opening it again");
                        break;
                    }
                    Err(e) => tracing::warn!(partition = p, error = %e, "results consumer error"),
                }
            }
            tokio::time::sleep(REOPEN_AFTER).await;
        }
    }
}

/// Deletes single-node mode's consumer of every partition's results, which
/// would overlap the partition consumers on the work-queue stream.
async fn remove_shared_consumer(js: &jetstream::Context, cfg: &NatsConfig) {
    let Ok(stream) = js.get_stream(stream_name(&cfg.prefix, "RESULTS")).await else {
        return;
    };
    if stream.consumer_info(RESULTS_CONSUMER).await.is_ok() {
        match stream.delete_consumer(RESULTS_CONSUMER).await {
            Ok(_) => tracing::info!(
                consumer = RESULTS_CONSUMER,
                "cluster mode: removed the single-node results consumer; partitions have their own"
            ),
            Err(e) => {
                tracing::warn!(consumer = RESULTS_CONSUMER, error = %e, "cannot remove the single-node results consumer")
            }
        }
    }
}
