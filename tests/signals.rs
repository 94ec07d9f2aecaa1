//! Wait steps through real processes: `orchestrator run` and `worker
//! --simulate` over NATS, signals sent with `orchestrator signal`. A signal
//! sent before its step waits is kept and consumed when the step starts
//! waiting; a resent id is a duplicate; unknown workflows, unknown names
//! and terminal workflows get their own answer and exit status; timeouts
//! fail or skip the step as the pipeline says; a wait survives a SIGKILL of
//! the orchestrator, its timeout too; `verify` finds no violation.

use std::time::{Duration, Instant};

use crate::cli::{bin, Bench};

/// `draft` → `approve` (signal `a`) → `recheck` (signal `b`) → `publish`;
/// and two pipelines whose wait times out fast, one failing, one skipping.
const REVIEW: &str = r#"[pipeline]
name = "review"
version = 1

[[steps]]
name = "draft"

[[steps]]
name = "approve"
needs = ["draft"]
wait = { signal = "a", timeout = "1h" }

[[steps]]
name = "recheck"
needs = ["approve"]
wait = { signal = "b", timeout = "1h" }

[[steps]]
name = "publish"
needs = ["recheck"]
"#;

const STRICT: &str = r#"[pipeline]
name = "strict"
version = 1

[[steps]]
name = "draft"

[[steps]]
name = "hold"
needs = ["draft"]
wait = { signal = "go", timeout = "3s", on_timeout = "fail" }

[[steps]]
name = "publish"
needs = ["hold"]
"#;

const LENIENT: &str = r#"[pipeline]
name = "lenient"
version = 1

[[steps]]
name = "draft"

[[steps]]
name = "hold"
needs = ["draft"]
wait = { signal = "go", timeout = "1s", on_timeout = "skip" }

[[steps]]
name = "publish"
needs = ["hold"]
"#;

fn run_cli(b: &Bench, args: &[&str]) -> std::process::Output {
    bin()
        .args(args)
        .args(["--nats-url", &b.url()])
        .output()
        .unwrap()
}

/// `orchestrator signal`: (exit status, stdout, stderr).
fn signal(b: &Bench, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["signal"];
    all.extend_from_slice(args);
    let o = run_cli(b, &all);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn describe(b: &Bench, id: &str) -> serde_json::Value {
    let o = run_cli(b, &["describe", id, "--json"]);
    if !o.status.success() {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Polls `describe` until `ready` holds (the orchestrator may be starting).
fn describe_until(
    b: &Bench,
    id: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let wf = describe(b, id);
        if ready(&wf) {
            return wf;
        }
        assert!(Instant::now() < deadline, "{id} never got there: {wf}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn step_status(wf: &serde_json::Value, step: usize) -> &str {
    wf["steps"][step]["status"].as_str().unwrap_or("")
}

#[test]
fn wait_steps_take_signals_before_and_after_they_wait_time_out_and_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    for (file, text) in [
        ("review.toml", REVIEW),
        ("strict.toml", STRICT),
        ("lenient.toml", LENIENT),
    ] {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    let check = bin()
        .args(["pipelines", "check"])
        .arg(dir.path())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{printed}");
    assert!(printed.contains("approve[wait] <- draft"), "{printed}");
    assert!(
        printed.contains("hold     wait for signal \"go\": no task"),
        "{printed}"
    );

    let mut b = Bench::new(Some(dir.path().to_path_buf()));
    b.start_orchestrator();
    b.start_worker(&["--task-types", "draft,publish"]);
    for (pipeline, id) in [
        ("review", "r-1"),
        ("review", "r-2"),
        ("strict", "s-1"),
        ("lenient", "l-1"),
    ] {
        let out = b.start(pipeline, id, false);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // r-1: `b` before `recheck` waits is kept; `a` completes `approve`,
    // then `recheck` consumes `b` at once.
    let wf = describe_until(&b, "r-1", |wf| step_status(wf, 1) == "waiting");
    assert_eq!(wf["steps"][1]["waiting_for"], "a", "{wf}");
    assert!(wf["steps"][1]["wait_due_ms"].as_u64().is_some(), "{wf}");
    let (code, out, err) = signal(&b, &["r-1", "b", "--payload", r#"{"n":10}"#, "--id", "b-1"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("signal accepted workflow=r-1 name=b id=b-1 status=running"),
        "{out}"
    );
    let wf = describe(&b, "r-1");
    assert_eq!(wf["signals"][0]["id"], "b-1", "{wf}");
    let text = String::from_utf8_lossy(&run_cli(&b, &["describe", "r-1"]).stdout).into_owned();
    assert!(text.contains("waiting for signal \"a\" since"), "{text}");
    assert!(text.contains("signal \"b\" id=b-1"), "{text}");
    let (code, out, err) = signal(&b, &["r-1", "a", "--payload", r#"{"n":5}"#, "--id", "a-1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("consumed_by=approve"), "{out}");
    // The same id again: a duplicate, nothing changes.
    let (code, out, _) = signal(&b, &["r-1", "a", "--payload", r#"{"n":99}"#, "--id", "a-1"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("signal duplicate"), "{out}");
    let wf = describe_until(&b, "r-1", |wf| wf["status"] == "completed");
    assert_eq!(wf["steps"][1]["output"]["n"], 5, "{wf}");
    assert_eq!(wf["steps"][2]["output"]["n"], 10, "{wf}");
    // publish: 1 + recheck's payload.
    assert_eq!(wf["steps"][3]["output"]["n"], 11, "{wf}");

    // Answers that change nothing, each with its exit status.
    let (code, _, err) = signal(&b, &["nope", "a"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("unknown workflow nope"), "{err}");
    let (code, _, err) = signal(&b, &["r-1", "a"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("already terminal"), "{err}");
    let (code, _, err) = signal(&b, &["r-2", "zzz"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no wait step for signal \"zzz\" (signals it waits for: a, b)"),
        "{err}"
    );
    let (code, _, err) = signal(&b, &["r-2", "a", "--payload", "{nope"]);
    assert_eq!(code, 1, "{err}");

    // Timeouts: `strict` fails naming the step and the signal; `lenient`
    // skips the step and `publish` reads null (n = 1).
    let wf = describe_until(&b, "l-1", |wf| wf["status"] == "completed");
    assert_eq!(step_status(&wf, 1), "skipped", "{wf}");
    assert_eq!(wf["steps"][2]["output"]["n"], 1, "{wf}");
    let wf = describe_until(&b, "s-1", |wf| wf["status"] == "failed");
    assert_eq!(
        wf["reason"], "step hold: no signal \"go\" within 3s",
        "{wf}"
    );

    // r-2 waits; a SIGKILL keeps the wait (and its due time), and a signal
    // after the restart completes it. A retry of s-1 after the restart
    // waits again, and its new timeout fires from the restarted timers.
    let before = describe_until(&b, "r-2", |wf| step_status(wf, 1) == "waiting");
    let mut orch = b.orch.take().unwrap();
    orch.kill().unwrap();
    let _ = orch.wait();
    b.start_orchestrator();
    let after = describe_until(&b, "r-2", |wf| step_status(wf, 1) == "waiting");
    assert_eq!(
        before["steps"][1]["wait_due_ms"],
        after["steps"][1]["wait_due_ms"]
    );
    let retry = run_cli(&b, &["retry", "s-1"]);
    assert!(
        retry.status.success(),
        "{}",
        String::from_utf8_lossy(&retry.stderr)
    );
    describe_until(&b, "s-1", |wf| step_status(wf, 1) == "waiting");
    let mut orch = b.orch.take().unwrap();
    orch.kill().unwrap();
    let _ = orch.wait();
    b.start_orchestrator();
    let wf = describe_until(&b, "s-1", |wf| wf["status"] == "failed");
    assert_eq!(wf["generation"], 1, "{wf}");
    let (code, _, err) = signal(&b, &["r-2", "a", "--id", "a-2"]);
    assert_eq!(code, 0, "{err}");
    signal(&b, &["r-2", "b", "--id", "b-2"]);
    describe_until(&b, "r-2", |wf| wf["status"] == "completed");

    let history = run_cli(&b, &["history", "r-1", "--json"]);
    let events: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let names: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for kind in ["signal_received", "wait_started", "wait_succeeded"] {
        assert!(names.contains(&kind), "{names:?}");
    }
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .all(|e| !(e["event"] == "task_dispatched" && e["step"] == "approve")),
        "a wait step dispatches nothing: {events}"
    );
    b.stop();
    let v = b.verify();
    assert_eq!(
        (
            v.get("workflows").map(String::as_str),
            v.get("violations").map(String::as_str),
        ),
        (Some("4"), Some("0")),
        "{v:?}"
    );
}
