//! Fault tests, all real processes over a real `nats-server`:
//! a 30 s NATS outage under load, worker faults (kill -9, hangs, double and
//! late answers) under the system checker, and a retry storm held by the
//! retry budget. `cargo test --release --test integration faults_ -- --nocapture`
//! prints the figures `docs/reliability.md` quotes.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::{bin, fields, num, Bench, Reaper};
use crate::support::nats::free_port;

/// `orchestrator run` on the bench's server and data dir, `/metrics` on `http`.
fn spawn_orch(b: &Bench, http: u16, pipelines: Option<&Path>, extra: &[&str]) -> Reaper {
    let mut c = bin();
    c.args(["run", "--nats-url", &b.url(), "--data-dir"])
        .arg(b.dir.path())
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .args(extra);
    if let Some(p) = pipelines {
        c.arg("--pipelines").arg(p);
    }
    Reaper(
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// `GET path` on the orchestrator's HTTP port: `(status, body)`.
pub(crate) fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, buf.split_once("\r\n\r\n")?.1.to_string()))
}

/// Sum of the samples of `name` whose labels contain `label` (`""`: all).
pub(crate) fn metric(body: &str, name: &str, label: &str) -> f64 {
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                && l.contains(label)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub(crate) fn metrics(port: u16) -> String {
    for _ in 0..50 {
        if let Some((200, body)) = http_get(port, "/metrics") {
            return body;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no /metrics on port {port}");
}

fn terminal(port: u16) -> f64 {
    let m = metrics(port);
    metric(&m, "narralytica_workflows_completed_total", "")
        + metric(&m, "narralytica_workflows_failed_total", "")
        + metric(&m, "narralytica_workflows_cancelled_total", "")
}

/// Resident set of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let began = Instant::now();
    while !ok() {
        assert!(began.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    began.elapsed()
}

/// Open-loop starts: `n` workflows `<prefix>-<i>` offered at `rate` per
/// second from now, each through the admin `start` verb (in this process,
/// over NATS) and retried every 250 ms while it fails (NATS down, no
/// reply), until `give_up` after it was offered. Returns the accepted ids.
fn open_loop(
    url: String,
    pipeline: &'static str,
    prefix: &'static str,
    rate: f64,
    n: usize,
    give_up: Duration,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let args = orchestrator::cli::NatsArgs {
                nats_url: url,
                prefix: "narralytica".into(),
                security: Default::default(),
            };
            let client = Arc::new(
                orchestrator::cli::ops::AdminClient::connect(&args)
                    .await
                    .expect("admin client connects"),
            );
            let began = tokio::time::Instant::now();
            let mut tasks = Vec::new();
            for i in 0..n {
                tokio::time::sleep_until(began + Duration::from_secs_f64(i as f64 / rate)).await;
                let client = client.clone();
                tasks.push(tokio::spawn(async move {
                    let id = format!("{prefix}-{i}");
                    let offered = tokio::time::Instant::now();
                    let req = orchestrator::admin::StartRequest {
                        v: 1,
                        pipeline: pipeline.into(),
                        id: id.clone(),
                        input: serde_json::json!({}),
                        pipeline_version: None,
                        priority: None,
                    };
                    loop {
                        let r = tokio::time::timeout(
                            Duration::from_secs(3),
                            client.call::<_, serde_json::Value>("start", &req),
                        )
                        .await;
                        if let Ok(Ok(_)) = r {
                            return Some(id);
                        }
                        if offered.elapsed() > give_up {
                            return None;
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }));
            }
            let mut accepted = Vec::new();
            for t in tasks {
                if let Ok(Some(id)) = t.await {
                    accepted.push(id);
                }
            }
            accepted
        })
    })
}

/// The system checker over journals, the event stream and `records`, with
/// `--expect-terminal`. Outbox rows a graceful stop left unpublished are
/// published by the next start (the outbox's guarantee), so on
/// `events_missing > 0` the node is started once more for 2 s first.
fn check(
    b: &Bench,
    pipelines: Option<&Path>,
    records: &[PathBuf],
    extra: &[&str],
) -> (Output, HashMap<String, String>) {
    let run = || {
        let mut c = bin();
        c.args(["verify", "--data-dir"]).arg(b.dir.path()).args([
            "--events-from",
            &b.url(),
            "--expect-terminal",
        ]);
        c.args(extra);
        for r in records {
            c.arg("--record").arg(r);
        }
        let out = c.output().unwrap();
        let f = fields(&String::from_utf8_lossy(&out.stdout), "check ");
        (out, f)
    };
    let (out, f) = run();
    if num(&f, "events_missing") == 0.0 {
        return (out, f);
    }
    eprintln!("outbox_flush_restart=true");
    let mut o = spawn_orch(b, free_port(), pipelines, &[]);
    std::thread::sleep(Duration::from_secs(2));
    sigterm(&mut o);
    run()
}

fn sigterm(child: &mut Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = crate::cli::wait_exit(child, Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
}

fn assert_checker_passes(out: &Output, f: &HashMap<String, String>, accepted: usize) {
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(num(f, "workflows") as usize, accepted, "{f:?}");
    assert_eq!(num(f, "terminal") as usize, accepted, "{f:?}");
    assert_eq!(num(f, "violations"), 0.0, "{f:?}");
}

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

fn write_pipeline(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
}

/// `nats-server` stopped for 30 s under a steady start load, then
/// restarted on the same port and store.
#[test]
fn faults_nats_outage_30s_under_load_drains_and_passes_the_checker() {
    let outage = env_secs("NARRALYTICA_OUTAGE_SECS", 30);
    let before = Duration::from_secs(6);
    let rate = 20.0;
    let mut b = Bench::new(None);
    let rec_dir = tempfile::tempdir().unwrap();
    let records: Vec<_> = (0..2)
        .map(|i| rec_dir.path().join(format!("w{i}.jsonl")))
        .collect();
    let http = free_port();
    b.orch = Some(spawn_orch(&b, http, None, &[]));
    for (i, r) in records.iter().enumerate() {
        b.start_worker(&[
            "--latency-ms",
            "20",
            "--seed",
            &(i + 1).to_string(),
            "--record",
            r.to_str().unwrap(),
        ]);
    }
    wait_for("orchestrator ready", Duration::from_secs(30), || {
        http_get(http, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    let pid = b.orch.as_ref().unwrap().id();
    // Starts are offered before and during the outage; those offered during
    // it fail and are retried until NATS is back.
    let n = (rate * (before + outage).as_secs_f64()) as usize;
    let starter = open_loop(b.url(), "video", "o", rate, n, Duration::from_secs(150));
    let alive = |b: &mut Bench| b.orch.as_mut().unwrap().try_wait().unwrap().is_none();

    std::thread::sleep(before - Duration::from_secs(1));
    let mut rss_before = 0;
    for _ in 0..4 {
        rss_before = rss_before.max(rss_kib(pid).unwrap());
        std::thread::sleep(Duration::from_millis(250));
    }
    let done_before = terminal(http);

    b.server.stop();
    let stopped = Instant::now();
    let mut rss_peak = rss_before;
    let mut samples = 0;
    while stopped.elapsed() < outage {
        assert!(alive(&mut b), "the orchestrator exited during the outage");
        rss_peak = rss_peak.max(rss_kib(pid).unwrap());
        samples += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    let ready_during = http_get(http, "/readyz").map(|(s, _)| s);
    b.server.restart();
    let restarted = Instant::now();
    let reconnect = wait_for("NATS reconnect", Duration::from_secs(60), || {
        http_get(http, "/metrics")
            .is_some_and(|(_, m)| metric(&m, "narralytica_nats_connected", "") >= 1.0)
    });
    let accepted = starter.join().unwrap();
    let starts_done = restarted.elapsed();
    let drain_began = Instant::now();
    while terminal(http) < accepted.len() as f64 {
        rss_peak = rss_peak.max(rss_kib(pid).unwrap_or(0));
        if drain_began.elapsed() > Duration::from_secs(60) {
            let m = metrics(http);
            let nonzero: Vec<&str> = m
                .lines()
                .filter(|l| l.starts_with("narralytica_") && !l.ends_with(" 0"))
                .collect();
            panic!(
                "backlog not drained 60 s after the restart: {} of {} terminal\n{}",
                terminal(http),
                accepted.len(),
                nonzero.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let drain = drain_began.elapsed();
    let drain = restarted.elapsed().max(drain);
    assert!(alive(&mut b), "the orchestrator exited after the outage");
    let m = metrics(http);
    let completed = metric(&m, "narralytica_workflows_completed_total", "");
    let rss_after = rss_kib(pid).unwrap();
    b.stop();

    let (out, f) = check(&b, None, &records, &[]);
    eprintln!(
        "nats_outage: outage_s={} offered={n} accepted={} terminal_before_outage={done_before} \
         rss_kib before={rss_before} peak={rss_peak} after={rss_after} (samples={samples}) \
         readyz_during_outage={ready_during:?} reconnect_ms={} starts_done_after_restart_ms={} \
         drain_after_restart_ms={} completed={completed} extra_executions={}",
        outage.as_secs(),
        accepted.len(),
        reconnect.as_millis(),
        starts_done.as_millis(),
        drain.as_millis(),
        f["extra_executions"],
    );
    assert_eq!(
        accepted.len(),
        n,
        "every start offered is accepted in the end"
    );
    assert_eq!(completed as usize, n, "every accepted workflow completes");
    // Bound: the orchestrator holds no per-start state while NATS is down
    // (starts cannot reach it) and every queue in front of NATS is bounded
    // (task publisher, outbox channel that spills to storage), so memory may
    // only move by allocator noise and RocksDB caches: at most 2x the
    // pre-outage RSS + 64 MiB.
    assert!(
        rss_peak <= 2 * rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_peak} KiB during the outage"
    );
    assert_checker_passes(&out, &f, n);
}

const WORKER_FAULTS_PIPELINE: &str = r#"
[pipeline]
name = "wfault"
version = 1
[defaults.retry]
max_attempts = 30
initial_backoff = "50ms"
max_backoff = "200ms"
[defaults.timeouts]
schedule_to_start = "3s"
heartbeat = "1s"
start_to_close = "5s"
[[steps]]
name = "a"
[[steps]]
name = "b"
needs = ["a"]
[[steps]]
name = "c"
needs = ["b"]
"#;

/// Workers killed mid-task (SIGKILL, a new one started), workers
/// that never answer, answer twice or answer a superseded attempt; the
/// system checker with every worker's record must pass.
#[test]
fn faults_workers_killed_hung_duplicate_and_stale_pass_the_system_checker() {
    let pdir = tempfile::tempdir().unwrap();
    write_pipeline(pdir.path(), "wfault", WORKER_FAULTS_PIPELINE);
    let mut b = Bench::new(Some(pdir.path().to_path_buf()));
    let rec_dir = tempfile::tempdir().unwrap();
    let record = |i: usize| rec_dir.path().join(format!("w{i}.jsonl"));
    let http = free_port();
    b.orch = Some(spawn_orch(&b, http, Some(pdir.path()), &[]));
    let worker = |b: &mut Bench, i: usize| {
        b.start_worker(&[
            "--latency-ms",
            "150",
            "--hang-rate",
            "0.05",
            "--duplicate-rate",
            "0.2",
            "--stale-rate",
            "0.05",
            "--seed",
            &(i + 1).to_string(),
            "--name",
            &format!("w{i}"),
            "--record",
            record(i).to_str().unwrap(),
        ])
    };
    worker(&mut b, 0);
    worker(&mut b, 1);
    wait_for("orchestrator ready", Duration::from_secs(30), || {
        http_get(http, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    let n = 100;
    let starter = open_loop(b.url(), "wfault", "f", 25.0, n, Duration::from_secs(60));
    // Kill -9 each of the first two workers while it has tasks (load is
    // running, every task takes 150 ms) and start a replacement.
    let records_before_kill = |i: usize| {
        std::fs::read_to_string(record(i))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let mut killed_with_work = 0;
    let began = Instant::now();
    for (at, victim, replacement) in [(1500, 0, 2), (3000, 1, 3)] {
        std::thread::sleep(Duration::from_millis(at).saturating_sub(began.elapsed()));
        let lines = records_before_kill(victim);
        let w = &mut b.workers[victim];
        w.kill().unwrap(); // SIGKILL
        let _ = w.wait();
        if lines > 0 {
            killed_with_work += 1;
        }
        worker(&mut b, replacement);
    }
    let accepted = starter.join().unwrap();
    assert_eq!(accepted.len(), n);
    let drain = wait_for("all workflows terminal", Duration::from_secs(90), || {
        terminal(http) >= n as f64
    });
    let m = metrics(http);
    let dup = metric(
        &m,
        "narralytica_messages_ignored_total",
        "reason=\"duplicate\"",
    );
    let stale = metric(
        &m,
        "narralytica_messages_ignored_total",
        "reason=\"stale_attempt\"",
    );
    let timeouts = metric(&m, "narralytica_task_timeouts_total", "");
    let completed = metric(&m, "narralytica_workflows_completed_total", "");
    b.stop();

    let recs: Vec<PathBuf> = (0..4).map(record).collect();
    let lines: Vec<String> = recs
        .iter()
        .flat_map(|r| {
            std::fs::read_to_string(r)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let count = |pat: &str| lines.iter().filter(|l| l.contains(pat)).count();
    let (hung, twice, late) = (
        count("\"outcome\":\"hung\""),
        count("\"answers\":2"),
        count("\"outcome\":\"late\""),
    );
    let (out, f) = check(&b, Some(pdir.path()), &recs, &[]);
    eprintln!(
        "worker_faults: workflows={n} completed={completed} drain_ms={} killed_with_work={killed_with_work} \
         records: hung={hung} answered_twice={twice} late={late}; orchestrator: ignored duplicate={dup} \
         stale_attempt={stale} timeouts={timeouts}; extra_executions={}",
        drain.as_millis(),
        f["extra_executions"],
    );
    assert_eq!(completed as usize, n, "no fault here is permanent");
    assert_eq!(
        killed_with_work, 2,
        "each kill landed on a worker that had taken tasks"
    );
    assert!(hung > 0 && twice > 0 && late > 0, "the faults happened");
    assert!(
        dup > 0.0 && stale > 0.0 && timeouts > 0.0,
        "and the orchestrator saw them"
    );
    assert!(num(&f, "extra_executions") > 0.0, "{f:?}");
    assert_checker_passes(&out, &f, n);
}

const STORM_PIPELINE: &str = r#"
[pipeline]
name = "storm"
version = 1
[defaults.retry]
max_attempts = 6
initial_backoff = "200ms"
backoff_coefficient = 2.0
max_backoff = "2s"
jitter = 0.2
[defaults.timeouts]
schedule_to_start = "30s"
start_to_close = "10s"
heartbeat = "none"
[[steps]]
name = "flaky"
task_type = "storm_flaky"
"#;

/// A task type failing 100 % for 30 s, then recovering, under a
/// steady open-loop start rate. The retry budget keeps its dispatch rate
/// during the outage within 1.5x steady state; every workflow ends,
/// completed or failed after its max attempts.
#[test]
fn faults_retry_storm_budget_bounds_dispatch_rate_and_every_workflow_ends() {
    let outage = env_secs("NARRALYTICA_RETRY_OUTAGE_SECS", 30);
    let before = Duration::from_secs(6);
    let rate = 25.0;
    let pdir = tempfile::tempdir().unwrap();
    write_pipeline(pdir.path(), "storm", STORM_PIPELINE);
    let rec_dir = tempfile::tempdir().unwrap();
    // Not in the pipelines dir: every `*.toml` there is read as a pipeline.
    let cfg = rec_dir.path().join("orchestrator.toml");
    // The node-wide minimum is lowered from its default (10/s) so that the
    // bound ratio x rate + minimum = 0.2 x 25 + 1 stays under 0.5 x rate.
    std::fs::write(&cfg, "[retry_budget]\nmin_per_sec = 1.0\n").unwrap();
    let mut b = Bench::new(Some(pdir.path().to_path_buf()));
    let record = rec_dir.path().join("w.jsonl");
    let http = free_port();
    b.orch = Some(spawn_orch(
        &b,
        http,
        Some(pdir.path()),
        &["--config", cfg.to_str().unwrap()],
    ));
    wait_for("orchestrator ready", Duration::from_secs(30), || {
        http_get(http, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    let fail_for = format!("storm_flaky={}s@{}s", outage.as_secs(), before.as_secs());
    let t0 = Instant::now();
    b.start_worker(&[
        "--latency-ms",
        "5",
        "--fail-for",
        &fail_for,
        "--record",
        record.to_str().unwrap(),
    ]);
    // Offered until the type recovers, then 2 s more.
    let n = (rate * (before + outage + Duration::from_secs(2)).as_secs_f64()) as usize;
    let starter = open_loop(b.url(), "storm", "r", rate, n, Duration::from_secs(30));
    // Attempts sent of the type, sampled every 250 ms (time since the worker started).
    let mut series: Vec<(f64, f64)> = Vec::new();
    let end_of_outage = before + outage;
    while t0.elapsed() < end_of_outage + Duration::from_secs(2) {
        let m = metrics(http);
        series.push((
            t0.elapsed().as_secs_f64(),
            metric(
                &m,
                "narralytica_task_attempts_total",
                "task_type=\"storm_flaky\"",
            ),
        ));
        std::thread::sleep(Duration::from_millis(250));
    }
    let accepted = starter.join().unwrap();
    assert_eq!(accepted.len(), n);
    let drain = wait_for("every workflow ends", Duration::from_secs(120), || {
        terminal(http) >= n as f64
    });
    let m = metrics(http);
    let completed = metric(&m, "narralytica_workflows_completed_total", "");
    let failed = metric(&m, "narralytica_workflows_failed_total", "");
    let deferred = metric(
        &m,
        "narralytica_task_retries_deferred_total",
        "task_type=\"storm_flaky\"",
    );
    b.stop();

    // Rates between two sample times (attempts per second).
    let at = |t: f64| {
        series
            .iter()
            .min_by(|a, b| (a.0 - t).abs().total_cmp(&(b.0 - t).abs()))
            .unwrap()
    };
    let rate_between = |from: f64, to: f64| {
        let (a, b) = (at(from), at(to));
        (b.1 - a.1) / (b.0 - a.0)
    };
    let (o0, o1) = (before.as_secs_f64(), end_of_outage.as_secs_f64());
    let steady = rate_between(2.0, o0);
    let during = rate_between(o0, o1);
    let peak_5s = (0..)
        .map(|k| o0 + 5.0 * k as f64)
        .take_while(|s| s + 5.0 <= o1 + 0.01)
        .map(|s| rate_between(s, s + 5.0))
        .fold(0.0, f64::max);
    let peak_1s = (0..)
        .map(|k| o0 + k as f64)
        .take_while(|s| s + 1.0 <= o1 + 0.01)
        .map(|s| rate_between(s, s + 1.0))
        .fold(0.0, f64::max);

    // Every workflow in the record either succeeded once, or failed every
    // one of its max_attempts (6) attempts.
    let mut by_wf: HashMap<String, (bool, u32)> = HashMap::new();
    for line in std::fs::read_to_string(&record).unwrap().lines() {
        let Ok(r) = serde_json::from_str::<orchestrator::worker::ExecutionRecord>(line) else {
            continue;
        };
        let e = by_wf.entry(r.workflow_id).or_insert((false, 0));
        e.0 |= r.outcome == "succeeded";
        e.1 = e.1.max(r.attempt);
    }
    let failed_after_max = by_wf.values().filter(|(ok, a)| !ok && *a == 6).count();
    let neither: Vec<_> = by_wf
        .iter()
        .filter(|(_, (ok, a))| !ok && *a != 6)
        .map(|(id, _)| id.clone())
        .collect();

    // A retry the budget defers writes nothing until the budget lets it go,
    // which during the outage can take up to the outage itself: the stuck
    // rule's slack covers it (30 s outage + the default 5 s slack).
    let (out, f) = check(
        &b,
        Some(pdir.path()),
        &[record],
        &["--stuck-slack-ms", "35000"],
    );
    eprintln!(
        "retry_storm: rate={rate}/s workflows={n} outage_s={} steady_dispatch_per_s={steady:.1} \
         outage_dispatch_per_s={during:.1} ratio={:.2} peak_5s={peak_5s:.1} peak_1s={peak_1s:.1} \
         retries_deferred={deferred} completed={completed} failed_after_max_attempts={failed_after_max} \
         drain_after_recovery_ms={} samples={}",
        outage.as_secs(),
        during / steady,
        (drain + Duration::from_secs(2)).as_millis(),
        series.len(),
    );
    assert!(steady > rate * 0.7, "steady state reached: {steady:.1}/s");
    assert!(
        during <= 1.5 * steady,
        "dispatch rate during the outage {during:.1}/s > 1.5 x steady {steady:.1}/s"
    );
    assert!(deferred > 0.0, "the budget deferred retries");
    assert_eq!((completed + failed) as usize, n);
    assert!(
        neither.is_empty(),
        "neither completed nor failed after max attempts: {neither:?}"
    );
    assert_eq!(failed as usize, failed_after_max);
    assert_eq!(by_wf.len(), n);
    assert_checker_passes(&out, &f, n);
}
