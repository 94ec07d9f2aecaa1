//! The gate's bookkeeping: per task type, its keys' queues and their
//! deficit-round-robin turns, its token bucket; per pool, its usage; the
//! slots held and the tasks waiting. Pure data with the small rules that
//! belong to it; [`super::gate::Gate`] drives it.

use std::collections::{BTreeMap, VecDeque};

use rustc_hash::FxHashMap as FastMap;

use super::limits::TypeLimits;

/// A token bucket holding at most one second's worth (at least one token).
#[derive(Debug, Clone)]
pub(super) struct Bucket {
    pub(super) per_sec: f64,
    pub(super) tokens: f64,
    pub(super) last_ms: u64,
}

impl Bucket {
    pub(super) fn new(per_sec: f64, now: u64) -> Self {
        Bucket {
            per_sec,
            tokens: Self::burst(per_sec),
            last_ms: now,
        }
    }

    pub(super) fn burst(per_sec: f64) -> f64 {
        per_sec.max(1.0)
    }

    pub(super) fn refill(&mut self, now: u64) {
        if now > self.last_ms {
            let gained = (now - self.last_ms) as f64 * self.per_sec / 1000.0;
            self.tokens = (self.tokens + gained).min(Self::burst(self.per_sec));
            self.last_ms = now;
        }
    }

    pub(super) fn has_token(&mut self, now: u64) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }
}

/// Waiting tasks and usage of one key.
#[derive(Debug, Default)]
pub(super) struct KeyState {
    pub(super) in_flight: u32,
    /// Turns left in the key's current round (deficit round robin, unit cost).
    pub(super) deficit: u32,
    /// Waiting task ids by (virtual time, arrival sequence).
    pub(super) queue: BTreeMap<(u64, u64), String>,
}

/// One limited task type.
#[derive(Debug)]
pub(super) struct TypeState {
    pub(super) limits: TypeLimits,
    pub(super) pool: Option<String>,
    pub(super) bucket: Option<Bucket>,
    pub(super) in_flight: u32,
    pub(super) queued: usize,
    pub(super) keys: FastMap<String, KeyState>,
    /// Keys with waiting tasks, in round-robin order (the front has the turn).
    pub(super) active: VecDeque<String>,
}

impl TypeState {
    pub(super) fn new(limits: TypeLimits, pool: Option<String>, now: u64) -> Self {
        TypeState {
            bucket: limits.rate_per_sec.map(|r| Bucket::new(r, now)),
            limits,
            pool,
            in_flight: 0,
            queued: 0,
            keys: FastMap::default(),
            active: VecDeque::new(),
        }
    }

    pub(super) fn key_full(&self, key: &str, ks: &KeyState) -> Option<u32> {
        self.limits.key_cap(key).filter(|cap| ks.in_flight >= *cap)
    }

    pub(super) fn quantum(&self, key: &str) -> u32 {
        self.limits.key_cap(key).unwrap_or(1).max(1)
    }

    /// The key whose turn it is among those not at their own cap, if any.
    pub(super) fn pick(&mut self) -> Option<String> {
        for _ in 0..self.active.len() {
            let key = self.active.front()?.clone();
            let full = match self.keys.get(&key) {
                Some(ks) if !ks.queue.is_empty() => self.key_full(&key, ks).is_some(),
                _ => {
                    self.active.pop_front();
                    continue;
                }
            };
            if full {
                if let Some(ks) = self.keys.get_mut(&key) {
                    ks.deficit = 0;
                }
                self.active.rotate_left(1);
                continue;
            }
            let quantum = self.quantum(&key);
            if let Some(ks) = self.keys.get_mut(&key) {
                if ks.deficit == 0 {
                    ks.deficit = quantum;
                }
            }
            return Some(key);
        }
        None
    }
}

/// A slot held by an admitted attempt.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) task_type: String,
    pub(super) key: String,
}

/// A task waiting for capacity.
#[derive(Debug)]
pub(super) struct Waiting<T> {
    pub(super) item: T,
    pub(super) task_type: String,
    pub(super) key: String,
    pub(super) order: (u64, u64),
    pub(super) since_ms: u64,
    pub(super) priority: u8,
    /// Its queue deadline, if it has one (an entry of `Gate::deadlines`).
    pub(super) deadline_ms: Option<u64>,
}

/// One pool's usage.
#[derive(Debug)]
pub(super) struct PoolState {
    pub(super) cap: u32,
    pub(super) in_flight: u32,
    pub(super) task_types: Vec<String>,
    /// The member type that is pumped first next time (rotates).
    pub(super) next: usize,
}
