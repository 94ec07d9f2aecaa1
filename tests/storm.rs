//! Issue 6: the system checker over real processes, its negative controls,
//! and a kill -9 storm.
//!
//! CI variant (~20 s of storm): `cargo test --release --test integration storm`.
//! Long variant: `NARRALYTICA_STORM_SECS=120 NARRALYTICA_STORM_WORKFLOWS=600
//! cargo test --release --test integration storm -- --nocapture`
//! (`NARRALYTICA_STORM_SEED` picks the kill schedule).

use std::io::BufRead;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::cli::{bin, fields, num, Bench};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `orchestrator run` on the bench's server and data dir, stderr watched:
/// the receiver gets the time of the `orchestrator running` line.
fn spawn_orchestrator(b: &Bench, plant: Option<&str>) -> (Child, mpsc::Receiver<Instant>) {
    let mut c = bin();
    c.args(["run", "--nats-url", &b.url(), "--data-dir"])
        .arg(b.dir.path());
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
                let _ = tx.send(Instant::now());
            }
        }
    });
    (child, rx)
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

fn checker(b: &Bench, records: &[std::path::PathBuf], extra: &[&str]) -> Output {
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

fn sigterm(child: &mut Child) {
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

    // Starts spread over the storm, so there is work in flight at each kill.
    let url = b.url();
    let accepted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicBool::new(false));
    let starter = {
        let (accepted, refused) = (accepted.clone(), refused.clone());
        let gap = storm.mul_f64(0.8) / n as u32;
        std::thread::spawn(move || {
            for i in 0..n {
                let t = Instant::now();
                let give_up = t + Duration::from_secs(30);
                if start_until_accepted(&url, &format!("s-{i}"), give_up) {
                    accepted.fetch_add(1, Ordering::Relaxed);
                } else {
                    refused.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(gap.saturating_sub(t.elapsed()));
            }
        })
    };

    // The storm: kill -9 every 2-4 s (seeded), restart at once.
    let began = Instant::now();
    let mut to_running: Vec<Duration> = Vec::new();
    let mut kills = 0;
    let mut spawned = Instant::now();
    loop {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait = Duration::from_millis(2000 + seed % 2001);
        if began.elapsed() + wait > storm {
            break;
        }
        std::thread::sleep(wait);
        if let Ok(t) = up.try_recv() {
            to_running.push(t - spawned);
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
    starter.join().unwrap();
    assert!(
        !refused.load(Ordering::Relaxed),
        "a start was never accepted"
    );

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
    if let Ok(t) = up.recv_timeout(Duration::from_secs(5)) {
        to_running.push(t - spawned);
    }
    std::thread::sleep(Duration::from_millis(500));
    b.stop();

    let mut out = checker(&b, &records, &["--expect-terminal"]);
    let mut f = fields(&String::from_utf8_lossy(&out.stdout), "check ");
    if num(&f, "events_missing") > 0.0 {
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
        "storm: workflows={n} accepted={} kills={kills} storm_s={:.1} drain_s={:.1} restart_to_running_ms min={:.0} p50={:.0} max={:.0} (of {}) extra_executions={}",
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
