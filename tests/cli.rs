//! The `orchestrator` binary as a user runs it.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub(crate) fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    // Parallel `run` processes must not compete for the default port 9464.
    c.env("NARRALYTICA_HTTP_ADDR", "127.0.0.1:0");
    c
}

pub(crate) fn run(args: &[&str], data_dir: Option<&Path>) -> Output {
    let mut c = bin();
    c.args(args);
    if let Some(d) = data_dir {
        c.arg("--data-dir").arg(d);
    }
    c.output().expect("binary runs")
}

/// `key=value` pairs of the last line starting with `prefix`.
pub(crate) fn fields(stdout: &str, prefix: &str) -> std::collections::HashMap<String, String> {
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

pub(crate) fn num(f: &std::collections::HashMap<String, String>, k: &str) -> f64 {
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
    assert!(stdout.contains("pipeline video v2"), "{stdout}");
    assert!(stdout.contains("enrich[*] <- segment"), "{stdout}");
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
fn run_layers_defaults_file_environment_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orchestrator.toml");
    std::fs::write(
        &file,
        "[nats]\nurl = \"nats://from-file:1\"\nprefix = \"filed\"\n\
         [engine]\nresident_max = 123\npartitions = 4\n[http]\naddr = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let out = bin()
        .args(["run", "--print-config", "--config"])
        .arg(&file)
        .args(["--partitions", "16", "--http-addr", "off"])
        .env("NARRALYTICA_NATS_URL", "nats://from-env:2")
        .env("NARRALYTICA_HTTP_ADDR", "127.0.0.1:3")
        .env_remove("NARRALYTICA_PREFIX")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let get = |section: &str, key: &str| cfg[section][key].to_string();
    // flag > env > file > default
    assert_eq!(get("engine", "partitions"), "16", "flag over file");
    assert_eq!(get("http", "addr"), "\"off\"", "flag over env and file");
    assert_eq!(get("nats", "url"), "\"nats://from-env:2\"", "env over file");
    assert_eq!(get("nats", "prefix"), "\"filed\"", "file over default");
    assert_eq!(get("engine", "resident_max"), "123");
    assert_eq!(get("engine", "restart_budget"), "3", "default kept");
    // Without a file, the printed defaults are the shipped file's values.
    let out = bin()
        .args(["run", "--print-config"])
        .env_remove("NARRALYTICA_NATS_URL")
        .env_remove("NARRALYTICA_HTTP_ADDR")
        .env_remove("NARRALYTICA_CONFIG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_SERVICE_NAME")
        .output()
        .unwrap();
    let mut printed: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let mut shipped: toml::Table =
        toml::from_str(&std::fs::read_to_string("config/orchestrator.toml").unwrap()).unwrap();
    // The shipped file's paths are relative to its directory, config/.
    let printed_node = printed.remove("node").unwrap();
    let shipped_node = shipped.remove("node").unwrap();
    for (key, default, in_file) in [
        ("pipelines_dir", "config/pipelines", "pipelines"),
        ("data_dir", "data/orchestrator", "../data/orchestrator"),
    ] {
        assert_eq!(printed_node[key].as_str(), Some(default));
        assert_eq!(shipped_node[key].as_str(), Some(in_file));
    }
    assert_eq!(printed, shipped);
}

#[test]
fn run_takes_the_otlp_endpoint_from_the_flag_or_the_standard_env() {
    let print = |args: &[&str], env: Option<&str>| {
        let mut cmd = bin();
        cmd.args(["run", "--print-config"])
            .args(args)
            .env_remove("NARRALYTICA_CONFIG")
            .env_remove("OTEL_SERVICE_NAME");
        match env {
            Some(v) => cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", v),
            None => cmd.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT"),
        };
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        (out.status.code(), text, err)
    };
    let (code, text, _) = print(&[], Some("http://127.0.0.1:4318"));
    assert_eq!(code, Some(0));
    assert!(
        text.contains("otlp_endpoint = \"http://127.0.0.1:4318\""),
        "{text}"
    );
    let (_, text, _) = print(
        &["--otlp-endpoint", "http://c:9/base"],
        Some("http://env:1"),
    );
    assert!(
        text.contains("otlp_endpoint = \"http://c:9/base\""),
        "flag over env: {text}"
    );
    let (code, text, _) = print(
        &[
            "--otlp-endpoint",
            "https://c:4318",
            "--otlp-headers",
            "Authorization=Bearer%20s3cret",
        ],
        None,
    );
    assert_eq!(code, Some(0));
    assert!(text.contains("headers = \"***\""), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    let (code, _, err) = print(&["--otlp-endpoint", "ftp://c:4318"], None);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("trace.otlp_endpoint") && err.contains("http://"),
        "{err}"
    );
}

#[test]
fn run_refuses_unknown_keys_and_bad_values_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        ("[nats]\nurll = \"x\"\n", "urll"),
        ("[engine]\npartitions = 0\n", "engine.partitions"),
        ("[shutdown]\ngrace = \"soon\"\n", "duration"),
    ] {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, text).unwrap();
        let out = bin().args(["run", "--config"]).arg(&file).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(
            err.contains(needle) && err.starts_with("error: "),
            "{text}: {err}"
        );
    }
    let out = bin()
        .args(["run", "--config", "/nonexistent/orchestrator.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config"));
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

pub(crate) fn wait_exit(
    child: &mut std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The service end to end, scaled down: `run` + `worker --simulate` + 50 × `start`
/// over a real nats-server, SIGTERM, then `verify` on the data dir.
#[test]
fn run_worker_and_start_over_nats_survive_sigterm_and_verify_clean() {
    let mut b = Bench::new(None);
    b.start_orchestrator();
    b.start_worker(&["--latency-ms", "5"]);
    let input = |id: &str| format!(r#"{{"video_url":"s3://media/{id}.mp4"}}"#);
    let first = b.start_with("video", "v-0", &input("v-0"), false);
    let line = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(
        line.starts_with("workflow id=v-0 status=") && line.trim_end().ends_with("created=true"),
        "{line} {}",
        String::from_utf8_lossy(&first.stderr)
    );
    for i in 1..50 {
        let id = format!("v-{i}");
        let out = b.start_with("video", &id, &input(&id), false);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Starting an existing id returns it; --wait waits for the end.
    for i in 0..50 {
        let id = format!("v-{i}");
        let out = b.start_with("video", &id, &input(&id), true);
        let line = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{line} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            line.trim(),
            format!("workflow id={id} status=completed created=false")
        );
    }
    let mut orch = b.orch.take().unwrap();
    assert!(Command::new("kill")
        .args(["-TERM", &orch.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status =
        wait_exit(&mut orch, Duration::from_secs(10)).expect("graceful shutdown within 10 s");
    assert!(status.success(), "{status:?}");
    b.stop();
    let v = b.verify();
    assert_eq!(
        (
            num(&v, "workflows"),
            num(&v, "completed"),
            num(&v, "violations"),
            num(&v, "corrupt")
        ),
        (50.0, 50.0, 0.0, 0.0)
    );
}

/// `examples/python_worker.py` (nats-py) serves `transcribe` for a real
/// orchestrator: one workflow completes through it; with `--fail fatal` the
/// next one fails at that step.
#[test]
fn the_python_reference_worker_completes_and_fails_workflows() {
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
            "nats-py is needed for this test and `pip install nats-py==2.16.0` failed"
        );
    }
    let mut b = Bench::new(None);
    b.start_orchestrator();
    // Every other task type of the video pipeline (`translate` is skipped:
    // the input names no target language).
    let others = "ingest,extract_audio,segment,enrich_segment,embed,index";
    b.start_worker(&["--task-types", others]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python_worker.py");
    for (id, fail, status) in [("py-1", "none", "completed"), ("py-2", "fatal", "failed")] {
        let mut py = Command::new("python3")
            .arg(&script)
            .args([
                "transcribe",
                "--nats-url",
                &b.url(),
                "--max-tasks",
                "1",
                "--work-seconds",
                "0.2",
                "--fail",
                fail,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = b.start("video", id, true);
        let line = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            line.trim(),
            format!("workflow id={id} status={status} created=true"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.success(), status == "completed");
        let exit = wait_exit(&mut py, Duration::from_secs(20))
            .expect("python worker exits after its task");
        assert!(exit.success(), "python worker failed");
    }
}

/// A child process that is killed and reaped when dropped, so a test that
/// fails (panics) part-way leaves no orchestrator or worker running behind
/// it. `std::process::Child` does neither on drop.
pub(crate) struct Reaper(pub(crate) std::process::Child);

impl std::ops::Deref for Reaper {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaper {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A NATS test bench: a server, an orchestrator service and simulated workers,
/// all real processes.
pub(crate) struct Bench {
    pub(crate) server: crate::support::nats::NatsServer,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) pipelines: Option<std::path::PathBuf>,
    pub(crate) orch: Option<Reaper>,
    pub(crate) workers: Vec<Reaper>,
    /// `--backup-root` of the orchestrator, when set.
    pub(crate) backup_root: Option<std::path::PathBuf>,
}

impl Bench {
    pub(crate) fn new(pipelines: Option<std::path::PathBuf>) -> Bench {
        Bench {
            server: crate::support::nats::NatsServer::start(),
            dir: tempfile::tempdir().unwrap(),
            pipelines,
            orch: None,
            workers: Vec::new(),
            backup_root: None,
        }
    }

    pub(crate) fn url(&self) -> String {
        self.server.url()
    }

    pub(crate) fn start_orchestrator(&mut self) {
        let mut c = bin();
        c.args(["run", "--nats-url", &self.url(), "--data-dir"])
            .arg(self.dir.path());
        if let Some(p) = &self.pipelines {
            c.arg("--pipelines").arg(p);
        }
        if let Some(root) = &self.backup_root {
            c.arg("--backup-root").arg(root);
        }
        self.orch = Some(Reaper(
            c.stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ));
    }

    pub(crate) fn start_worker(&mut self, extra: &[&str]) -> usize {
        let mut c = bin();
        c.args(["worker", "--simulate", "--nats-url", &self.url()])
            .args(extra);
        if let Some(p) = &self.pipelines {
            c.arg("--pipelines").arg(p);
        }
        self.workers.push(Reaper(
            c.stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ));
        self.workers.len() - 1
    }

    /// `orchestrator start`, retried while the service is not listening yet.
    pub(crate) fn start(&self, pipeline: &str, id: &str, wait: bool) -> Output {
        self.start_with(pipeline, id, "{}", wait)
    }

    pub(crate) fn start_with(&self, pipeline: &str, id: &str, input: &str, wait: bool) -> Output {
        let url = self.url();
        let mut args = vec![
            "start",
            pipeline,
            "--id",
            id,
            "--input",
            input,
            "--timeout",
            "120",
            "--nats-url",
            &url,
        ];
        if wait {
            args.push("--wait");
        }
        let mut out = bin().args(&args).output().unwrap();
        for _ in 0..100 {
            let err = String::from_utf8_lossy(&out.stderr);
            if !(err.contains("no reply") || err.contains("no orchestrator is listening")) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            out = bin().args(&args).output().unwrap();
        }
        out
    }

    /// Workers first (SIGTERM: they finish the tasks in hand and hand the
    /// results over while the orchestrator still answers), then the
    /// orchestrator; SIGKILL for anything still up after 10 s.
    pub(crate) fn stop(&mut self) {
        for w in &self.workers {
            let _ = Command::new("kill")
                .args(["-TERM", &w.id().to_string()])
                .status();
        }
        for mut w in self.workers.drain(..) {
            let _ = wait_exit(&mut w, Duration::from_secs(10));
            let _ = w.kill();
            let _ = w.wait();
        }
        if let Some(mut o) = self.orch.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &o.id().to_string()])
                .status();
            let _ = wait_exit(&mut o, Duration::from_secs(10));
            let _ = o.kill();
        }
    }

    pub(crate) fn verify(&self) -> std::collections::HashMap<String, String> {
        let v = run(&["verify"], Some(self.dir.path()));
        fields(&String::from_utf8_lossy(&v.stdout), "verify ")
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn the_orchestrator_killed_mid_run_over_nats_resumes_and_accepts_no_step_twice() {
    let mut b = Bench::new(None);
    b.start_orchestrator();
    b.start_worker(&["--latency-ms", "100"]);
    for i in 0..20 {
        let out = b.start("video", &format!("k-{i}"), false);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::thread::sleep(Duration::from_millis(700));
    let mut orch = b.orch.take().unwrap();
    orch.kill().unwrap(); // SIGKILL
    let _ = orch.wait();
    b.start_orchestrator();
    for i in 0..20 {
        let out = b.start("video", &format!("k-{i}"), true);
        let line = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            line.trim(),
            format!("workflow id=k-{i} status=completed created=false"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    b.stop();
    let v = b.verify();
    assert_eq!(
        (
            num(&v, "workflows"),
            num(&v, "completed"),
            num(&v, "violations"),
            num(&v, "corrupt")
        ),
        (20.0, 20.0, 0.0, 0.0)
    );
}

#[test]
fn a_graceful_stop_applies_the_results_of_offers_in_flight_and_runs_no_task_twice() {
    graceful_stop_runs_no_task_twice("");
}

/// With two offer permits, most offers out at the stop wait for a permit
/// in the publish window: the drain must wait for those too.
#[test]
fn a_graceful_stop_also_waits_for_offers_beyond_the_in_flight_limit() {
    graceful_stop_runs_no_task_twice("tasks_direct_in_flight_max = 2\n");
}

/// 20 video workflows mid-run, SIGTERM, restart: every task ran exactly
/// once. `nats` is more of the `[nats]` section.
fn graceful_stop_runs_no_task_twice(nats: &str) {
    let mut b = Bench::new(None);
    let logs = tempfile::tempdir().unwrap();
    let record = logs.path().join("w.jsonl");
    // Results may answer their offers for up to 400 ms, so 40 ms tasks
    // answer with theirs even on a slow machine.
    let config = logs.path().join("orchestrator.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\ntasks_direct_timeout = \"1s\"\ntasks_direct_result_within = \"400ms\"\n{nats}"
        ),
    )
    .unwrap();
    let stderr = logs.path().join("run.err");
    let mut orch = crate::failpoints::spawn_with(
        &b,
        None,
        &[],
        &["--config", config.to_str().unwrap()],
        &stderr,
    );
    b.start_worker(&["--latency-ms", "40", "--record", record.to_str().unwrap()]);
    let ids: Vec<String> = (0..20).map(|i| format!("g-{i}")).collect();
    for id in &ids {
        let out = b.start("video", id, false);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Stop gracefully while workflows have a task out with a worker.
    std::thread::sleep(Duration::from_millis(100));
    let _ = Command::new("kill")
        .args(["-TERM", &orch.id().to_string()])
        .status();
    let exit = wait_exit(&mut orch, Duration::from_secs(15)).expect("stops within its grace");
    let text = std::fs::read_to_string(&stderr).unwrap();
    assert!(exit.success(), "{exit:?}: {text}");
    let f = fields(&text, "orchestrator stopping: offers");
    assert!(num(&f, "out") >= 1.0, "the stop came mid-run: {f:?}");
    assert_eq!(num(&f, "unfinished"), 0.0, "{f:?}");
    b.start_orchestrator();
    for id in &ids {
        let out = b.start("video", id, true);
        let line = String::from_utf8_lossy(&out.stdout);
        assert!(
            line.contains("status=completed"),
            "{line} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    b.stop();
    // A result that answered its offer while the node stopped was applied
    // before the engine stopped, so no task was sent again after the
    // restart; tasks the stop kept from going out went out once, then.
    let per_task = crate::failpoints::executions_per_task(&[record]);
    let mut twice: Vec<_> = per_task.iter().filter(|(_, n)| **n > 1).collect();
    twice.sort();
    assert!(twice.is_empty(), "ran more than once: {twice:?}");
    // 14 tasks per video workflow: 6 steps, and `enrich` once for each of
    // the 8 segments `segment` lists by default (`translate` is skipped).
    assert_eq!(per_task.len(), 20 * 14, "every task of every workflow ran");
}

#[test]
fn a_worker_killed_mid_task_is_replaced_by_a_new_attempt_after_its_heartbeat_timeout() {
    let pipelines = tempfile::tempdir().unwrap();
    std::fs::write(
        pipelines.path().join("beat.toml"),
        "[pipeline]\nname = \"beat\"\nversion = 1\n[defaults.retry]\nmax_attempts = 3\ninitial_backoff = \"100ms\"\nmax_backoff = \"100ms\"\n\
         [defaults.timeouts]\nheartbeat = \"2s\"\nstart_to_close = \"10m\"\n[[steps]]\nname = \"slow\"\n",
    )
    .unwrap();
    let mut b = Bench::new(Some(pipelines.path().to_path_buf()));
    b.start_orchestrator();
    let first = b.start_worker(&["--latency-ms", "600000"]);
    let out = b.start("beat", "hb-1", false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Let the worker take the task and heartbeat, then kill it mid-task.
    std::thread::sleep(Duration::from_millis(1500));
    let _ = b.workers[first].kill();
    let killed = std::time::Instant::now();
    b.start_worker(&["--latency-ms", "10"]);
    let out = b.start("beat", "hb-1", true);
    let line = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        line.trim(),
        "workflow id=hb-1 status=completed created=false",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(2 + 1 + 2),
        "a new attempt must start within heartbeat timeout + 1 s (took {took:?})"
    );
    b.stop();
    let v = b.verify();
    assert_eq!((num(&v, "completed"), num(&v, "violations")), (1.0, 0.0));
}

/// Every command (and every subcommand) documents itself with an example.
#[test]
fn every_command_has_help_with_an_example() {
    fn commands(args: &[&str]) -> Vec<String> {
        let out = bin().args(args).arg("--help").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines()
            .skip_while(|l| !l.starts_with("Commands:"))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .filter(|c| c != "help")
            .collect()
    }
    let top = commands(&[]);
    assert!(top.len() >= 15, "{top:?}");
    for c in top {
        let subs = commands(&[&c]);
        let leaves: Vec<Vec<String>> = if subs.is_empty() {
            vec![vec![c.clone()]]
        } else {
            subs.into_iter().map(|s| vec![c.clone(), s]).collect()
        };
        for leaf in leaves {
            let out = bin().args(&leaf).arg("--help").output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{leaf:?} --help failed");
            assert!(
                text.contains("Example"),
                "{leaf:?} --help has no example:\n{text}"
            );
            // Every flag an example of this command uses is one of its flags.
            let own = format!("orchestrator {} ", leaf.join(" "));
            let examples = text.lines().skip_while(|l| !l.contains("Example"));
            for line in examples.filter_map(|l| l.split_once(own.as_str()).map(|(_, r)| r)) {
                let command = line.split(['#', '|']).next().unwrap_or_default();
                for flag in command.split_whitespace().filter(|t| t.starts_with("--")) {
                    let flag = flag.split('=').next().unwrap();
                    let has = text.match_indices(flag).any(|(at, _)| {
                        !text[at + flag.len()..]
                            .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
                    });
                    assert!(
                        has,
                        "{leaf:?}: the example uses {flag}, which it does not have:\n{text}"
                    );
                }
            }
        }
    }
}
