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

/// The task type the simulated workers always fail.
pub(super) const DOOMED: &str = "doomed";

/// The two pipelines of a run, parsed from their text (no file IO).
pub(super) fn pipelines() -> Result<Vec<PipelineDef>, String> {
    let limits = PipelineLimits::default();
    let video = parse_pipeline(VIDEO_TOML, "video.toml", &limits).map_err(|e| e.to_string())?;
    let flaky = parse_pipeline(FLAKY_TOML, "flaky.toml", &limits).map_err(|e| e.to_string())?;
    Ok(vec![video, flaky])
}
