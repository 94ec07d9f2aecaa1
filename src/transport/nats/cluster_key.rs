//! The attempt key a cluster's nodes share (`transport::attempt_key`).
//!
//! Attempt tokens are `HMAC(key, task id)`. When a partition moves to
//! another node, results of attempts its previous owner sent must verify
//! there, so every node signs and checks with one key: the cluster's, kept
//! under `attempt_key` in the cluster meta bucket. The first node to start
//! stores its own data directory's key there (create-only, so two nodes
//! starting at once agree on the one stored first); every node then uses
//! the stored key, whatever its own file holds. The bucket is readable by
//! the orchestrator's NATS user only (deploy/nats); workers never see the
//! key, only tokens.

use async_nats::jetstream::{self, kv};

use super::lease::{cluster_meta_bucket, open_cluster_meta};
use crate::transport::attempt_key::AttemptKey;

const ATTEMPT_KEY: &str = "attempt_key";

/// The cluster's attempt key: `local` (this node's key bytes) if none was
/// stored yet, else the stored one. A stored value of the wrong length is
/// an error naming the bucket, never a silent new key.
pub async fn cluster_attempt_key(
    js: &jetstream::Context,
    prefix: &str,
    replicas: usize,
    local: &[u8],
) -> Result<AttemptKey, String> {
    let bucket = cluster_meta_bucket(prefix);
    let store = open_cluster_meta(js, prefix, replicas).await?;
    match store.create(ATTEMPT_KEY, local.to_vec().into()).await {
        Ok(_) => return AttemptKey::from_stored(local, "this node's attempt key"),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
        // The error names the operation, never the key's bytes.
        Err(e) => return Err(format!("cannot store the attempt key in {bucket}: {e}")),
    }
    let stored = store
        .get(ATTEMPT_KEY)
        .await
        .map_err(|e| format!("cannot read the attempt key in {bucket}: {e}"))?
        .ok_or_else(|| format!("the attempt key in {bucket} was deleted while being read"))?;
    AttemptKey::from_stored(&stored, &format!("{ATTEMPT_KEY} in the KV bucket {bucket}"))
}
