//! The prefix claim of a `run`: a key in a JetStream KV bucket
//! (`<PREFIX>_CLUSTER`), renewed as a heartbeat, so that a second
//! single-node orchestrator started on the same prefix refuses to start
//! instead of silently splitting the work.
//!
//! A single node claims `single.claim`, which one node holds at a time. A
//! cluster node claims `cluster.<node id>`, its own key (a cluster shares
//! the prefix by partition leases), and the two kinds exclude each other:
//! a cluster node refuses a prefix a single node holds, and a single node
//! refuses one where a cluster node's claim is alive.
//!
//! The bucket's `max_age` is the claim's TTL (`cluster.claim_ttl`): a node
//! killed with `kill -9` stops renewing, and its claim is gone a TTL later.
//! The claim holds the node's id, kept in its data directory (`node_id`);
//! RocksDB locks the data directory, so a claim with one's own id was left
//! by a run of this data directory that is gone, and is taken over at once
//! (a restart after a crash is never blocked). The decision is the pure
//! [`crate::cluster::claim_step`].

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};

use super::stream_name;
use crate::cluster::{claim_step, ClaimStep};

/// The file in the data directory that holds the node's id.
pub const NODE_ID_FILE: &str = "node_id";

/// The key of the single-node claim in the bucket.
const SINGLE_KEY: &str = "single.claim";
/// The prefix of the cluster nodes' claims (`cluster.<node id>`).
const CLUSTER_KEYS: &str = "cluster.";

/// What a claim says about its holder, for the refusal line.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClaimValue {
    node: String,
    host: String,
    pid: u32,
}

/// The KV bucket of a prefix.
pub fn cluster_bucket(prefix: &str) -> String {
    stream_name(prefix, "CLUSTER")
}

/// The node id of the data directory `dir`, created on first use.
pub fn load_or_create_node_id(dir: &Path) -> Result<String, String> {
    let path = dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    let id = uuid::Uuid::now_v7().to_string();
    std::fs::write(&path, &id).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(id)
}

/// A held claim: renew it with [`PrefixClaim::keep`], give it back with
/// [`PrefixClaim::release`].
pub struct PrefixClaim {
    store: kv::Store,
    key: String,
    value: bytes::Bytes,
    revision: Arc<AtomicU64>,
    ttl: Duration,
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown host".into())
}

/// Claims `prefix` for the node of `data_dir` (`node`: a cluster node's
/// configured id, else the data directory's), or refuses with one line
/// that names the holder: a single node refuses any other live claim, a
/// cluster node a single node's.
pub async fn claim_prefix(
    js: &jetstream::Context,
    prefix: &str,
    data_dir: &Path,
    ttl: Duration,
    cluster_node: Option<&str>,
    replicas: usize,
) -> Result<PrefixClaim, String> {
    let node = match cluster_node {
        Some(id) => id.to_owned(),
        None => load_or_create_node_id(data_dir)?,
    };
    let key = match cluster_node {
        Some(id) => format!("{CLUSTER_KEYS}{id}"),
        None => SINGLE_KEY.to_owned(),
    };
    let bucket = cluster_bucket(prefix);
    // A bucket that exists keeps its replicas: a single node refused on a
    // cluster's prefix must not scale the cluster's bucket down.
    let replicas = match js.get_stream(format!("KV_{bucket}")).await {
        Ok(mut s) => match s.info().await {
            Ok(info) => info.config.num_replicas,
            Err(_) => replicas,
        },
        Err(_) => replicas,
    };
    let store = js
        .create_or_update_key_value(kv::Config {
            bucket: bucket.clone(),
            history: 1,
            max_age: ttl,
            num_replicas: replicas.max(1),
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot open the KV bucket {bucket}: {e}"))?;
    let mine = ClaimValue {
        node: node.clone(),
        host: host(),
        pid: std::process::id(),
    };
    let value = bytes::Bytes::from(serde_json::to_vec(&mine).map_err(|e| e.to_string())?);
    let refusal = |other: &ClaimValue, what: &str| {
        format!(
            "another orchestrator serves prefix {prefix:?} on this NATS (node {}, pid {} on {}); \
             refusing to start: {what} (a stopped node's claim lapses {} s after its last heartbeat)",
            other.node,
            other.pid,
            other.host,
            ttl.as_secs_f64()
        )
    };
    let other_kind = |found: Option<ClaimValue>| {
        found.map(|other| match cluster_node {
            Some(_) => refusal(
                &other,
                "it runs in single-node mode, which does not share a prefix: stop it or use another prefix",
            ),
            None => refusal(
                &other,
                "it is a node of a cluster (`[cluster] enabled`); start this node in cluster mode too, or use another prefix",
            ),
        })
    };
    if let Some(e) = other_kind(other_kind_claim(&store, cluster_node.is_some()).await?) {
        return Err(e);
    }
    // A race with another starting node costs one more round.
    for _ in 0..3 {
        let found = read_claim(&store, &key).await?;
        let step = claim_step(&node, found.as_ref().map(|(v, r)| (v.node.as_str(), *r)));
        // A lost race is tried again; any other error ends the start.
        let written = match step {
            ClaimStep::Create => match store.create(&key, value.clone()).await {
                Ok(r) => Some(r),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => None,
                Err(e) => return Err(format!("cannot claim prefix {prefix:?}: {e}")),
            },
            ClaimStep::TakeOver { revision } => {
                match store.update(&key, value.clone(), revision).await {
                    Ok(r) => Some(r),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => None,
                    Err(e) => return Err(format!("cannot claim prefix {prefix:?}: {e}")),
                }
            }
            ClaimStep::Refuse { .. } => {
                let (other, _) = found.expect("a refusal names a holder");
                return Err(match cluster_node {
                    Some(_) => refusal(
                        &other,
                        "a node with this node id runs already: give each node its own `cluster.node_id` or data directory",
                    ),
                    None => refusal(&other, "stop it or use another prefix"),
                });
            }
        };
        if let Some(revision) = written {
            let claim = PrefixClaim {
                store,
                key,
                value,
                revision: Arc::new(AtomicU64::new(revision)),
                ttl,
            };
            // A node of the other kind that started at the same moment: one
            // of the two (or both) steps back.
            if let Some(e) =
                other_kind(other_kind_claim(&claim.store, cluster_node.is_some()).await?)
            {
                claim.release().await;
                return Err(e);
            }
            tracing::info!(node = %node, prefix, revision, "prefix claimed");
            return Ok(claim);
        }
    }
    Err(format!(
        "cannot claim prefix {prefix:?}: its claim kept changing while this node started"
    ))
}

/// A live claim of the other kind: for a cluster node the single node's,
/// for a single node any cluster node's.
async fn other_kind_claim(
    store: &kv::Store,
    cluster_mode: bool,
) -> Result<Option<ClaimValue>, String> {
    if cluster_mode {
        return Ok(read_claim(store, SINGLE_KEY).await?.map(|(v, _)| v));
    }
    use futures_util::StreamExt;
    let mut keys = match store.keys().await {
        Ok(k) => k,
        // An empty bucket has no keys to list.
        Err(_) => return Ok(None),
    };
    while let Some(k) = keys.next().await {
        let k = k.map_err(|e| format!("cannot read the prefix claims: {e}"))?;
        if k.starts_with(CLUSTER_KEYS) {
            if let Some((v, _)) = read_claim(store, &k).await? {
                return Ok(Some(v));
            }
        }
    }
    Ok(None)
}

async fn read_claim(store: &kv::Store, key: &str) -> Result<Option<(ClaimValue, u64)>, String> {
    let entry = store
        .entry(key)
        .await
        .map_err(|e| format!("cannot read the prefix claim: {e}"))?;
    Ok(entry.and_then(|e| {
        if e.operation != kv::Operation::Put {
            return None;
        }
        // An unreadable value is some other holder's.
        let value = serde_json::from_slice(&e.value).unwrap_or(ClaimValue {
            node: String::from_utf8_lossy(&e.value).into_owned(),
            host: "unknown host".into(),
            pid: 0,
        });
        Some((value, e.revision))
    }))
}

impl PrefixClaim {
    /// Renews the claim every third of its TTL. Returns only when the claim
    /// is lost to another node (this one was stopped longer than the TTL and
    /// another started), with the reason; NATS errors are retried, and a
    /// claim that lapsed with nobody taking it is claimed again.
    pub async fn keep(&self) -> String {
        loop {
            tokio::time::sleep(self.ttl / 3).await;
            let revision = self.revision.load(Ordering::SeqCst);
            match self
                .store
                .update(&self.key, self.value.clone(), revision)
                .await
            {
                Ok(r) => self.revision.store(r, Ordering::SeqCst),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    match read_claim(&self.store, &self.key).await {
                        Ok(None) => {
                            if let Ok(r) = self.store.create(&self.key, self.value.clone()).await {
                                self.revision.store(r, Ordering::SeqCst);
                            }
                        }
                        Ok(Some((v, r))) => {
                            let mine: Option<ClaimValue> = serde_json::from_slice(&self.value).ok();
                            if mine.is_some_and(|m| m.node == v.node && m.pid == v.pid) {
                                self.revision.store(r, Ordering::SeqCst);
                            } else {
                                return format!(
                                    "lost the prefix claim to node {} (pid {} on {}): this node was unreachable longer than the claim's TTL",
                                    v.node, v.pid, v.host
                                );
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "prefix claim not renewed"),
                    }
                }
                Err(e) => tracing::warn!(error = %e, "prefix claim not renewed"),
            }
        }
    }

    /// Gives the claim back, so another node may start at once.
    pub async fn release(&self) {
        let revision = self.revision.load(Ordering::SeqCst);
        if let Err(e) = self
            .store
            .delete_expect_revision(&self.key, Some(revision))
            .await
        {
            tracing::warn!(error = %e, "prefix claim not released; it lapses by itself");
        }
    }
}
