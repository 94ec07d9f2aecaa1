//! Cluster mode's replicated journal on a real nats-server: one record per
//! partition per group-commit batch, an append of a deposed owner refused
//! by the server (`Nats-Expected-Last-Subject-Sequence`) and reported, and
//! `orchestrator verify --journal-from` checking the chain, with a planted
//! append made without the expected-sequence check as negative control.

use std::sync::Arc;

use orchestrator::cluster::{chain_hash, Epoch, JournalOp, JournalRecord, RecordKind};
use orchestrator::storage::{
    keys, CommitConfig, Error, GroupCommitter, MemoryStorage, Op, ReplicatedStorage, Storage,
};
use orchestrator::transport::nats::{
    check_journal, journal_subject, read_partition, JetStreamJournal,
};

use crate::cli::bin;
use crate::support::nats::NatsServer;

fn put(partition: u16, id: &str, seq: u64) -> Op {
    Op::Put(
        keys::journal(partition, id, seq).unwrap(),
        format!("{id}-{seq}").into_bytes(),
    )
}

async fn jetstream(nats: &NatsServer) -> async_nats::jetstream::Context {
    let client = async_nats::connect(nats.url()).await.unwrap();
    async_nats::jetstream::new(client)
}

fn committer(storage: Arc<dyn Storage>) -> Arc<GroupCommitter> {
    Arc::new(
        GroupCommitter::start(
            storage,
            CommitConfig {
                inline_when_idle: false,
                ..CommitConfig::default()
            },
        )
        .unwrap(),
    )
}

/// `orchestrator verify --journal-from`: its exit status and output.
fn verify(nats: &NatsServer, prefix: &str) -> (i32, String) {
    let out = bin()
        .args([
            "verify",
            "--journal-from",
            &nats.url(),
            "--journal-prefix",
            prefix,
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_commit_batch_is_one_message_and_the_chain_verifies_on_read() {
    let nats = NatsServer::start();
    let js = jetstream(&nats).await;
    let (journal, _deposed) = JetStreamJournal::open(js.clone(), "cj", "n1".into(), 1)
        .await
        .unwrap();
    let journal = Arc::new(journal);
    journal.start_serving(0, Epoch(7)).await.unwrap();
    let mem = MemoryStorage::new();
    let storage = Arc::new(ReplicatedStorage::new(
        Arc::new(mem.clone()),
        journal.clone(),
    ));
    let gc = committer(storage);
    let mut tasks = Vec::new();
    for i in 0..300u64 {
        let c = gc.clone();
        tasks.push(tokio::spawn(async move {
            c.commit(vec![put(0, &format!("w{}", i % 30), i)]).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let batches = gc.stats().batches;
    let records = read_partition(&js, "cj", 0).await.unwrap();
    // The open record, then one message per batch: never one per request.
    assert_eq!(journal.appends(), batches);
    assert_eq!(records.len() as u64, batches + 1);
    assert!(batches < 300, "requests were batched: {batches} batches");
    assert!(mem
        .get(&keys::journal(0, "w3", 3).unwrap())
        .unwrap()
        .is_some());
    let report = check_journal(&js, "cj").await.unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!((report.partitions, report.terms), (1, 1));
    assert_eq!(report.records, batches + 1);
    let (code, out) = verify(&nats, "cj");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("violations=0"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_owners_append_is_refused_reported_and_a_planted_one_is_caught() {
    let nats = NatsServer::start();
    let js = jetstream(&nats).await;
    let (a, mut a_deposed) = JetStreamJournal::open(js.clone(), "cz", "a".into(), 1)
        .await
        .unwrap();
    let a = Arc::new(a);
    a.start_serving(0, Epoch(3)).await.unwrap();
    a.start_serving(1, Epoch(3)).await.unwrap();
    let mem = MemoryStorage::new();
    let a_storage = ReplicatedStorage::new(Arc::new(mem.clone()), a.clone());
    // Commits run on a blocking thread, as on the committer's.
    let write = |ops: Vec<Op>| {
        let s = &a_storage;
        tokio::task::block_in_place(|| s.write(&ops, true))
    };
    write(vec![put(0, "x", 1)]).unwrap();

    // b takes partition 0 over at a later epoch: reads the tail, appends
    // its open record after it.
    let (b, _) = JetStreamJournal::open(js.clone(), "cz", "b".into(), 1)
        .await
        .unwrap();
    b.start_serving(0, Epoch(8)).await.unwrap();

    // a's next append of partition 0 names the old tail: the server
    // refuses it, a reports itself deposed and stops serving partition 0;
    // partition 1 is unaffected.
    let err = write(vec![put(0, "x", 2)]).unwrap_err();
    assert!(
        matches!(&err, Error::NotReplicated { partition: 0, reason } if reason.contains("deposed")),
        "{err:?}"
    );
    assert_eq!(a_deposed.try_recv().unwrap(), (0, Epoch(3)));
    assert_eq!(a.serving(0), None);
    assert_eq!(a.serving(1), Some(Epoch(3)));
    assert!(mem
        .get(&keys::journal(0, "x", 2).unwrap())
        .unwrap()
        .is_none());
    let again = write(vec![put(0, "x", 3)]).unwrap_err();
    assert!(
        matches!(&again, Error::NotReplicated { reason, .. } if reason.contains("does not serve")),
        "{again:?}"
    );
    write(vec![put(1, "y", 1)]).unwrap();
    let report = check_journal(&js, "cz").await.unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(read_partition(&js, "cz", 0).await.unwrap().len(), 3);
    let (code, out) = verify(&nats, "cz");
    assert_eq!(code, 0, "{out}");

    // Negative control: the deposed owner appends WITHOUT the expected
    // sequence header (what the fencing forbids). The server takes it; the
    // checker must find the fork.
    let records = read_partition(&js, "cz", 0).await.unwrap();
    let (seq, wire) = &records[1];
    let zombie = JournalRecord {
        partition: 0,
        epoch: Epoch(3),
        node: "a".into(),
        kind: RecordKind::Commit,
        follows: *seq,
        prev_hash: chain_hash(wire),
        ops: vec![JournalOp::Put {
            key: b"late".to_vec(),
            value: b"1".to_vec(),
        }],
    };
    js.publish(journal_subject("cz", 0), zombie.encode().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let report = check_journal(&js, "cz").await.unwrap();
    assert!(
        report.violations.iter().any(|v| v.contains("fork")),
        "{:?}",
        report.violations
    );
    let (code, out) = verify(&nats, "cz");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("fork"), "{out}");
}
