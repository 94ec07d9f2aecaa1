//! Retention (terminal workflows purged after `retention.after`, on a manual
//! clock) and backup (a checkpoint of a live `orchestrator run`, restored
//! into a new node).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator::engine::{EngineConfig, ManualClock, Metrics, RetentionConfig};
use orchestrator::sim::SimConfig;
use orchestrator::storage::memory::MemoryStorage;
use orchestrator::storage::store::WorkflowStore;
use orchestrator::verify::verify_store;
use orchestrator::workflow::{Input, Outcome, ReopenMode, Status, StepStatus, WorkflowState};

use crate::cli::{bin, fields, num, wait_exit, Bench};
use crate::support::{Harness, Options};

const AFTER_MS: u64 = 600_000;

fn two_steps() -> orchestrator::pipeline::PipelineDef {
    crate::support::two_step_pipeline("short", "a", "b")
}

/// Waits for `cond` on workflow `id`, moving the manual clock 60 ms at a
/// time (the simulated workers' latency runs on that clock too).
async fn wait_for(
    h: &Harness,
    clock: &ManualClock,
    id: &str,
    what: &str,
    cond: impl Fn(&WorkflowState) -> bool,
) -> WorkflowState {
    for _ in 0..500 {
        if let Some(wf) = h.engine.describe(id).await.unwrap() {
            if cond(&wf) {
                return wf;
            }
        }
        clock.advance(60);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{id}: never reached: {what}");
}

/// Advances the manual clock in 1 s steps (one sweep round each) until
/// `n` workflows were purged in all.
async fn purge_until(h: &Harness, clock: &ManualClock, n: u64) {
    for _ in 0..150 {
        if Metrics::get(&h.metrics.workflows_purged) >= n {
            return;
        }
        clock.advance(1_000);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "only {} of {n} purged",
        Metrics::get(&h.metrics.workflows_purged)
    );
}

/// Nothing of workflow `id` is left in storage: journal, snapshot, status
/// index entries, timers.
fn assert_no_rows(store: &WorkflowStore, id: &str) {
    let p = store.partition_of(id);
    let journal: Vec<(u64, orchestrator::workflow::JournalRecord)> =
        store.load_journal(p, id, 0).unwrap();
    assert!(journal.is_empty(), "{id}: journal left");
    assert!(
        store
            .load_snapshot::<WorkflowState>(p, id)
            .unwrap()
            .is_none(),
        "{id}: snapshot left"
    );
    assert!(!store.workflow_exists(p, id).unwrap());
    for s in Status::ALL {
        let listed: Vec<(String, orchestrator::storage::StatusEntry)> =
            store.list_status(p, s.code(), usize::MAX).unwrap();
        assert!(
            listed.iter().all(|(i, _)| i != id),
            "{id}: index entry left"
        );
    }
    let timers = store.timer_deletes_where(p, &mut |t| t == id).unwrap();
    assert!(timers.is_empty(), "{id}: timers left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_workflows_are_purged_after_retention_and_live_or_reopened_ones_stay() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let opts = Options {
        pipelines: Some(vec![two_steps()]),
        clock: Some(clock.clone()),
        sim: SimConfig {
            latency_ms: 50,
            ..SimConfig::default()
        },
        config: EngineConfig {
            partitions: 4,
            tick_ms: 5,
            retention: RetentionConfig {
                after_ms: Some(AFTER_MS),
                sweep_every_ms: 1_000,
                // Small, so a round takes several batches and ticks.
                batch_max: 3,
                scan_max: 4,
            },
            ..EngineConfig::default()
        },
        ..Options::default()
    };
    let storage = Arc::new(MemoryStorage::new());
    let h = Harness::start(storage.clone(), opts).await;
    let e = &h.engine;
    let done: Vec<String> = (0..10).map(|i| format!("done-{i}")).collect();
    for id in &done {
        e.start_workflow("short", id, "{}").await.unwrap();
    }
    // Paused: not terminal, never purged.
    let held: Vec<String> = (0..3).map(|i| format!("held-{i}")).collect();
    for id in &held {
        e.start_workflow("short", id, "{}").await.unwrap();
        assert_eq!(e.send(id, Input::Pause).await.unwrap(), Outcome::Applied);
    }
    // Cancelled: terminal.
    let cancelled: Vec<String> = (0..2).map(|i| format!("gone-{i}")).collect();
    for id in &cancelled {
        e.start_workflow("short", id, "{}").await.unwrap();
        let r = e
            .send(
                id,
                Input::Cancel {
                    reason: "test".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(r, Outcome::Applied);
    }
    e.start_workflow("short", "reopened", "{}").await.unwrap();
    for id in done.iter().chain(["reopened".to_string()].iter()) {
        wait_for(&h, &clock, id, "completed", |w| {
            w.status == Status::Completed
        })
        .await;
    }
    for id in &held {
        wait_for(&h, &clock, id, "paused with step a done", |w| {
            w.status == Status::Paused && w.steps[0].status == StepStatus::Succeeded
        })
        .await;
    }
    assert_eq!(Metrics::get(&h.metrics.workflows_purged), 0);

    // Half-way to the deadline `reopened` is rerun: terminal again later,
    // so its retention starts again from then.
    clock.advance(AFTER_MS / 2);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        Metrics::get(&h.metrics.workflows_purged),
        0,
        "nothing due yet"
    );
    let r = e
        .send("reopened", Input::Reopen(ReopenMode::RerunFrom("a".into())))
        .await
        .unwrap();
    assert_eq!(r, Outcome::Applied);
    wait_for(&h, &clock, "reopened", "completed again", |w| {
        w.status == Status::Completed && w.generation == 1
    })
    .await;

    // Past the first deadline: the ten completed and two cancelled go.
    clock.advance(AFTER_MS / 2 + 1_000);
    purge_until(&h, &clock, 12).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(Metrics::get(&h.metrics.workflows_purged), 12);
    for id in done.iter().chain(&cancelled) {
        assert!(e.describe(id).await.unwrap().is_none(), "{id} still there");
        assert_no_rows(&h.store, id);
    }
    for id in &held {
        let wf = e.describe(id).await.unwrap().expect("paused stays");
        assert_eq!(wf.status, Status::Paused);
    }
    let wf = e
        .describe("reopened")
        .await
        .unwrap()
        .expect("reopened stays");
    assert_eq!(wf.status, Status::Completed);
    // A reopen after the purge finds nothing.
    let err = e
        .send("done-0", Input::Reopen(ReopenMode::RerunFrom("a".into())))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown workflow"), "{err}");
    let report = verify_store(&h.store).unwrap();
    assert_eq!(
        (report.workflows, report.violations, report.corrupt),
        (4, 0, 0),
        "{:?}",
        report.details
    );

    // The rerun's own deadline passes: it goes too; paused ones stay.
    clock.advance(AFTER_MS / 2);
    purge_until(&h, &clock, 13).await;
    assert!(e.describe("reopened").await.unwrap().is_none());
    assert_no_rows(&h.store, "reopened");
    let report = verify_store(&h.store).unwrap();
    assert_eq!(
        (report.workflows, report.running, report.violations),
        (3, 3, 0),
        "{report}"
    );
    // A purged id can be started afresh.
    let s = e.start_workflow("short", "done-1", "{}").await.unwrap();
    assert!(s.created);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_off_keeps_everything_and_memory_storage_refuses_checkpoints() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        pipelines: Some(vec![two_steps()]),
        clock: Some(clock.clone()),
        config: EngineConfig {
            partitions: 4,
            tick_ms: 5,
            retention: RetentionConfig {
                after_ms: None,
                ..RetentionConfig::default()
            },
            backup_root: Some(dir.path().to_path_buf()),
            ..EngineConfig::default()
        },
        ..Options::default()
    };
    let storage = Arc::new(MemoryStorage::new());
    let h = Harness::start(storage.clone(), opts).await;
    h.engine.start_workflow("short", "w", "{}").await.unwrap();
    wait_for(&h, &clock, "w", "completed", |w| {
        w.status == Status::Completed
    })
    .await;
    clock.advance(400 * 86_400_000);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(h.engine.describe("w").await.unwrap().is_some());
    assert_eq!(Metrics::get(&h.metrics.workflows_purged), 0);
    let err = h
        .engine
        .checkpoint(&dir.path().join("cp"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unsupported"), "{err}");
    h.stop().await;
}

fn out(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

/// Runs `orchestrator backup ...` that must fail; returns its one error line.
fn backup_fails(args: &[&str], to: &std::path::Path) -> String {
    let o = bin()
        .arg("backup")
        .args(args)
        .arg("--to")
        .arg(to)
        .output()
        .unwrap();
    let (stdout, stderr) = out(&o);
    assert!(!o.status.success(), "should fail: {stdout}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

/// Backup of a live `orchestrator run` while workflows are in flight, then
/// the restore procedure of docs/operations.md: the checkpoint becomes the
/// data dir of a new node (here on a fresh nats-server), which completes
/// every workflow.
#[test]
fn a_backup_of_a_live_node_under_load_restores_into_a_new_node_that_completes_every_workflow() {
    let t0 = Instant::now();
    let n = 30;
    let ids: Vec<String> = (0..n).map(|i| format!("bk-{i}")).collect();
    let input = |id: &str| format!(r#"{{"video_url":"s3://media/{id}.mp4"}}"#);
    let backups = tempfile::tempdir().unwrap();
    let mut b = Bench::new(None);
    b.backup_root = Some(backups.path().to_path_buf());
    b.start_orchestrator();
    b.start_worker(&["--latency-ms", "150"]);
    for id in &ids {
        let o = b.start_with("video", id, &input(id), false);
        assert!(o.status.success(), "{:?}", out(&o));
    }
    std::thread::sleep(Duration::from_millis(300));
    let cp = backups.path().join("cp");
    let o = bin()
        .args(["backup", "--nats-url", &b.url(), "--to"])
        .arg(&cp)
        .output()
        .unwrap();
    let (stdout, stderr) = out(&o);
    assert!(o.status.success(), "{stdout} {stderr}");
    let f = fields(&stdout, "backup ");
    assert_eq!(f["path"], cp.display().to_string());
    assert!(
        num(&f, "bytes") > 0.0 && num(&f, "files") >= 3.0,
        "{stdout}"
    );
    eprintln!("live backup: {}", stdout.trim());

    // Bad targets: one line each, nothing written.
    let url = b.url();
    let e = backup_fails(&["--nats-url", &url], &cp);
    assert!(e.contains("already exists"), "{e}");
    let e = backup_fails(&["--nats-url", &url], &b.dir.path().join("inside"));
    assert!(e.contains("under the backup root"), "{e}");
    assert!(!b.dir.path().join("inside").exists());
    let e = backup_fails(&["--nats-url", &url], &backups.path().join("../escape"));
    assert!(e.contains(".."), "{e}");
    // Outside the root, whether the path exists or not: the same answer.
    let exists = backup_fails(&["--nats-url", &url], std::path::Path::new("/etc/passwd"));
    let missing = backup_fails(
        &["--nats-url", &url],
        std::path::Path::new("/etc/no-such-x"),
    );
    assert_eq!(exists, missing);
    // A relative target is taken inside the root, made private.
    let o = bin()
        .args(["backup", "--nats-url", &url, "--to", "nightly/cp2"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", out(&o));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&backups.path().join("nightly/cp2")), 0o700);
        assert_eq!(mode(&backups.path().join("nightly/cp2/CURRENT")), 0o600);
    }
    // Offline mode refuses a data dir a running orchestrator holds.
    let e = backup_fails(
        &["--data-dir", b.dir.path().to_str().unwrap()],
        &backups.path().join("held"),
    );
    assert!(e.contains("cannot open"), "{e}");

    // The checkpoint is a consistent data dir, taken mid-flight.
    let v = crate::cli::run(&["verify"], Some(&cp));
    let vf = fields(&String::from_utf8_lossy(&v.stdout), "verify ");
    assert_eq!(
        (
            num(&vf, "workflows"),
            num(&vf, "violations"),
            num(&vf, "corrupt")
        ),
        (n as f64, 0.0, 0.0),
        "{vf:?}"
    );
    assert!(num(&vf, "running") > 0.0, "backup taken under load: {vf:?}");
    eprintln!(
        "checkpoint: running={} completed={}",
        vf["running"], vf["completed"]
    );
    b.stop();

    // Restore: a new node whose data dir is the checkpoint.
    let mut r = Bench::new(None);
    std::fs::remove_dir(r.dir.path()).unwrap();
    std::fs::rename(&cp, r.dir.path()).unwrap();
    r.start_orchestrator();
    r.start_worker(&["--latency-ms", "5"]);
    for id in &ids {
        let o = r.start_with("video", id, &input(id), true);
        let (stdout, stderr) = out(&o);
        assert_eq!(
            stdout.trim(),
            format!("workflow id={id} status=completed created=false"),
            "{stderr}"
        );
    }
    let mut orch = r.orch.take().unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &orch.id().to_string()])
        .status();
    assert!(wait_exit(&mut orch, Duration::from_secs(10)).is_some());
    let v = r.verify();
    assert_eq!(
        (
            num(&v, "workflows"),
            num(&v, "completed"),
            num(&v, "violations"),
            num(&v, "corrupt")
        ),
        (n as f64, n as f64, 0.0, 0.0)
    );

    // Offline backup of the stopped node.
    let off = backups.path().join("offline");
    let o = bin()
        .args(["backup", "--data-dir"])
        .arg(r.dir.path())
        .arg("--to")
        .arg(&off)
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", out(&o));
    let v = crate::cli::run(&["verify"], Some(&off));
    let vf = fields(&String::from_utf8_lossy(&v.stdout), "verify ");
    assert_eq!(num(&vf, "completed"), n as f64);
    let e = backup_fails(
        &[
            "--data-dir",
            backups.path().join("nothing").to_str().unwrap(),
        ],
        &backups.path().join("x"),
    );
    assert!(e.contains("not a data dir"), "{e}");
    eprintln!("backup test took {:?}", t0.elapsed());
}

/// Measurement, not a check: how fast the default batch size purges
/// completed video workflows from RocksDB (`cargo test --release --test
/// integration purge_rate -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn purge_rate_on_rocksdb() {
    use orchestrator::storage::{RocksConfig, RocksStorage};
    let n: u64 = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let storage =
        Arc::new(RocksStorage::open(dir.path().join("db"), &RocksConfig::default()).unwrap());
    let clock = Arc::new(ManualClock::new(1_000_000));
    let opts = Options {
        clock: Some(clock.clone()),
        config: EngineConfig {
            partitions: 4,
            tick_ms: 5,
            retention: RetentionConfig {
                after_ms: Some(AFTER_MS),
                ..RetentionConfig::default()
            },
            ..EngineConfig::default()
        },
        ..Options::default()
    };
    let h = Harness::start(storage, opts).await;
    let items: Vec<(String, String)> = (0..n)
        .map(|i| {
            let id = format!("p-{i}");
            let input = crate::support::video_input(&id);
            (id, input)
        })
        .collect();
    h.engine.accept_many("video", items).await.unwrap();
    h.engine.release_held();
    h.wait_terminal(n, Duration::from_secs(120)).await;
    // Past the deadline: this tick passivates the idle actors (skipped by
    // the round); the next round, a `sweep_every` later, purges.
    clock.advance(AFTER_MS + 120_000);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = Metrics::get(&h.metrics.workflows_purged);
    let t = Instant::now();
    clock.advance(60_000);
    while Metrics::get(&h.metrics.workflows_purged) < n {
        assert!(t.elapsed() < Duration::from_secs(60), "purge too slow");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = t.elapsed();
    eprintln!(
        "purged {n} video workflows ({before} in the first round) in {took:?}: {:.0} wf/s",
        (n - before) as f64 / took.as_secs_f64()
    );
    let report = verify_store(&h.store).unwrap();
    assert_eq!((report.workflows, report.violations), (0, 0));
    h.stop().await;
}
