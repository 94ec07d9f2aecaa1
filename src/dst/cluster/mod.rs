//! Deterministic simulation of cluster ownership ([`crate::cluster`]).
//!
//! One run = one seed, on the calling thread, in virtual time. Several
//! nodes each run the production [`Ownership`](crate::cluster::Ownership)
//! core behind a small shell that serves its partitions: it reads a
//! journal's tail and appends the term's open record when told to start
//! serving, then appends one commit at a time every `commit_every_ms`,
//! each stamped with its epoch and naming the tail it follows. Around them:
//!
//! * **a KV bucket** with JetStream KV semantics (one revision counter,
//!   CAS on the revision, entries gone after the TTL);
//! * **a journal stream** per partition that accepts an append only when
//!   it names the current last sequence;
//! * **a network** that delays every message and drops KV writes, KV
//!   answers and reads (journal traffic is delayed, never lost: a JetStream
//!   publish is retried with its message id until acknowledged);
//! * **faults** in the first `fault_window_ms`: node pauses (some longer
//!   than a lease, some right between a node's validity check and its
//!   append, the zombie case), crashes with a restart later, a node joining
//!   and a node leaving gracefully.
//!
//! The run then drains for `drain_ms` and [`check`](check::check) judges it:
//! every partition's journal is one chain in which epochs only grow, every
//! epoch was acquired by CAS by the node that appended under it, every
//! acknowledged append is in the chain, no graceful handover abandoned a
//! commit, every partition is served again, and the live nodes hold their
//! fair shares.

mod check;
mod journal;
mod kv;
mod world;

pub use world::run_seed;

use crate::cluster::LeaseConfig;

/// A deliberate bug, to prove the checker catches it (negative control).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterPlant {
    /// The journal accepts every append without checking the expected last
    /// sequence, so nothing fences a deposed owner.
    NoExpectedSequence,
}

/// Shape, timings and fault rates of one run. Every field has a default.
#[derive(Debug, Clone)]
pub struct ClusterSimConfig {
    /// Nodes at the start; joins add more.
    pub nodes: usize,
    pub partitions: u16,
    pub lease: LeaseConfig,
    /// Each node ticks its core this often.
    pub tick_ms: u64,
    /// A serving node starts a commit of each partition this often (when
    /// none is in flight).
    pub commit_every_ms: u64,
    /// Every message takes a uniform delay in `1..=delay_max_ms`.
    pub delay_max_ms: u64,
    /// Probability that a KV write, a KV answer or a scan is lost (during
    /// the fault window).
    pub drop_rate: f64,
    /// A snapshot takes up to this long.
    pub snapshot_max_ms: u64,
    /// Faults happen only before this virtual time.
    pub fault_window_ms: u64,
    /// After the fault window the run goes on this long, then is judged.
    pub drain_ms: u64,
    /// Pauses of a random node per run: up to this many, each up to
    /// `pause_max_ms` (longer than a lease, so some leases expire).
    pub pauses_max: u64,
    pub pause_max_ms: u64,
    /// Share of commits before which the node pauses for longer than a
    /// lease, between its validity check and its append (a zombie).
    pub pause_before_append_rate: f64,
    /// Crashes per run (each followed by a restart): up to this many.
    pub crashes_max: u64,
    pub restart_after_max_ms: u64,
    /// Nodes joining and leaving gracefully per run: up to this many each.
    pub joins_max: u64,
    pub leaves_max: u64,
    /// Every partition must have an accepted commit in this last stretch of
    /// the run.
    pub served_within_ms: u64,
    pub plant: Option<ClusterPlant>,
}

impl Default for ClusterSimConfig {
    fn default() -> Self {
        ClusterSimConfig {
            nodes: 3,
            partitions: 8,
            lease: LeaseConfig {
                ttl_ms: 3_000,
                margin_ms: 500,
                renew_every_ms: 1_000,
                scan_every_ms: 1_000,
                op_timeout_ms: 1_000,
            },
            tick_ms: 100,
            commit_every_ms: 100,
            delay_max_ms: 40,
            drop_rate: 0.05,
            snapshot_max_ms: 30,
            fault_window_ms: 20_000,
            drain_ms: 25_000,
            pauses_max: 3,
            pause_max_ms: 7_000,
            pause_before_append_rate: 0.002,
            crashes_max: 2,
            restart_after_max_ms: 4_000,
            joins_max: 1,
            leaves_max: 1,
            served_within_ms: 3_000,
            plant: None,
        }
    }
}

/// Counters of one run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClusterStats {
    pub events: u64,
    pub appends_accepted: u64,
    pub appends_refused: u64,
    /// Lease acquisitions (each one a new epoch).
    pub acquisitions: u64,
    /// Partitions handed over gracefully (snapshot written, then released).
    pub handovers: u64,
    /// Partitions a node stopped serving without a handover (lease lost or
    /// expired, append refused after expiry).
    pub lease_losses: u64,
    pub kv_messages_dropped: u64,
    pub pauses: u64,
    pub zombie_pauses: u64,
    pub crashes: u64,
    pub joins: u64,
    pub leaves: u64,
    /// The longest any partition went without an accepted commit (start
    /// and faults included): how long takeovers took at worst.
    pub unserved_ms_max: u64,
}

/// The outcome of one seed.
#[derive(Debug, Clone)]
pub struct ClusterReport {
    pub seed: u64,
    pub trace_hash: u64,
    pub stats: ClusterStats,
    /// Empty when the checker found nothing wrong.
    pub violations: Vec<String>,
    /// Each node's state and the bucket's leases at the end, for reading a
    /// failing seed.
    pub end_state: Vec<String>,
}

impl ClusterReport {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

impl std::fmt::Display for ClusterReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.stats;
        write!(
            f,
            "cluster dst seed={} trace={:016x} events={} appends_accepted={} appends_refused={} acquisitions={} handovers={} lease_losses={} kv_dropped={} pauses={} zombie_pauses={} crashes={} joins={} leaves={} unserved_ms_max={} violations={}",
            self.seed,
            self.trace_hash,
            s.events,
            s.appends_accepted,
            s.appends_refused,
            s.acquisitions,
            s.handovers,
            s.lease_losses,
            s.kv_messages_dropped,
            s.pauses,
            s.zombie_pauses,
            s.crashes,
            s.joins,
            s.leaves,
            s.unserved_ms_max,
            self.violations.len()
        )
    }
}
