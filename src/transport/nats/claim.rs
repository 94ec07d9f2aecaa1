//! The prefix claim of a single-node `run`: one key in a JetStream KV
//! bucket (`<PREFIX>_CLUSTER`), renewed as a heartbeat, so that a second
//! orchestrator started on the same prefix refuses to start instead of
//! silently splitting the work.
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
const CLAIM_KEY: &str = "single.claim";

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
    value: bytes::Bytes,
    revision: Arc<AtomicU64>,
    ttl: Duration,
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown host".into())
}

/// Claims `prefix` for the node of `data_dir`, or refuses with one line
/// that names the holder. A node in cluster mode claims the prefix as
/// well: routing across nodes is not built, so a cluster has one node per
/// prefix, and its refusal says so.
pub async fn claim_prefix(
    js: &jetstream::Context,
    prefix: &str,
    data_dir: &Path,
    ttl: Duration,
    cluster_mode: bool,
) -> Result<PrefixClaim, String> {
    let node = load_or_create_node_id(data_dir)?;
    let bucket = cluster_bucket(prefix);
    let store = js
        .create_or_update_key_value(kv::Config {
            bucket: bucket.clone(),
            history: 1,
            max_age: ttl,
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
    // A race with another starting node costs one more round.
    for _ in 0..3 {
        let found = read_claim(&store).await?;
        let step = claim_step(&node, found.as_ref().map(|(v, r)| (v.node.as_str(), *r)));
        // A lost race is tried again; any other error ends the start.
        let written = match step {
            ClaimStep::Create => match store.create(CLAIM_KEY, value.clone()).await {
                Ok(r) => Some(r),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => None,
                Err(e) => return Err(format!("cannot claim prefix {prefix:?}: {e}")),
            },
            ClaimStep::TakeOver { revision } => {
                match store.update(CLAIM_KEY, value.clone(), revision).await {
                    Ok(r) => Some(r),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => None,
                    Err(e) => return Err(format!("cannot claim prefix {prefix:?}: {e}")),
                }
            }
            ClaimStep::Refuse { .. } => {
                let (other, _) = found.expect("a refusal names a holder");
                let what = if cluster_mode {
                    "cluster mode runs one node per prefix (routing requests across nodes is not available yet): stop it or use another prefix"
                } else {
                    "stop it or use another prefix"
                };
                return Err(format!(
                    "another orchestrator serves prefix {prefix:?} on this NATS (node {}, pid {} on {}); \
                     refusing to start: {what} (a stopped node's claim lapses {} s after its last heartbeat)",
                    other.node,
                    other.pid,
                    other.host,
                    ttl.as_secs_f64()
                ));
            }
        };
        if let Some(revision) = written {
            tracing::info!(node = %node, prefix, revision, "prefix claimed");
            return Ok(PrefixClaim {
                store,
                value,
                revision: Arc::new(AtomicU64::new(revision)),
                ttl,
            });
        }
    }
    Err(format!(
        "cannot claim prefix {prefix:?}: its claim kept changing while this node started"
    ))
}

async fn read_claim(store: &kv::Store) -> Result<Option<(ClaimValue, u64)>, String> {
    let entry = store
        .entry(CLAIM_KEY)
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
                .update(CLAIM_KEY, self.value.clone(), revision)
                .await
            {
                Ok(r) => self.revision.store(r, Ordering::SeqCst),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    match read_claim(&self.store).await {
                        Ok(None) => {
                            if let Ok(r) = self.store.create(CLAIM_KEY, self.value.clone()).await {
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
            .delete_expect_revision(CLAIM_KEY, Some(revision))
            .await
        {
            tracing::warn!(error = %e, "prefix claim not released; it lapses by itself");
        }
    }
}
