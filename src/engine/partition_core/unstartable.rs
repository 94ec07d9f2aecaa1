//! Parked workflows whose actor could not start, remembered with why.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as FastMap;

/// Parked workflows whose actor could not start, with the error, bounded:
/// past `max` the oldest is forgotten (its next message then tries an actor
/// again).
#[derive(Debug)]
pub struct Unstartable {
    max: usize,
    why: FastMap<String, String>,
    /// Insertion order, oldest first, for the bound.
    order: VecDeque<String>,
}

impl Unstartable {
    pub fn new(max: usize) -> Self {
        Unstartable {
            max,
            why: FastMap::default(),
            order: VecDeque::new(),
        }
    }

    pub fn insert(&mut self, id: &str, error: String) {
        if self.why.insert(id.to_string(), error).is_none() {
            self.order.push_back(id.to_string());
        }
        while self.why.len() > self.max {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.why.remove(&old);
        }
    }

    pub fn get(&self, id: &str) -> Option<&str> {
        self.why.get(id).map(String::as_str)
    }

    /// Forgets `id` (its workflow was purged). Rare, so the linear scan of
    /// `order` is fine; leaving a stale copy there would evict the id early
    /// if it were remembered again.
    pub fn remove(&mut self, id: &str) {
        if self.why.remove(id).is_some() {
            self.order.retain(|o| o != id);
        }
    }
}
