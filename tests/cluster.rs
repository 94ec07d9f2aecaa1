//! Cluster ownership: the deterministic simulation of leases, fencing and
//! handover (`src/dst/cluster`), and the prefix claim that refuses a second
//! single-node `run` on one NATS prefix.
//!
//! * `NARRALYTICA_CLUSTER_SEED=S`: run only seed `S` and print its report.
//! * `NARRALYTICA_CLUSTER_SEEDS=N`: seeds per run (default 1000).
//! * `NARRALYTICA_CLUSTER_FIRST=F`: first seed (default 1).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use orchestrator::dst::cluster::{
    run_seed, ClusterPlant, ClusterReport, ClusterSimConfig, ClusterStats,
};

use crate::cli::bin;
use crate::support::nats::NatsServer;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn replay_hint(seed: u64) -> String {
    format!(
        "reproduce: NARRALYTICA_CLUSTER_SEED={seed} cargo test --release --test integration cluster::seeds_ -- --nocapture"
    )
}

fn add(total: &mut ClusterStats, s: &ClusterStats) {
    total.events += s.events;
    total.appends_accepted += s.appends_accepted;
    total.appends_refused += s.appends_refused;
    total.acquisitions += s.acquisitions;
    total.handovers += s.handovers;
    total.lease_losses += s.lease_losses;
    total.kv_messages_dropped += s.kv_messages_dropped;
    total.pauses += s.pauses;
    total.zombie_pauses += s.zombie_pauses;
    total.crashes += s.crashes;
    total.joins += s.joins;
    total.leaves += s.leaves;
    total.unserved_ms_max = total.unserved_ms_max.max(s.unserved_ms_max);
}

#[test]
fn seeds_with_pauses_crashes_and_churn_never_fork_and_serve_every_partition_again() {
    let cfg = ClusterSimConfig::default();
    if let Some(seed) = env_u64("NARRALYTICA_CLUSTER_SEED") {
        let r = run_seed(seed, &cfg);
        println!("{r}");
        for v in &r.violations {
            println!("  violation: {v}");
        }
        for line in &r.end_state {
            println!("  end: {line}");
        }
        assert!(r.ok(), "seed {seed} failed; {}", replay_hint(seed));
        return;
    }
    let n = env_u64("NARRALYTICA_CLUSTER_SEEDS").unwrap_or(1000);
    let first = env_u64("NARRALYTICA_CLUSTER_FIRST").unwrap_or(1);
    let t0 = std::time::Instant::now();
    let mut total = ClusterStats::default();
    let mut failures: Vec<ClusterReport> = Vec::new();
    for seed in first..first + n {
        let r = run_seed(seed, &cfg);
        add(&mut total, &r.stats);
        if !r.ok() {
            eprintln!("FAILED {r}");
            for v in r.violations.iter().take(10) {
                eprintln!("  violation: {v}");
            }
            eprintln!("  {}", replay_hint(seed));
            failures.push(r);
        }
    }
    println!(
        "cluster dst seeds={n} first={first} secs={:.1} {total:?} failing_seeds={}",
        t0.elapsed().as_secs_f64(),
        failures.len()
    );
    let seeds: Vec<u64> = failures.iter().map(|r| r.seed).collect();
    assert!(
        failures.is_empty(),
        "{} failing seeds: {seeds:?}; {}",
        seeds.len(),
        seeds.first().map_or(String::new(), |s| replay_hint(*s))
    );
    // The faults happened and the fencing had work to do.
    assert!(
        total.pauses > 0 && total.zombie_pauses > 0 && total.crashes > 0,
        "{total:?}"
    );
    assert!(total.joins > 0 && total.leaves > 0, "{total:?}");
    assert!(total.handovers > 0 && total.lease_losses > 0, "{total:?}");
    assert!(total.appends_refused > 0, "zombies were refused: {total:?}");
    assert!(total.kv_messages_dropped > 0, "{total:?}");
}

#[test]
fn a_cluster_seed_replays_bit_for_bit_and_seeds_differ() {
    let cfg = ClusterSimConfig::default();
    for seed in [3, 77, 1234] {
        let a = run_seed(seed, &cfg);
        let b = run_seed(seed, &cfg);
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
        assert_eq!(a.stats, b.stats, "seed {seed}");
        assert_eq!(a.violations, b.violations, "seed {seed}");
    }
    let hashes: std::collections::BTreeSet<u64> =
        (1..=20).map(|s| run_seed(s, &cfg).trace_hash).collect();
    assert_eq!(hashes.len(), 20, "20 seeds, 20 different traces");
}

#[test]
fn appends_without_the_expected_sequence_check_are_caught_as_a_fork() {
    let cfg = ClusterSimConfig {
        plant: Some(ClusterPlant::NoExpectedSequence),
        ..ClusterSimConfig::default()
    };
    let caught: Vec<u64> = (1..=300)
        .filter(|s| {
            run_seed(*s, &cfg)
                .violations
                .iter()
                .any(|v| v.contains("fork"))
        })
        .collect();
    assert!(
        !caught.is_empty(),
        "no seed of 300 caught a deposed owner's append accepted without the check"
    );
}

/// An `orchestrator run` process, killed (SIGKILL) on drop.
pub(crate) struct Run {
    pub(crate) child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Run {
    /// `orchestrator run` on `prefix` with its own data directory, the
    /// claim's TTL set by the config file `conf`.
    pub(crate) fn start(nats: &NatsServer, prefix: &str, data_dir: &Path, conf: &Path) -> Run {
        Run::start_env(nats, prefix, data_dir, conf, &[])
    }

    /// [`Run::start`] with extra environment variables.
    pub(crate) fn start_env(
        nats: &NatsServer,
        prefix: &str,
        data_dir: &Path,
        conf: &Path,
        env: &[(&str, &str)],
    ) -> Run {
        let mut child = bin()
            .envs(env.iter().copied())
            .args(["run", "--nats-url", &nats.url(), "--prefix", prefix])
            .arg("--config")
            .arg(conf)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("orchestrator starts");
        let err = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Run { child, stderr: rx }
    }

    /// SIGTERM, then waits (up to 15 s) for a successful exit.
    pub(crate) fn stop_gracefully(&mut self) {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = crate::cli::wait_exit(&mut self.child, Duration::from_secs(15))
            .expect("a graceful stop within 15 s");
        assert!(status.success(), "{status:?}");
    }

    /// Waits up to `within` for the process to exit, collecting its
    /// stderr lines; its exit status, if it exited.
    pub(crate) fn exit(
        &mut self,
        within: Duration,
        lines: &mut Vec<String>,
    ) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            match self.stderr.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return self.child.wait().ok(),
            }
        }
        None
    }

    /// Waits until the process says it runs (`true`) or exits (`false`),
    /// collecting its stderr lines.
    pub(crate) fn settle(&mut self, lines: &mut Vec<String>) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match self.stderr.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let running = line.starts_with("orchestrator running");
                    lines.push(line);
                    if running {
                        return true;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.child.wait().unwrap();
                    return false;
                }
            }
        }
        panic!("orchestrator neither ran nor exited within 60 s: {lines:?}");
    }
}

#[test]
fn a_second_single_node_run_on_one_prefix_refuses_to_start_and_a_stopped_ones_claim_is_freed() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("orchestrator.toml");
    std::fs::write(&conf, "[cluster]\nclaim_ttl = \"2s\"\n").unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let mut lines = Vec::new();

    let mut a = Run::start(&nats, "shared", &a_dir, &conf);
    assert!(a.settle(&mut lines), "the first node runs: {lines:?}");

    // The second node on the same prefix refuses, with one line and a
    // non-zero exit status.
    let mut b = Run::start(&nats, "shared", &b_dir, &conf);
    let mut b_lines = Vec::new();
    assert!(
        !b.settle(&mut b_lines),
        "the second node must not run: {b_lines:?}"
    );
    let status = b.child.wait().unwrap();
    assert!(!status.success(), "{status:?}");
    let errors: Vec<&String> = b_lines.iter().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{b_lines:?}");
    assert!(
        errors[0].contains("another orchestrator serves prefix \"shared\""),
        "{b_lines:?}"
    );
    // Another prefix on the same NATS is another deployment: it runs.
    let mut other = Run::start(&nats, "elsewhere", &b_dir, &conf);
    assert!(other.settle(&mut lines), "another prefix runs: {lines:?}");
    drop(other);

    // Killed with SIGKILL, the first node restarts on its own data
    // directory at once: its claim is its own.
    drop(a);
    let mut a = Run::start(&nats, "shared", &a_dir, &conf);
    assert!(a.settle(&mut lines), "the restart runs: {lines:?}");

    // Killed again and not restarted: its claim lapses after the TTL and
    // the other node gets to run.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut b = Run::start(&nats, "shared", &b_dir, &conf);
        let mut b_lines = Vec::new();
        if b.settle(&mut b_lines) {
            break;
        }
        assert!(
            b_lines
                .iter()
                .any(|l| l.contains("another orchestrator serves prefix")),
            "refused for the claim, not for something else: {b_lines:?}"
        );
        assert!(
            Instant::now() < deadline,
            "the dead node's claim never lapsed: {b_lines:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A graceful stop gives the claim back: another node starts at once,
    // with a claim TTL far longer than the test waits.
    let long = dir.path().join("long.toml");
    std::fs::write(&long, "[cluster]\nclaim_ttl = \"300s\"\n").unwrap();
    let mut c = Run::start(&nats, "graceful", &a_dir, &long);
    assert!(c.settle(&mut lines), "{lines:?}");
    c.stop_gracefully();
    let mut d = Run::start(&nats, "graceful", &b_dir, &long);
    assert!(d.settle(&mut lines), "the claim was given back: {lines:?}");
}
