//! `orchestrator loadgen` against a real `orchestrator run` and `nats-server`,
//! with the simulated workers inside the load generator.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::cli::{bin, Bench};

fn loadgen(b: &Bench, pipelines: &Path, report: &Path, args: &[&str]) -> (Output, Value) {
    let orch_pid = b
        .orch
        .as_ref()
        .expect("orchestrator running")
        .id()
        .to_string();
    let out = bin()
        .args(["loadgen", "--nats-url", &b.url(), "--pipelines"])
        .arg(pipelines)
        .args(["--workers-in-process", "--orchestrator-pid", &orch_pid])
        .args(["--drain", "20s", "--ready-timeout", "30s", "--report"])
        .arg(report)
        .args(args)
        .output()
        .unwrap();
    let report = crate::support::loadgen_report(report, &out);
    (out, report)
}

fn num(r: &Value, path: &[&str]) -> f64 {
    let mut v = r;
    for k in path {
        v = &v[*k];
    }
    v.as_f64()
        .unwrap_or_else(|| panic!("no number at {path:?} in {r:#}"))
}

fn assert_report_shape(r: &Value) {
    for k in [
        "workflows_per_s",
        "tasks_per_s",
        "errors",
        "completed",
        "failed",
        "workflows",
    ] {
        num(r, &[k]);
    }
    for q in ["p50", "p90", "p99", "max"] {
        num(r, &["latency_ms", q]);
    }
    for s in [
        "queue_wait_ms",
        "run_ms",
        "overhead_ms",
        "task_ms",
        "start_ms",
    ] {
        for q in ["p50", "p90", "p99", "max", "count"] {
            num(r, &["stages", s, q]);
        }
    }
    for k in ["cpu_s", "rss_mib_start", "rss_mib_end", "peak_rss_mib"] {
        num(r, &["orchestrator", k]);
    }
    num(r, &["loadgen", "core_cpu_s"]);
}

fn pipelines_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pipelines/video.toml"),
        dir.path().join("video.toml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("fragile.toml"),
        "[pipeline]\nname = \"fragile\"\nversion = 1\n[defaults.retry]\nmax_attempts = 1\n\
         [[steps]]\nname = \"first\"\n[[steps]]\nname = \"second\"\nneeds = [\"first\"]\n",
    )
    .unwrap();
    dir
}

/// Closed loop, then open loop with a burst: every workflow completes, every
/// output checks, and the report has every figure.
#[test]
fn loadgen_closed_and_open_loop_complete_and_check_every_workflow() {
    let pipelines = pipelines_dir();
    let mut b = Bench::new(Some(pipelines.path().to_path_buf()));
    b.start_orchestrator();
    let report = b.dir.path().join("closed.json");
    let (out, r) = loadgen(
        &b,
        pipelines.path(),
        &report,
        &[
            "--concurrency",
            "16",
            "--workflows",
            "300",
            "--latency",
            "uniform:1ms..3ms",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("loadgen run="), "{stdout}");
    assert_report_shape(&r);
    assert_eq!(r["mode"], "closed");
    assert_eq!(
        (num(&r, &["workflows"]), num(&r, &["completed"])),
        (300.0, 300.0)
    );
    assert_eq!(
        (num(&r, &["errors"]), num(&r, &["failed"])),
        (0.0, 0.0),
        "{r:#}"
    );
    assert!(num(&r, &["workflows_per_s"]) > 0.0 && num(&r, &["tasks_per_s"]) > 0.0);
    // 14 tasks per video workflow (no `--segments`: `segment` lists its
    // default 8, one `enrich` task each; no target language: `translate`
    // is skipped). The in-process workers time the 6 single-task steps;
    // map elements count as tasks but have no stage timings.
    assert_eq!(num(&r, &["tasks"]), 4200.0);
    assert_eq!(num(&r, &["stages", "run_ms", "count"]), 1800.0);
    assert!(num(&r, &["stages", "run_ms", "p50"]) >= 1.0);
    assert!(num(&r, &["latency_ms", "p50"]) >= num(&r, &["stages", "overhead_ms", "p50"]));

    let report = b.dir.path().join("open.json");
    let (out, r) = loadgen(
        &b,
        pipelines.path(),
        &report,
        &[
            "--rate",
            "60/s",
            "--duration",
            "3s",
            "--burst",
            "120",
            "--burst-at",
            "1s",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_report_shape(&r);
    assert_eq!(r["mode"], "open");
    assert_eq!(
        (num(&r, &["workflows"]), num(&r, &["completed"])),
        (300.0, 300.0)
    );
    assert_eq!(num(&r, &["errors"]), 0.0, "{r:#}");
    for (class, n) in [("live", 180.0), ("burst", 120.0)] {
        assert_eq!(num(&r, &["per_class", class, "completed"]), n, "{class}");
        assert_eq!(num(&r, &["per_class", class, "errors"]), 0.0, "{class}");
        num(&r, &["per_class", class, "latency_ms", "p99"]);
    }
    b.stop();
    let v = b.verify();
    assert_eq!(
        (
            crate::cli::num(&v, "completed"),
            crate::cli::num(&v, "violations")
        ),
        (600.0, 0.0)
    );
}

/// The checks can fail: wrong outputs are errors (exit 1), and workflows
/// whose only attempt fails are counted as failed.
#[test]
fn loadgen_counts_wrong_outputs_as_errors_and_failed_workflows_as_failed() {
    let pipelines = pipelines_dir();
    let mut b = Bench::new(Some(pipelines.path().to_path_buf()));
    b.start_orchestrator();
    let report = b.dir.path().join("corrupt.json");
    let (out, r) = loadgen(
        &b,
        pipelines.path(),
        &report,
        &[
            "--concurrency",
            "8",
            "--workflows",
            "80",
            "--corrupt-rate",
            "0.1",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    let wrong = num(&r, &["errors_detail", "output_mismatch"]);
    assert!(wrong > 0.0, "{r:#}");
    assert_eq!(num(&r, &["errors"]), wrong);
    assert_eq!(
        num(&r, &["completed"]),
        80.0,
        "corrupt outputs still complete"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("expected 10"));

    let report = b.dir.path().join("failing.json");
    let (out, r) = loadgen(
        &b,
        pipelines.path(),
        &report,
        &[
            "--pipeline",
            "fragile",
            "--rate",
            "20/s",
            "--duration",
            "2s",
            "--fail-rate",
            "1",
        ],
    );
    assert!(
        out.status.success(),
        "failed workflows are not errors: {r:#}"
    );
    assert_eq!(
        (
            num(&r, &["workflows"]),
            num(&r, &["failed"]),
            num(&r, &["completed"])
        ),
        (40.0, 40.0, 0.0),
        "{r:#}"
    );
    assert_eq!(num(&r, &["errors"]), 0.0);

    // Bad usage is exit 2 with one line, never a panic.
    for args in [
        vec!["loadgen"],
        vec!["loadgen", "--concurrency", "2", "--burst", "5"],
        vec!["loadgen", "--rate", "fast"],
        vec!["loadgen", "--concurrency", "2", "--latency", "gamma:1ms"],
        vec!["loadgen", "--concurrency", "2", "--pipeline", "nope"],
    ] {
        let out = bin().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("error"),
            "{args:?}"
        );
    }
}
