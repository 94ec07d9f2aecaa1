//! What the ownership core reads from and writes to the cluster's KV
//! bucket: keys, values, revisions, and the requests and their results.
//!
//! The bucket behaves like a JetStream KV bucket with a `max_age`: every
//! write gets the next revision of the bucket (one counter for all keys),
//! an entry not written for the bucket's TTL is gone, `create` succeeds only
//! on an absent key, and `update` and `delete` succeed only when the key is
//! still at the revision the writer names (compare-and-swap).

use super::NodeId;

/// A revision of the bucket: one counter across all its keys, so a later
/// write always has a larger revision than any earlier one.
pub type Revision = u64;

/// The fencing token of one ownership term of a partition: the revision of
/// the write that acquired its lease. Renewals keep the epoch (they change
/// the revision, not the term), and a later acquisition by anyone has a
/// larger revision, so epochs of one partition only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u64);

impl Epoch {
    pub fn of_acquisition(revision: Revision) -> Epoch {
        Epoch(revision)
    }
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A key of the bucket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// A node's registration, renewed as its heartbeat.
    Node(NodeId),
    /// The lease of one partition.
    Lease(u16),
}

impl Key {
    /// The key's name in a JetStream KV bucket.
    pub fn name(&self) -> String {
        match self {
            Key::Node(n) => format!("nodes.{n}"),
            Key::Lease(p) => format!("leases.{p}"),
        }
    }
}

/// The value of a registration or a lease: who holds it, and the term that
/// tells this holding from an earlier one of the same node (a reply lost
/// after a write applied is recognised by its term).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Holder {
    pub node: NodeId,
    pub term: u64,
}

/// A key's current value and revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub holder: Holder,
    pub revision: Revision,
}

/// A write to the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOp {
    /// Write only if the key is absent (or expired, or deleted).
    Create { value: Holder },
    /// Write only if the key is at `expected`.
    Update { value: Holder, expected: Revision },
    /// Delete only if the key is at `expected`.
    Delete { expected: Revision },
}

/// One write the shell performs for the core; its result comes back as
/// [`super::Input::KvDone`] with the same `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvRequest {
    pub id: u64,
    pub key: Key,
    pub op: KvOp,
}

/// The answer to a [`KvRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvResult {
    /// Applied; the key is now at `revision` (for a delete, the revision of
    /// the delete marker, unused).
    Ok { revision: Revision },
    /// Not applied: the key was not where the request expected. `current` is
    /// the key's entry as the shell read it right after (absent when the key
    /// is absent), so the core can recognise its own earlier write.
    Conflict { current: Option<Entry> },
}
