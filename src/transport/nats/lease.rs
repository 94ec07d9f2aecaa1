//! The NATS shell of the ownership core ([`crate::cluster::Ownership`]):
//! leases and node registrations in the JetStream KV bucket
//! `<PREFIX>_LEASES` (`max_age` = the lease TTL), and the cluster's
//! partition count in `<PREFIX>_CLUSTER_META` (no TTL), written by the
//! first node and checked by every later one.
//!
//! [`LeaseBucket`] performs the core's KV requests (create, update and
//! delete at an expected revision) and scans; [`run_ownership`] drives one
//! node's core: it ticks it, performs its actions, has the handover worker
//! (`handover.rs`) start and end journal terms on [`JetStreamJournal`] and
//! start and stop partitions in the engine, and feeds refused appends back
//! as `AppendRejected`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::handover::{run_handovers, Done, Handover, PartitionHost};
use super::journal::JetStreamJournal;
use super::stream_name;
use crate::cluster::{
    check_partition_count, Action, Entry, Epoch, Holder, Input, KvOp, KvRequest, KvResult, NodeId,
    Ownership,
};

/// The lease bucket of a prefix.
pub fn lease_bucket(prefix: &str) -> String {
    stream_name(prefix, "LEASES")
}

/// The bucket of cluster-wide settings (the partition count).
pub fn cluster_meta_bucket(prefix: &str) -> String {
    stream_name(prefix, "CLUSTER_META")
}

const PARTITIONS_KEY: &str = "partitions";

/// Opens (or creates) the KV bucket of what is fixed at cluster creation:
/// the partition count and the shared attempt key.
pub(super) async fn open_cluster_meta(
    js: &jetstream::Context,
    prefix: &str,
    replicas: usize,
) -> Result<kv::Store, String> {
    let bucket = cluster_meta_bucket(prefix);
    js.create_or_update_key_value(kv::Config {
        bucket: bucket.clone(),
        history: 1,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas.max(1),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot open the KV bucket {bucket}: {e}"))
}

/// Stores `partitions` as the cluster's partition count if none is stored
/// yet, else refuses a different count with one line.
pub async fn check_cluster_partitions(
    js: &jetstream::Context,
    prefix: &str,
    partitions: u16,
    replicas: usize,
) -> Result<(), String> {
    let bucket = cluster_meta_bucket(prefix);
    let store = open_cluster_meta(js, prefix, replicas).await?;
    match store
        .create(PARTITIONS_KEY, partitions.to_string().into())
        .await
    {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot store the partition count in {bucket}: {e}")),
    }
    let stored = store
        .get(PARTITIONS_KEY)
        .await
        .map_err(|e| format!("cannot read the partition count in {bucket}: {e}"))?
        .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse::<u16>().ok());
    check_partition_count(stored, partitions)
}

/// What a key holds (JSON).
#[derive(Serialize, Deserialize)]
struct HolderValue {
    node: String,
    term: u64,
}

/// The bucket of leases and registrations.
pub struct LeaseBucket {
    store: kv::Store,
}

impl LeaseBucket {
    /// Opens (or creates) the bucket of `prefix` with the lease TTL.
    pub async fn open(
        js: &jetstream::Context,
        prefix: &str,
        ttl: Duration,
        replicas: usize,
    ) -> Result<LeaseBucket, String> {
        let bucket = lease_bucket(prefix);
        let store = js
            .create_or_update_key_value(kv::Config {
                bucket: bucket.clone(),
                history: 1,
                max_age: ttl,
                storage: jetstream::stream::StorageType::File,
                num_replicas: replicas.max(1),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot open the KV bucket {bucket}: {e}"))?;
        Ok(LeaseBucket { store })
    }

    async fn current(&self, key: &str) -> Result<Option<Entry>, String> {
        let e = self.store.entry(key).await.map_err(|e| e.to_string())?;
        Ok(e.filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| {
                let v: HolderValue = serde_json::from_slice(&e.value).ok()?;
                Some(Entry {
                    holder: Holder {
                        node: v.node,
                        term: v.term,
                    },
                    revision: e.revision,
                })
            }))
    }

    /// Performs one request of the core. `Err` when neither the write's
    /// outcome nor the key's current entry could be learnt (the core gives
    /// the write up after its timeout).
    pub async fn apply(&self, req: &KvRequest) -> Result<KvResult, String> {
        let key = req.key.name();
        let value = |h: &Holder| -> bytes::Bytes {
            serde_json::to_vec(&HolderValue {
                node: h.node.clone(),
                term: h.term,
            })
            .unwrap_or_default()
            .into()
        };
        let written = match &req.op {
            KvOp::Create { value: h } => self
                .store
                .create(&key, value(h))
                .await
                .map_err(|e| e.to_string()),
            KvOp::Update { value: h, expected } => self
                .store
                .update(&key, value(h), *expected)
                .await
                .map_err(|e| e.to_string()),
            KvOp::Delete { expected } => self
                .store
                .delete_expect_revision(&key, Some(*expected))
                .await
                .map(|()| 0)
                .map_err(|e| e.to_string()),
        };
        match written {
            Ok(revision) => Ok(KvResult::Ok { revision }),
            Err(e) => match self.current(&key).await {
                Ok(current) => Ok(KvResult::Conflict { current }),
                Err(read) => Err(format!("{e}; reading {key} failed too: {read}")),
            },
        }
    }

    /// The live registrations and the leases.
    pub async fn scan(&self) -> Result<(Vec<NodeId>, Vec<(u16, Entry)>), String> {
        let keys: Vec<String> = match self.store.keys().await {
            Ok(k) => k.try_collect().await.map_err(|e| e.to_string())?,
            Err(e) => return Err(e.to_string()),
        };
        let (mut nodes, mut leases) = (Vec::new(), Vec::new());
        for k in keys {
            let Some(entry) = self.current(&k).await? else {
                continue;
            };
            if let Some(n) = k.strip_prefix("nodes.") {
                nodes.push(n.to_owned());
            } else if let Some(p) = k.strip_prefix("leases.").and_then(|p| p.parse().ok()) {
                leases.push((p, entry));
            }
        }
        nodes.sort();
        Ok((nodes, leases))
    }
}

/// Drives one node's ownership core until it has left: ticks it every
/// `tick`, performs its actions, and publishes the partitions whose
/// journal terms are open (with their epochs) on `serving`. `leave` asks
/// it to hand everything over and deregister. Partition changes go to the
/// handover worker in order; `host` is the node's engine.
#[allow(clippy::too_many_arguments)]
pub async fn run_ownership(
    mut core: Ownership,
    bucket: LeaseBucket,
    journal: Arc<JetStreamJournal>,
    host: Arc<dyn PartitionHost>,
    mut deposed: mpsc::UnboundedReceiver<(u16, Epoch)>,
    mut leave: watch::Receiver<bool>,
    tick: Duration,
    serving: watch::Sender<Vec<(u16, Epoch)>>,
) {
    let started = Instant::now();
    let now_ms = || started.elapsed().as_millis() as u64;
    let mut inputs = VecDeque::from([Input::Tick]);
    let mut asked_to_leave = false;
    let mut timer = tokio::time::interval(tick);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (handover, requests) = mpsc::unbounded_channel();
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let (held_tx, held) = watch::channel(Vec::new());
    let worker = tokio::spawn(run_handovers(
        journal.clone(),
        host,
        requests,
        held,
        done_tx,
    ));
    let _worker = AbortOnDrop(worker);
    loop {
        while let Some(input) = inputs.pop_front() {
            let actions = core.handle(now_ms(), input);
            // Before the worker sees a start, so it finds its lease held.
            held_tx.send_replace(core.held());
            for action in actions {
                match action {
                    Action::Kv(req) => {
                        if let Ok(result) = bucket.apply(&req).await {
                            inputs.push_back(Input::KvDone { id: req.id, result });
                        }
                    }
                    Action::Scan => {
                        if let Ok((nodes, leases)) = bucket.scan().await {
                            inputs.push_back(Input::Scanned { nodes, leases });
                        }
                    }
                    Action::StartServing { partition, epoch } => {
                        let _ = handover.send(Handover::Start { partition, epoch });
                    }
                    Action::StopIntake { partition } => {
                        let _ = handover.send(Handover::StopIntake { partition });
                    }
                    // Its commits have finished: the snapshot covers
                    // everything the partition journaled here.
                    Action::Snapshot { partition } => {
                        let _ = handover.send(Handover::Snapshot { partition });
                    }
                    // Fenced at once; the engine stops the partition in turn.
                    Action::StopServing { partition } => {
                        journal.stop_partition(partition);
                        let _ = handover.send(Handover::StopServing { partition });
                    }
                    Action::Left => {}
                }
            }
        }
        let now: Vec<(u16, Epoch)> = core
            .held()
            .into_iter()
            .filter(|(p, e)| journal.serving(*p) == Some(*e))
            .collect();
        serving.send_if_modified(|s| {
            let changed = *s != now;
            *s = now;
            changed
        });
        if core.has_left() {
            return;
        }
        tokio::select! {
            _ = timer.tick() => inputs.push_back(Input::Tick),
            Some((partition, epoch)) = deposed.recv() => {
                inputs.push_back(Input::AppendRejected { partition, epoch });
            }
            Some(d) = done.recv() => match d {
                Done::CommitFinished { partition } => {
                    inputs.push_back(Input::CommitFinished { partition });
                }
                Done::NotOpened { partition, epoch } => {
                    inputs.push_back(Input::AppendRejected { partition, epoch });
                }
                Done::SnapshotWritten { partition } => {
                    inputs.push_back(Input::SnapshotWritten { partition });
                }
                // The loop runs again and publishes the terms now open.
                Done::Opened => {}
            },
            changed = leave.changed(), if !asked_to_leave => {
                if changed.is_err() || *leave.borrow() {
                    asked_to_leave = true;
                    inputs.push_back(Input::Leave);
                }
            }
        }
    }
}

/// Aborts the handover worker when the lease loop ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
