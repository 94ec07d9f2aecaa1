//! The ops CLI (describe, history, list, cancel, pause, resume, retry, rerun,
//! batch, backfill) against a real `orchestrator run` and a real nats-server.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::cli::{bin, fields, num, Bench};

const VIDEO_TYPES: &str =
    "ingest,extract_audio,transcribe,segment,enrich_topics,enrich_entities,enrich_sentiment,embed,index";

/// Version 1 of the video pipeline (its nine static steps fix the step
/// positions, outputs and rerun sets these tests check), `hold` (a task
/// type no test worker serves, so its workflows stay running) and `flaky`
/// (one attempt per step).
fn pipelines() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let video = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipelines/video.toml");
    std::fs::copy(video, dir.path().join("video.toml")).unwrap();
    std::fs::write(
        dir.path().join("hold.toml"),
        "[pipeline]\nname = \"hold\"\nversion = 1\n[[steps]]\nname = \"hold\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("flaky.toml"),
        "[pipeline]\nname = \"flaky\"\nversion = 1\n[defaults.retry]\nmax_attempts = 1\n[[steps]]\nname = \"flaky\"\n",
    )
    .unwrap();
    dir
}

fn ops(b: &Bench, args: &[&str]) -> Output {
    bin()
        .args(args)
        .args(["--nats-url", &b.url()])
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Runs a command that must succeed; returns its stdout.
fn ok(b: &Bench, args: &[&str]) -> String {
    let o = ops(b, args);
    assert!(
        o.status.success(),
        "{args:?} failed: {:?}\n{}\n{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs a command that must fail with one `error: ...` line; returns that line.
fn fails(b: &Bench, args: &[&str]) -> String {
    let o = ops(b, args);
    let err = stderr(&o);
    assert!(!o.status.success(), "{args:?} should fail: {}", stdout(&o));
    assert_eq!(err.lines().count(), 1, "{args:?}: one line, got {err:?}");
    assert!(err.starts_with("error: "), "{args:?}: {err:?}");
    err.trim().to_string()
}

/// Waits until the orchestrator answers admin requests.
fn wait_up(b: &Bench) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ops(b, &["list", "--limit", "1"]).status.success() {
        assert!(Instant::now() < deadline, "orchestrator not up within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `describe` until the workflow has `status`.
fn wait_status(b: &Bench, id: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = ok(b, &["describe", id]);
        if out.starts_with(&format!("workflow id={id} status={status} ")) {
            return;
        }
        assert!(Instant::now() < deadline, "{id} not {status}: {out}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn list_ids(b: &Bench, args: &[&str]) -> Vec<String> {
    let mut a = vec!["list", "--limit", "10000"];
    a.extend_from_slice(args);
    let mut ids: Vec<String> = ok(b, &a)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    // The index is walked by status, then partition: sort for comparisons.
    ids.sort();
    ids
}

fn sigterm(b: &mut Bench) {
    let mut orch = b.orch.take().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &orch.id().to_string()])
        .status();
    assert!(
        crate::cli::wait_exit(&mut orch, Duration::from_secs(15)).is_some(),
        "graceful stop"
    );
}

fn assert_verify_clean(b: &Bench, workflows: f64) {
    let v = b.verify();
    assert_eq!(
        (
            num(&v, "workflows"),
            num(&v, "violations"),
            num(&v, "corrupt")
        ),
        (workflows, 0.0, 0.0),
        "{v:?}"
    );
}

#[test]
fn single_workflow_verbs_rerun_and_retry_over_the_cli() {
    let p = pipelines();
    let mut b = Bench::new(Some(p.path().to_path_buf()));
    b.start_orchestrator();
    b.start_worker(&["--task-types", VIDEO_TYPES]);
    let failing = b.start_worker(&["--task-types", "flaky", "--fail-rate", "1"]);

    // describe: status, every step with attempts, worker and timings.
    let out = b.start_with("video", "v-1", r#"{"video_url":"s3://m/v-1.mp4"}"#, true);
    assert!(out.status.success(), "{}", stderr(&out));
    let d = ok(&b, &["describe", "v-1"]);
    let mut lines = d.lines();
    let head = lines.next().unwrap();
    assert!(
        head.starts_with("workflow id=v-1 status=completed pipeline=video v1 generation=0"),
        "{d}"
    );
    let steps: Vec<&str> = lines.collect();
    assert_eq!(steps.len(), 9, "{d}");
    for s in &steps {
        assert!(
            s.contains("status=succeeded")
                && s.contains("attempts=1")
                && s.contains("worker=sim-worker")
                && s.contains("finished=20"),
            "{s}"
        );
    }

    // rerun from enrich_topics: exactly that step and its downstream run again.
    let r = ok(&b, &["rerun", "v-1", "--from-step", "enrich_topics"]);
    assert!(
        r.starts_with("workflow id=v-1 status=") && r.trim_end().ends_with("generation=1"),
        "{r}"
    );
    wait_status(&b, "v-1", "completed");
    let h = ok(&b, &["history", "v-1", "--json"]);
    let events: Vec<serde_json::Value> = serde_json::from_str(&h).unwrap();
    for e in &events {
        for k in [
            "seq",
            "at",
            "event",
            "generation",
            "step",
            "attempt",
            "worker",
            "error",
        ] {
            assert!(e.get(k).is_some(), "{k} missing in {e}");
        }
    }
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "gapless");
    let mut rerun: Vec<&str> = events
        .iter()
        .filter(|e| e["generation"] == 1 && e["event"] == "task_dispatched")
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    rerun.sort_unstable();
    assert_eq!(rerun, ["embed", "enrich_topics", "index"]);
    let gen0 = events
        .iter()
        .filter(|e| e["generation"] == 0 && e["event"] == "task_dispatched")
        .count();
    assert_eq!(gen0, 9);
    assert_eq!(events.last().unwrap()["event"], "workflow_completed");
    assert!(events.last().unwrap()["step"].is_null());
    let human = ok(&b, &["history", "v-1"]);
    assert_eq!(human.lines().count(), events.len());
    assert!(
        human.contains("gen=1 workflow_reopened step=enrich_topics"),
        "{human}"
    );

    // pause / resume / cancel on a workflow that stays running.
    let out = b.start("hold", "h-1", false);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(ok(&b, &["pause", "h-1"]).starts_with("workflow id=h-1 status=paused"));
    // Repeating a control verb succeeds and says so; --strict refuses it.
    assert!(ok(&b, &["pause", "h-1"]).contains("status=paused generation=0 (already paused)"));
    assert!(fails(&b, &["pause", "h-1", "--strict"]).contains("cannot pause a paused workflow"));
    assert!(ok(&b, &["resume", "h-1"]).starts_with("workflow id=h-1 status=running"));
    assert!(fails(&b, &["retry", "h-1"]).contains("cannot reopen a running workflow"));
    assert!(ok(&b, &["cancel", "h-1", "--reason", "ops drill"])
        .starts_with("workflow id=h-1 status=cancelled"));
    assert!(ok(&b, &["history", "h-1"]).contains("workflow_cancelled error=\"ops drill\""));

    // retry: a failed workflow reopens as generation 1 and completes.
    let out = b.start("flaky", "f-1", true);
    assert!(!out.status.success());
    assert!(stdout(&out).contains("status=failed"), "{}", stdout(&out));
    let _ = b.workers[failing].kill();
    let _ = b.workers[failing].wait();
    b.start_worker(&["--task-types", "flaky"]);
    assert!(ok(&b, &["retry", "f-1"]).starts_with("workflow id=f-1 status="));
    wait_status(&b, "f-1", "completed");
    assert!(ok(&b, &["describe", "f-1"]).contains(" generation=1 "));

    // list: one workflow per line, id first, filters AND-ed.
    assert_eq!(list_ids(&b, &["--status", "completed"]), ["f-1", "v-1"]);
    assert_eq!(
        list_ids(&b, &["--status", "cancelled", "--since", "1h"]),
        ["h-1"]
    );
    assert!(list_ids(&b, &["--pipeline", "hold", "--status", "running"]).is_empty());
    assert_eq!(ok(&b, &["list", "--limit", "2"]).lines().count(), 2);

    // Bad input: one line, non-zero.
    assert_eq!(
        fails(&b, &["describe", "nope"]),
        "error: unknown workflow nope"
    );
    assert_eq!(
        fails(&b, &["cancel", "nope"]),
        "error: unknown workflow nope"
    );
    assert!(fails(&b, &["rerun", "v-1", "--from-step", "nope"]).contains("has no step \"nope\""));
    assert!(fails(&b, &["list", "--since", "5parsecs"]).contains("--since"));
    assert!(fails(&b, &["list", "--status", "broken"]).contains("--status"));
    assert!(fails(&b, &["history", "nope"]).contains("unknown workflow"));

    sigterm(&mut b);
    b.stop();
    assert_verify_clean(&b, 3.0);
}

#[test]
fn batch_retry_dry_run_changes_nothing_then_the_job_reopens_every_failed_workflow() {
    let p = pipelines();
    let mut b = Bench::new(Some(p.path().to_path_buf()));
    b.start_orchestrator();
    let failing = b.start_worker(&["--task-types", "flaky", "--fail-rate", "1"]);
    for i in 0..6 {
        let out = b.start("flaky", &format!("fl-{i}"), true);
        assert!(stdout(&out).contains("status=failed"), "{}", stderr(&out));
    }
    let failed = list_ids(&b, &["--status", "failed", "--pipeline", "flaky"]);
    assert_eq!(failed.len(), 6);

    let dry = ok(
        &b,
        &[
            "batch",
            "retry",
            "--status",
            "failed",
            "--pipeline",
            "flaky",
            "--dry-run",
        ],
    );
    assert!(
        dry.starts_with("batch action=retry count=6 dry_run=true"),
        "{dry}"
    );
    assert_eq!(dry.lines().filter(|l| l.starts_with("sample ")).count(), 6);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        list_ids(&b, &["--status", "failed", "--pipeline", "flaky"]),
        failed,
        "a dry run changes nothing"
    );
    assert!(list_ids(&b, &["--status", "running"]).is_empty());

    // No filter: a clear error, exit 2.
    let o = ops(&b, &["batch", "retry"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).starts_with("error: batch retry needs at least one filter"));

    let _ = b.workers[failing].kill();
    let _ = b.workers[failing].wait();
    b.start_worker(&["--task-types", "flaky"]);
    let out = ok(
        &b,
        &[
            "batch",
            "retry",
            "--status",
            "failed",
            "--pipeline",
            "flaky",
            "--rate",
            "100/s",
        ],
    );
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with("batch job=b-") && first.contains("total=6"),
        "count first: {out}"
    );
    let f = fields(&out, "batch job=");
    assert_eq!(f["state"], "completed", "{out}");
    assert_eq!(
        (num(&f, "succeeded"), num(&f, "failed"), num(&f, "done")),
        (6.0, 0.0, 6.0)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while list_ids(&b, &["--status", "completed", "--pipeline", "flaky"]).len() < 6 {
        assert!(
            Instant::now() < deadline,
            "retried workflows did not complete"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Items that cannot take the action are listed, and the exit is non-zero.
    let o = ops(&b, &["batch", "retry", "--pipeline", "flaky"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let f = fields(&out, "batch job=");
    assert_eq!(
        (num(&f, "failed"), num(&f, "succeeded")),
        (6.0, 0.0),
        "{out}"
    );
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("failed id=fl-") && l.contains("no failed steps"))
            .count(),
        6,
        "{out}"
    );
    let job = f["job"].clone();
    let st = ok(&b, &["batch", "status", &job]);
    assert!(
        st.contains("state=completed") && st.contains("failed id=fl-0"),
        "{st}"
    );
    assert!(fails(&b, &["batch", "resume", &job]).contains("is completed"));
    assert!(fails(&b, &["batch", "status", "b-nope"]).contains("unknown batch job"));
    assert!(fails(
        &b,
        &[
            "batch",
            "rerun",
            "--pipeline",
            "flaky",
            "--from-step",
            "ghost"
        ]
    )
    .contains("ghost"));

    sigterm(&mut b);
    b.stop();
    let v = b.verify();
    assert_eq!(num(&v, "completed"), 6.0, "{v:?}");
    assert_verify_clean(&b, 6.0);
}

#[test]
fn a_paused_batch_job_resumes_where_it_stopped_across_restarts() {
    let p = pipelines();
    let mut b = Bench::new(Some(p.path().to_path_buf()));
    b.start_orchestrator();
    for i in 0..12 {
        let out = b.start("hold", &format!("h-{i}"), false);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = ok(
        &b,
        &[
            "batch",
            "cancel",
            "--pipeline",
            "hold",
            "--rate",
            "4/s",
            "--reason",
            "drill",
            "--detach",
        ],
    );
    let job = fields(&out, "batch job=")["job"].clone();
    assert!(out.contains("total=12"), "{out}");
    std::thread::sleep(Duration::from_millis(1200));
    let paused = fields(&ok(&b, &["batch", "pause", &job]), "batch job=");
    assert_eq!(paused["state"], "paused");
    let done = num(&paused, "done");
    assert!(done > 0.0 && done < 12.0, "{paused:?}");
    std::thread::sleep(Duration::from_millis(1000));
    let still = fields(&ok(&b, &["batch", "status", &job]), "batch job=");
    assert_eq!(
        (still["state"].as_str(), num(&still, "done")),
        ("paused", done)
    );
    assert_eq!(
        list_ids(&b, &["--status", "cancelled"]).len() as f64,
        done,
        "progress frozen"
    );

    // A paused job stays paused across a restart.
    sigterm(&mut b);
    b.start_orchestrator();
    wait_up(&b);
    let after = fields(&ok(&b, &["batch", "status", &job]), "batch job=");
    assert_eq!(
        (after["state"].as_str(), num(&after, "done")),
        ("paused", done)
    );

    // Resumed, then the orchestrator is killed mid-job: it carries on from
    // where it stopped when it comes back.
    let resumed = fields(&ok(&b, &["batch", "resume", &job]), "batch job=");
    assert_eq!(resumed["state"], "running");
    std::thread::sleep(Duration::from_millis(700));
    let mut orch = b.orch.take().unwrap();
    orch.kill().unwrap(); // SIGKILL
    let _ = orch.wait();
    b.start_orchestrator();
    wait_up(&b);
    let deadline = Instant::now() + Duration::from_secs(30);
    let end = loop {
        let f = fields(&ok(&b, &["batch", "status", &job]), "batch job=");
        if f["state"] == "completed" {
            break f;
        }
        assert!(Instant::now() < deadline, "job did not complete: {f:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!((num(&end, "total"), num(&end, "done")), (12.0, 12.0));
    assert_eq!(num(&end, "failed"), 0.0, "{end:?}");
    assert_eq!(num(&end, "succeeded") + num(&end, "skipped"), 12.0);
    assert_eq!(list_ids(&b, &["--status", "cancelled"]).len(), 12);
    let h = ok(&b, &["history", "h-3", "--json"]);
    let events: Vec<serde_json::Value> = serde_json::from_str(&h).unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "workflow_cancelled")
            .count(),
        1
    );
    assert_eq!(events.last().unwrap()["error"], "drill");

    sigterm(&mut b);
    b.stop();
    let v = b.verify();
    assert_eq!(num(&v, "cancelled"), 12.0, "{v:?}");
    assert_verify_clean(&b, 12.0);
}

#[test]
fn backfill_twice_starts_each_workflow_once_and_reports_bad_lines() {
    let mut b = Bench::new(None);
    b.start_orchestrator();
    b.start_worker(&[]);
    let files = tempfile::tempdir().unwrap();
    let good = files.path().join("good.jsonl");
    let text: String = (0..5)
        .map(|i| format!("{{\"video_id\":\"bf-{i}\",\"video_url\":\"s3://m/bf-{i}.mp4\"}}\n"))
        .collect();
    std::fs::write(&good, text).unwrap();
    let good = good.to_str().unwrap();
    // The first call also waits for the orchestrator to come up.
    let out = b.start("video", "warm-up", true);
    assert!(out.status.success(), "{}", stderr(&out));
    let args = [
        "backfill",
        "video",
        "--input-file",
        good,
        "--id-field",
        "video_id",
        "--rate",
        "200/s",
    ];
    assert_eq!(
        ok(&b, &args).trim(),
        "backfill pipeline=video lines=5 started=5 existing=0 failed=0 held=0 held_ms=0"
    );
    assert_eq!(
        ok(&b, &args).trim(),
        "backfill pipeline=video lines=5 started=0 existing=5 failed=0 held=0 held_ms=0"
    );

    let hashed = files.path().join("hashed.jsonl");
    std::fs::write(&hashed, "{\"a\":1}\n\n{\"a\":2}\n{\"a\":3}\n").unwrap();
    let args = [
        "backfill",
        "video",
        "--input-file",
        hashed.to_str().unwrap(),
    ];
    assert!(ok(&b, &args).contains("lines=3 started=3 existing=0 failed=0"));
    assert!(ok(&b, &args).contains("lines=3 started=0 existing=3 failed=0"));
    let ids = list_ids(&b, &["--pipeline", "video"]);
    assert_eq!(ids.len(), 1 + 5 + 3, "{ids:?}");
    assert_eq!(ids.iter().filter(|i| i.starts_with("video-")).count(), 3);

    let bad = files.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"video_id\":\"bf-x\"}\nnot json\n{\"other\":1}\n").unwrap();
    let o = ops(
        &b,
        &[
            "backfill",
            "video",
            "--input-file",
            bad.to_str().unwrap(),
            "--id-field",
            "video_id",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("line 2: not valid JSON") && err.contains("line 3: no field \"video_id\""),
        "{err}"
    );
    assert!(
        stdout(&o).contains("started=1 existing=0 failed=2"),
        "{}",
        stdout(&o)
    );

    let missing = files.path().join("missing.jsonl");
    assert!(fails(
        &b,
        &[
            "backfill",
            "video",
            "--input-file",
            missing.to_str().unwrap()
        ]
    )
    .contains("cannot read"));
    assert!(fails(&b, &["backfill", "nopipe", "--input-file", good]).contains("unknown pipeline"));

    let deadline = Instant::now() + Duration::from_secs(30);
    while list_ids(&b, &["--status", "completed"]).len() < 10 {
        assert!(
            Instant::now() < deadline,
            "backfilled workflows did not complete"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    sigterm(&mut b);
    b.stop();
    assert_verify_clean(&b, 10.0);
}

#[test]
fn every_ops_command_has_help_with_an_example() {
    for cmd in [
        &["describe"][..],
        &["history"],
        &["list"],
        &["cancel"],
        &["pause"],
        &["resume"],
        &["retry"],
        &["rerun"],
        &["batch", "retry"],
        &["batch", "cancel"],
        &["batch", "rerun"],
        &["batch", "status"],
        &["batch", "pause"],
        &["batch", "resume"],
        &["backfill"],
    ] {
        let o = bin().args(cmd).arg("--help").output().unwrap();
        assert!(o.status.success(), "{cmd:?}");
        let help = stdout(&o);
        assert!(
            help.contains("Example: orchestrator") || help.contains("Examples:\n  orchestrator"),
            "{cmd:?}"
        );
    }
}

#[test]
fn describe_and_history_show_each_step_output_and_the_last_progress() {
    let p = pipelines();
    let mut b = Bench::new(Some(p.path().to_path_buf()));
    b.start_orchestrator();
    b.start_worker(&["--task-types", VIDEO_TYPES]);
    let out = b.start_with("video", "o-1", r#"{"video_url":"s3://m/o-1.mp4"}"#, true);
    assert!(out.status.success(), "{}", stderr(&out));
    let d: serde_json::Value =
        serde_json::from_str(&ok(&b, &["describe", "o-1", "--json"])).unwrap();
    let steps = d["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 9);
    for s in steps {
        // Each simulated step answers n = 1 + the n of its dependencies.
        assert!(s["output"]["n"].as_u64().is_some(), "{s}");
    }
    assert_eq!(steps[8]["name"], "index");
    assert_eq!(steps[8]["output"]["n"], 17);
    assert!(ok(&b, &["describe", "o-1"]).contains("output={"));
    let h: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&b, &["history", "o-1", "--json"])).unwrap();
    let outputs: Vec<&serde_json::Value> = h
        .iter()
        .filter(|e| e["event"] == "task_succeeded")
        .map(|e| &e["output"])
        .collect();
    assert_eq!(outputs.len(), 9);
    assert!(
        outputs.iter().all(|o| o["n"].as_u64().is_some()),
        "{outputs:?}"
    );

    // A worker's progress on an attempt of `hold` (which no worker takes).
    let out = b.start("hold", "pr-1", false);
    assert!(out.status.success(), "{}", stderr(&out));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A heartbeat must carry its attempt's token (keyed by the node's key
    // in the data dir) and come on its workflow's partition: send it on
    // every partition's subject, the others refuse it.
    let key =
        orchestrator::transport::attempt_key::AttemptKey::load_or_create(b.dir.path()).unwrap();
    let beat = serde_json::json!({
        "v": 1, "task_id": "pr-1:hold:0:1", "attempt_token": key.token("pr-1:hold:0:1"),
        "workflow_id": "pr-1", "worker": "gpu-7", "progress": {"percent": 40}
    });
    rt.block_on(async {
        let c = async_nats::connect(b.url()).await.unwrap();
        for p in 0..256 {
            c.publish(
                format!("narralytica.heartbeats.{p}"),
                beat.to_string().into(),
            )
            .await
            .unwrap();
        }
        c.flush().await.unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d: serde_json::Value =
            serde_json::from_str(&ok(&b, &["describe", "pr-1", "--json"])).unwrap();
        let step = &d["steps"][0];
        if !step["progress"].is_null() {
            assert_eq!(step["progress"], serde_json::json!({"percent": 40}));
            assert!(step["progress_at_ms"].as_u64().is_some());
            break;
        }
        assert!(Instant::now() < deadline, "no progress in {d}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let h: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&b, &["history", "pr-1", "--json"])).unwrap();
    let dispatched = h.iter().find(|e| e["event"] == "task_dispatched").unwrap();
    assert_eq!(dispatched["progress"], serde_json::json!({"percent": 40}));
    assert!(ok(&b, &["describe", "pr-1"]).contains("progress={\"percent\":40}"));
    b.stop();
}

/// Runs a command; returns its exit code and stdout.
fn exit_and_stdout(b: &Bench, args: &[&str]) -> (Option<i32>, String) {
    let o = ops(b, args);
    (o.status.code(), stdout(&o))
}

#[test]
fn wait_list_batch_list_and_repeated_controls_work_as_scripts_expect() {
    let p = pipelines();
    let mut b = Bench::new(Some(p.path().to_path_buf()));
    b.start_orchestrator();
    b.start_worker(&["--task-types", VIDEO_TYPES]);
    b.start_worker(&["--task-types", "flaky", "--fail-rate", "1"]);
    for id in ["v-1", "v-2"] {
        let out = b.start_with("video", id, r#"{"video_url":"s3://m/v.mp4"}"#, true);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(!b.start("flaky", "f-1", true).status.success());
    assert!(b.start("hold", "h-1", false).status.success());

    // wait: exit 0 only when every workflow completed; it never starts one.
    let (code, out) = exit_and_stdout(&b, &["wait", "v-1", "v-2"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "workflow id=v-1 status=completed",
            "workflow id=v-2 status=completed"
        ]
    );
    let (code, out) = exit_and_stdout(&b, &["wait", "v-1", "f-1"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("workflow id=f-1 status=failed reason="),
        "{out}"
    );
    let (code, out) = exit_and_stdout(&b, &["wait", "gone-1"]);
    assert_eq!(
        (code, out.trim()),
        (Some(1), "workflow id=gone-1 status=unknown")
    );
    assert!(
        fails(&b, &["describe", "gone-1"]).contains("unknown workflow"),
        "wait created nothing"
    );
    let (code, out) = exit_and_stdout(&b, &["wait", "h-1", "--timeout", "1"]);
    assert_eq!(
        (code, out.trim()),
        (Some(2), "workflow id=h-1 status=unfinished")
    );

    // resume / cancel repeated: exit 0 and say so; --strict: exit 1.
    assert!(ok(&b, &["resume", "h-1"]).contains("(already running)"));
    assert!(fails(&b, &["resume", "h-1", "--strict"]).contains("cannot resume"));
    assert!(!ok(&b, &["cancel", "h-1"]).contains("already"));
    assert!(
        ok(&b, &["cancel", "h-1"]).contains("status=cancelled generation=0 (already cancelled)")
    );
    assert!(fails(&b, &["cancel", "h-1", "--strict"]).contains("cancel"));
    // A refusal that is not a repeat still fails.
    assert!(fails(&b, &["pause", "v-1"]).contains("cannot pause"));

    // list: the most recently changed first; filters; JSON.
    let first: Vec<String> = ok(&b, &["list"])
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(first.len(), 4);
    assert_eq!(first[0], "h-1", "cancelled last: {first:?}");
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&b, &["list", "--json"])).unwrap();
    let updated: Vec<u64> = listed
        .iter()
        .map(|w| w["updated_at_ms"].as_u64().unwrap())
        .collect();
    assert!(updated.windows(2).all(|w| w[0] >= w[1]), "{updated:?}");
    assert_eq!(listed[0]["id"], "h-1");
    assert_eq!(list_ids(&b, &["--id-prefix", "v-"]), ["v-1", "v-2"]);
    assert_eq!(list_ids(&b, &["--error-kind", "simulated"]), ["f-1"]);
    assert!(list_ids(&b, &["--error-kind", "invalid_input"]).is_empty());
    assert_eq!(list_ids(&b, &["--created-since", "1h"]).len(), 4);
    assert!(list_ids(&b, &["--created-until", "1h"]).is_empty());
    assert_eq!(
        list_ids(&b, &["--changed-since", "1h", "--status", "cancelled"]),
        ["h-1"]
    );
    assert!(fails(&b, &["list", "--created-since", "soon"]).contains("--created-since"));

    // batch list: a lost job id can be found again.
    let job = ok(
        &b,
        &[
            "batch",
            "retry",
            "--status",
            "failed",
            "--pipeline",
            "flaky",
            "--detach",
        ],
    );
    let id = job
        .split_whitespace()
        .find_map(|f| f.strip_prefix("job="))
        .unwrap()
        .to_string();
    let jobs = ok(&b, &["batch", "list"]);
    assert!(
        jobs.lines()
            .next()
            .unwrap()
            .starts_with(&format!("batch job={id} action=retry state=")),
        "{jobs}"
    );
    let json: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&b, &["batch", "list", "--json"])).unwrap();
    assert_eq!(json[0]["id"], id.as_str());
    assert_eq!(json[0]["total"], 1);
    b.stop();
}
