//! Restoring a cluster node's local store from the replicated journal,
//! with real processes on a real nats-server: a node whose disk is lost is
//! replaced by a node with an empty data directory that replays every
//! partition's journal (or, with snapshots, loads each partition's
//! snapshot and replays the trimmed journal's tail) and completes every
//! accepted workflow, and a node killed between the journal's
//! acknowledgement and its local write replays the missing batch at its
//! restart.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cli::{bin, fields, num, Bench};
use crate::cluster::Run;
use crate::failpoints::{executions_per_task, start_all};

/// The default prefix, which the bench's workers and starts use.
const PREFIX: &str = "narralytica";

fn cluster_conf(path: &Path) {
    cluster_conf_with(path, "");
}

/// The restore tests' cluster config, with `extra` lines in `[cluster]`.
fn cluster_conf_with(path: &Path, extra: &str) {
    std::fs::write(
        path,
        format!(
            "[engine]\npartitions = 4\n\n[cluster]\nenabled = true\n\
             journal_replicas = 1\nlease_ttl = \"3s\"\nclaim_ttl = \"3s\"\n{extra}"
        ),
    )
    .unwrap();
}

/// The number of journal records the node replayed at start, from its
/// `cluster mode: node … serves N of N partitions` line.
fn replayed(lines: &[String]) -> u64 {
    let line = lines
        .iter()
        .find(|l| l.starts_with("cluster mode: node") && l.contains(" serves "))
        .unwrap_or_else(|| panic!("no cluster mode line: {lines:?}"));
    let before = line
        .split(" journal record(s) replayed")
        .next()
        .unwrap_or_default();
    before
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no replayed count in {line}"))
}

/// The number of partition snapshots the node loaded at start.
fn snapshots_loaded(lines: &[String]) -> u64 {
    let line = lines
        .iter()
        .find(|l| l.starts_with("cluster mode: node") && l.contains(" serves "))
        .unwrap_or_else(|| panic!("no cluster mode line: {lines:?}"));
    line.split(" partition snapshot(s) loaded")
        .next()
        .and_then(|b| b.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no snapshot count in {line}"))
}

/// The journal stream's records present and records ever appended (its
/// last sequence): fewer present than appended once it was trimmed.
fn journal_counts(b: &Bench) -> (u64, u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(b.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let name = orchestrator::transport::nats::journal_stream(PREFIX);
        let mut stream = js.get_stream(name).await.unwrap();
        let state = &stream.info().await.unwrap().state;
        (state.messages, state.last_sequence)
    })
}

/// Starts a node on `data_dir`, retried while the prefix claim or the
/// leases of a dead node have not lapsed yet.
fn start_when_free(b: &Bench, data_dir: &Path, conf: &Path, lines: &mut Vec<String>) -> Run {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let mut run = Run::start(&b.server, PREFIX, data_dir, conf);
        let mut seen = Vec::new();
        if run.settle(&mut seen) {
            lines.extend(seen);
            return run;
        }
        assert!(Instant::now() < give_up, "never started: {seen:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every id's `start --wait` answers `status=completed`.
fn assert_all_completed(b: &Bench, ids: &[String]) {
    for id in ids {
        let out = b.start("video", id, true);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("status=completed"),
            "{id}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `verify` of a local store against the events stream and the workers'
/// records; exit status and the `check` line's fields.
fn verify_store(
    b: &Bench,
    data_dir: &Path,
    records: &[PathBuf],
) -> (Option<i32>, HashMap<String, String>) {
    let mut c = bin();
    c.args(["verify", "--data-dir"]).arg(data_dir).args([
        "--events-from",
        &b.url(),
        "--expect-terminal",
    ]);
    for r in records {
        c.arg("--record").arg(r);
    }
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{}", stdout.trim());
    (out.status.code(), fields(&stdout, "check "))
}

/// `verify --journal-from`: exit status and the `journal` line's fields.
fn verify_journal(b: &Bench) -> (Option<i32>, HashMap<String, String>) {
    let out = bin()
        .args([
            "verify",
            "--journal-from",
            &b.url(),
            "--journal-prefix",
            PREFIX,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{}", stdout.trim());
    (out.status.code(), fields(&stdout, "journal "))
}

fn workers(b: &mut Bench, dir: &Path) -> Vec<PathBuf> {
    let records: Vec<PathBuf> = (0..2).map(|i| dir.join(format!("w{i}.jsonl"))).collect();
    for r in &records {
        b.start_worker(&["--latency-ms", "20", "--record", r.to_str().unwrap()]);
    }
    records
}

/// What the node with the empty data directory did at its start.
struct Restored {
    /// Partition snapshots it loaded.
    snapshots: u64,
    /// Journal records it replayed into its local store.
    records: u64,
    /// Seconds from its start to serving (the dead node's claim and
    /// leases had lapsed before).
    serving_s: f64,
    /// Journal records present and ever appended when the node was lost.
    present: u64,
    appended: u64,
}

/// A node on `conf` accepts 200 workflows run by two workers; once half
/// of them completed (and, with `trimmed`, once its journal was trimmed)
/// it is killed with SIGKILL and its data directory deleted. A node with
/// a new empty data directory restores, all 200 complete, and `verify`
/// of its store and of the journal pass.
fn restore_after_disk_loss(conf_extra: &str, trimmed: bool) -> Restored {
    let mut b = Bench::new(None);
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("cluster.toml");
    cluster_conf_with(&conf, conf_extra);
    let records = workers(&mut b, dir.path());
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let mut lines = Vec::new();
    let mut a = start_when_free(&b, &a_dir, &conf, &mut lines);
    assert_eq!(replayed(&lines), 0, "{lines:?}");

    let ids: Vec<String> = (0..200).map(|i| format!("restore-{i}")).collect();
    start_all(&b.url(), &ids);
    // Part of the work is done.
    assert_all_completed(&b, &ids[..100]);
    if trimmed {
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            let (present, appended) = journal_counts(&b);
            if present < appended {
                break;
            }
            assert!(
                Instant::now() < give_up,
                "never trimmed: {present} of {appended}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // The node and its disk are lost.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    std::fs::remove_dir_all(&a_dir).unwrap();
    // The dead node's claim and leases (3 s) lapse.
    std::thread::sleep(Duration::from_secs(4));
    let (present, appended) = journal_counts(&b);

    // A node with a new, empty data directory (a new node id) restores
    // every partition before it serves.
    let t0 = Instant::now();
    lines.clear();
    let mut n = start_when_free(&b, &b_dir, &conf, &mut lines);
    let serving_s = t0.elapsed().as_secs_f64();
    let (snapshots, restored) = (snapshots_loaded(&lines), replayed(&lines));
    assert_all_completed(&b, &ids);

    n.stop_gracefully();
    b.stop();
    let (code, f) = verify_store(&b, &b_dir, &records);
    assert_eq!(code, Some(0), "{f:?}");
    assert_eq!(num(&f, "workflows") as usize, ids.len());
    assert_eq!(num(&f, "terminal") as usize, ids.len());
    let (code, f) = verify_journal(&b);
    assert_eq!(code, Some(0), "{f:?}");
    assert_eq!(num(&f, "violations"), 0.0, "{f:?}");
    // Tasks in flight at the loss are sent again with their task ids: at
    // most one re-dispatch per task.
    let per_task = executions_per_task(&records);
    let worst = per_task.values().max().copied().unwrap_or(0);
    eprintln!(
        "restore: snapshots loaded={snapshots} records replayed={restored} serving after {serving_s:.2} s; \
         journal records present={present} appended={appended}; tasks={} re-dispatched={} max executions of a task={worst}",
        per_task.len(),
        per_task.values().filter(|&&n| n == 2).count()
    );
    assert!(worst <= 2, "a task ran {worst} times");
    Restored {
        snapshots,
        records: restored,
        serving_s,
        present,
        appended,
    }
}

#[test]
fn a_node_with_an_empty_data_directory_restores_the_journal_and_completes_every_workflow() {
    // No snapshot is due in this workload (the defaults: 10,000 records
    // or 10 minutes): the whole journal is replayed.
    let r = restore_after_disk_loss("", false);
    assert_eq!(r.snapshots, 0);
    assert!(r.records > 200, "every workflow's records: {}", r.records);
    assert_eq!(r.present, r.appended, "nothing trimmed");
    assert_eq!(r.records, r.appended, "every record replayed");
    assert!(r.serving_s > 0.0);
}

#[test]
fn a_node_restores_from_partition_snapshots_and_the_trimmed_journals_tail() {
    let r = restore_after_disk_loss(
        "snapshot_every_records = 20\nsnapshot_interval = \"0s\"\n",
        true,
    );
    assert!(r.snapshots >= 1, "a snapshot loaded");
    assert!(
        r.present < r.appended,
        "trimmed: {} of {}",
        r.present,
        r.appended
    );
    // Only the tails after the snapshots, never a purged record.
    assert!(r.records < r.present, "{} of {}", r.records, r.present);
}

#[test]
fn a_batch_acknowledged_by_the_journal_but_not_written_locally_is_replayed_at_restart() {
    let mut b = Bench::new(None);
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("cluster.toml");
    cluster_conf(&conf);
    let records = workers(&mut b, dir.path());
    let data = dir.path().join("node");
    let ids: Vec<String> = (0..20).map(|i| format!("ahead-{i}")).collect();

    // The node dies right after the journal acknowledged a batch, before
    // the batch reaches its local store.
    let mut armed = Run::start_env(
        &b.server,
        PREFIX,
        &data,
        &conf,
        &[("FAILPOINTS", "replicate.after_append=30*off->return")],
    );
    let mut lines = Vec::new();
    std::thread::scope(|s| {
        let starts = s.spawn(|| start_all(&b.url(), &ids));
        let exit = armed.exit(Duration::from_secs(60), &mut lines);
        assert_eq!(exit.and_then(|e| e.signal()), Some(6), "{lines:?}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("failpoint replicate.after_append: crashing")),
            "{lines:?}"
        );
        // The restart on the same data directory replays the batch.
        lines.clear();
        let mut run = start_when_free(&b, &data, &conf, &mut lines);
        assert!(replayed(&lines) >= 1, "{lines:?}");
        // Every start the crash cut off is answered by the restarted node
        // before anything is checked or stopped.
        starts.join().expect("every workflow is accepted");
        assert_all_completed(&b, &ids);
        run.stop_gracefully();
    });
    b.stop();
    let (code, f) = verify_store(&b, &data, &records);
    assert_eq!(code, Some(0), "{f:?}");
    assert_eq!(num(&f, "terminal") as usize, ids.len());
    let (code, f) = verify_journal(&b);
    assert_eq!(code, Some(0), "{f:?}");
    assert_eq!(num(&f, "violations"), 0.0, "{f:?}");
}
