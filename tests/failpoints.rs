//! Crash failpoints on the transition path, the engine's planted
//! bugs (negative controls) and the checker's `stuck` rule.
//!
//! `cargo test --release --test integration failpoints -- --nocapture`

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::cli::{bin, fields, num, wait_exit, Bench, Reaper};

/// `orchestrator run` with test-only env; stderr goes to `err`.
fn spawn(b: &Bench, pipelines: Option<&Path>, env: &[(&str, &str)], err: &Path) -> Reaper {
    spawn_with(b, pipelines, env, &[], err)
}

pub(crate) fn spawn_with(
    b: &Bench,
    pipelines: Option<&Path>,
    env: &[(&str, &str)],
    args: &[&str],
    err: &Path,
) -> Reaper {
    let mut c = bin();
    c.args(["run", "--nats-url", &b.url(), "--data-dir"])
        .arg(b.dir.path())
        .args(args);
    if let Some(p) = pipelines {
        c.arg("--pipelines").arg(p);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    Reaper(
        c.stdout(Stdio::null())
            .stderr(std::fs::File::create(err).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// Waits for a process armed with failpoint `name` to die by it: SIGABRT,
/// and the failpoint's own last words on stderr.
fn assert_crashed_by(child: &mut Child, name: &str, err: &Path) {
    let exit = wait_exit(child, Duration::from_secs(30));
    let text = std::fs::read_to_string(err).unwrap_or_default();
    let exit = exit.unwrap_or_else(|| panic!("{name}: the failpoint never fired; stderr: {text}"));
    assert_eq!(exit.signal(), Some(6), "{name}: {exit:?}; stderr: {text}");
    assert!(
        text.contains(&format!("failpoint {name}: crashing")),
        "{name}: {text}"
    );
}

fn start_no_wait(url: &str, pipeline: &str, id: &str, timeout_s: &str) -> Output {
    bin()
        .args(["start", pipeline, "--id", id, "--input", "{}"])
        .args(["--timeout", timeout_s, "--nats-url", url])
        .output()
        .unwrap()
}

/// Starts `ids` 8 at a time, each retried until accepted (idempotent by id).
pub(crate) fn start_all(url: &str, ids: &[String]) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(id) = ids.get(i) else { break };
                let give_up = Instant::now() + Duration::from_secs(60);
                while !start_no_wait(url, "video", id, "2").status.success() {
                    assert!(Instant::now() < give_up, "{id} never accepted");
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
    });
}

fn check(b: &Bench, args: &[&str], records: &[PathBuf]) -> (Option<i32>, HashMap<String, String>) {
    let mut c = bin();
    c.args(["verify", "--data-dir"])
        .arg(b.dir.path())
        .args(args);
    for r in records {
        c.arg("--record").arg(r);
    }
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{}", stdout.trim());
    (out.status.code(), fields(&stdout, "check "))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Executions per task id over every record file.
pub(crate) fn executions_per_task(records: &[PathBuf]) -> HashMap<String, u32> {
    let recs = orchestrator::verify::system::read_records(records).unwrap();
    let mut n: HashMap<String, u32> = HashMap::new();
    for r in recs {
        *n.entry(r.task_id).or_default() += 1;
    }
    n
}

/// The failpoints and the action each test round arms: crash at the
/// (N+1)-th hit, so the crash lands mid-run under load. The passivation
/// round runs with a small resident cap, so idle actors waiting on tasks
/// are evicted while the load runs.
const ROUNDS: &[(&str, &str, &[&str])] = &[
    ("journal.before_append", "40*off->return", &[]),
    ("journal.after_append", "40*off->return", &[]),
    ("dispatch.after_append", "40*off->return", &[]),
    ("snapshot.write", "4*off->return", &[]),
    ("result.received", "30*off->return", &[]),
    ("passivate", "5*off->return", &["--resident-max", "16"]),
    ("outbox.publish", "10*off->return", &[]),
];

#[test]
fn failpoints_crash_at_each_step_of_the_transition_path_and_recover() {
    let t0 = Instant::now();
    let mut b = Bench::new(None);
    let logs = tempfile::tempdir().unwrap();
    let records: Vec<PathBuf> = (0..2)
        .map(|i| logs.path().join(format!("w{i}.jsonl")))
        .collect();
    for r in &records {
        b.start_worker(&["--latency-ms", "20", "--record", r.to_str().unwrap()]);
    }
    let url = b.url();
    let mut all = Vec::new();
    for (k, (name, action, args)) in ROUNDS.iter().enumerate() {
        let round = Instant::now();
        let err = logs.path().join(format!("crash-{k}.err"));
        let fp = format!("{name}={action}");
        let mut orch = spawn_with(&b, None, &[("FAILPOINTS", &fp)], args, &err);
        let ids: Vec<String> = (0..20).map(|i| format!("fp{k}-{i}")).collect();
        // Starts go on while the node crashes; they are retried until the
        // restarted node accepts them.
        std::thread::scope(|s| {
            s.spawn(|| start_all(&url, &ids));
            assert_crashed_by(&mut orch, name, &err);
            let err2 = logs.path().join(format!("restart-{k}.err"));
            b.orch = Some(spawn(&b, None, &[], &err2));
        });
        for id in &ids {
            let out = b.start("video", id, true);
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("status=completed"),
                "{name}: {id}: {} {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Some(mut o) = b.orch.take() {
            o.kill().unwrap();
            let _ = o.wait();
        }
        eprintln!(
            "failpoint {name} ({action}): crashed, recovered, 20 completed in {:.1} s",
            round.elapsed().as_secs_f64()
        );
        all.extend(ids);
    }
    // A last clean start flushes what the final kill left in the outbox.
    let err = logs.path().join("last.err");
    b.orch = Some(spawn(&b, None, &[], &err));
    std::thread::sleep(Duration::from_secs(2));
    b.stop();

    let (code, f) = check(&b, &["--events-from", &url, "--expect-terminal"], &records);
    assert_eq!(code, Some(0), "{f:?}");
    assert_eq!(num(&f, "workflows") as usize, all.len());
    assert_eq!(num(&f, "terminal") as usize, all.len());
    // Each task was delivered to a worker at most twice: at most one
    // re-dispatch per in-flight task across a crash.
    let per_task = executions_per_task(&records);
    let redispatched = per_task.values().filter(|&&n| n == 2).count();
    let worst = per_task.iter().max_by_key(|(_, n)| **n).unwrap();
    eprintln!(
        "failpoints: tasks={} re-dispatched once={redispatched} max executions of a task={} took {:.1} s",
        per_task.len(),
        worst.1,
        t0.elapsed().as_secs_f64()
    );
    assert!(*worst.1 <= 2, "task {} ran {} times", worst.0, worst.1);
}

/// A pipeline with sub-second timeouts, so timeouts and stale answers
/// happen within a test.
fn quick_pipelines(dir: &Path) -> PathBuf {
    let p = dir.join("pipelines");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(
        p.join("quick.toml"),
        r#"[pipeline]
name = "quick"
version = 1

[defaults.retry]
max_attempts = 10
initial_backoff = "50ms"
backoff_coefficient = 2.0
max_backoff = "200ms"
jitter = 0.0

[defaults.timeouts]
schedule_to_start = "400ms"
start_to_close = "2s"
heartbeat = "1s"

[[steps]]
name = "a"
task_type = "qa"

[[steps]]
name = "b"
task_type = "qb"
needs = ["a"]
"#,
    )
    .unwrap();
    p
}

#[test]
fn failpoints_planted_engine_bugs_fail_the_checker() {
    let logs = tempfile::tempdir().unwrap();

    // (a) ack_before_sync: the 4th start is answered, then the node dies
    // before the append. The client holds an "accepted" that the journal
    // does not have.
    let mut b = Bench::new(None);
    let err = logs.path().join("ack.err");
    let mut orch = spawn(
        &b,
        None,
        &[
            ("NARRALYTICA_PLANT", "ack_before_sync"),
            ("FAILPOINTS", "journal.before_append=3*off->return(500)"),
        ],
        &err,
    );
    // One start at a time; the first is retried until the node listens.
    let mut accepted = Vec::new();
    for i in 0..4 {
        let id = format!("ack-{i}");
        let give_up = Instant::now() + Duration::from_secs(20);
        while !start_no_wait(&b.url(), "video", &id, "5").status.success() {
            assert!(Instant::now() < give_up, "{id} never accepted");
            std::thread::sleep(Duration::from_millis(100));
        }
        accepted.push(id);
    }
    assert_crashed_by(&mut orch, "journal.before_append", &err);
    assert_eq!(accepted.len(), 4, "{accepted:?}");
    // Recovery cannot bring it back.
    let err = logs.path().join("ack-restart.err");
    b.orch = Some(spawn(&b, None, &[], &err));
    std::thread::sleep(Duration::from_secs(1));
    b.stop();
    let file = logs.path().join("accepted.txt");
    std::fs::write(&file, accepted.join("\n")).unwrap();
    let (code, f) = check(&b, &["--accepted", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(1), "{f:?}");
    assert_eq!(num(&f, "accepted_lost"), 1.0, "ack-3: {f:?}");
    assert_eq!(num(&f, "workflows"), 3.0, "{f:?}");
    assert_eq!(num(&f, "violations"), 1.0, "only that rule: {f:?}");
    drop(b);

    // (b) dispatch_before_append: a task goes out before its transition is
    // durable; the node dies before the append; a worker runs it anyway.
    let mut b = Bench::new(None);
    let record = logs.path().join("dispatch.jsonl");
    b.start_worker(&["--latency-ms", "5", "--record", record.to_str().unwrap()]);
    let err = logs.path().join("dispatch.err");
    let mut orch = spawn(
        &b,
        None,
        &[
            ("NARRALYTICA_PLANT", "dispatch_before_append"),
            ("FAILPOINTS", "journal.before_append=6*off->return(500)"),
        ],
        &err,
    );
    let ids: Vec<String> = (0..3).map(|i| format!("early-{i}")).collect();
    let url = b.url();
    std::thread::scope(|s| {
        s.spawn(|| start_all(&url, &ids));
        assert_crashed_by(&mut orch, "journal.before_append", &err);
        let err = logs.path().join("dispatch-restart.err");
        b.orch = Some(spawn(&b, None, &[], &err));
    });
    std::thread::sleep(Duration::from_secs(2));
    b.stop();
    let records = vec![record];
    let (code, f) = check(&b, &[], &records);
    assert_eq!(code, Some(1), "{f:?}");
    assert!(num(&f, "unjournaled_executions") >= 1.0, "{f:?}");
    assert_eq!(num(&f, "double_accepts"), 0.0, "{f:?}");
    assert_eq!(num(&f, "journal_violations"), 0.0, "{f:?}");
    drop(b);

    // (c) skip_stale_check: a held-back answer of a timed-out attempt is
    // accepted. First the same load without the plant passes.
    let pipes = quick_pipelines(logs.path());
    let mut b = Bench::new(Some(pipes.clone()));
    let record = logs.path().join("stale.jsonl");
    b.start_worker(&[
        "--latency-ms",
        "5",
        "--stale-rate",
        "0.5",
        "--record",
        record.to_str().unwrap(),
    ]);
    let records = vec![record];
    let run_quick = |b: &mut Bench, prefix: &str, plant: &[(&str, &str)]| {
        let err = logs.path().join(format!("{prefix}.err"));
        b.orch = Some(spawn(b, Some(&pipes), plant, &err));
        let ids: Vec<String> = (0..10).map(|i| format!("{prefix}-{i}")).collect();
        for id in &ids {
            let out = b.start("quick", id, false);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for id in &ids {
            let out = b.start("quick", id, true);
            let s = String::from_utf8_lossy(&out.stdout);
            assert!(
                s.contains("status=completed") || s.contains("status=failed"),
                "{s}"
            );
        }
        if let Some(mut o) = b.orch.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &o.id().to_string()])
                .status();
            let _ = wait_exit(&mut o, Duration::from_secs(10));
        }
    };
    run_quick(&mut b, "fresh", &[]);
    let (code, f) = check(&b, &["--expect-terminal"], &records);
    assert_eq!(code, Some(0), "without the plant: {f:?}");
    run_quick(
        &mut b,
        "stale",
        &[("NARRALYTICA_PLANT", "skip_stale_check")],
    );
    let late = std::fs::read_to_string(&records[0])
        .unwrap()
        .matches("\"late\"")
        .count();
    let (code, f) = check(&b, &["--expect-terminal", "--details"], &records);
    assert!(late > 0, "the worker sent no late answer");
    assert_eq!(code, Some(1), "{f:?}");
    // The accepted stale success is of an attempt that had already timed
    // out: the journal rules see it (`succeeded but was not out`).
    assert!(num(&f, "journal_violations") >= 1.0, "{f:?}");
    eprintln!("skip_stale_check: late answers={late}");
}

#[test]
fn failpoints_stuck_rule_catches_a_node_that_stops_driving_its_workflows() {
    let logs = tempfile::tempdir().unwrap();
    let pipes = quick_pipelines(logs.path());
    let b = Bench::new(Some(pipes.clone()));
    let err = logs.path().join("stuck.err");
    let mut orch = spawn(&b, Some(&pipes), &[], &err);
    // No worker: attempts time out and are retried, so the node keeps
    // journaling transitions for these workflows.
    for i in 0..3 {
        let out = b.start("quick", &format!("q-{i}"), false);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::thread::sleep(Duration::from_millis(1500));
    orch.kill().unwrap();
    let _ = orch.wait();
    let killed = now_ms();
    // Bound: heartbeat 1 s + max backoff 0.2 s + slack 0.3 s.
    let until = killed.to_string();
    let (code, f) = check(
        &b,
        &["--observed-until-ms", &until, "--stuck-slack-ms", "300"],
        &[],
    );
    assert_eq!(code, Some(0), "driven until the kill: {f:?}");
    assert_eq!(num(&f, "stuck"), 0.0);
    // Two seconds later nothing has moved them.
    let until = (killed + 2_000).to_string();
    let (code, f) = check(
        &b,
        &["--observed-until-ms", &until, "--stuck-slack-ms", "300"],
        &[],
    );
    assert_eq!(code, Some(1), "{f:?}");
    assert_eq!(num(&f, "stuck"), 3.0, "{f:?}");
    assert_eq!(num(&f, "violations"), 3.0, "{f:?}");
}

/// The new rules on hand-written evidence: a clean workflow next to one per
/// breach.
#[test]
fn failpoints_checker_rules_on_hand_written_evidence() {
    use orchestrator::verify::system::{check_system, idle_bound_ms, SystemInputs};
    use orchestrator::worker::ExecutionRecord;
    use orchestrator::workflow::{Event, EventKind};

    let p = crate::support::video_v1_pipelines()
        .into_iter()
        .find(|p| p.name == "video")
        .unwrap();
    let bound = idle_bound_ms(&p).unwrap();
    assert_eq!(
        bound,
        60_000 + 10_000,
        "video: heartbeat 60 s + max backoff 10 s"
    );
    let slack = 5_000;
    let step0 = p.steps[0].name.clone();
    let started = |id: &str| crate::verify::started_as(&p, id);
    let tid = |id: &str| format!("{id}:{step0}:0:1");
    let dispatch = |id: &str| EventKind::TaskDispatched {
        step: 0,
        attempt: 1,
        task_id: tid(id).into(),
    };
    let cancelled = || EventKind::WorkflowCancelled { reason: "x".into() };
    let end = 1_000_000u64;
    let gap = bound + slack + 1;
    let cases: Vec<(&str, Vec<(u64, EventKind)>)> = vec![
        // Running, each gap within the bound, last event within it of the end.
        (
            "ok",
            vec![
                (end - 3 * bound, started("ok")),
                (end - 2 * bound, dispatch("ok")),
                (end - bound, EventKind::WorkflowPaused),
                (end - bound + 1, EventKind::WorkflowResumed),
            ],
        ),
        // Paused long ago: not stuck.
        (
            "paused",
            vec![(0, started("paused")), (1, EventKind::WorkflowPaused)],
        ),
        // Running, silent since long before the end.
        (
            "idle",
            vec![(end - gap, started("idle")), (end - gap, dispatch("idle"))],
        ),
        // Finished, but went silent mid-run for longer than the bound.
        (
            "gap",
            vec![
                (10, started("gap")),
                (10, dispatch("gap")),
                (10 + gap, cancelled()),
            ],
        ),
        // A task that ran before its dispatch was journaled.
        (
            "early",
            vec![
                (500, started("early")),
                (500, dispatch("early")),
                (600, cancelled()),
            ],
        ),
    ];
    let journals: Vec<(&str, Vec<Event>)> = cases
        .iter()
        .map(|(id, evs)| {
            let events = evs
                .iter()
                .cloned()
                .map(|(at_ms, kind)| Event { at_ms, kind })
                .collect();
            (*id, events)
        })
        .collect();
    let store = crate::support::store_with_journals(&p, &journals);
    let rec = |id: &str, at_ms: u64| ExecutionRecord {
        task_id: tid(id),
        idempotency_key: format!("{id}:{step0}:0"),
        workflow_id: id.into(),
        step: step0.clone(),
        attempt: 1,
        outcome: "hung".into(),
        answers: 0,
        worker: "w".into(),
        at_ms,
        ended_at_ms: at_ms,
    };
    let records = vec![
        rec("ok", end - 2 * bound + 5),
        rec("early", 450),
        rec("nowhere", 10),
    ];
    let inputs = SystemInputs {
        records: Some(records),
        accepted: Some(vec!["ok".into(), "lost".into()]),
        observed_until_ms: Some(end),
        ..SystemInputs::default()
    };
    let r = check_system(&store, &inputs).unwrap();
    assert_eq!(r.stuck, 2, "idle and gap: {r} {:?}", r.details);
    assert_eq!(r.unjournaled_executions, 2, "early and nowhere: {r}");
    assert_eq!(r.accepted_lost, 1, "{r}");
    for id in ["idle", "gap", "early", "nowhere", "lost"] {
        assert!(
            r.details
                .iter()
                .any(|d| d.starts_with(&format!("workflow {id}:"))),
            "{id}: {:?}",
            r.details
        );
    }
    for id in ["ok", "paused"] {
        assert!(
            !r.details
                .iter()
                .any(|d| d.starts_with(&format!("workflow {id}:"))),
            "{id}: {:?}",
            r.details
        );
    }
    // Without a given end, the run ends at its latest event ("ok"'s
    // resume, `bound` before `end`): "idle" is within the bound of that.
    let r = check_system(&store, &SystemInputs::default()).unwrap();
    assert_eq!(r.stuck, 1, "gap only: {r} {:?}", r.details);
}
