//! A backfill that holds back while the task type its workflows use fails:
//! real `run`, `worker --simulate` with an outage of one task type, and
//! `backfill --max-error-rate`, seen in `orchestrator capacity`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use orchestrator::worker::ExecutionRecord;

use crate::cli::{bin, fields, Bench};

/// Workflows the backfill starts.
const N: usize = 120;

/// Real processes: `transcribe` fails for 8 s from the worker's start; a
/// backfill of 120 workflows at 30/s would start every one of them within
/// that outage. With `--max-error-rate 50%` over a 2 s window it holds new
/// starts while the failures last: fewer than half the workflows made
/// their first attempt during the outage, and `orchestrator capacity`
/// shows it held meanwhile. It resumes by itself once the
/// failures stop: it starts all 120, every workflow whose first attempt
/// came after the outage completes, and the checker passes.
#[test]
fn throttle_process_a_backfill_holds_while_its_task_type_fails_and_resumes_after() {
    let pdir = tempfile::tempdir().unwrap();
    std::fs::write(
        pdir.path().join("thr.toml"),
        "[pipeline]\nname = \"thr\"\nversion = 1\n\n[defaults.retry]\nmax_attempts = 2\n\
         initial_backoff = \"100ms\"\n\n[[steps]]\nname = \"transcribe\"\n\n\
         [[steps]]\nname = \"index\"\nneeds = [\"transcribe\"]\n",
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let record = work.path().join("w.jsonl");
    let inputs = work.path().join("in.jsonl");
    let lines: String = (0..N).map(|i| format!("{{\"id\":\"t-{i}\"}}\n")).collect();
    std::fs::write(&inputs, lines).unwrap();

    let mut b = Bench::new(Some(pdir.path().to_path_buf()));
    b.start_orchestrator();
    let url = b.url();
    // Up and answering before the outage's clock starts with the worker.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !bin()
        .args(["capacity", "--nats-url", &url])
        .output()
        .unwrap()
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the orchestrator did not come up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    b.start_worker(&[
        "--fail-for",
        "transcribe=8s",
        "--concurrency",
        "64",
        "--record",
        record.to_str().unwrap(),
    ]);
    let mut backfill = bin()
        .args(["backfill", "thr", "--input-file"])
        .arg(&inputs)
        .args([
            "--id-field",
            "id",
            "--rate",
            "30/s",
            "--max-error-rate",
            "50%",
            "--error-window",
            "2s",
            "--error-min-attempts",
            "5",
            "--nats-url",
            &url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // While it runs, `orchestrator capacity` shows it holding.
    let mut seen_held = false;
    while !seen_held && backfill.try_wait().unwrap().is_none() {
        let o = bin()
            .args(["capacity", "--nats-url", &url])
            .output()
            .unwrap();
        seen_held = String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.starts_with("backfill in.jsonl#") && l.contains(" state=held for="));
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = backfill.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let summary = fields(&stdout, "backfill ");
    assert_eq!(summary["started"], N.to_string(), "{stdout}");
    let held: u64 = summary["held"].parse().unwrap();
    assert!(held >= 1, "{stdout}\n{stderr}");
    assert!(
        seen_held,
        "`orchestrator capacity` never showed the backfill held"
    );
    assert!(
        stderr.contains("backfill held: task type transcribe failed")
            && stderr.contains("backfill resumed"),
        "{stderr}"
    );

    let read = || -> Vec<ExecutionRecord> {
        std::fs::read_to_string(&record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    // Every workflow ends: indexed, or both transcribe attempts failed.
    let deadline = Instant::now() + Duration::from_secs(120);
    let records = loop {
        let records = read();
        let indexed: BTreeSet<&str> = records
            .iter()
            .filter(|r| r.step == "index")
            .map(|r| r.workflow_id.as_str())
            .collect();
        let mut failed: BTreeMap<&str, u32> = BTreeMap::new();
        for r in records
            .iter()
            .filter(|r| r.step == "transcribe" && r.outcome == "failed")
        {
            *failed.entry(r.workflow_id.as_str()).or_default() += 1;
        }
        let ended = indexed.len() + failed.values().filter(|n| **n >= 2).count();
        if ended >= N {
            break records;
        }
        assert!(Instant::now() < deadline, "{ended} of {N} workflows ended");
        std::thread::sleep(Duration::from_millis(200));
    };
    // The last results reach the journal after their record line.
    std::thread::sleep(Duration::from_millis(500));
    b.stop();
    let v = b.verify();
    assert_eq!(v["violations"], "0", "{v:?}");

    let first: Vec<&ExecutionRecord> = records
        .iter()
        .filter(|r| r.step == "transcribe" && r.attempt == 1)
        .collect();
    let in_outage = first.iter().filter(|r| r.outcome == "failed").count();
    let after: BTreeSet<&str> = first
        .iter()
        .filter(|r| r.outcome == "succeeded")
        .map(|r| r.workflow_id.as_str())
        .collect();
    let indexed: BTreeSet<&str> = records
        .iter()
        .filter(|r| r.step == "index")
        .map(|r| r.workflow_id.as_str())
        .collect();
    eprintln!(
        "throttle_process: workflows={N} first_attempts_in_outage={in_outage} after={} held={held} verify={v:?}",
        after.len()
    );
    assert!(
        in_outage < N / 2,
        "{in_outage} of {N} workflows started during the outage"
    );
    assert_eq!(in_outage + after.len(), N);
    assert!(
        after.is_subset(&indexed),
        "a workflow started after the outage did not complete"
    );
    let completed: usize = v["completed"].parse().unwrap();
    let failed: usize = v["failed"].parse().unwrap();
    assert_eq!(completed + failed, N, "{v:?}");
    assert!(completed >= after.len(), "{v:?}");
}
