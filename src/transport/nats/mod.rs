//! NATS transport: tasks and results on JetStream, heartbeats and cancel on
//! core NATS (see `docs/protocol.md`).
//!
//! * Tasks go to the `<prefix>_TASKS` work-queue stream on
//!   `<prefix>.tasks.<task_type>`, with `Nats-Msg-Id = task_id` so a re-send
//!   of the same attempt inside the duplicate window is dropped by the server.
//! * Results come back on `<prefix>.results.<partition>` into the
//!   `<prefix>_RESULTS` stream; the orchestrator's durable consumer acks a
//!   result only after the engine made its transition durable.
//! * NATS is a transport, not storage: a publish that fails is retried a few
//!   times and then dropped; the attempt's timeout heals it.

mod claim;
mod cluster_key;
mod connect;
mod guard;
mod handover;
mod intake;
mod journal;
mod journal_check;
mod journal_snapshot;
mod lease;
mod offer;
mod partition_intake;
mod publisher;
mod stats;
mod streams;
mod watch;

use std::time::Duration;

use crate::protocol::Limits;
use crate::transport::attempt_key::AttemptKey;

pub use crate::transport::results::{ResultError, ResultHandler};
pub use claim::{claim_prefix, cluster_bucket, load_or_create_node_id, PrefixClaim, NODE_ID_FILE};
pub use cluster_key::cluster_attempt_key;
pub use connect::{connect, connect_tuned, connect_with_stats, redact_url, NatsSecurity, Secret};
pub use guard::{PartitionOf, Refused, ReportGuard};
pub use handover::PartitionHost;
pub use intake::{consumer_gone, run_intake};
pub use journal::{
    ensure_journal_stream, journal_stream, journal_subject, read_partition, JetStreamJournal,
};
pub use journal_check::{check_journal, JournalReport};
pub use journal_snapshot::{
    ensure_snapshot_bucket, read_snapshot, run_snapshots, snapshot_bucket, SnapshotWritten,
};
pub use lease::{
    check_cluster_partitions, cluster_meta_bucket, lease_bucket, run_ownership, LeaseBucket,
};
pub use partition_intake::{partition_consumer_config, partition_consumer_name};
pub use publisher::{Drained, NatsTransport};
pub use stats::{NatsStats, OfferDeclined};
pub use streams::{ensure_streams, stream_configs, stream_name};
pub use watch::{watch_streams, Watched};

/// Connection and stream settings; every limit has a default.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// One URL or several, comma-separated; may carry `user:pass@` or `token@`.
    pub url: String,
    pub prefix: String,
    /// Credentials and TLS of the connection.
    pub security: NatsSecurity,
    /// The first connection gives up after this long (later outages are
    /// ridden out with reconnects).
    pub connect_timeout: Duration,
    /// The connection's name, shown by the server's monitoring.
    pub client_name: String,
    /// Signs each task's `attempt_token` and checks the echo in results and
    /// heartbeats. `run` loads the data directory's key; the default is a
    /// fresh random key, good for one process.
    pub attempt_key: AttemptKey,
    /// Tasks and results older than this are dropped by the server.
    pub stream_max_age: Duration,
    /// Replicas of the task and result streams (a cluster node: the
    /// cluster's `journal_replicas`, so they outlive a lost server).
    pub stream_replicas: usize,
    /// Window in which a re-published task id is dropped as a duplicate.
    pub duplicate_window: Duration,
    /// How long a delivered result may stay unacknowledged before redelivery.
    pub results_ack_wait: Duration,
    /// Results delivered and not yet acknowledged, at most.
    pub results_max_ack_pending: i64,
    /// Offer workers `result_direct_to`: results by core NATS request,
    /// answered after the journal append (docs/protocol.md).
    pub results_direct: bool,
    /// Direct results being applied at once; more wait in the subscription
    /// (and a worker whose request times out sends again).
    pub results_direct_in_flight_max: usize,
    /// Offer each task (whose step has a heartbeat timeout) to an idle
    /// worker by core NATS request before using the TASKS stream.
    pub tasks_direct: bool,
    /// Wait for a worker's answer to a task offer, at most.
    pub tasks_direct_timeout: Duration,
    /// A worker that has the result within this long of an offer may
    /// answer the offer with it (two NATS messages per task instead of
    /// four); zero: workers answer `taken` and send results on their own.
    /// Below `tasks_direct_timeout`, so the answer is not taken for a
    /// timeout and the task sent again.
    pub tasks_direct_result_within: Duration,
    /// How long to keep trying to apply a result that answered its offer
    /// when the journal fails (the result exists nowhere else); after that
    /// the task is published to the TASKS stream and runs again.
    pub tasks_direct_result_apply_for: Duration,
    /// Offers waiting for their answer at once (each is its own task, so a
    /// worker that holds an offer while it runs does not hold up other
    /// sends); beyond it, an offer waits in the publish window for a
    /// permit, so every offer out holds one and a graceful stop's drain
    /// waits for all of them.
    pub tasks_direct_in_flight_max: usize,
    /// Tasks and cancels waiting to be published, at most (beyond: dropped, healed by timeouts).
    pub publish_queue_max: usize,
    /// Task publishes with their acknowledgements in flight at once. An
    /// offer past `tasks_direct_in_flight_max` also takes a place here while
    /// it waits for a permit and then runs, so with every permit out, stream
    /// publishes and cancels queue behind such offers (an overload state:
    /// each offer ends within `tasks_direct_timeout`).
    pub publish_window: usize,
    /// Publish attempts of one task before it is left to its timeout; with the
    /// backoff capped at 2 s, 40 attempts ride out about a minute of outage.
    pub publish_attempts: u32,
    /// How often `run` checks that the streams and its results consumer
    /// exist with their configured settings (and puts back what is not).
    pub stream_watch_interval: Duration,
    pub limits: Limits,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            prefix: "narralytica".into(),
            security: NatsSecurity::default(),
            connect_timeout: Duration::from_secs(30),
            stream_replicas: 1,
            client_name: "narralytica-orchestrator".into(),
            attempt_key: AttemptKey::random(),
            stream_max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
            results_ack_wait: Duration::from_secs(5),
            results_max_ack_pending: 10_000,
            results_direct: true,
            results_direct_in_flight_max: 10_000,
            tasks_direct: true,
            tasks_direct_timeout: Duration::from_millis(500),
            tasks_direct_result_within: Duration::from_millis(50),
            tasks_direct_result_apply_for: Duration::from_secs(60),
            tasks_direct_in_flight_max: 4096,
            publish_queue_max: 100_000,
            publish_attempts: 40,
            publish_window: 256,
            stream_watch_interval: Duration::from_secs(2),
            limits: Limits::default(),
        }
    }
}
