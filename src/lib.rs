//! # Narralytica Orchestrator
//!
//! The control layer of the Narralytica video platform: it runs each step of
//! a pipeline DAG only when its prerequisites succeeded, sends tasks to
//! workers, applies retry policies and timeouts, and survives crashes of
//! workers and of itself without losing or duplicating accepted work.
//!
//! # Layout
//!
//! | module | owns |
//! | --- | --- |
//! | [`pipeline`] | pipeline definitions: TOML format, validation, DAG helpers |
//! | [`durations`] | the one duration grammar and rate grammar of files and flags; a leaf |
//! | [`workflow`] | the pure core: `decide`, `evolve`, state, events, commands |
//! | [`capacity`] | the admission gate as pure code: caps and rates per task type, pools, caps and fair turns per key, priorities with aging; a leaf |
//! | [`storage`] | the storage trait, RocksDB and in-memory twins, codec, keys, group commit |
//! | [`telemetry`] | counters, gauges, histograms (prometheus-client) declared with their name and help, the engine's `Metrics`, the text exposition; a leaf |
//! | [`engine`] | ractor actors: root → partition → workflow; timers, liveness |
//! | [`transport`] | engine ↔ workers traits; the in-process transport |
//! | [`sim`] | simulated workers (dev mode and tests) |
//! | [`cluster`] | cluster ownership as pure code: partition leases by CAS, fair share, graceful handover, the fencing epoch and the journal chain check; the single-node prefix claim decision |
//! | [`dst`] | deterministic simulation of the production partition and workflow cores: seeded faults, virtual time, a checker |
//! | [`verify`] | the independent journal checker behind `orchestrator verify` |
//! | [`http`] | `/healthz`, `/readyz`, `/metrics` (Prometheus) on axum over hyper, with a connection cap that keeps probes answering; other routers (the console) merge into `http::routes` |
//! | [`admin`] | the admin verbs over NATS request/reply, and the durable batch jobs they start |
//! | [`audit`] | the audit line of every mutating admin verb, with its caller |
//! | [`backup`] | consistent checkpoints of the store, live or offline |
//! | [`loadgen`] | `orchestrator loadgen`: open/closed-loop load over NATS, outputs checked from the event stream |
//! | [`node`] | assembling storage + committer + pipelines for a process |
//! | [`otel`] | span records and their export over OTLP/HTTP (JSON) |
//! | [`paths`] | whether a path lies inside a directory (canonical paths); a leaf |
//! | [`progress`] | progress bars on indicatif, drawn only on a terminal |
//! | [`workercheck`] | `orchestrator worker-check`: a fake orchestrator that checks a worker against the protocol |
//! | [`cli`] | the `orchestrator` command |
//!
//! # Invariants
//!
//! * **Pure core.** `workflow` does no IO, reads no clock, draws no random
//!   numbers and does not use tokio (enforced by a test).
//! * **Write-ahead.** The events of a transition are in a synced write batch
//!   before any command they imply runs and before anyone is told.
//! * **One mutator.** Only `workflow::evolve` changes a workflow state, live
//!   and on replay, so replay rebuilds exactly the live state.
//! * **Routing.** Only partitions hold workflow actor references; everything
//!   else addresses workflows by id.

pub mod admin;
pub mod audit;
pub mod backup;
pub mod capacity;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod console;
pub mod dst;
pub mod durations;
pub mod engine;
pub mod events;
pub mod failpoints;
pub mod http;
pub mod loadgen;
pub mod node;
pub mod otel;
pub mod paths;
pub mod pipeline;
pub mod progress;
pub mod protocol;
pub mod sim;
pub mod storage;
pub mod telemetry;
pub mod transport;
pub mod verify;
pub mod worker;
pub mod workercheck;
pub mod workflow;

#[cfg(test)]
mod poison_tests;
