//! What the admission gate shows of itself: why a waiting task waits and
//! the limits and usage of each task type, key and pool (`describe`,
//! `orchestrator capacity`, the metrics).

use serde::{Deserialize, Serialize};

/// Why a waiting task waits: the first limit, top down, that holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Holder {
    Pool {
        pool: String,
        in_flight: u32,
        cap: u32,
    },
    TaskType {
        in_flight: u32,
        cap: u32,
    },
    Key {
        key: String,
        in_flight: u32,
        cap: u32,
    },
    Rate {
        per_sec: f64,
    },
    /// Nothing is full: it is behind others and goes on the next pump.
    Turn,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Pool {
                pool,
                in_flight,
                cap,
            } => write!(f, "pool {pool} at its cap ({in_flight}/{cap} in flight)"),
            Holder::TaskType { in_flight, cap } => {
                write!(f, "task type at its cap ({in_flight}/{cap} in flight)")
            }
            Holder::Key {
                key,
                in_flight,
                cap,
            } => write!(f, "key {key:?} at its cap ({in_flight}/{cap} in flight)"),
            Holder::Rate { per_sec } => write!(f, "rate limit ({per_sec}/s)"),
            Holder::Turn => f.write_str("waiting for its turn"),
        }
    }
}

/// A waiting task and why it waits.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitingView {
    pub task_type: String,
    pub key: String,
    pub since_ms: u64,
    pub priority: u8,
    pub held_by: Holder,
}

/// Usage of one key of a type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyView {
    pub key: String,
    pub cap: Option<u32>,
    pub in_flight: u32,
    pub queued: usize,
}

/// Limits and usage of one limited task type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypeView {
    pub task_type: String,
    pub cap: Option<u32>,
    pub rate_per_sec: Option<f64>,
    pub pool: Option<String>,
    pub in_flight: u32,
    pub queued: usize,
    /// Arrival of the longest-waiting task (ms), if any waits.
    pub oldest_since_ms: Option<u64>,
    pub keys: Vec<KeyView>,
}

/// Limits and usage of one pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolView {
    pub pool: String,
    pub cap: u32,
    pub in_flight: u32,
    pub task_types: Vec<String>,
}

/// Everything the gate limits, as `capacity` and the metrics show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GateView {
    pub task_types: Vec<TypeView>,
    pub pools: Vec<PoolView>,
}
