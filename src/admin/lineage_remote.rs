//! Child-step effects for workflows another cluster node serves: a
//! parent's child start, its cancel, pause or resume passed on to a child,
//! and a child's end reported to its parent
//! ([`crate::engine::lineage::LineagePort`]). The engine performs those of
//! the partitions it serves itself and hands the rest to [`NatsLineage`],
//! which sends each, in order, to `<prefix>.admin.part.<partition>.lineage`
//! (the `lineage` request, between nodes only) and retries while the
//! partition has no serving node, up to [`DELIVER_WITHIN`].
//!
//! Delivery is at least once and counted once, as within one node: a child
//! id is derived from its parent, so a start performed again finds the same
//! child, and a parent takes one outcome per child. An effect given up
//! (the partition had no node for that long) is healed by the parent's next
//! recovery, which performs its running children's starts again.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::error::{code, ErrorReply};
use super::route::Routing;
use super::AdminError;
use crate::engine::lineage::LineagePort;
use crate::engine::Engine;
use crate::protocol::subjects::Subjects;
use crate::protocol::VERSION;
use crate::workflow::{ChildOutcome, ChildSignal, ChildSpec, LineageEffect};

/// How long an effect is retried while its partition has no serving node.
pub const DELIVER_WITHIN: Duration = Duration::from_secs(60);
/// Effects waiting to be sent at most; past it one is dropped (logged) and
/// healed by the parent's recovery.
pub const WAITING_MAX: usize = 100_000;

/// The `lineage` request.
#[derive(Debug, Serialize, Deserialize)]
pub struct LineageRequest {
    pub v: u32,
    pub effect: LineageEffect,
}

/// Its answer.
#[derive(Debug, Serialize, Deserialize, Default)]
pub struct LineageReply {
    pub v: u32,
    #[serde(default)]
    pub ok: bool,
}

/// Performs a `lineage` request on the node serving its partition.
pub(super) fn perform(r: LineageRequest, engine: &Engine) -> Result<LineageReply, AdminError> {
    let p = engine.ctx().store.partition_of(r.effect.target());
    if !engine.serves(p) {
        return Err(crate::engine::Error::NotServed(p).into());
    }
    let port = engine
        .ctx()
        .hooks
        .lineage
        .get()
        .ok_or_else(|| AdminError::new(code::UNAVAILABLE, "unavailable: engine not started"))?;
    match r.effect {
        LineageEffect::Start { spec } => port.start_child(*spec),
        LineageEffect::Signal { child_id, signal } => port.signal_child(child_id, signal),
        LineageEffect::Finished {
            parent_id,
            child_id,
            outcome,
        } => port.child_finished(parent_id, child_id, outcome),
    }
    Ok(LineageReply {
        v: VERSION,
        ok: true,
    })
}

/// The remote lineage port of a cluster node.
pub struct NatsLineage {
    tx: mpsc::Sender<LineageEffect>,
}

impl NatsLineage {
    /// The port, and the task that sends its effects (abort it at shutdown).
    pub fn start(
        client: async_nats::Client,
        subjects: Subjects,
        routing: Routing,
    ) -> (Arc<NatsLineage>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(WAITING_MAX);
        let task = tokio::spawn(send_in_order(client, subjects, routing, rx));
        (Arc::new(NatsLineage { tx }), task)
    }

    fn send(&self, effect: LineageEffect) {
        if let Err(e) = self.tx.try_send(effect) {
            tracing::warn!(
                workflow_id = %e.into_inner().target(),
                "child step effect for another node dropped: {WAITING_MAX} waiting; the parent's recovery performs it again"
            );
        }
    }
}

impl LineagePort for NatsLineage {
    fn start_child(&self, spec: ChildSpec) {
        self.send(LineageEffect::Start {
            spec: Box::new(spec),
        });
    }

    fn signal_child(&self, child_id: String, signal: ChildSignal) {
        self.send(LineageEffect::Signal { child_id, signal });
    }

    fn child_finished(&self, parent_id: String, child_id: String, outcome: ChildOutcome) {
        self.send(LineageEffect::Finished {
            parent_id,
            child_id,
            outcome,
        });
    }
}

/// Sends each effect to its partition's node, one after the other (a
/// start reaches its child's node before a later cancel of it).
async fn send_in_order(
    client: async_nats::Client,
    subjects: Subjects,
    routing: Routing,
    mut rx: mpsc::Receiver<LineageEffect>,
) {
    while let Some(effect) = rx.recv().await {
        let p = (routing.partition_of)(effect.target());
        let payload = match serde_json::to_vec(&LineageRequest {
            v: VERSION,
            effect: effect.clone(),
        }) {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => {
                tracing::warn!(error = %e, "child step effect not encodable");
                continue;
            }
        };
        let began = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            let body = routing
                .forward_payload(&client, &subjects, p, "lineage", payload.clone(), None)
                .await;
            let error = serde_json::from_slice::<ErrorReply>(&body).ok();
            match error {
                None => break,
                Some(e) if e.code != code::UNAVAILABLE => {
                    tracing::warn!(workflow_id = %effect.target(), error = %e.error, "child step effect refused by its node");
                    break;
                }
                Some(e) if began.elapsed() >= DELIVER_WITHIN => {
                    tracing::warn!(workflow_id = %effect.target(), error = %e.error, "child step effect not delivered; the parent's recovery performs it again");
                    break;
                }
                Some(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}
