//! A `run` node's place on its NATS prefix: the prefix claim that keeps a
//! second orchestrator off the prefix and, in cluster mode
//! (`[cluster] enabled`), the replicated journal the node's storage appends
//! to and the partition leases that let it append (`docs/cluster.md`).
//!
//! A cluster's nodes share the prefix: each claims its own key (a single
//! node and a cluster exclude each other) and takes its fair share of the
//! partition leases; its journal appends are fenced by the leases' epochs.
//! The engine serves the partitions whose journal terms are open: the
//! lease shell starts and stops them in it through [`EngineHost`] as
//! leases change hands (a lease that lapses stops its partition; held
//! again, the partition recovers from the store the term's replay caught
//! up), and [`Membership::served`] tells the admin service and the result
//! intake which partitions this node serves.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::run_host::EngineHost;
use crate::cluster::{Epoch, Ownership};
use crate::config::Config;
use crate::engine::{Engine, EngineCtx};
use crate::transport::nats::{
    check_cluster_partitions, claim_prefix, cluster_attempt_key, load_or_create_node_id,
    run_ownership, run_snapshots, JetStreamJournal, LeaseBucket, PrefixClaim,
};

/// The replicated journal of a cluster-mode node, opened before its
/// storage so that the storage can append to it.
pub(super) struct Journal {
    node_id: String,
    pub(super) journal: Arc<JetStreamJournal>,
    deposed: mpsc::UnboundedReceiver<(u16, Epoch)>,
}

/// Opens the journal stream (`<PREFIX>_JOURNAL`, `cluster.journal_replicas`
/// replicas) for this node: `cluster.node_id`, or the data directory's id.
pub(super) async fn open_journal(
    config: &Config,
    js: &jetstream::Context,
) -> Result<Journal, String> {
    let dir = &config.node.data_dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", dir.display()))?;
    let node_id = match config.cluster.node_id.trim() {
        "" => load_or_create_node_id(dir)?,
        id => id.to_owned(),
    };
    let (journal, deposed) = JetStreamJournal::open(
        js.clone(),
        &config.nats.prefix,
        node_id.clone(),
        config.cluster.journal_replicas,
    )
    .await?;
    Ok(Journal {
        node_id,
        journal: Arc::new(journal),
        deposed,
    })
}

/// The attempt-token key every node of the cluster signs and checks
/// with: the one the first node stored, else this node's own (stored now).
/// The data directory exists: [`open_journal`] made it.
pub(super) async fn shared_attempt_key(
    config: &Config,
    js: &jetstream::Context,
) -> Result<crate::transport::attempt_key::AttemptKey, String> {
    let local = crate::transport::attempt_key::load_or_create_bytes(&config.node.data_dir)?;
    cluster_attempt_key(
        js,
        &config.nats.prefix,
        config.cluster.journal_replicas,
        &local,
    )
    .await
}

/// The driver of the partition leases.
struct Leases {
    leave: watch::Sender<bool>,
    driver: JoinHandle<()>,
    watcher: JoinHandle<()>,
    /// Writes the served partitions' snapshots and trims the journal.
    snapshots: JoinHandle<()>,
    /// The partitions served, for the capacity share.
    serving: watch::Receiver<Vec<(u16, Epoch)>>,
    /// The cluster's partition count.
    partitions: u16,
    /// The engine, as the lease shell starts and stops its partitions.
    host: Arc<EngineHost>,
}

/// The prefix claim and, in cluster mode, the partition leases.
pub(super) struct Membership {
    claim: Arc<PrefixClaim>,
    claim_lost: JoinHandle<String>,
    leases: Option<Leases>,
}

impl Membership {
    /// Claims the prefix. In cluster mode (`journal` given) first checks
    /// the partition count against the cluster's, and after the claim
    /// takes its share of the partition leases, returning once it serves
    /// one (or after two lease TTLs: a cluster with more nodes than
    /// partitions leaves some without any).
    pub(super) async fn join(
        config: &Config,
        js: &jetstream::Context,
        journal: Option<Journal>,
        partitions: u16,
    ) -> Result<Membership, String> {
        let prefix = &config.nats.prefix;
        if journal.is_some() {
            check_cluster_partitions(js, prefix, partitions, config.cluster.journal_replicas)
                .await?;
        }
        let claim = Arc::new(
            claim_prefix(
                js,
                prefix,
                &config.node.data_dir,
                config.cluster.claim_ttl.as_duration(),
                journal.as_ref().map(|j| j.node_id.as_str()),
                if journal.is_some() {
                    config.cluster.journal_replicas
                } else {
                    1
                },
            )
            .await?,
        );
        let keeper = claim.clone();
        let claim_lost = tokio::spawn(async move { keeper.keep().await });
        let mut membership = Membership {
            claim,
            claim_lost,
            leases: None,
        };
        if let Some(journal) = journal {
            match take_leases(config, js, journal, partitions).await {
                Ok(leases) => membership.leases = Some(leases),
                Err(e) => {
                    membership.leave(false).await;
                    return Err(e);
                }
            }
        }
        Ok(membership)
    }

    /// Starts the engine: in cluster mode serving the partitions whose
    /// journal terms are open (every partition, with one node), and
    /// connected to the lease shell; else serving every partition.
    pub(super) async fn start_engine(&self, ctx: EngineCtx) -> Result<Arc<Engine>, String> {
        match &self.leases {
            Some(leases) => leases.host.start_engine(ctx).await,
            None => Ok(Arc::new(
                Engine::start(ctx).await.map_err(|e| e.to_string())?,
            )),
        }
    }

    /// In cluster mode: the partitions the engine serves, as they change.
    pub(super) fn served(&self) -> Option<watch::Receiver<std::collections::BTreeSet<u16>>> {
        self.leases.as_ref().map(|l| l.host.served())
    }

    /// In cluster mode: how the admin service reaches the partitions this
    /// node does not serve.
    pub(super) fn routing(
        &self,
        store: &crate::storage::store::WorkflowStore,
        config: &Config,
    ) -> Option<crate::admin::Routing> {
        let store = store.clone();
        self.served().map(|served| crate::admin::Routing {
            served,
            partition_of: Arc::new(move |id: &str| store.partition_of(id)),
            forward_timeout: config.cluster.forward_timeout.as_duration(),
        })
    }

    /// In cluster mode: makes the engine's admission gate apply this
    /// node's partition share of the configured caps and rates
    /// (`capacity::share`, docs/capacity.md "Scope"), now and whenever the
    /// partitions it serves change. Ends with the engine or the leases.
    pub(super) fn follow_capacity_share(
        &self,
        engine: std::sync::Weak<crate::engine::Engine>,
    ) -> Option<JoinHandle<()>> {
        let leases = self.leases.as_ref()?;
        let mut serving = leases.serving.clone();
        let total = leases.partitions;
        Some(tokio::spawn(async move {
            loop {
                let owned = serving.borrow_and_update().len();
                let owned = u16::try_from(owned).unwrap_or(total);
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                let ctx = engine.ctx();
                let ready = ctx.capacity.set_share(owned, total, ctx.clock.now_ms());
                crate::engine::recovery::send_admitted(ctx, ready);
                drop(engine);
                if serving.changed().await.is_err() {
                    return;
                }
            }
        }))
    }

    /// Resolves when the prefix claim is lost to another node (this one was
    /// unreachable longer than the claim's TTL), with the reason.
    pub(super) async fn lost(&mut self) -> String {
        (&mut self.claim_lost)
            .await
            .unwrap_or_else(|e| format!("the prefix claim's task failed: {e}"))
    }

    /// Once the engine has stopped: hands the partition leases back (so a
    /// restart takes them at once) and releases the claim, unless it was
    /// lost to another node.
    pub(super) async fn leave(self, claim_lost: bool) {
        self.claim_lost.abort();
        if let Some(leases) = self.leases {
            let _ = leases.leave.send(true);
            leases.snapshots.abort();
            if tokio::time::timeout(Duration::from_secs(3), leases.driver)
                .await
                .is_err()
            {
                tracing::warn!("partition leases not handed back in 3 s; they lapse by themselves");
            }
            leases.watcher.abort();
        }
        if !claim_lost {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.claim.release()).await;
        }
    }
}

async fn take_leases(
    config: &Config,
    js: &jetstream::Context,
    journal: Journal,
    partitions: u16,
) -> Result<Leases, String> {
    let lease = config.lease_config();
    lease.validate()?;
    let bucket = LeaseBucket::open(
        js,
        &config.nats.prefix,
        Duration::from_millis(lease.ttl_ms),
        config.cluster.journal_replicas,
    )
    .await?;
    // A term number unique to this run's holdings.
    let term_base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let bound = Duration::from_millis(lease.ttl_ms * 2);
    let scan_every_ms = lease.scan_every_ms;
    let core = Ownership::new(lease, journal.node_id.clone(), partitions, term_base);
    let (leave, leave_rx) = watch::channel(false);
    let (serving_tx, mut serving) = watch::channel(Vec::new());
    let host = Arc::new(EngineHost::default());
    let driver = tokio::spawn(run_ownership(
        core,
        bucket,
        journal.journal.clone(),
        host.clone(),
        journal.deposed,
        leave_rx,
        Duration::from_millis(100),
        serving_tx,
    ));
    let all = usize::from(partitions);
    // The node's share grows as the others hand partitions over; it starts
    // serving with what it holds, and the lease shell adds the rest.
    let began = tokio::time::Instant::now();
    let _ = tokio::time::timeout(bound, serving.wait_for(|s| !s.is_empty())).await;
    // Then until the count stops growing for a scan interval: the leases
    // free for this node are taken in the same scan or the next.
    let settle = Duration::from_millis(scan_every_ms.max(100) * 2);
    while began.elapsed() < bound {
        if tokio::time::timeout(settle, serving.changed())
            .await
            .is_err()
        {
            break;
        }
    }
    if driver.is_finished() {
        return Err(format!(
            "cluster mode: node {}: the partition lease driver stopped",
            journal.node_id
        ));
    }
    let held = serving.borrow().len();
    eprintln!(
        "cluster mode: node {} serves {held} of {partitions} partitions, journal stream {} with {} replica(s), {} partition snapshot(s) loaded, {} journal record(s) replayed into the local store",
        journal.node_id,
        crate::transport::nats::journal_stream(&config.nats.prefix),
        config.cluster.journal_replicas,
        journal.journal.snapshots_loaded(),
        journal.journal.replayed()
    );
    let watcher = tokio::spawn(report_serving(serving.clone(), all));
    let snapshots = tokio::spawn(run_snapshots(
        journal.journal.clone(),
        config.snapshot_policy(),
        leave.subscribe(),
    ));
    Ok(Leases {
        leave,
        driver,
        watcher,
        snapshots,
        serving,
        partitions,
        host,
    })
}

/// Logs each change of the partitions served (a handover, a takeover, or
/// a lease that lapsed while NATS was unreachable: that partition takes no
/// commits here until its lease is held again under a new epoch).
async fn report_serving(mut serving: watch::Receiver<Vec<(u16, Epoch)>>, all: usize) {
    while serving.changed().await.is_ok() {
        let held: Vec<u16> = serving
            .borrow_and_update()
            .iter()
            .map(|(p, _)| *p)
            .collect();
        tracing::info!(
            held = held.len(),
            partitions = all,
            serving = ?held,
            "cluster mode: partitions served changed"
        );
    }
}
