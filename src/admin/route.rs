//! Admin requests on a cluster: any node answers, the owner decides.
//!
//! Clients send every verb to `<prefix>.admin.<verb>` and one node of the
//! queue group takes it. A request about one workflow (the verbs of
//! [`ROUTED_VERBS`]) belongs to the node that serves the workflow's
//! partition: a node that does not serve it forwards the request unchanged
//! to `<prefix>.admin.part.<partition>.<verb>`, which only the serving node
//! subscribes to, and relays the answer. A partition in the middle of a
//! handover has no subscriber for a moment; the request is then answered
//! `unavailable` (retryable), never left without an answer.
//!
//! The entry node audits the request and answers the client; the owner
//! applies its intake bounds ([`super::IntakeLimits`]) as for any request.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::RequestErrorKind;
use serde::Deserialize;
use tokio::sync::watch;

use super::error::{code, encode};
use super::AdminError;
use crate::protocol::subjects::Subjects;

/// Verbs about one workflow (named by the request's `id`), served by the
/// node that serves its partition.
pub const ROUTED_VERBS: [&str; 9] = [
    "start", "describe", "history", "cancel", "pause", "resume", "retry", "rerun", "signal",
];

/// Where a cluster node's admin service finds the partitions it serves.
#[derive(Clone)]
pub struct Routing {
    /// The partitions this node's engine serves now.
    pub served: watch::Receiver<BTreeSet<u16>>,
    /// The partition of a workflow id.
    pub partition_of: Arc<dyn Fn(&str) -> u16 + Send + Sync>,
    /// How long a forwarded request waits for the owner's answer.
    pub forward_timeout: Duration,
}

#[derive(Deserialize)]
struct Id<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
}

impl Routing {
    /// The partition `verb`'s request belongs to when another node serves
    /// it; `None` when this node answers (it serves the partition, the verb
    /// is not about one workflow, or the request names no id: its error is
    /// answered here).
    pub fn elsewhere(&self, verb: &str, payload: &[u8]) -> Option<u16> {
        if !ROUTED_VERBS.contains(&verb) {
            return None;
        }
        let id = serde_json::from_slice::<Id>(payload).ok()?.id;
        let p = (self.partition_of)(&id);
        (!self.served.borrow().contains(&p)).then_some(p)
    }

    /// Forwards `msg` to the node serving `partition` and returns its
    /// answer, or an `unavailable` error when no node answers in time.
    pub async fn forward(
        &self,
        client: &async_nats::Client,
        subjects: &Subjects,
        partition: u16,
        verb: &str,
        msg: &async_nats::Message,
    ) -> Vec<u8> {
        self.forward_payload(
            client,
            subjects,
            partition,
            verb,
            msg.payload.clone(),
            msg.headers.clone(),
        )
        .await
    }

    /// Sends a `verb` request to the node serving `partition`; its answer,
    /// or an `unavailable` error reply.
    pub async fn forward_payload(
        &self,
        client: &async_nats::Client,
        subjects: &Subjects,
        partition: u16,
        verb: &str,
        payload: bytes::Bytes,
        headers: Option<async_nats::HeaderMap>,
    ) -> Vec<u8> {
        let mut request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(self.forward_timeout));
        if let Some(h) = headers {
            request = request.headers(h);
        }
        match client
            .send_request(subjects.admin_partition(partition, verb), request)
            .await
        {
            Ok(answer) => answer.payload.to_vec(),
            Err(e) => encode::<()>(Err(AdminError::new(
                code::UNAVAILABLE,
                match e.kind() {
                    RequestErrorKind::NoResponders => format!(
                        "unavailable: no node serves partition {partition} right now (it is moving between nodes); retry"
                    ),
                    RequestErrorKind::TimedOut => format!(
                        "unavailable: the node serving partition {partition} did not answer within {} ms; retry",
                        self.forward_timeout.as_millis()
                    ),
                    _ => format!(
                        "unavailable: cannot reach the node serving partition {partition}: {e}; retry"
                    ),
                },
            ))),
        }
    }
}

/// Keeps one queue subscription to `<prefix>.admin.part.<p>.*` for every
/// partition `p` in `served`, following its changes, and hands what each
/// receives to `take` until aborted.
pub(super) async fn follow_partitions(
    client: async_nats::Client,
    subjects: Arc<Subjects>,
    mut served: watch::Receiver<BTreeSet<u16>>,
    take: tokio::sync::mpsc::Sender<async_nats::Message>,
) {
    let mut subscribed: BTreeMap<u16, tokio::task::JoinHandle<()>> = BTreeMap::new();
    loop {
        let mut failed = false;
        let want = served.borrow_and_update().clone();
        subscribed.retain(|p, task| {
            let keep = want.contains(p);
            if !keep {
                task.abort();
            }
            keep
        });
        for p in want {
            if subscribed.contains_key(&p) {
                continue;
            }
            let sub = match client
                .queue_subscribe(subjects.admin_partition_all(p), "orchestrator".into())
                .await
            {
                Ok(sub) => sub,
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "cannot subscribe to the partition's admin requests; retrying");
                    failed = true;
                    continue;
                }
            };
            let take = take.clone();
            subscribed.insert(
                p,
                tokio::spawn(async move {
                    use futures_util::StreamExt;
                    let mut sub = sub;
                    while let Some(msg) = sub.next().await {
                        if take.send(msg).await.is_err() {
                            return;
                        }
                    }
                }),
            );
        }
        let _ = client.flush().await;
        let changed = if failed {
            tokio::select! {
                c = served.changed() => c,
                _ = tokio::time::sleep(Duration::from_secs(1)) => Ok(()),
            }
        } else {
            served.changed().await
        };
        if changed.is_err() {
            break;
        }
    }
    for (_, task) in subscribed {
        task.abort();
    }
}

/// The verb of a request forwarded to a partition (the subject's last
/// token), if it is one that is forwarded: a routed verb, `list` for one
/// cell of the status index ([`super::list_cluster`]), or `lineage`
/// ([`super::lineage_remote`]).
pub(super) fn forwarded_verb(subject: &str) -> Option<&'static str> {
    let last = subject.rsplit('.').next()?;
    ROUTED_VERBS
        .iter()
        .copied()
        .chain(["list", "lineage"])
        .find(|v| *v == last)
}
