//! Conditional steps through real processes: `orchestrator run` and
//! `worker --simulate` over NATS run a pipeline whose conditions read the
//! workflow input and a dependency's output; a skipped step dispatches
//! nothing, is journaled as `step_skipped`, and its dependent reads `null`
//! (the simulated `n` counts it 0).

use crate::cli::{bin, Bench};

/// `ingest` → `translate` (only when the language is not English) and
/// `summarize` (only when asked and `ingest` ran once) → `index`.
const CONDITIONAL: &str = r#"[pipeline]
name = "cond"
version = 1

[[steps]]
name = "ingest"

[[steps]]
name = "translate"
needs = ["ingest"]
when = "input.lang != 'en'"

[[steps]]
name = "summarize"
needs = ["ingest"]
when = "input.summary && deps.ingest.n == 1"

[[steps]]
name = "index"
needs = ["translate", "summarize"]
"#;

fn ops_json(b: &Bench, args: &[&str]) -> serde_json::Value {
    let o = bin()
        .args(args)
        .args(["--json", "--nats-url", &b.url()])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// (status, output) of each step, by name, from `describe --json`.
fn steps(b: &Bench, id: &str) -> Vec<(String, String, serde_json::Value)> {
    let wf = ops_json(b, &["describe", id]);
    assert_eq!(wf["status"], "completed", "{wf}");
    wf["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
                s["output"].clone(),
            )
        })
        .collect()
}

#[test]
fn a_step_skipped_by_its_condition_dispatches_nothing_and_its_dependent_reads_null() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cond.toml"), CONDITIONAL).unwrap();
    let check = bin()
        .args(["pipelines", "check"])
        .arg(dir.path())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{printed}");
    assert!(printed.contains("translate[?] <- ingest"), "{printed}");
    assert!(printed.contains("when input.lang != 'en'"), "{printed}");

    let mut b = Bench::new(Some(dir.path().to_path_buf()));
    b.start_orchestrator();
    b.start_worker(&["--task-types", "ingest,translate,summarize,index"]);
    for (id, input) in [
        ("en", r#"{"lang":"en","summary":true}"#),
        ("fr", r#"{"lang":"fr","summary":true}"#),
    ] {
        let out = b.start_with("cond", id, input, true);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let en = steps(&b, "en");
    let status: Vec<&str> = en.iter().map(|(_, s, _)| s.as_str()).collect();
    assert_eq!(status, ["succeeded", "skipped", "succeeded", "succeeded"]);
    assert!(en[1].2.is_null(), "a skipped step has no output");
    // index: 1 + translate (skipped: 0) + summarize (1 + ingest's 1).
    assert_eq!(en[3].2["n"], 3, "{:?}", en[3]);
    let fr = steps(&b, "fr");
    let status: Vec<&str> = fr.iter().map(|(_, s, _)| s.as_str()).collect();
    assert_eq!(status, ["succeeded", "succeeded", "succeeded", "succeeded"]);
    assert_eq!(fr[3].2["n"], 5, "{:?}", fr[3]);

    let history = ops_json(&b, &["history", "en"]);
    let events: Vec<(String, String)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["step"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    assert!(
        events.contains(&("step_skipped".to_string(), "translate".to_string())),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|(e, s)| e == "task_dispatched" && s == "translate"),
        "a skipped step is never dispatched: {events:?}"
    );
    b.stop();
    let v = b.verify();
    assert_eq!(
        (
            v.get("workflows").map(String::as_str),
            v.get("violations").map(String::as_str),
        ),
        (Some("2"), Some("0")),
        "{v:?}"
    );
}
