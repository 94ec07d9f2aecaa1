//! Pipelines registered while `orchestrator run` runs: by `pipelines reload`
//! and by SIGHUP; starts on a chosen version; a definition changed without a
//! new version refused on reload and at startup.

use std::io::Read;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::cli::{bin, wait_exit, Bench};

/// `hold` at `version` with `steps` steps; no test worker serves task type
/// `hold`, so its workflows stay running.
fn hold(version: u32, steps: usize) -> String {
    let mut text = format!("[pipeline]\nname = \"hold\"\nversion = {version}\n");
    for i in 0..steps {
        text.push_str(&format!(
            "[[steps]]\nname = \"s{i}\"\ntask_type = \"hold\"\n"
        ));
        if i > 0 {
            text.push_str(&format!("needs = [\"s{}\"]\n", i - 1));
        }
    }
    text
}

fn cli(b: &Bench, args: &[&str]) -> Output {
    bin()
        .args(args)
        .args(["--nats-url", &b.url()])
        .output()
        .unwrap()
}

fn ok(b: &Bench, args: &[&str]) -> String {
    let o = cli(b, args);
    assert!(
        o.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn fails(b: &Bench, args: &[&str]) -> String {
    let o = cli(b, args);
    assert!(!o.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// (pipeline version, step count) of a workflow, from `describe --json`.
fn pinned(b: &Bench, id: &str) -> (u64, usize) {
    let v: serde_json::Value = serde_json::from_str(&ok(b, &["describe", id, "--json"])).unwrap();
    (
        v["pipeline_version"].as_u64().unwrap(),
        v["steps"].as_array().unwrap().len(),
    )
}

fn start(b: &Bench, id: &str, version: Option<&str>) -> Output {
    let mut args = vec!["start", "hold", "--id", id];
    if let Some(v) = version {
        args.extend(["--pipeline-version", v]);
    }
    cli(b, &args)
}

#[test]
fn reload_by_verb_and_by_sighup_registers_new_versions_and_keeps_pinned_ones() {
    let pipelines = tempfile::tempdir().unwrap();
    let p = pipelines.path();
    std::fs::write(p.join("hold-1.toml"), hold(1, 1)).unwrap();
    let mut b = Bench::new(Some(p.to_path_buf()));
    b.start_orchestrator();
    let first = b.start("hold", "w-1", false);
    assert!(first.status.success(), "{first:?}");

    // An unregistered version is an error that lists the registered ones.
    let err = fails(
        &b,
        &["start", "hold", "--id", "w-x", "--pipeline-version", "2"],
    );
    assert!(
        err.contains("pipeline \"hold\" has no registered version 2 (registered: 1)"),
        "{err}"
    );

    // A new file, registered by the admin verb.
    std::fs::write(p.join("hold-2.toml"), hold(2, 2)).unwrap();
    let out = ok(&b, &["pipelines", "reload"]);
    assert!(
        out.contains("pipeline name=hold version=1 ") && out.contains("current=false added=false"),
        "{out}"
    );
    assert!(
        out.contains("pipeline name=hold version=2 ") && out.contains("current=true added=true"),
        "{out}"
    );
    assert!(start(&b, "w-2", None).status.success());
    assert!(start(&b, "w-3", Some("1")).status.success());
    assert_eq!(pinned(&b, "w-1"), (1, 1));
    assert_eq!(pinned(&b, "w-2"), (2, 2));
    assert_eq!(pinned(&b, "w-3"), (1, 1));

    // Version 2 changed without a new version: refused, naming the
    // pipeline, the version and the file; nothing changes.
    std::fs::write(p.join("hold-2.toml"), hold(2, 3)).unwrap();
    std::fs::write(p.join("hold-9.toml"), hold(9, 1)).unwrap();
    let err = fails(&b, &["pipelines", "reload"]);
    assert!(
        err.contains("hold-2.toml")
            && err.contains("pipeline \"hold\" version 2 differs")
            && err.contains("nothing reloaded"),
        "{err}"
    );
    assert!(start(&b, "w-4", None).status.success());
    assert_eq!(pinned(&b, "w-4"), (2, 2));
    assert!(!start(&b, "w-x", Some("9")).status.success());

    // SIGHUP: the same reload, once the file is restored.
    std::fs::write(p.join("hold-2.toml"), hold(2, 2)).unwrap();
    let pid = b.orch.as_ref().unwrap().id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !start(&b, "w-5", Some("9")).status.success() {
        assert!(
            Instant::now() < deadline,
            "version 9 not startable after SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        b.orch.as_mut().unwrap().try_wait().unwrap().is_none(),
        "run survives SIGHUP"
    );
    assert_eq!(pinned(&b, "w-5"), (9, 1));
    assert_eq!(pinned(&b, "w-1"), (1, 1));

    // Across a restart: the stored definition of version 9 wins over a
    // changed file, and `run` refuses to start, naming it.
    let mut orch = b.orch.take().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &orch.id().to_string()])
        .status();
    assert!(wait_exit(&mut orch, Duration::from_secs(15)).is_some());
    std::fs::write(p.join("hold-9.toml"), hold(9, 2)).unwrap();
    let mut refused = bin()
        .args([
            "run",
            "--nats-url",
            &b.url(),
            "--http-addr",
            "off",
            "--data-dir",
        ])
        .arg(b.dir.path())
        .arg("--pipelines")
        .arg(p)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut refused, Duration::from_secs(30));
    let _ = refused.kill();
    let mut err = String::new();
    refused
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.is_some_and(|s| !s.success()), "{err}");
    assert!(
        err.contains(&Path::new(p).join("hold-9.toml").display().to_string())
            && err.contains("pipeline \"hold\" version 9 differs"),
        "{err}"
    );

    // Restored, it starts, and every workflow still has its version.
    std::fs::write(p.join("hold-9.toml"), hold(9, 1)).unwrap();
    b.start_orchestrator();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cli(&b, &["describe", "w-2"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "orchestrator not back within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(pinned(&b, "w-1"), (1, 1));
    assert_eq!(pinned(&b, "w-2"), (2, 2));
    assert_eq!(pinned(&b, "w-5"), (9, 1));
}
