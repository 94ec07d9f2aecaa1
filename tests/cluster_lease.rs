//! The NATS shell of the ownership core on a real nats-server: nodes split
//! the partitions by leases in a JetStream KV bucket, hand them over when
//! one leaves, take a dead node's leases after the TTL, and a node whose
//! lease was taken is fenced out of the journal; each node's engine (here
//! a recording stand-in) is told to start and stop the partitions it
//! gains and hands over, and a partition handed over gracefully has its
//! snapshot written first. Plus what is fixed at cluster creation: the
//! partition count and the shared attempt key.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator::cluster::{Epoch, LeaseConfig, Ownership};
use orchestrator::storage::{keys, Error, MemoryStorage, Op, ReplicatedStorage, Storage};
use orchestrator::transport::attempt_key::AttemptKey;
use orchestrator::transport::nats::{
    check_cluster_partitions, check_journal, cluster_attempt_key, read_snapshot, run_ownership,
    snapshot_bucket, JetStreamJournal, LeaseBucket, PartitionHost,
};
use tokio::sync::watch;

use crate::support::nats::NatsServer;

const PARTITIONS: u16 = 8;

fn lease() -> LeaseConfig {
    LeaseConfig {
        ttl_ms: 3_000,
        margin_ms: 500,
        renew_every_ms: 700,
        scan_every_ms: 500,
        op_timeout_ms: 1_000,
    }
}

/// A node's engine as the lease shell drives it: the partitions it was
/// told to serve, and every start and stop in order.
#[derive(Default)]
struct Host {
    served: parking_lot::Mutex<BTreeSet<u16>>,
    calls: parking_lot::Mutex<Vec<(&'static str, u16)>>,
}

impl PartitionHost for Host {
    fn start(&self, p: u16) -> futures_util::future::BoxFuture<'_, Result<(), String>> {
        self.calls.lock().push(("start", p));
        self.served.lock().insert(p);
        Box::pin(async { Ok(()) })
    }

    fn stop(&self, p: u16) -> futures_util::future::BoxFuture<'_, ()> {
        self.calls.lock().push(("stop", p));
        self.served.lock().remove(&p);
        Box::pin(async {})
    }
}

/// One node: its journal, the partitions it serves, and its driver.
struct Node {
    host: Arc<Host>,
    journal: Arc<JetStreamJournal>,
    serving: watch::Receiver<Vec<(u16, Epoch)>>,
    leave: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn node(js: &async_nats::jetstream::Context, prefix: &str, id: &str) -> Node {
    let (journal, deposed) = JetStreamJournal::open(js.clone(), prefix, id.into(), 1)
        .await
        .unwrap();
    let journal = Arc::new(journal);
    let bucket = LeaseBucket::open(js, prefix, Duration::from_millis(lease().ttl_ms), 1)
        .await
        .unwrap();
    let term_base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let core = Ownership::new(lease(), id.into(), PARTITIONS, term_base);
    let (leave, leave_rx) = watch::channel(false);
    let (serving_tx, serving) = watch::channel(Vec::new());
    let host = Arc::new(Host::default());
    let task = tokio::spawn(run_ownership(
        core,
        bucket,
        journal.clone(),
        host.clone(),
        deposed,
        leave_rx,
        Duration::from_millis(100),
        serving_tx,
    ));
    Node {
        host,
        journal,
        serving,
        leave,
        task,
    }
}

fn partitions(n: &Node) -> BTreeSet<u16> {
    n.serving.borrow().iter().map(|(p, _)| *p).collect()
}

/// The partitions the node's engine was told to serve.
fn engine_serves(n: &Node) -> BTreeSet<u16> {
    n.host.served.lock().clone()
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "not reached in 30 s: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_partitions_by_lease_hand_over_and_fence_a_dead_owner() {
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let a = node(&js, "cl", "a").await;
    let b = node(&js, "cl", "b").await;
    // Fair shares, disjoint: 4 and 4.
    until("a and b serve 4 partitions each", || {
        let (pa, pb) = (partitions(&a), partitions(&b));
        pa.len() == 4 && pb.len() == 4 && pa.is_disjoint(&pb)
    })
    .await;

    until("each engine serves its node's partitions", || {
        engine_serves(&a) == partitions(&a) && engine_serves(&b) == partitions(&b)
    })
    .await;

    // A third node joins, then leaves gracefully: its partitions come back.
    // Each partition handed over was stopped in its giver's engine (intake
    // first) before its taker's engine started it.
    let c = node(&js, "cl", "c").await;
    until("c gets its share", || partitions(&c).len() >= 2).await;
    until("c's engine serves them", || {
        engine_serves(&c) == partitions(&c)
    })
    .await;
    let given: BTreeSet<u16> = partitions(&c);
    for p in &given {
        let stopped_before = |n: &Node| n.host.calls.lock().contains(&("stop", *p));
        assert!(
            stopped_before(&a) || stopped_before(&b),
            "partition {p} was not stopped in its giver's engine"
        );
        assert!(!engine_serves(&a).contains(p) && !engine_serves(&b).contains(p));
    }
    // c journals a record in one of its partitions; its graceful leave
    // writes that partition's snapshot before handing it over.
    let handed = *given.iter().next().unwrap();
    let c_store = ReplicatedStorage::new(Arc::new(MemoryStorage::new()), c.journal.clone());
    let key = keys::journal(handed, "handed-over", 1).unwrap();
    let op = Op::Put(key.clone(), b"before the handover".to_vec());
    tokio::task::block_in_place(|| c_store.write(&[op], true)).unwrap();
    c.leave.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), c.task)
        .await
        .expect("c leaves")
        .unwrap();
    let c_serves = c.host.served.lock().clone();
    assert!(c_serves.is_empty(), "c's engine still serves {c_serves:?}");
    let snapshots = js.get_object_store(snapshot_bucket("cl")).await.unwrap();
    let snapshot = read_snapshot(&snapshots, handed)
        .await
        .unwrap()
        .expect("the handover wrote the partition's snapshot");
    assert!(snapshot.position.seq > 0);
    assert!(
        snapshot
            .entries
            .iter()
            .any(|(k, v)| *k == key && v == b"before the handover"),
        "the snapshot holds the record journaled before the handover"
    );
    until("a and b serve everything again", || {
        let (pa, pb) = (partitions(&a), partitions(&b));
        pa.len() + pb.len() == usize::from(PARTITIONS)
            && pa.is_disjoint(&pb)
            && engine_serves(&a) == pa
            && engine_serves(&b) == pb
    })
    .await;

    // b dies without a goodbye (its driver stops; its journal object, the
    // zombie, lives on). After the TTL, a takes every partition.
    let b_partition = *partitions(&b).iter().next().unwrap();
    let b_epoch = b.journal.serving(b_partition).unwrap();
    b.task.abort();
    until("a serves all partitions, in its engine too", || {
        partitions(&a).len() == usize::from(PARTITIONS)
            && engine_serves(&a).len() == usize::from(PARTITIONS)
    })
    .await;
    let a_epoch = a.journal.serving(b_partition).unwrap();
    assert!(a_epoch > b_epoch, "epochs grow: {b_epoch} then {a_epoch}");

    // The zombie's next append is refused by the server.
    let zombie = ReplicatedStorage::new(Arc::new(MemoryStorage::new()), b.journal.clone());
    let op = Op::Put(keys::journal(b_partition, "z", 1).unwrap(), b"1".to_vec());
    let err = tokio::task::block_in_place(|| zombie.write(&[op], true)).unwrap_err();
    assert!(
        matches!(&err, Error::NotReplicated { reason, .. } if reason.contains("deposed")),
        "{err:?}"
    );
    // Each partition's journal is one chain in which epochs only grow.
    let report = check_journal(&js, "cl").await.unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.partitions, usize::from(PARTITIONS));
    assert!(report.terms > u64::from(PARTITIONS), "{report}");
    a.leave.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), a.task)
        .await
        .expect("a leaves")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_partition_count_than_the_cluster_is_refused() {
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    check_cluster_partitions(&js, "cp", 8, 1).await.unwrap();
    check_cluster_partitions(&js, "cp", 8, 1).await.unwrap();
    let err = check_cluster_partitions(&js, "cp", 16, 1)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        "this node is configured with 16 partitions but the cluster was created with 8; \
         the partition count is fixed when a cluster is created"
    );
    // Another prefix is another cluster.
    check_cluster_partitions(&js, "other", 16, 1).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_of_a_cluster_share_the_first_nodes_attempt_key() {
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let (first, second) = ([1u8; 32], [2u8; 32]);
    let a = cluster_attempt_key(&js, "ak", 1, &first).await.unwrap();
    let b = cluster_attempt_key(&js, "ak", 1, &second).await.unwrap();
    // A token the first node minted verifies on the second: the key is
    // the first node's, not the second's own.
    let token = a.token("wf:transcribe:0:1");
    assert!(b.verify("wf:transcribe:0:1", &token));
    assert_eq!(
        token,
        AttemptKey::from_bytes(&first).token("wf:transcribe:0:1")
    );
    assert_ne!(
        token,
        AttemptKey::from_bytes(&second).token("wf:transcribe:0:1")
    );
    // Another prefix is another cluster, with its own key.
    let other = cluster_attempt_key(&js, "other", 1, &second).await.unwrap();
    assert!(!other.verify("wf:transcribe:0:1", &token));
    // A damaged stored key is refused with the bucket named, and the
    // error shows none of the key's bytes.
    let meta = js.get_key_value("AK_CLUSTER_META").await.unwrap();
    meta.put("attempt_key", vec![7u8; 5].into()).await.unwrap();
    let err = cluster_attempt_key(&js, "ak", 1, &second)
        .await
        .unwrap_err();
    assert!(
        err.contains("AK_CLUSTER_META") && err.contains("holds 5 bytes, not 32"),
        "{err}"
    );
}
