//! A kill -9 storm over the shaped pipelines of `config/examples`: the
//! video pipeline's map over segments and its conditional `translate`, and
//! the review pipeline's child workflow and wait for a signal. Real
//! processes (nats-server, `orchestrator run`, two simulated workers that
//! record what they executed); the system checker then rules on the
//! journals, the event stream and the workers' records.
//!
//! Long variant: `NARRALYTICA_STORM_SECS=120 NARRALYTICA_STORM_WORKFLOWS=300
//! cargo test --release --test main storm_shapes -- --nocapture`.

use std::process::Output;
use std::time::{Duration, Instant};

use crate::cli::{bin, fields, num, Bench};
use crate::storm::{checker, env_u64, next_kill_wait, sigterm, spawn_orchestrator};

/// Elements of the one large map, which the first kill lands in.
const LARGE_MAP: u32 = 1_000;

fn examples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples")
}

/// The input of video workflow `i`: 0 to 5 segments (an empty map
/// included); every other one detected in French with English as the
/// target, so `translate` runs for half and is skipped for the rest.
fn video_input(id: &str, i: usize) -> String {
    let language = if i.is_multiple_of(2) { "fr" } else { "en" };
    format!(
        r#"{{"video_id":"{id}","segments":{},"language":"{language}","target_language":"en"}}"#,
        i % 6
    )
}

/// `orchestrator start` (no wait), retried until the service accepts it.
fn start_until_accepted(url: &str, pipeline: &str, id: &str, input: &str) -> Output {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let out = bin()
            .args(["start", pipeline, "--id", id, "--input", input])
            .args(["--timeout", "5", "--nats-url", url])
            .output()
            .unwrap();
        if out.status.success() || Instant::now() > give_up {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The approval of review workflow `id`, always with the same signal id,
/// retried until the service answers it (a resend changes nothing).
fn approve_until_accepted(url: &str, id: &str) -> Output {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let out = bin()
            .args(["signal", id, "approved", "--payload", r#"{"by":"storm"}"#])
            .args(["--id", &format!("approval-{id}"), "--nats-url", url])
            .output()
            .unwrap();
        if out.status.success() || Instant::now() > give_up {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Elements of `id`'s map that succeeded, as `describe` prints them.
fn map_succeeded(url: &str, id: &str) -> u64 {
    let out = bin()
        .args(["describe", id, "--nats-url", url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|kv| kv.strip_prefix("succeeded="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn storm_over_maps_conditions_signals_and_children_loses_nothing() {
    let storm = Duration::from_secs(env_u64("NARRALYTICA_STORM_SECS", 16));
    let n = env_u64("NARRALYTICA_STORM_WORKFLOWS", 48) as usize;
    let mut seed = env_u64("NARRALYTICA_STORM_SEED", 11) | 1;
    let mut b = Bench::new(Some(examples()));
    let rec_dir = tempfile::tempdir().unwrap();
    let records: Vec<_> = (0..2)
        .map(|i| rec_dir.path().join(format!("w{i}.jsonl")))
        .collect();
    let (orch, _first_start) = spawn_orchestrator(&b, None);
    b.orch = Some(orch);
    for r in &records {
        b.start_worker(&["--latency-ms", "10", "--record", r.to_str().unwrap()]);
    }
    let url = b.url();

    // The first kill lands in the middle of a 1,000-element map.
    let big = format!(r#"{{"video_id":"big","segments":{LARGE_MAP}}}"#);
    assert_ok(
        "start big",
        &start_until_accepted(&url, "video", "big", &big),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut done_at_kill = map_succeeded(&url, "big");
    while done_at_kill < 50 {
        assert!(Instant::now() < deadline, "the large map never got going");
        std::thread::sleep(Duration::from_millis(20));
        done_at_kill = map_succeeded(&url, "big");
    }
    let mut o = b.orch.take().unwrap();
    o.kill().unwrap(); // SIGKILL
    let _ = o.wait();
    let mut kills = 1;
    let (o, mut up) = spawn_orchestrator(&b, None);
    b.orch = Some(o);

    // The storm: bursts of starts (videos and reviews), approvals of the
    // reviews of the burst before (so some arrive before their wait step
    // and are kept, some after), then kill -9 and restart at once.
    let bursts = (storm.as_secs() / 3).max(1) as usize;
    let burst = n.div_ceil(bursts);
    let mut started = 0usize;
    let mut approved = 0usize;
    let mut resumed = 0u64;
    let began = Instant::now();
    let start_range = |from: usize, to: usize| {
        for i in from..to {
            let out = if i % 3 == 2 {
                let id = format!("r-{i}");
                start_until_accepted(&url, "review", &id, &video_input(&id, i))
            } else {
                let id = format!("v-{i}");
                start_until_accepted(&url, "video", &id, &video_input(&id, i))
            };
            assert_ok("start", &out);
        }
    };
    let approve_range = |from: usize, to: usize| {
        for i in (from..to).filter(|i| i % 3 == 2) {
            assert_ok("approve", &approve_until_accepted(&url, &format!("r-{i}")));
        }
    };
    loop {
        let wait = next_kill_wait(&mut seed);
        if began.elapsed() + wait > storm {
            break;
        }
        std::thread::sleep(wait);
        let to = (started + burst).min(n);
        approve_range(approved, started);
        approved = started;
        start_range(started, to);
        started = to;
        if let Ok((_, r)) = up.try_recv() {
            resumed += r;
        }
        let mut o = b.orch.take().unwrap();
        o.kill().unwrap(); // SIGKILL
        let _ = o.wait();
        kills += 1;
        let (o, rx) = spawn_orchestrator(&b, None);
        b.orch = Some(o);
        up = rx;
    }
    start_range(started, n);
    approve_range(approved, n);

    // Drain: every workflow completes (a review once its child did and
    // its approval was taken).
    let mut ids: Vec<(&str, String)> = vec![("video", "big".to_string())];
    for i in 0..n {
        ids.push(if i % 3 == 2 {
            ("review", format!("r-{i}"))
        } else {
            ("video", format!("v-{i}"))
        });
    }
    for (pipeline, id) in &ids {
        let out = b.start_with(pipeline, id, "{}", true);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("status=completed"),
            "{id}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if let Ok((_, r)) = up.recv_timeout(Duration::from_secs(5)) {
        resumed += r;
    }
    std::thread::sleep(Duration::from_millis(500));
    b.stop();

    let mut out = checker(&b, &records, &["--expect-terminal"]);
    let mut f = fields(&String::from_utf8_lossy(&out.stdout), "check ");
    if num(&f, "events_missing") > 0.0 {
        // Rows a graceful stop left in the outbox are published by the
        // next start: give it one, then check again.
        let (mut o, _rx) = spawn_orchestrator(&b, None);
        std::thread::sleep(Duration::from_secs(2));
        sigterm(&mut o);
        out = checker(&b, &records, &["--expect-terminal"]);
        f = fields(&String::from_utf8_lossy(&out.stdout), "check ");
    }
    eprintln!(
        "storm_shapes: workflows={} kills={kills} large_map_done_at_first_kill={done_at_kill} resumed_in_flight={resumed}",
        ids.len()
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
    assert_ok("the system checker", &out);
    assert!(kills as u64 >= storm.as_secs() / 4, "kills={kills}");
    assert!(
        done_at_kill < u64::from(LARGE_MAP),
        "the first kill must hit the large map in progress"
    );
    // Each review ran one child: the checker saw the parents and children.
    let reviews = (0..n).filter(|i| i % 3 == 2).count();
    assert_eq!(num(&f, "workflows") as usize, ids.len() + reviews);
    assert_eq!(num(&f, "terminal") as usize, ids.len() + reviews);
    assert_eq!(num(&f, "violations"), 0.0);
}
