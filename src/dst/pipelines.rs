//! The pipelines of a simulated run, parsed from their text (no file IO).

use crate::pipeline::load::parse_pipeline;
use crate::pipeline::{PipelineDef, PipelineLimits};

/// The production video pipeline.
const VIDEO_TOML: &str = include_str!("../../config/pipelines/video.toml");

/// A small pipeline whose middle step always fails: its workflows must end
/// failed after the retries are exhausted, and `publish` must never run.
pub(super) const FLAKY_TOML: &str = r#"
[pipeline]
name = "flaky"
version = 1

[defaults.retry]
max_attempts = 3
initial_backoff = "100ms"
backoff_coefficient = 2.0
max_backoff = "1s"

[defaults.timeouts]
schedule_to_start = "30s"
start_to_close = "2m"
heartbeat = "10s"

[[steps]]
name = "prepare"
task_type = "prepare"

[[steps]]
name = "doomed"
task_type = "doomed"
needs = ["prepare"]

[[steps]]
name = "publish"
task_type = "publish"
needs = ["doomed"]
"#;

/// A pipeline with a map step: `enrich` runs one task per segment that
/// `segment` lists (the simulated workers list as many as the workflow
/// input's `segments` asks for), a few at a time; and a conditional one:
/// `translate` runs only when the language the workers report (the
/// input's `language`) is not English, else it is skipped; and a wait
/// step: `approve` waits for the signal `approved` (payload `{"n":1}`),
/// which the client sends to every other workflow, resent with one id;
/// without it the wait times out and is skipped.
pub(super) const SEGMENTS_TOML: &str = r#"
[pipeline]
name = "segments"
version = 1

[defaults.retry]
max_attempts = 6
initial_backoff = "100ms"
backoff_coefficient = 2.0
max_backoff = "2s"

[defaults.timeouts]
schedule_to_start = "30s"
start_to_close = "2m"
heartbeat = "10s"

[[steps]]
name = "segment"

[[steps]]
name = "enrich"
needs = ["segment"]
map = { over = "segment/segments", max_parallel = 3 }

[[steps]]
name = "translate"
needs = ["segment"]
when = "deps.segment.language != 'en'"

[[steps]]
name = "approve"
needs = ["segment"]
wait = { signal = "approved", timeout = "30s", on_timeout = "skip" }

[[steps]]
name = "embed"
needs = ["enrich", "translate", "approve"]
"#;

/// A parent pipeline: `kid` runs a whole workflow of the `kid` pipeline
/// (its child, `<parent id>~kid~<generation>`, at version 1) and succeeds
/// or fails with it; `publish` runs only after a child that completed.
pub(super) const FAMILY_TOML: &str = r#"
[pipeline]
name = "family"
version = 1

[defaults.retry]
max_attempts = 6
initial_backoff = "100ms"
backoff_coefficient = 2.0
max_backoff = "2s"

[defaults.timeouts]
schedule_to_start = "30s"
start_to_close = "2m"
heartbeat = "10s"

[[steps]]
name = "prepare"

[[steps]]
name = "kid"
needs = ["prepare"]
pipeline = "kid"
pipeline_version = 1

[[steps]]
name = "publish"
needs = ["kid"]
"#;

/// The child pipeline of `family`: two task steps. The simulated workers
/// fail every attempt of `assemble` in the child of a doomed family (see
/// [`doomed`]), so that child fails after its retries, and its parent with it.
pub(super) const KID_TOML: &str = r#"
[pipeline]
name = "kid"
version = 1

[defaults.retry]
max_attempts = 5
initial_backoff = "100ms"
backoff_coefficient = 2.0
max_backoff = "1s"

[defaults.timeouts]
schedule_to_start = "30s"
start_to_close = "2m"
heartbeat = "10s"

[[steps]]
name = "fetch"

[[steps]]
name = "assemble"
needs = ["fetch"]
"#;

/// The step of `kid` that always fails in the child of a doomed family.
pub(super) const KID_DOOMED_STEP: &str = "assemble";

/// The input of family workflow `id`; `doom`: its child must fail.
pub(super) fn family_input(id: &str, doom: bool) -> String {
    format!(r#"{{"video_id":"{id}","doom":{doom}}}"#)
}

/// Whether the simulated workers fail every attempt of `spec`: the
/// `doomed` task type, and `assemble` of a child whose parent's input says
/// `"doom": true` (a child's input is `{"workflow": <parent input>, ...}`,
/// a task's `{"workflow": <its workflow's input>, ...}`).
pub(super) fn doomed(spec: &crate::workflow::TaskSpec) -> bool {
    if spec.task_type == DOOMED {
        return true;
    }
    spec.step == KID_DOOMED_STEP
        && serde_json::from_str::<serde_json::Value>(&spec.input)
            .ok()
            .and_then(|v| v.pointer("/workflow/workflow/doom")?.as_bool())
            == Some(true)
}

/// Segments each workflow of the `segments` pipeline asks for.
pub(super) const SEGMENTS: u32 = 7;

/// The task type the simulated workers always fail.
pub(super) const DOOMED: &str = "doomed";

/// The pipelines of a run, parsed from their text (no file IO).
pub(super) fn pipelines() -> Result<Vec<PipelineDef>, String> {
    let limits = PipelineLimits::default();
    let video = parse_pipeline(VIDEO_TOML, "video.toml", &limits).map_err(|e| e.to_string())?;
    let flaky = parse_pipeline(FLAKY_TOML, "flaky.toml", &limits).map_err(|e| e.to_string())?;
    let segments =
        parse_pipeline(SEGMENTS_TOML, "segments.toml", &limits).map_err(|e| e.to_string())?;
    let family = parse_pipeline(FAMILY_TOML, "family.toml", &limits).map_err(|e| e.to_string())?;
    let kid = parse_pipeline(KID_TOML, "kid.toml", &limits).map_err(|e| e.to_string())?;
    let defs = vec![video, flaky, segments, family, kid];
    crate::pipeline::child::check_children(&defs, |i| defs[i].name.clone()).map_err(|errs| {
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    Ok(defs)
}
