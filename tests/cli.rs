//! The `orchestrator` binary as a user runs it.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn run(args: &[&str], data_dir: Option<&Path>) -> Output {
    let mut c = bin();
    c.args(args);
    if let Some(d) = data_dir {
        c.arg("--data-dir").arg(d);
    }
    c.output().expect("binary runs")
}

/// `key=value` pairs of the last line starting with `prefix`.
fn fields(stdout: &str, prefix: &str) -> std::collections::HashMap<String, String> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in {stdout:?}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn num(f: &std::collections::HashMap<String, String>, k: &str) -> f64 {
    f.get(k)
        .unwrap_or_else(|| panic!("no {k}"))
        .parse()
        .unwrap()
}

#[test]
fn pipelines_check_prints_each_dag() {
    let out = run(&["pipelines", "check"], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("pipeline video v1"), "{stdout}");
    assert!(stdout.contains("embed"), "{stdout}");
}

#[test]
fn pipelines_check_names_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.toml"),
        "[pipeline]\nname = \"b\"\nversion = 1\n[[steps]]\nname = \"a\"\nneeds = [\"ghost\"]\n",
    )
    .unwrap();
    let out = run(&["pipelines", "check", dir.path().to_str().unwrap()], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("broken.toml") && stderr.contains("ghost"),
        "{stderr}"
    );
}

#[test]
fn bad_flags_get_clear_errors_not_panics() {
    let out = run(&["dev", "--workflows", "lots"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--workflows"));
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["dev", "--fail-rate", "1.5"], Some(dir.path()));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fail-rate must be within [0, 1]"));
    let out = run(&["verify"], Some(&dir.path().join("nothing-here")));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a data dir"));
}

#[test]
fn dev_completes_every_workflow_despite_retryable_failures() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &[
            "dev",
            "--workflows",
            "300",
            "--fail-rate",
            "0.2",
            "--exit-when-done",
        ],
        Some(dir.path()),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap();
    assert!(
        last.starts_with("summary "),
        "the last line is the summary: {last}"
    );
    let f = fields(&stdout, "summary ");
    assert_eq!(
        (
            num(&f, "completed"),
            num(&f, "failed"),
            num(&f, "running"),
            num(&f, "errors")
        ),
        (300.0, 0.0, 0.0, 0.0)
    );
    assert!(num(&f, "retries") > 0.0);
    assert!(num(&f, "wal_syncs") > 0.0);
    let v = run(&["verify"], Some(dir.path()));
    let vf = fields(&String::from_utf8_lossy(&v.stdout), "verify ");
    assert_eq!(
        (
            num(&vf, "workflows"),
            num(&vf, "violations"),
            num(&vf, "corrupt")
        ),
        (300.0, 0.0, 0.0)
    );
}

#[test]
fn dev_resumes_every_workflow_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = bin()
        .args([
            "dev",
            "--workflows",
            "2000",
            "--task-latency-ms",
            "200",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    let out = run(
        &["dev", "--workflows", "0", "--exit-when-done"],
        Some(dir.path()),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let f = fields(&stdout, "summary ");
    assert!(num(&f, "resumed") > 0.0, "{stdout}");
    assert_eq!(
        (num(&f, "completed"), num(&f, "running"), num(&f, "errors")),
        (2000.0, 0.0, 0.0),
        "{stdout}"
    );
    let v = run(&["verify"], Some(dir.path()));
    let vout = String::from_utf8_lossy(&v.stdout);
    assert!(
        v.status.success(),
        "{vout}\n{}",
        String::from_utf8_lossy(&v.stderr)
    );
    let vf = fields(&vout, "verify ");
    assert_eq!(
        (
            num(&vf, "workflows"),
            num(&vf, "violations"),
            num(&vf, "corrupt")
        ),
        (2000.0, 0.0, 0.0)
    );
}
