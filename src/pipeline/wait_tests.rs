//! Tests of a step's `wait`: what loads, what is refused at load (naming
//! the step and the problem), how `pipelines check` shows it, that wait
//! steps add no task type, and that waits change neither the hash nor the
//! stored form of a pipeline without them.

use super::load::*;
use super::*;

const FILE: &str = "pipelines/wait.toml";

fn parse_step(extra: &str) -> Result<PipelineDef, PipelineError> {
    let text = format!(
        "[pipeline]\nname = \"p\"\nversion = 1\n\n[[steps]]\nname = \"draft\"\n\n[[steps]]\nname = \"approve\"\nneeds = [\"draft\"]\n{extra}\n\n[[steps]]\nname = \"publish\"\nneeds = [\"approve\"]\n"
    );
    parse_pipeline(&text, FILE, &PipelineLimits::default())
}

fn refused(extra: &str, fragments: &[&str]) {
    let err = parse_step(extra).expect_err("the wait should be refused");
    let message = err.to_string();
    assert_eq!(err.step.as_deref(), Some("approve"), "{message}");
    for f in fragments {
        assert!(message.contains(f), "{message:?} lacks {f:?}");
    }
}

#[test]
fn a_wait_step_loads_shows_in_check_and_adds_no_task_type() {
    let def = parse_step(r#"wait = { signal = "approved", timeout = "48h", on_timeout = "skip" }"#)
        .unwrap();
    let w = def.wait_of(1).expect("approve waits");
    assert_eq!(w.signal, "approved");
    assert_eq!(w.timeout_ms, 48 * 3600 * 1000);
    assert_eq!(w.on_timeout, OnTimeout::Skip);
    assert!(def.waits_for("approved"));
    assert!(!def.waits_for("rejected"));
    assert_eq!(def.steps[1].task_type, "");
    assert_eq!(
        task_types(std::slice::from_ref(&def)),
        vec!["draft", "publish"]
    );
    let rendered = def.render_dag();
    assert!(rendered.contains("approve[wait] <- draft"), "{rendered}");
    assert!(
        rendered.contains("approve  wait for signal \"approved\": no task"),
        "{rendered}"
    );
    assert!(
        rendered.contains("then skipped (dependents read null)"),
        "{rendered}"
    );
    // `on_timeout` defaults to failing.
    let def = parse_step(r#"wait = { signal = "ok", timeout = "10m" }"#).unwrap();
    assert_eq!(def.wait_of(1).unwrap().on_timeout, OnTimeout::Fail);
}

#[test]
fn a_wait_step_with_a_task_or_a_bad_table_is_refused_with_the_reason() {
    refused(
        "task_type = \"x\"\nwait = { signal = \"a\", timeout = \"1h\" }",
        &["`task_type` does not apply"],
    );
    refused(
        "wait = { signal = \"a\", timeout = \"1h\" }\nmap = { over = \"draft\" }",
        &["`map` does not apply"],
    );
    refused(
        "wait = { signal = \"a\", timeout = \"1h\" }\nretry = { max_attempts = 2 }",
        &["`retry` does not apply"],
    );
    refused(
        "wait = { signal = \"a\", timeout = \"1h\" }\ntimeouts = { heartbeat = \"1s\" }",
        &["`timeouts` does not apply"],
    );
    refused("wait = { timeout = \"1h\" }", &["missing `signal`"]);
    refused("wait = { signal = \"a\" }", &["missing `timeout`"]);
    refused(
        "wait = { signal = \"Big One\", timeout = \"1h\" }",
        &["signal = \"Big One\"", "allowed are"],
    );
    refused(
        "wait = { signal = \"a\", timeout = \"0s\" }",
        &["must be greater than zero"],
    );
    refused(
        "wait = { signal = \"a\", timeout = \"5000d\" }",
        &["at most"],
    );
    refused(
        "wait = { signal = \"a\", timeout = \"1h\", on_timeout = \"retry\" }",
        &["expected \"fail\" or \"skip\""],
    );
    refused(
        "wait = { signal = \"a\", timeout = \"1h\", after = \"x\" }",
        &["after"],
    );
}

#[test]
fn waits_change_the_hash_and_a_pipeline_without_them_keeps_its_hash() {
    let plain = parse_step("").unwrap();
    assert!(plain.step_waits.is_empty());
    let waiting = parse_step(r#"wait = { signal = "approved", timeout = "48h" }"#).unwrap();
    assert_eq!(waiting.step_waits.len(), 3);
    assert_ne!(plain.content_hash(), waiting.content_hash());
    // A definition with a condition and no wait hashes as it did before
    // waits existed: its encoding without `step_waits`.
    let text =
        "[pipeline]\nname = \"p\"\nversion = 1\n\n[[steps]]\nname = \"a\"\nwhen = \"true\"\n";
    let def = parse_pipeline(text, FILE, &PipelineLimits::default()).unwrap();
    let v3 = stored::PipelineDefV3 {
        name: def.name.clone(),
        version: def.version,
        steps: def.steps.clone(),
        workflow_timeout_ms: def.workflow_timeout_ms,
        step_maps: def.step_maps.clone(),
        step_whens: def.step_whens.clone(),
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in postcard::to_allocvec(&v3).unwrap() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    assert_eq!(def.content_hash(), h);
    // And a definition stored without waits decodes as the current type.
    let bytes = postcard::to_allocvec(&v3).unwrap();
    assert!(postcard::from_bytes::<PipelineDef>(&bytes).is_err());
    let back: PipelineDef = postcard::from_bytes::<stored::PipelineDefV3>(&bytes)
        .unwrap()
        .into();
    assert_eq!(back, def);
}
