//! Loading and validating pipeline files (`config/pipelines/*.toml`).
//!
//! A pipeline file is parsed in two stages. The TOML text is first parsed into
//! a spanned document (so syntax errors and bad values can point at a line),
//! then each section is deserialized into "raw" structs that mirror the file
//! format with every field optional and unknown fields rejected. Validation
//! then turns the raw structs into a [`PipelineDef`], merging step overrides
//! over `[defaults]` over the built-in defaults, and reports the first problem
//! as a [`PipelineError`] that names the file, the step and the problem.
//!
//! File format:
//!
//! ```toml
//! [pipeline]
//! name = "video"
//! version = 1
//! workflow_timeout = "24h"         # optional
//! in_progress_max = 5000           # optional: bulk-accepted or recovered
//!                                   # workflows in progress (docs/capacity.md)
//!
//! [defaults.retry]                  # optional, per field
//! max_attempts = 10
//! initial_backoff = "200ms"
//! backoff_coefficient = 2.0
//! max_backoff = "10s"
//! jitter = 0.2
//! non_retryable = ["invalid_input"]
//!
//! [defaults.timeouts]               # optional, per field; "none" disables one
//! schedule_to_start = "10m"
//! start_to_close = "1h"
//! heartbeat = "60s"
//! queue_timeout = "30m"             # longest wait in the admission gate
//!                                   # (docs/capacity.md); default none
//!
//! [[steps]]
//! name = "ingest"
//! task_type = "ingest"              # optional, defaults to the name
//! needs = []                        # optional
//! [steps.retry]                     # optional per-field overrides
//! max_attempts = 5
//! [steps.timeouts]
//! start_to_close = "2h"
//!
//! [[steps]]
//! name = "enrich"
//! needs = ["segment"]
//! # optional: one task per element of the array at a JSON pointer in a
//! # dependency's output (docs/pipelines.md, "Map")
//! map = { over = "segment/segments", max_parallel = 64, min_success = "100%", max_elements = 10000, max_output_bytes = 16777216 }
//!
//! [[steps]]
//! name = "translate"
//! needs = ["detect_language"]
//! # optional: run only when this CEL expression over `input` and `deps`
//! # is true, else skip (docs/pipelines.md, "When")
//! when = "deps.detect_language.language != input.target_language"
//!
//! [[steps]]
//! name = "enrich"
//! needs = ["segment"]
//! # optional: run a workflow of another pipeline (its current version, or
//! # `pipeline_version`) instead of a task (docs/pipelines.md, "Child
//! # pipelines"); no task_type, map, retry or timeouts on such a step
//! pipeline = "enrich"
//! pipeline_version = 2
//! ```

use std::collections::HashMap;
use std::path::Path;

pub use super::error::{PipelineError, PipelineErrorKind};
use super::validate::Parser;
use super::{PipelineDef, PipelineLimits};

/// Parses and validates one pipeline file's text. `file` is only used to name
/// the file in errors.
pub fn parse_pipeline(
    text: &str,
    file: &str,
    limits: &PipelineLimits,
) -> Result<PipelineDef, PipelineError> {
    Parser { file, text, limits }.parse()
}

/// Reads and validates one pipeline file; IO errors name the file too.
pub fn load_pipeline_file(
    path: &Path,
    limits: &PipelineLimits,
) -> Result<PipelineDef, PipelineError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        PipelineError::new(
            &file,
            None,
            PipelineErrorKind::Io {
                message: e.to_string(),
            },
        )
    })?;
    parse_pipeline(&text, &file, limits)
}

/// A validated definition and the file it came from (named in errors about it).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedPipeline {
    pub file: String,
    pub def: PipelineDef,
}

/// Loads every `*.toml` file of `dir`, in file-name order. All problems are
/// reported, not only the first: one error per broken file, plus one per file
/// that declares a (name, version) already declared by an earlier file.
/// A directory without pipeline files is not an error here; whether that is
/// acceptable is the caller's decision.
pub fn load_pipeline_dir(
    dir: &Path,
    limits: &PipelineLimits,
) -> Result<Vec<PipelineDef>, Vec<PipelineError>> {
    load_pipeline_files(dir, limits).map(|loaded| loaded.into_iter().map(|l| l.def).collect())
}

/// [`load_pipeline_dir`], keeping the file of each definition.
pub fn load_pipeline_files(
    dir: &Path,
    limits: &PipelineLimits,
) -> Result<Vec<LoadedPipeline>, Vec<PipelineError>> {
    let dir_error = |message: String| {
        PipelineError::new(
            dir.display().to_string(),
            None,
            PipelineErrorKind::Io { message },
        )
    };
    let entries = std::fs::read_dir(dir).map_err(|e| vec![dir_error(e.to_string())])?;

    let mut errors = Vec::new();
    let mut paths = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => {
                let path = entry.path();
                // `Path::is_file` follows symlinks, so linked files are loaded too.
                if path.extension().is_some_and(|ext| ext == "toml") && path.is_file() {
                    paths.push(path);
                }
            }
            Err(e) => errors.push(dir_error(e.to_string())),
        }
    }
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));

    let mut defs: Vec<LoadedPipeline> = Vec::new();
    // (name, version) -> file that declared it first.
    let mut seen: HashMap<(String, u32), String> = HashMap::new();
    for path in paths {
        match load_pipeline_file(&path, limits) {
            Ok(def) => {
                let file = path.display().to_string();
                let key = (def.name.clone(), def.version);
                if let Some(other_file) = seen.get(&key) {
                    errors.push(PipelineError::new(
                        file,
                        None,
                        PipelineErrorKind::DuplicatePipeline {
                            name: def.name,
                            version: def.version,
                            other_file: other_file.clone(),
                        },
                    ));
                } else {
                    seen.insert(key, file.clone());
                    defs.push(LoadedPipeline { file, def });
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        let all: Vec<PipelineDef> = defs.iter().map(|l| l.def.clone()).collect();
        super::child::check_children(&all, |i| defs[i].file.clone())?;
        Ok(defs)
    } else {
        Err(errors)
    }
}
