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
    Ok(vec![video, flaky, segments])
}
