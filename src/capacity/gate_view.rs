//! What the gate shows of its state: why a waiting task waits and the
//! limits and usage of every type, key and pool.

use super::{Gate, GateView, Holder, KeyView, PoolView, TypeState, TypeView, WaitingView};

impl<T> Gate<T> {
    /// Why `task_id` waits, if it does.
    pub fn waiting(&self, task_id: &str) -> Option<WaitingView> {
        let w = self.waiting.get(task_id)?;
        let ts = self.types.get(&w.task_type)?;
        Some(WaitingView {
            task_type: w.task_type.clone(),
            key: w.key.clone(),
            since_ms: w.since_ms,
            priority: w.priority,
            held_by: self.holder(ts, &w.key),
        })
    }

    /// Limits and usage of every limited type and pool, sorted by name.
    pub fn view(&self) -> GateView {
        let mut task_types: Vec<TypeView> = self
            .types
            .iter()
            .map(|(name, ts)| {
                let mut keys: Vec<KeyView> = ts
                    .keys
                    .iter()
                    .map(|(k, ks)| KeyView {
                        key: k.clone(),
                        cap: ts.limits.key_cap(k),
                        in_flight: ks.in_flight,
                        queued: ks.queue.len(),
                    })
                    .collect();
                keys.sort_by(|a, b| a.key.cmp(&b.key));
                let oldest_since_ms = ts
                    .keys
                    .values()
                    .flat_map(|ks| ks.queue.values())
                    .filter_map(|id| self.waiting.get(id))
                    .map(|w| w.since_ms)
                    .min();
                TypeView {
                    task_type: name.clone(),
                    cap: ts.limits.max_in_flight,
                    rate_per_sec: ts.limits.rate_per_sec,
                    pool: ts.pool.clone(),
                    in_flight: ts.in_flight,
                    queued: ts.queued,
                    oldest_since_ms,
                    keys,
                }
            })
            .collect();
        task_types.sort_by(|a, b| a.task_type.cmp(&b.task_type));
        let mut pools: Vec<PoolView> = self
            .pools
            .iter()
            .map(|(name, p)| PoolView {
                pool: name.clone(),
                cap: p.cap,
                in_flight: p.in_flight,
                task_types: p.task_types.clone(),
            })
            .collect();
        pools.sort_by(|a, b| a.pool.cmp(&b.pool));
        GateView { task_types, pools }
    }

    fn holder(&self, ts: &TypeState, key: &str) -> Holder {
        if let Some((name, p)) = ts
            .pool
            .as_ref()
            .and_then(|n| self.pools.get(n).map(|p| (n, p)))
        {
            if p.in_flight >= p.cap {
                return Holder::Pool {
                    pool: name.clone(),
                    in_flight: p.in_flight,
                    cap: p.cap,
                };
            }
        }
        if let Some(cap) = ts.limits.max_in_flight.filter(|c| ts.in_flight >= *c) {
            return Holder::TaskType {
                in_flight: ts.in_flight,
                cap,
            };
        }
        if let Some(ks) = ts.keys.get(key) {
            if let Some(cap) = ts.key_full(key, ks) {
                return Holder::Key {
                    key: key.to_string(),
                    in_flight: ks.in_flight,
                    cap,
                };
            }
        }
        if let Some(b) = &ts.bucket {
            if b.tokens < 1.0 {
                return Holder::Rate { per_sec: b.per_sec };
            }
        }
        Holder::Turn
    }
}
