//! The simulated KV bucket: JetStream KV semantics on one map.

use std::collections::BTreeMap;

use crate::cluster::{Entry, Holder, Key, KvOp, KvRequest, KvResult, NodeId, Revision};

/// One bucket with a `max_age` of `ttl_ms`: a write gets the bucket's next
/// revision, an entry not written for `ttl_ms` is gone, and `update` and
/// `delete` apply only at the expected revision.
pub(super) struct SimKv {
    ttl_ms: u64,
    revision: Revision,
    /// Key → (value, revision, virtual time of the write).
    entries: BTreeMap<Key, (Holder, Revision, u64)>,
    /// Every acquisition of a lease (a write that changed its holder or
    /// term): (partition, revision) → node. The checker matches journal
    /// epochs against it.
    pub acquisitions: BTreeMap<(u16, Revision), NodeId>,
}

impl SimKv {
    pub fn new(ttl_ms: u64) -> SimKv {
        SimKv {
            ttl_ms,
            revision: 0,
            entries: BTreeMap::new(),
            acquisitions: BTreeMap::new(),
        }
    }

    fn live(&self, key: &Key, now: u64) -> Option<Entry> {
        let (holder, revision, at) = self.entries.get(key)?;
        (now < at + self.ttl_ms).then(|| Entry {
            holder: holder.clone(),
            revision: *revision,
        })
    }

    pub fn apply(&mut self, now: u64, req: &KvRequest) -> KvResult {
        let current = self.live(&req.key, now);
        let at = current.as_ref().map(|e| e.revision);
        let (applies, value) = match &req.op {
            KvOp::Create { value } => (at.is_none(), Some(value)),
            KvOp::Update { value, expected } => (at == Some(*expected), Some(value)),
            KvOp::Delete { expected } => (at == Some(*expected), None),
        };
        if !applies {
            return KvResult::Conflict { current };
        }
        self.revision += 1;
        match value {
            Some(v) => {
                if let Key::Lease(p) = req.key {
                    if current.as_ref().is_none_or(|e| e.holder != *v) {
                        self.acquisitions.insert((p, self.revision), v.node.clone());
                    }
                }
                self.entries
                    .insert(req.key.clone(), (v.clone(), self.revision, now));
            }
            None => {
                self.entries.remove(&req.key);
            }
        }
        KvResult::Ok {
            revision: self.revision,
        }
    }

    /// The live registrations and leases.
    pub fn scan(&self, now: u64) -> (Vec<NodeId>, Vec<(u16, Entry)>) {
        let mut nodes = Vec::new();
        let mut leases = Vec::new();
        for key in self.entries.keys() {
            let Some(e) = self.live(key, now) else {
                continue;
            };
            match key {
                Key::Node(n) => nodes.push(n.clone()),
                Key::Lease(p) => leases.push((*p, e)),
            }
        }
        (nodes, leases)
    }
}
