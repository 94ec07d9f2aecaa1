//! Bounded LRU of passivated workflow states, so a workflow that wakes up
//! soon after passivation does not go back to storage.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as FastMap;

/// Least-recently-put states, at most `max` of them. Generic over the state
/// so the partition core stays free of the workflow types it does not read.
pub struct StateCache<S> {
    max: usize,
    /// Each state with the stamp of its latest `put`.
    map: FastMap<String, (Box<S>, u64)>,
    /// Put order; entries whose stamp no longer matches the map are stale.
    order: VecDeque<(String, u64)>,
    stamp: u64,
}

impl<S> StateCache<S> {
    pub fn new(max: usize) -> Self {
        StateCache {
            max,
            map: FastMap::default(),
            order: VecDeque::new(),
            stamp: 0,
        }
    }

    pub fn put(&mut self, id: String, state: Box<S>) {
        if self.max == 0 {
            return;
        }
        self.stamp += 1;
        self.order.push_back((id.clone(), self.stamp));
        self.map.insert(id, (state, self.stamp));
        while self.map.len() > self.max {
            let Some((old, stamp)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|(_, s)| *s == stamp) {
                self.map.remove(&old);
            }
        }
        // Stale order entries (re-inserted ids) are compacted once they dominate.
        if self.order.len() > 2 * self.max + 1024 {
            let map = &self.map;
            self.order
                .retain(|(id, s)| map.get(id).is_some_and(|(_, cur)| cur == s));
        }
    }

    pub fn take(&mut self, id: &str) -> Option<Box<S>> {
        self.map.remove(id).map(|(s, _)| s)
    }

    pub fn remove(&mut self, id: &str) {
        self.map.remove(id);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
