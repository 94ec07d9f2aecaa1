//! The system checker over real processes, its negative controls,
//! and a kill -9 storm.
//!
//! CI variant (~20 s of storm): `cargo test --release --test integration storm`.
//! Long variant: `NARRALYTICA_STORM_SECS=120 NARRALYTICA_STORM_WORKFLOWS=600
//! cargo test --release --test integration storm -- --nocapture`
//! (`NARRALYTICA_STORM_SEED` picks the kill schedule).

use std::io::BufRead;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cli::{bin, fields, num, Bench, Reaper};

pub(crate) fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `orchestrator run` on the bench's server, data dir and pipelines,
/// stderr watched: the receiver gets the time of the `orchestrator
/// running` line and the number of workflows it resumed.
pub(crate) fn spawn_orchestrator(
    b: &Bench,
    plant: Option<&str>,
) -> (Reaper, mpsc::Receiver<(Instant, u64)>) {
    let mut c = bin();
    c.args(["run", "--nats-url", &b.url(), "--data-dir"])
        .arg(b.dir.path());
    if let Some(p) = &b.pipelines {
        c.arg("--pipelines").arg(p);
    }
    if let Some(p) = plant {
        c.env("NARRALYTICA_PLANT", p);
    }
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("orchestrator running") {
                // `resumed=N`: workflows that were in flight at the kill.
                let resumed = line
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix("resumed="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let _ = tx.send((Instant::now(), resumed));
            }
        }
    });
    (Reaper(child), rx)
}

/// `orchestrator start` (no wait), retried until the service accepts it
/// (a start is idempotent by id: a retry after a lost reply is harmless).
fn start_until_accepted(url: &str, id: &str, give_up: Instant) -> bool {
    loop {
        let out = bin()
            .args([
                "start",
                "video",
                "--id",
                id,
                "--input",
                "{}",
                "--timeout",
                "5",
                "--nats-url",
                url,
            ])
            .output()
            .unwrap();
        if out.status.success() {
            return true;
        }
        if Instant::now() > give_up {
            eprintln!("start {id}: {}", String::from_utf8_lossy(&out.stderr));
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The wait before the storm's next kill: 2-4 s, drawn from `seed`
/// (xorshift), so a seed replays the same kill schedule.
pub(crate) fn next_kill_wait(seed: &mut u64) -> Duration {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    Duration::from_millis(2000 + *seed % 2001)
}

pub(crate) fn checker(b: &Bench, records: &[std::path::PathBuf], extra: &[&str]) -> Output {
    let mut c = bin();
    c.args(["verify", "--data-dir"])
        .arg(b.dir.path())
        .args(["--events-from", &b.url()])
        .args(extra);
    for r in records {
        c.arg("--record").arg(r);
    }
    c.output().unwrap()
}

pub(crate) fn sigterm(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = crate::cli::wait_exit(child, Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn storm_kill_9_every_few_seconds_loses_nothing_and_accepts_no_step_twice() {
    let storm = Duration::from_secs(env_u64("NARRALYTICA_STORM_SECS", 20));
    let n = env_u64("NARRALYTICA_STORM_WORKFLOWS", 100) as usize;
    let mut seed = env_u64("NARRALYTICA_STORM_SEED", 6) | 1;
    let mut b = Bench::new(None);
    let rec_dir = tempfile::tempdir().unwrap();
    let records: Vec<_> = (0..2)
        .map(|i| rec_dir.path().join(format!("w{i}.jsonl")))
        .collect();
    let (orch, mut up) = spawn_orchestrator(&b, None);
    b.orch = Some(orch);
    for r in &records {
        b.start_worker(&["--latency-ms", "20", "--record", r.to_str().unwrap()]);
    }

    // The storm: kill -9 every 2-4 s (seeded), restart at once. Just before
    // each kill a burst of starts (8 at a time) puts work in flight, so the
    // kill lands mid-run; what the storm leaves over is started after it.
    let url = b.url();
    let bursts = (storm.as_secs() / 3).max(1) as usize;
    let burst = n.div_ceil(bursts);
    let mut next = 0usize;
    let accepted = AtomicUsize::new(0);
    let start_burst = |from: usize, to: usize| {
        let ids = AtomicUsize::new(from);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| loop {
                    let i = ids.fetch_add(1, Ordering::Relaxed);
                    if i >= to {
                        break;
                    }
                    let give_up = Instant::now() + Duration::from_secs(30);
                    if start_until_accepted(&url, &format!("s-{i}"), give_up) {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
    };
    let began = Instant::now();
    let mut to_running: Vec<Duration> = Vec::new();
    let mut kills = 0;
    let mut resumed = 0u64;
    let mut spawned = Instant::now();
    loop {
        let wait = next_kill_wait(&mut seed);
        if began.elapsed() + wait > storm {
            break;
        }
        std::thread::sleep(wait);
        let to = (next + burst).min(n);
        start_burst(next, to);
        next = to;
        if let Ok((t, r)) = up.try_recv() {
            to_running.push(t - spawned);
            resumed += r;
        }
        let mut o = b.orch.take().unwrap();
        o.kill().unwrap(); // SIGKILL
        let _ = o.wait();
        kills += 1;
        spawned = Instant::now();
        let (o, rx) = spawn_orchestrator(&b, None);
        b.orch = Some(o);
        up = rx;
    }
    let storm_took = began.elapsed();
    start_burst(next, n);

    // Drain: every workflow reaches a terminal status.
    let drain = Instant::now();
    for i in 0..n {
        let out = b.start("video", &format!("s-{i}"), true);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("status=completed"),
            "s-{i}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let drain_took = drain.elapsed();
    if let Ok((t, r)) = up.recv_timeout(Duration::from_secs(5)) {
        to_running.push(t - spawned);
        resumed += r;
    }
    std::thread::sleep(Duration::from_millis(500));
    b.stop();

    let mut out = checker(&b, &records, &["--expect-terminal"]);
    let mut f = fields(&String::from_utf8_lossy(&out.stdout), "check ");
    let flushed = num(&f, "events_missing") > 0.0;
    if flushed {
        // Rows a graceful stop left in the outbox are published by the next
        // start (the outbox's guarantee): give it one, then check again.
        let (mut o, _rx) = spawn_orchestrator(&b, None);
        std::thread::sleep(Duration::from_secs(2));
        sigterm(&mut o);
        out = checker(&b, &records, &["--expect-terminal"]);
        f = fields(&String::from_utf8_lossy(&out.stdout), "check ");
    }
    to_running.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "storm: workflows={n} accepted={} kills={kills} storm_s={:.1} drain_s={:.1} resumed_in_flight={resumed} restart_to_running_ms min={:.0} p50={:.0} max={:.0} (of {}) outbox_flush_restart={flushed} extra_executions={}",
        accepted.load(Ordering::Relaxed),
        storm_took.as_secs_f64(),
        drain_took.as_secs_f64(),
        to_running.first().map_or(0.0, ms),
        to_running.get(to_running.len() / 2).map_or(0.0, ms),
        to_running.last().map_or(0.0, ms),
        to_running.len(),
        f["extra_executions"],
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(kills as u64 >= storm.as_secs() / 4, "kills={kills}");
    assert!(resumed > 0, "no kill landed mid-run");
    assert_eq!(accepted.load(Ordering::Relaxed), n);
    assert_eq!(num(&f, "workflows") as usize, n);
    assert_eq!(num(&f, "terminal") as usize, n);
    assert_eq!(num(&f, "violations"), 0.0);
}

#[test]
fn storm_checker_catches_planted_faults() {
    let mut b = Bench::new(None);
    let rec_dir = tempfile::tempdir().unwrap();
    let record = rec_dir.path().join("w.jsonl");
    // (a) An orchestrator that drops every lifecycle event.
    let (orch, _up) = spawn_orchestrator(&b, Some("drop_events"));
    b.orch = Some(orch);
    b.start_worker(&["--latency-ms", "20", "--record", record.to_str().unwrap()]);
    for i in 0..5 {
        let out = b.start("video", &format!("p-{i}"), true);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("status=completed"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    b.stop();
    let records = vec![record.clone()];
    let out = checker(&b, &records, &["--expect-terminal"]);
    let f = fields(&String::from_utf8_lossy(&out.stdout), "check ");
    assert_eq!(out.status.code(), Some(1), "{f:?}");
    assert!(num(&f, "events_missing") > 0.0, "{f:?}");
    assert_eq!(num(&f, "terminal"), 5.0);
    assert_eq!(num(&f, "unrecorded_accepts"), 0.0, "{f:?}");
    assert_eq!(num(&f, "double_accepts"), 0.0, "{f:?}");

    // (c) Evidence planted: the workers' records lose their successes, so
    // every accepted success is one no worker answered.
    let kept: String = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("\"succeeded\""))
        .map(|l| format!("{l}\n"))
        .collect();
    let doctored = rec_dir.path().join("doctored.jsonl");
    std::fs::write(&doctored, kept).unwrap();
    let out = bin()
        .args(["verify", "--data-dir"])
        .arg(b.dir.path())
        .arg("--record")
        .arg(&doctored)
        .output()
        .unwrap();
    let f = fields(&String::from_utf8_lossy(&out.stdout), "check ");
    assert_eq!(out.status.code(), Some(1), "{f:?}");
    assert!(num(&f, "unrecorded_accepts") > 0.0, "{f:?}");
    assert_eq!(
        num(&f, "events_missing"),
        0.0,
        "events are not checked here"
    );

    // The same records, untouched, pass (so (c) is the doctoring, not noise).
    let out = bin()
        .args(["verify", "--data-dir"])
        .arg(b.dir.path())
        .arg("--record")
        .arg(&record)
        .arg("--expect-terminal")
        .output()
        .unwrap();
    let f = fields(&String::from_utf8_lossy(&out.stdout), "check ");
    assert!(out.status.success(), "{f:?}");

    // Bad flags and unknown plants: clear errors, exit 2 / refusal.
    let out = bin()
        .args(["verify", "--data-dir"])
        .arg(b.dir.path())
        .args(["--record", "/nonexistent/w.jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/w.jsonl"));
    let out = bin()
        .args(["verify", "--data-dir"])
        .arg(b.dir.path())
        .args(["--events-prefix", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let (mut o, _up) = spawn_orchestrator(&b, Some("no_such_plant"));
    let exit = crate::cli::wait_exit(&mut o, Duration::from_secs(10)).expect("refused at once");
    assert!(!exit.success());
}

/// Each rule of the system checker, on hand-written evidence: one workflow
/// per breach, next to a clean one that must produce none.
#[test]
fn storm_checker_rules_on_hand_written_evidence() {
    use orchestrator::events::{EventMessage, LifecycleEvent};
    use orchestrator::verify::system::{check_system, SystemInputs};
    use orchestrator::worker::ExecutionRecord;
    use orchestrator::workflow::{Event, EventKind};

    let p = crate::support::video_v1_pipelines()
        .into_iter()
        .find(|p| p.name == "video")
        .unwrap();
    let step0 = p.steps[0].name.clone();
    let started = |id: &str| crate::verify::started_as(&p, id);
    let dispatch = |id: &str, attempt: u32| EventKind::TaskDispatched {
        step: 0,
        attempt,
        task_id: format!("{id}:{step0}:0:{attempt}").into(),
    };
    let success = |attempt: u32| EventKind::TaskSucceeded {
        step: 0,
        attempt,
        output: "{}".into(),
        worker: None,
        started_at_ms: None,
    };
    let cancelled = || EventKind::WorkflowCancelled { reason: "x".into() };
    let cases: Vec<(&str, Vec<EventKind>)> = vec![
        (
            "ok",
            vec![started("ok"), dispatch("ok", 1), success(1), cancelled()],
        ),
        (
            "dbl",
            vec![started("dbl"), dispatch("dbl", 1), success(1), success(1)],
        ),
        (
            "unrec",
            vec![
                started("unrec"),
                dispatch("unrec", 1),
                success(1),
                cancelled(),
            ],
        ),
        ("miss", vec![started("miss"), cancelled()]),
        (
            "order",
            vec![started("order"), dispatch("order", 1), cancelled()],
        ),
        ("open", vec![started("open"), dispatch("open", 1)]),
    ];
    let journals: Vec<(&str, Vec<Event>)> = cases
        .iter()
        .map(|(id, kinds)| {
            let events = kinds
                .iter()
                .cloned()
                .map(|kind| Event { at_ms: 1, kind })
                .collect();
            (*id, events)
        })
        .collect();
    let store = crate::support::store_with_journals(&p, &journals);

    let lifecycle = |id: &str, seq: u64| LifecycleEvent {
        id: format!("{id}:{seq}"),
        seq,
        at: 1,
        event: "x".into(),
        generation: 0,
        step: None,
        attempt: None,
        worker: None,
        error: None,
        output: None,
        elements: None,
        failed: None,
        signal: None,
        signal_id: None,
        due_at: None,
        child: None,
    };
    let msg = |id: &str, seqs: &[u64]| EventMessage {
        v: 1,
        workflow_id: id.into(),
        pipeline: "video".into(),
        status: "running".into(),
        events: seqs.iter().map(|&s| lifecycle(id, s)).collect(),
    };
    let events = vec![
        msg("ok", &[1, 2]),
        msg("ok", &[2, 3]), // a re-sent message: deduplicated by id
        msg("ok", &[4]),
        msg("dbl", &[1, 2, 3, 4]),
        msg("unrec", &[1, 2, 3, 4]),
        msg("miss", &[1]),
        msg("order", &[1, 3]),
        msg("order", &[2]),
        msg("open", &[1, 2]),
    ];
    let rec = |id: &str, attempt: u32| ExecutionRecord {
        task_id: format!("{id}:{step0}:0:{attempt}"),
        idempotency_key: format!("{id}:{step0}:0"),
        workflow_id: id.into(),
        step: step0.clone(),
        attempt,
        outcome: "succeeded".into(),
        answers: 1,
        worker: "w".into(),
        at_ms: 1,
        ended_at_ms: 1,
    };
    // "ok"'s task was also delivered a second time (unaccepted execution).
    let records = vec![rec("ok", 1), rec("ok", 1), rec("dbl", 1)];
    let inputs = SystemInputs {
        expect_terminal: true,
        events: Some(events),
        records: Some(records),
        ..SystemInputs::default()
    };
    let r = check_system(&store, &inputs).unwrap();
    assert_eq!(r.workflows, 6);
    assert_eq!(r.terminal, 4, "{r}");
    assert_eq!(r.not_terminal, 2, "open and dbl: {r}");
    assert_eq!(r.double_accepts, 1, "{r}");
    assert_eq!(r.unrecorded_accepts, 1, "{r}");
    assert_eq!(r.events_missing, 1, "{r}");
    assert_eq!(r.events_out_of_order, 1, "{r}");
    assert_eq!(r.extra_executions, 1, "{r}");
    assert!(
        r.journal_violations >= 1,
        "dbl breaks the journal rules: {r}"
    );
    for id in ["dbl", "unrec", "miss", "order", "open"] {
        assert!(
            r.details
                .iter()
                .any(|d| d.starts_with(&format!("workflow {id}"))),
            "{id}: {:?}",
            r.details
        );
    }
    assert!(
        !r.details.iter().any(|d| d.starts_with("workflow ok")),
        "{:?}",
        r.details
    );
    assert!(r.violations() > 0);
}
