//! Capacity as a pure policy: caps and rate limits per task type, caps per
//! key within a type with fair turns across keys, pools of types sharing a
//! cap, and priorities with aging (see `docs/capacity.md`).
//!
//! [`Gate`] decides which owed task may go to workers now and which waits;
//! it holds no clock, no lock and no IO. The engine wraps one gate per
//! process (`engine::capacity`), offers it every task it would send,
//! sends what the gate lets through and reports each attempt's end.
//!
//! In a cluster, [`share::node_limits`] splits every cap and rate by the
//! partitions a node owns.
//!
//! [`ErrorThrottle`] decides when bulk work (a backfill) holds back because
//! the task types it uses fail too often; the backfill command feeds it the
//! engine's attempt outcomes, and reports its state to the engine
//! ([`Backfills`], shown by `orchestrator capacity` and the metrics).

pub mod backfills;
pub mod gate;
pub mod limits;
mod queues;
pub mod share;
pub mod throttle;
pub mod view;

pub use backfills::{BackfillReport, BackfillView, Backfills};
pub use gate::{
    Admitted, Expired, Gate, GateView, Holder, KeyView, PoolView, Ticket, TypeView, WaitingView,
    PRIORITY_MAX, PRIORITY_NORMAL,
};
pub use limits::{Limits, PoolLimits, TypeLimits, RATE_PER_SEC_MAX};
pub use throttle::{parse_error_rate, Cause, ErrorBound, ErrorThrottle, TaskOutcomes, Verdict};
