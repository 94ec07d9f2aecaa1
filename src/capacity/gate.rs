//! The admission gate: which owed task may go to workers now, and which
//! waits for capacity. Pure: time comes in as `now` (ms), items are opaque.
//!
//! A task of a task type without limits passes at once, after one map
//! lookup. A task of a limited type enters its type's queue, under its key;
//! it is sent when, at once, its pool, its type and its key are under their
//! caps and the type's token bucket holds a token. Within a type, keys take
//! turns by deficit round robin, each key's quantum being its cap (1 when
//! keys have no caps), so free capacity goes to keys in proportion to their
//! caps and a key with 50,000 waiting tasks delays a key with 5 by at most
//! one round. Within a key, the task with the earliest virtual time goes
//! first: its arrival plus `aging_ms` per priority level below the highest,
//! so a higher priority goes first and a lower one waits at most
//! `aging_ms × levels` behind later arrivals of higher priority.
//!
//! A slot is held from admission until the shell reports the attempt
//! finished (a result, a timeout or a cancel); then the next waiting tasks
//! of the type (of every type of its pool, in turn) are admitted.
//!
//! A task may come with a queue deadline: if it still waits then,
//! [`Gate::expire`] takes it out of its queue and hands it back, never to
//! be sent; the shell ends its attempt as a queue timeout.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap as FastMap;

use super::limits::Limits;
use super::queues::{Bucket, Held, KeyState, PoolState, TypeState, Waiting};
pub use super::view::{GateView, Holder, KeyView, PoolView, TypeView, WaitingView};

/// Priority levels: 0 (low) ..= `PRIORITY_MAX` (high).
pub const PRIORITY_MAX: u8 = 2;
/// The priority of a task nobody set one for.
pub const PRIORITY_NORMAL: u8 = 1;

/// The task an item stands for, as the gate sees it.
#[derive(Debug, Clone, Copy)]
pub struct Ticket<'a> {
    pub task_id: &'a str,
    pub task_type: &'a str,
    /// The key within the type (`""`: the type's only key).
    pub key: &'a str,
    /// 0 (low) ..= [`PRIORITY_MAX`]; larger values are taken as the maximum.
    pub priority: u8,
    /// If it still waits at this time (ms), [`Gate::expire`] takes it out.
    pub queue_deadline_ms: Option<u64>,
}

/// A task that waited past its queue deadline: out of the gate, not sent.
#[derive(Debug)]
pub struct Expired<T> {
    pub item: T,
    /// How long it waited (ms).
    pub waited_ms: u64,
}

/// An item the gate lets through now.
#[derive(Debug)]
pub struct Admitted<T> {
    pub item: T,
    /// How long it waited in the gate (ms); 0 when it passed at once.
    pub waited_ms: u64,
    /// Its slot is held until [`Gate::finish`]: the shell must report the
    /// attempt's end. False for a type without limits.
    pub tracked: bool,
}

/// The admission gate. `T`: the item the shell sends when a task is let
/// through.
#[derive(Debug)]
pub struct Gate<T> {
    limits: Limits,
    types: FastMap<String, TypeState>,
    pools: FastMap<String, PoolState>,
    in_flight: FastMap<String, Held>,
    waiting: FastMap<String, Waiting<T>>,
    /// Queue deadlines of waiting tasks: `(due ms, task id)`.
    deadlines: BTreeSet<(u64, String)>,
    seq: u64,
    /// Every limited task goes through its queue, even when nothing binds
    /// (tests compare this with the direct path).
    #[cfg(test)]
    queue_only: bool,
}

impl<T> Default for Gate<T> {
    fn default() -> Self {
        Gate::new(Limits::default(), 0)
    }
}

impl<T> Gate<T> {
    pub fn new(limits: Limits, now: u64) -> Self {
        let mut g = Gate {
            limits: Limits::default(),
            types: FastMap::default(),
            pools: FastMap::default(),
            in_flight: FastMap::default(),
            waiting: FastMap::default(),
            deadlines: BTreeSet::new(),
            seq: 0,
            #[cfg(test)]
            queue_only: false,
        };
        // Nothing waits yet, so nothing is admitted here.
        let _ = g.reconfigure(limits, now);
        g
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Anything limited, held or waiting: when false, every task passes and
    /// nothing needs to be reported back.
    pub fn is_active(&self) -> bool {
        !self.types.is_empty() || !self.in_flight.is_empty() || !self.waiting.is_empty()
    }

    /// The task types with limits (their own, or their pool's).
    pub fn limited_types(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }

    /// `task_type` has limits (its tasks go through the queue).
    pub fn is_limited(&self, task_type: &str) -> bool {
        self.types.contains_key(task_type)
    }

    /// Offers a task. Returns what may be sent now: this task (at once when
    /// its type has no limits, or when the same attempt is already admitted
    /// and is being sent again), possibly others. A task already waiting
    /// keeps its place, with this newer item.
    pub fn admit(&mut self, t: Ticket<'_>, item: T, now: u64) -> Vec<Admitted<T>> {
        if !self.types.contains_key(t.task_type) {
            return vec![Admitted {
                item,
                waited_ms: 0,
                tracked: false,
            }];
        }
        if self.in_flight.contains_key(t.task_id) {
            return vec![Admitted {
                item,
                waited_ms: 0,
                tracked: true,
            }];
        }
        if let Some(w) = self.waiting.get_mut(t.task_id) {
            w.item = item;
            return Vec::new();
        }
        #[cfg(test)]
        let direct = !self.queue_only;
        #[cfg(not(test))]
        let direct = true;
        if direct && self.admit_directly(t, now) {
            return vec![Admitted {
                item,
                waited_ms: 0,
                tracked: true,
            }];
        }
        let Some(ts) = self.types.get_mut(t.task_type) else {
            return Vec::new();
        };
        let priority = t.priority.min(PRIORITY_MAX);
        let aging = self.limits.aging_ms;
        let levels_below = u64::from(PRIORITY_MAX - priority);
        let order = (
            now.saturating_add(aging.saturating_mul(levels_below)),
            self.seq,
        );
        self.seq += 1;
        let ks = ts.keys.entry(t.key.to_string()).or_default();
        if ks.queue.is_empty() {
            ts.active.push_back(t.key.to_string());
        }
        ks.queue.insert(order, t.task_id.to_string());
        ts.queued += 1;
        if let Some(due) = t.queue_deadline_ms {
            self.deadlines.insert((due, t.task_id.to_string()));
        }
        self.waiting.insert(
            t.task_id.to_string(),
            Waiting {
                item,
                task_type: t.task_type.to_string(),
                key: t.key.to_string(),
                order,
                since_ms: now,
                priority,
                deadline_ms: t.queue_deadline_ms,
            },
        );
        let mut out = Vec::new();
        let tt = t.task_type.to_string();
        self.pump_type_or_pool(&tt, now, &mut out);
        out
    }

    /// These attempts ended (result, timeout, cancel): their slots free and
    /// waiting tasks take them. An id still waiting is dropped from its
    /// queue (cancelled before it was sent); an unknown id is ignored.
    pub fn finish<'a>(
        &mut self,
        task_ids: impl IntoIterator<Item = &'a str>,
        now: u64,
    ) -> Vec<Admitted<T>> {
        let mut touched: Vec<String> = Vec::new();
        for id in task_ids {
            if let Some(h) = self.in_flight.remove(id) {
                if let Some(ts) = self.types.get_mut(&h.task_type) {
                    ts.in_flight = ts.in_flight.saturating_sub(1);
                    if let Some(ks) = ts.keys.get_mut(&h.key) {
                        ks.in_flight = ks.in_flight.saturating_sub(1);
                        if ks.in_flight == 0 && ks.queue.is_empty() {
                            ts.keys.remove(&h.key);
                        }
                    }
                    if let Some(p) = ts.pool.as_ref().and_then(|p| self.pools.get_mut(p)) {
                        p.in_flight = p.in_flight.saturating_sub(1);
                    }
                    if !touched.contains(&h.task_type) {
                        touched.push(h.task_type);
                    }
                }
            } else {
                let _ = self.remove_waiting(id);
            }
        }
        let mut out = Vec::new();
        for tt in touched {
            self.pump_type_or_pool(&tt, now, &mut out);
        }
        out
    }

    /// Takes `id` out of the waiting tasks (its queue, its key's turn, its
    /// deadline); nothing else changes.
    fn remove_waiting(&mut self, id: &str) -> Option<Waiting<T>> {
        let w = self.waiting.remove(id)?;
        if let Some(due) = w.deadline_ms {
            self.deadlines.remove(&(due, id.to_string()));
        }
        if let Some(ts) = self.types.get_mut(&w.task_type) {
            ts.queued = ts.queued.saturating_sub(1);
            if let Some(ks) = ts.keys.get_mut(&w.key) {
                ks.queue.remove(&w.order);
                // A key is in `active` exactly while tasks of it wait.
                if ks.queue.is_empty() {
                    ks.deficit = 0;
                    let idle = ks.in_flight == 0;
                    ts.active.retain(|k| k != &w.key);
                    if idle {
                        ts.keys.remove(&w.key);
                    }
                }
            }
        }
        Some(w)
    }

    /// Takes out the waiting tasks whose queue deadline is at or before
    /// `now` and whose item matches `owned` (the caller's own; the others
    /// stay for their owners' calls), earliest deadline first, at most
    /// `max`. They are never sent from here and hold no slot, so nothing is
    /// admitted by this.
    pub fn expire(&mut self, now: u64, max: usize, owned: impl Fn(&T) -> bool) -> Vec<Expired<T>> {
        let mut due: Vec<String> = Vec::new();
        for (at, id) in &self.deadlines {
            if *at > now || due.len() >= max {
                break;
            }
            if self.waiting.get(id).is_some_and(|w| owned(&w.item)) {
                due.push(id.clone());
            }
        }
        due.iter()
            .filter_map(|id| self.remove_waiting(id))
            .map(|w| Expired {
                waited_ms: now.saturating_sub(w.since_ms),
                item: w.item,
            })
            .collect()
    }

    /// The earliest queue deadline of a waiting task, if any.
    pub fn next_queue_deadline(&self) -> Option<u64> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Drops the waiting tasks whose item matches `pred` (their owner went
    /// away); they are never sent from here.
    pub fn drop_waiting(&mut self, pred: impl Fn(&T) -> bool) {
        let ids: Vec<String> = self
            .waiting
            .iter()
            .filter(|(_, w)| pred(&w.item))
            .map(|(id, _)| id.clone())
            .collect();
        // Waiting ids hold no slot, so nothing is admitted by this.
        let _ = self.finish(ids.iter().map(String::as_str), 0);
    }

    /// Admits what rate limits now allow (tokens refill with time).
    pub fn tick(&mut self, now: u64) -> Vec<Admitted<T>> {
        let mut out = Vec::new();
        let rated: Vec<String> = self
            .types
            .iter()
            .filter(|(_, ts)| ts.bucket.is_some() && ts.queued > 0)
            .map(|(name, _)| name.clone())
            .collect();
        for tt in rated {
            self.pump_type_or_pool(&tt, now, &mut out);
        }
        out
    }

    /// New limits; waiting tasks keep their places and held slots stay
    /// counted. A type that loses its limits lets its waiting tasks go (they
    /// are returned) and stops counting its held slots; a type that gains
    /// limits counts only attempts admitted from now on.
    pub fn reconfigure(&mut self, limits: Limits, now: u64) -> Vec<Admitted<T>> {
        let mut old = std::mem::take(&mut self.types);
        let mut types = FastMap::default();
        let mut names: Vec<String> = limits.task_types.keys().cloned().collect();
        for p in limits.pools.values() {
            names.extend(p.task_types.iter().cloned());
        }
        for name in names {
            if types.contains_key(&name) {
                continue;
            }
            let tl = limits.task_types.get(&name).cloned().unwrap_or_default();
            let pool = limits.pool_of(&name).map(str::to_string);
            let ts = match old.remove(&name) {
                Some(mut ts) => {
                    ts.bucket = match (tl.rate_per_sec, ts.bucket.take()) {
                        (Some(r), Some(mut b)) => {
                            b.refill(now);
                            b.per_sec = r;
                            b.tokens = b.tokens.min(Bucket::burst(r));
                            Some(b)
                        }
                        (Some(r), None) => Some(Bucket::new(r, now)),
                        (None, _) => None,
                    };
                    ts.limits = tl;
                    ts.pool = pool;
                    ts
                }
                None => TypeState::new(tl, pool, now),
            };
            types.insert(name, ts);
        }
        let mut out = Vec::new();
        // Types no longer limited: their waiting tasks go now.
        for (name, ts) in old {
            self.in_flight.retain(|_, h| h.task_type != name);
            for (_, ks) in ts.keys {
                for (_, id) in ks.queue {
                    if let Some(w) = self.waiting.remove(&id) {
                        if let Some(due) = w.deadline_ms {
                            self.deadlines.remove(&(due, id));
                        }
                        out.push(Admitted {
                            item: w.item,
                            waited_ms: now.saturating_sub(w.since_ms),
                            tracked: false,
                        });
                    }
                }
            }
        }
        self.pools = limits
            .pools
            .iter()
            .map(|(name, p)| {
                let in_flight = p
                    .task_types
                    .iter()
                    .filter_map(|t| types.get(t))
                    .map(|ts| ts.in_flight)
                    .sum();
                (
                    name.clone(),
                    PoolState {
                        cap: p.max_in_flight,
                        in_flight,
                        task_types: p.task_types.clone(),
                        next: 0,
                    },
                )
            })
            .collect();
        self.types = types;
        self.limits = limits;
        let all: Vec<String> = self.types.keys().cloned().collect();
        for tt in all {
            self.pump_type_or_pool(&tt, now, &mut out);
        }
        out
    }

    /// Admits waiting tasks of `task_type`, or of every type of its pool in
    /// turn, while capacity lasts.
    fn pump_type_or_pool(&mut self, task_type: &str, now: u64, out: &mut Vec<Admitted<T>>) {
        let pool = self.types.get(task_type).and_then(|ts| ts.pool.clone());
        let Some(pool) = pool else {
            while self.admit_one(task_type, now, out) {}
            return;
        };
        let members = match self.pools.get(&pool) {
            Some(p) => p.task_types.clone(),
            None => return,
        };
        if members.is_empty() {
            return;
        }
        // Round robin over the member types: the one after the last type
        // that got a slot is asked first.
        loop {
            let start = self.pools.get(&pool).map_or(0, |p| p.next);
            let mut progressed = false;
            for j in 0..members.len() {
                let i = (start + j) % members.len();
                if self.admit_one(&members[i], now, out) {
                    progressed = true;
                    if let Some(p) = self.pools.get_mut(&pool) {
                        p.next = (i + 1) % members.len();
                    }
                }
            }
            if !progressed {
                return;
            }
        }
    }

    /// Takes a slot for `t` at once when nothing of its type (nor of any
    /// type of its pool) waits and every limit allows: exactly what
    /// queueing it and pumping would do, without the queue's bookkeeping.
    /// This is the path of every task while the limits do not bind.
    fn admit_directly(&mut self, t: Ticket<'_>, now: u64) -> bool {
        let Some(ts) = self.types.get(t.task_type) else {
            return false;
        };
        if ts.queued > 0 || ts.limits.max_in_flight.is_some_and(|c| ts.in_flight >= c) {
            return false;
        }
        if let Some(p) = ts.pool.as_ref().and_then(|p| self.pools.get(p)) {
            let any_waits = p
                .task_types
                .iter()
                .any(|m| self.types.get(m).is_some_and(|o| o.queued > 0));
            if p.in_flight >= p.cap || any_waits {
                return false;
            }
        }
        let key_in_flight = ts.keys.get(t.key).map_or(0, |ks| ks.in_flight);
        if ts.limits.key_cap(t.key).is_some_and(|c| key_in_flight >= c) {
            return false;
        }
        let Some(ts) = self.types.get_mut(t.task_type) else {
            return false;
        };
        if let Some(b) = ts.bucket.as_mut() {
            if !b.has_token(now) {
                return false;
            }
            b.tokens -= 1.0;
        }
        ts.in_flight += 1;
        match ts.keys.get_mut(t.key) {
            Some(ks) => ks.in_flight += 1,
            None => {
                ts.keys.insert(
                    t.key.to_string(),
                    KeyState {
                        in_flight: 1,
                        ..KeyState::default()
                    },
                );
            }
        }
        if let Some(p) = ts.pool.as_ref().and_then(|p| self.pools.get_mut(p)) {
            p.in_flight += 1;
            // The pool's round robin moves on past this type, as a pump would.
            if let Some(i) = p.task_types.iter().position(|m| m == t.task_type) {
                p.next = (i + 1) % p.task_types.len();
            }
        }
        self.in_flight.insert(
            t.task_id.to_string(),
            Held {
                task_type: t.task_type.to_string(),
                key: t.key.to_string(),
            },
        );
        true
    }

    /// Admits the next waiting task of `task_type` if every limit allows.
    fn admit_one(&mut self, task_type: &str, now: u64, out: &mut Vec<Admitted<T>>) -> bool {
        let Some(ts) = self.types.get_mut(task_type) else {
            return false;
        };
        if ts.queued == 0 {
            return false;
        }
        if ts.limits.max_in_flight.is_some_and(|c| ts.in_flight >= c) {
            return false;
        }
        if let Some(p) = ts.pool.as_ref().and_then(|p| self.pools.get(p)) {
            if p.in_flight >= p.cap {
                return false;
            }
        }
        if let Some(b) = ts.bucket.as_mut() {
            if !b.has_token(now) {
                return false;
            }
        }
        let Some(key) = ts.pick() else {
            return false;
        };
        let Some(ks) = ts.keys.get_mut(&key) else {
            return false;
        };
        let Some((_, id)) = ks.queue.pop_first() else {
            return false;
        };
        ks.in_flight += 1;
        ks.deficit = ks.deficit.saturating_sub(1);
        let emptied = ks.queue.is_empty();
        let turn_over = ks.deficit == 0;
        if emptied {
            ks.deficit = 0;
            ts.active.pop_front();
        } else if turn_over {
            ts.active.rotate_left(1);
        }
        ts.in_flight += 1;
        ts.queued = ts.queued.saturating_sub(1);
        if let Some(b) = ts.bucket.as_mut() {
            b.tokens -= 1.0;
        }
        if let Some(p) = ts.pool.as_ref().and_then(|p| self.pools.get_mut(p)) {
            p.in_flight += 1;
        }
        let Some(w) = self.waiting.remove(&id) else {
            return true;
        };
        if let Some(due) = w.deadline_ms {
            self.deadlines.remove(&(due, id.clone()));
        }
        self.in_flight.insert(
            id,
            Held {
                task_type: task_type.to_string(),
                key,
            },
        );
        out.push(Admitted {
            item: w.item,
            waited_ms: now.saturating_sub(w.since_ms),
            tracked: true,
        });
        true
    }
}

#[path = "gate_view.rs"]
mod gate_view;

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
