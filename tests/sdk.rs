//! The Python worker SDK (sdk/python) against a real `orchestrator run`
//! and nats-server, and the conformance kit (`orchestrator worker-check`)
//! against the SDK's example worker and a deliberately broken one.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::{bin, fields, Bench, Reaper};

/// nats-py, which the SDK runs on (`.ci/setup.sh` installs it).
fn ensure_nats_py() {
    let ok = Command::new("python3")
        .args(["-c", "import nats"])
        .status()
        .unwrap()
        .success();
    if !ok {
        let installed = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "nats-py==2.16.0"])
            .status()
            .unwrap()
            .success();
        assert!(
            installed,
            "the SDK needs nats-py; `pip install nats-py==2.16.0` failed"
        );
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `examples/video_workers.py`: every video task type in one SDK process,
/// its log on stderr written to `log`.
fn sdk_workers(b: &Bench, log: &Path) -> Reaper {
    ensure_nats_py();
    Reaper(
        Command::new("python3")
            .arg(repo().join("examples/video_workers.py"))
            .args(["--nats-url", &b.url(), "--concurrency", "4"])
            .env("PYTHONPATH", repo().join("sdk/python"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// A copy of the video pipeline whose steps time out after `heartbeat`
/// without a heartbeat, so a killed worker's attempt is retried quickly.
fn video_with_heartbeat(heartbeat: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("config/pipelines/video.toml")).unwrap();
    let text = text.replace(
        "heartbeat = \"60s\"",
        &format!("heartbeat = \"{heartbeat}\""),
    );
    assert!(
        text.contains(heartbeat),
        "the video pipeline's heartbeat line moved"
    );
    std::fs::write(dir.path().join("video.toml"), text).unwrap();
    dir
}

fn describe(b: &Bench, id: &str) -> String {
    let out = bin()
        .args(["describe", id, "--nats-url", &b.url()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `step <name>` line of `describe`, as `key=value` pairs.
fn step(b: &Bench, id: &str, name: &str) -> std::collections::HashMap<String, String> {
    let text = describe(b, id);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("step {name} ")))
        .map(|l| l.trim_start().to_string())
        .unwrap_or_else(|| format!("step {name}"));
    fields(&line, "step ")
}

/// Waits until `step` of `id` shows a start time while running: its
/// worker's first heartbeat arrived.
fn wait_started(b: &Bench, id: &str, name: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let s = step(b, id, name);
        if s.get("status").map(String::as_str) == Some("dispatched")
            && s.get("started").is_some_and(|t| t != "-")
        {
            return;
        }
        assert!(Instant::now() < until, "{name} never showed started: {s:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_line(b: &Bench, id: &str, input: &str) -> String {
    let out = b.start_with("video", id, input, true);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_video_pipeline_completes_with_sdk_workers() {
    let mut b = Bench::new(None);
    b.start_orchestrator();
    let log = b.dir.path().join("sdk.log");
    b.workers.push(sdk_workers(&b, &log));
    for i in 0..3 {
        let id = format!("sdk-{i}");
        assert_eq!(
            start_line(&b, &id, r#"{"video_id":"v"}"#),
            format!("workflow id={id} status=completed created=true")
        );
    }
    // Every step ran once, by the SDK worker (its name is `video-<host>-<pid>`).
    let embed = step(&b, "sdk-0", "embed");
    assert_eq!(embed["attempts"], "1");
    assert!(embed["worker"].starts_with("video-"), "{embed:?}");
    b.stop();
    let v = b.verify();
    assert_eq!(v["violations"], "0");
}

#[test]
fn an_sdk_worker_killed_mid_task_is_replaced_and_the_workflow_completes() {
    let pipelines = video_with_heartbeat("1s");
    let mut b = Bench::new(Some(pipelines.path().to_path_buf()));
    b.start_orchestrator();
    let logs = tempfile::tempdir().unwrap();
    let mut first = sdk_workers(&b, &logs.path().join("a.log"));
    let out = b.start_with(
        "video",
        "kill-1",
        r#"{"work_ms":{"transcribe":3000}}"#,
        false,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_started(&b, "kill-1", "transcribe");
    first.kill().unwrap(); // SIGKILL mid-task
    let _ = first.wait();
    b.workers.push(sdk_workers(&b, &logs.path().join("b.log")));
    assert_eq!(
        start_line(&b, "kill-1", "{}"),
        "workflow id=kill-1 status=completed created=false"
    );
    let t = step(&b, "kill-1", "transcribe");
    assert_eq!(
        t["attempts"], "2",
        "the killed attempt timed out and ran again: {t:?}"
    );
}

#[test]
fn a_cancel_reaches_the_running_sdk_task_with_the_operators_reason() {
    let mut b = Bench::new(None);
    b.start_orchestrator();
    let log = b.dir.path().join("sdk.log");
    b.workers.push(sdk_workers(&b, &log));
    let out = b.start_with(
        "video",
        "cancel-1",
        r#"{"work_ms":{"transcribe":30000}}"#,
        false,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_started(&b, "cancel-1", "transcribe");
    let out = bin()
        .args([
            "cancel",
            "cancel-1",
            "--reason",
            "wrong upload",
            "--nats-url",
            &b.url(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let until = Instant::now() + Duration::from_secs(10);
    let heard = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("task cancelled")) {
            break l.to_string();
        }
        assert!(
            Instant::now() < until,
            "the worker never heard the cancel: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        heard.contains("task_id=cancel-1:transcribe:0:1") && heard.ends_with("reason=wrong upload"),
        "{heard}"
    );
    // The worker is free again at once: the next workflow completes.
    assert_eq!(
        start_line(&b, "after-cancel", "{}"),
        "workflow id=after-cancel status=completed created=true"
    );
}

#[test]
fn a_retryable_then_a_fatal_failure_fail_the_workflow_on_the_second_attempt() {
    let mut b = Bench::new(None);
    b.start_orchestrator();
    let log = b.dir.path().join("sdk.log");
    b.workers.push(sdk_workers(&b, &log));
    assert_eq!(
        start_line(
            &b,
            "fail-1",
            r#"{"fail":{"transcribe":["retryable","fatal"]}}"#
        ),
        "workflow id=fail-1 status=failed created=true"
    );
    let t = step(&b, "fail-1", "transcribe");
    assert_eq!(
        (t["status"].as_str(), t["attempts"].as_str()),
        ("failed", "2"),
        "{t:?}"
    );
    assert_eq!(step(&b, "fail-1", "segment")["status"], "pending");
}

/// `orchestrator worker-check` with its own nats-server, spawning `worker`.
fn worker_check(worker: &str) -> (bool, String) {
    ensure_nats_py();
    let server = crate::support::nats::NatsServer::start();
    let out = bin()
        .args([
            "worker-check",
            "--task-type",
            "transcribe",
            "--nats-url",
            &server.url(),
            "--heartbeat-timeout-ms",
            "1000",
            "--result-timeout-ms",
            "3000",
            "--worker-cmd",
            worker,
        ])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_sdk_example_worker_passes_the_conformance_kit() {
    let (ok, out) =
        worker_check("PYTHONPATH=sdk/python exec python3 examples/transcribe_worker.py");
    assert!(ok, "{out}");
    for rule in orchestrator::workercheck::RULES {
        assert!(
            out.lines()
                .any(|l| l == format!("PASS {rule}") || l.starts_with(&format!("PASS {rule}:"))),
            "{rule}: {out}"
        );
    }
    assert!(out.contains("passed=10 failed=0 skipped=0"), "{out}");
}

#[test]
fn a_broken_worker_fails_the_rules_it_breaks() {
    let (ok, out) = worker_check("exec python3 sdk/python/tests/broken_worker.py transcribe");
    assert!(!ok, "{out}");
    let verdict = |rule: &str| {
        out.lines()
            .find(|l| l.split([' ', ':']).nth(1) == Some(rule))
            .map(|l| l.split(' ').next().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    for rule in [
        "consumer_settings",
        "result_shape",
        "task_acked",
        "idempotent_redelivery",
    ] {
        assert_eq!(verdict(rule), "PASS", "{rule}: {out}");
    }
    for rule in [
        "trace_propagated",
        "heartbeats_on_time",
        "cancel_honoured",
        "retryable_vs_fatal",
        "other_version_refused",
        "drain_on_sigterm",
    ] {
        assert_eq!(verdict(rule), "FAIL", "{rule}: {out}");
    }
}
