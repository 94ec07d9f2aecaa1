//! The capacity limits as configured: caps and rates per task type, caps
//! per key within a task type, and pools of task types sharing a cap.

use std::collections::BTreeMap;

/// Most tasks per second a rate may allow.
pub const RATE_PER_SEC_MAX: f64 = 1_000_000.0;

/// Every limit of the engine. Empty: nothing is limited, and admission
/// costs one flag read per dispatch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// `[task_types.<name>]`.
    pub task_types: BTreeMap<String, TypeLimits>,
    /// `[pools.<name>]`.
    pub pools: BTreeMap<String, PoolLimits>,
    /// How long a waiting task takes to rise one priority level: a task is
    /// sent before any task of its key that arrived more than
    /// `aging_ms × (levels above it)` after it.
    pub aging_ms: u64,
    /// A JSON pointer into the workflow input giving its priority; `None`:
    /// every workflow is normal.
    pub priority: Option<String>,
}

/// The limits of one task type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypeLimits {
    /// Attempts out with workers at once (sent, no result, timeout or
    /// cancel yet); `None`: no cap of its own.
    pub max_in_flight: Option<u32>,
    /// Attempts sent per second at most (a token bucket holding one
    /// second's worth, at least one); `None`: no rate limit.
    pub rate_per_sec: Option<f64>,
    /// A JSON pointer into the workflow input naming the key (a tenant, say)
    /// of the type's tasks; `None`: one key for all.
    pub key: Option<String>,
    /// Cap per key when the key has none of its own in `key_caps`.
    pub key_default: Option<u32>,
    /// Caps of named keys.
    pub key_caps: BTreeMap<String, u32>,
}

/// A cap shared by several task types (a GPU pool, say).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolLimits {
    pub max_in_flight: u32,
    pub task_types: Vec<String>,
}

impl TypeLimits {
    /// The cap of `key` within the type, if any.
    pub fn key_cap(&self, key: &str) -> Option<u32> {
        self.key_caps.get(key).copied().or(self.key_default)
    }
}

impl Limits {
    /// Nothing is limited.
    pub fn is_empty(&self) -> bool {
        self.task_types.is_empty() && self.pools.is_empty()
    }

    /// The pool `task_type` belongs to, if any.
    pub fn pool_of(&self, task_type: &str) -> Option<&str> {
        self.pools
            .iter()
            .find(|(_, p)| p.task_types.iter().any(|t| t == task_type))
            .map(|(name, _)| name.as_str())
    }

    /// Range checks; each problem named with its config key.
    pub fn validate(&self) -> Result<(), String> {
        let mut errs = Vec::new();
        for (name, t) in &self.task_types {
            if t.max_in_flight == Some(0) {
                errs.push(format!(
                    "task_types.{name}.max_in_flight must be at least 1"
                ));
            }
            if let Some(r) = t.rate_per_sec {
                if !(r.is_finite() && r > 0.0 && r <= RATE_PER_SEC_MAX) {
                    errs.push(format!(
                        "task_types.{name}.rate must be above 0 and at most {RATE_PER_SEC_MAX}/s"
                    ));
                }
            }
            if let Some(k) = &t.key {
                if !k.starts_with('/') {
                    errs.push(format!(
                        "task_types.{name}.key must be a JSON pointer such as \"/tenant\""
                    ));
                }
            }
            let has_key_caps = t.key_default.is_some() || !t.key_caps.is_empty();
            if has_key_caps && t.key.is_none() {
                errs.push(format!(
                    "task_types.{name}.keys needs task_types.{name}.key (the pointer naming the key)"
                ));
            }
            if t.key_default == Some(0) || t.key_caps.values().any(|c| *c == 0) {
                errs.push(format!("task_types.{name}.keys caps must be at least 1"));
            }
        }
        let mut member: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, p) in &self.pools {
            if p.max_in_flight == 0 {
                errs.push(format!("pools.{name}.max_in_flight must be at least 1"));
            }
            if p.task_types.is_empty() {
                errs.push(format!("pools.{name}.task_types must name a task type"));
            }
            for t in &p.task_types {
                if let Some(other) = member.insert(t, name) {
                    errs.push(format!(
                        "task type {t} is in pools {other} and {name}; a task type is in one pool at most"
                    ));
                }
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }
}
