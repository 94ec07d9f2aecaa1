//! Cluster mode of `orchestrator run` (`[cluster] enabled`) with real
//! processes on a real nats-server: one node takes every partition's lease,
//! appends each commit batch to the replicated journal before its effects
//! run, completes workflows for `worker --simulate`, and its journal checks
//! clean with `verify --journal-from`. A second cluster node joins and
//! takes a share of the partitions; a single-node run on the cluster's
//! prefix is refused, and so is a node with another partition count than
//! the cluster's.

use std::path::Path;
use std::process::{Output, Stdio};

use serde_json::Value;

use crate::cli::bin;
use crate::cluster::Run;
use crate::support::nats::NatsServer;

const PREFIX: &str = "clu";

fn cluster_conf(path: &Path, partitions: u16) {
    std::fs::write(
        path,
        format!(
            "[engine]\npartitions = {partitions}\n\n[cluster]\nenabled = true\n\
             journal_replicas = 1\nlease_ttl = \"3s\"\nclaim_ttl = \"3s\"\n"
        ),
    )
    .unwrap();
}

/// `verify --journal-from`: exit status and output.
fn verify_journal(nats: &NatsServer) -> (i32, String) {
    let out = bin()
        .args(["verify", "--journal-from", &nats.url()])
        .args(["--journal-prefix", PREFIX])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The number after `name=` in a `verify --journal-from` line.
fn field(text: &str, name: &str) -> u64 {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {text}"))
}

/// A closed loop of `n` video workflows against the node, run by the
/// simulated worker process.
fn loadgen(nats: &NatsServer, report: &Path, n: u64) -> (Output, Value) {
    let out = bin()
        .args(["loadgen", "--nats-url", &nats.url(), "--prefix", PREFIX])
        .args(["--workflows", &n.to_string(), "--concurrency", "16"])
        .args(["--drain", "30s", "--ready-timeout", "30s", "--report"])
        .arg(report)
        .output()
        .unwrap();
    let report = crate::support::loadgen_report(report, &out);
    (out, report)
}

/// A refused start: not running, a non-zero exit, one `error:` line.
fn refused(run: &mut Run) -> String {
    let mut lines = Vec::new();
    assert!(!run.settle(&mut lines), "must not run: {lines:?}");
    let status = run.child.wait().unwrap();
    assert!(!status.success(), "{status:?}");
    let errors: Vec<&String> = lines.iter().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{lines:?}");
    errors[0].clone()
}

#[test]
fn a_one_node_cluster_completes_workflows_on_a_clean_journal_and_refuses_a_second_node() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (conf4, conf8, single) = (
        dir.path().join("four.toml"),
        dir.path().join("eight.toml"),
        dir.path().join("single.toml"),
    );
    cluster_conf(&conf4, 4);
    cluster_conf(&conf8, 8);
    std::fs::write(&single, "[cluster]\nclaim_ttl = \"3s\"\n").unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let mut lines = Vec::new();

    let mut a = Run::start(&nats, PREFIX, &a_dir, &conf4);
    assert!(a.settle(&mut lines), "the cluster node runs: {lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("cluster mode: node") && l.contains("serves 4 of 4 partitions")),
        "{lines:?}"
    );
    let worker = bin()
        .args(["worker", "--simulate", "--nats-url", &nats.url()])
        .args(["--prefix", PREFIX])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let worker = crate::cli::Reaper(worker);
    let (out, report) = loadgen(&nats, &dir.path().join("load.json"), 200);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        (report["completed"].as_u64(), report["errors"].as_u64()),
        (Some(200), Some(0)),
        "{report:#}"
    );
    let (code, text) = verify_journal(&nats);
    assert_eq!(code, 0, "{text}");
    assert_eq!(field(&text, "partitions"), 4, "{text}");
    assert_eq!(field(&text, "violations"), 0, "{text}");
    // Every partition's term opened; then at least one commit record per
    // workflow's partition (200 workflows, 9 tasks each, batched).
    assert!(field(&text, "records") > 4 + 4, "{text}");

    // A second cluster node joins and is handed a share of the
    // partitions; stopped, it hands them back. A single-node run on the
    // cluster's prefix is refused.
    let mut b = Run::start(&nats, PREFIX, &b_dir, &conf4);
    assert!(
        b.settle(&mut lines),
        "a second cluster node joins: {lines:?}"
    );
    b.stop_gracefully();
    let line = refused(&mut Run::start(
        &nats,
        PREFIX,
        &dir.path().join("e"),
        &single,
    ));
    assert!(
        line.contains("another orchestrator serves prefix \"clu\"")
            && line.contains("is a node of a cluster"),
        "{line}"
    );

    // Killed with SIGKILL, the node restarts on its data directory at once:
    // the claim and the leases are its own. Its new terms follow the
    // journal's tail, so the journal still checks clean.
    drop(a);
    let mut a = Run::start(&nats, PREFIX, &a_dir, &conf4);
    assert!(a.settle(&mut lines), "the restart runs: {lines:?}");
    let (code, text) = verify_journal(&nats);
    assert_eq!((code, field(&text, "violations")), (0, 0), "{text}");
    assert!(
        field(&text, "terms") >= 8,
        "two terms per partition: {text}"
    );

    // After a graceful stop (leases handed back, claim released), a node
    // with another partition count is refused by the cluster's count; one
    // with the same count starts at once.
    a.stop_gracefully();
    drop(worker);
    let line = refused(&mut Run::start(
        &nats,
        PREFIX,
        &dir.path().join("d"),
        &conf8,
    ));
    assert!(
        line.contains("configured with 8 partitions but the cluster was created with 4"),
        "{line}"
    );
    let mut b = Run::start(&nats, PREFIX, &dir.path().join("c"), &conf4);
    assert!(b.settle(&mut lines), "a new node takes over: {lines:?}");
    b.stop_gracefully();

    // The node's local store holds the 200 completed workflows, and its
    // journal checks clean.
    let out = crate::cli::run(&["verify"], Some(&a_dir));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    for (name, want) in [("completed", 200), ("violations", 0), ("corrupt", 0)] {
        assert_eq!(field(&text, name), want, "{text}");
    }
}
