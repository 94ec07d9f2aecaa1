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
//!
//! [[steps]]
//! name = "ingest"
//! task_type = "ingest"              # optional, defaults to the name
//! needs = []                        # optional
//! [steps.retry]                     # optional per-field overrides
//! max_attempts = 5
//! [steps.timeouts]
//! start_to_close = "2h"
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::{PipelineDef, PipelineLimits, RetryPolicy, StepDef, StepTimeouts};

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// A problem with a pipeline file. `Display` gives one line naming the file,
/// the step (when the problem belongs to one) and the problem, e.g.
/// `config/pipelines/video.toml: step "embed": needs unknown step "enrich_topic"`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {}{kind}", step_prefix(.step))]
pub struct PipelineError {
    /// The file (or directory) the problem was found in, as given by the caller.
    pub file: String,
    /// The step the problem belongs to, if any.
    pub step: Option<String>,
    /// What is wrong (boxed to keep `Result<_, PipelineError>` small on the
    /// happy path).
    pub kind: Box<PipelineErrorKind>,
}

impl PipelineError {
    /// An error in `file`, optionally attributed to `step`.
    pub fn new(file: impl Into<String>, step: Option<&str>, kind: PipelineErrorKind) -> Self {
        Self {
            file: file.into(),
            step: step.map(str::to_owned),
            kind: Box::new(kind),
        }
    }
}

fn step_prefix(step: &Option<String>) -> String {
    match step {
        Some(name) => format!("step \"{name}\": "),
        None => String::new(),
    }
}

fn at_line(line: &Option<usize>) -> String {
    match line {
        Some(line) => format!(" at line {line}"),
        None => String::new(),
    }
}

/// The kinds of mistakes a pipeline file can contain; each has its own message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PipelineErrorKind {
    /// The file or directory could not be read.
    #[error("cannot read: {message}")]
    Io { message: String },
    /// The text is not valid TOML.
    #[error("TOML syntax error at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// A key the format does not know (most likely a typo).
    #[error("unknown field in {section}{}: {message}", at_line(.line))]
    UnknownField {
        section: String,
        line: Option<usize>,
        message: String,
    },
    /// A value of the wrong type or out of its type's range.
    #[error("invalid value in {section}{}: {message}", at_line(.line))]
    InvalidValue {
        section: String,
        line: Option<usize>,
        message: String,
    },
    /// `[pipeline] name` is absent.
    #[error("missing pipeline name: set `name = \"...\"` under [pipeline]")]
    MissingName,
    /// `[pipeline] version` is absent.
    #[error("missing pipeline version: set `version = 1` (or higher) under [pipeline]")]
    MissingVersion,
    /// A `[[steps]]` table without `name`.
    #[error("step #{position} has no name")]
    MissingStepName { position: usize },
    /// A pipeline name, step name, task type or error kind breaks the naming rules.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// Version 0 is reserved so that "no version" can never be confused with a real one.
    #[error("pipeline version must be at least 1, got 0")]
    VersionZero,
    /// The pipeline declares no `[[steps]]`.
    #[error("pipeline has no steps: declare at least one [[steps]] table")]
    NoSteps,
    /// More steps than `limits.steps_max`.
    #[error("too many steps: {count} declared, the limit is {max}")]
    TooManySteps { count: usize, max: usize },
    /// Two steps with the same name.
    #[error("duplicate step name (declared as step #{first} and step #{second})")]
    DuplicateStep { first: usize, second: usize },
    /// More entries in `needs` than `limits.needs_max`.
    #[error("too many dependencies: {count} listed in needs, the limit is {max}")]
    TooManyNeeds { count: usize, max: usize },
    /// `needs` names a step that does not exist.
    #[error("needs unknown step \"{dep}\"")]
    UnknownDependency { dep: String },
    /// A step lists itself in `needs`.
    #[error("needs itself")]
    SelfDependency,
    /// A step lists the same dependency twice.
    #[error("needs \"{dep}\" more than once")]
    DuplicateDependency { dep: String },
    /// The dependencies form a cycle; `path` starts and ends with the same step
    /// and each step needs the next one.
    #[error("dependency cycle {} (each step needs the next)", .path.join(" -> "))]
    Cycle { path: Vec<String> },
    /// A duration that does not parse or is out of range for its field.
    #[error("invalid duration for {field} \"{value}\": {reason}")]
    BadDuration {
        field: String,
        value: String,
        reason: String,
    },
    /// `max_attempts` outside `1..=limits.max_attempts_max`.
    #[error("{field} must be between 1 and {max}, got {value}")]
    MaxAttempts { field: String, value: u32, max: u32 },
    /// A backoff coefficient below 1.0 (delays would shrink) or not finite.
    #[error("{field} must be a finite number >= 1.0, got {value}")]
    BadCoefficient { field: String, value: f64 },
    /// A jitter fraction outside `[0, 1]`.
    #[error("{field} must be between 0.0 and 1.0, got {value}")]
    BadJitter { field: String, value: f64 },
    /// The first retry delay is longer than the cap on every delay.
    #[error("{field}.initial_backoff ({initial}) is greater than {field}.max_backoff ({max})")]
    BackoffOrder {
        field: String,
        initial: String,
        max: String,
    },
    /// Two files of one directory declare the same pipeline name and version.
    #[error("pipeline \"{name}\" version {version} is already declared in {other_file}")]
    DuplicatePipeline {
        name: String,
        version: u32,
        other_file: String,
    },
}

// ---------------------------------------------------------------------------
// Raw file format
// ---------------------------------------------------------------------------

// Every field is optional here so that absence can be told apart from a value
// (for per-field merging and for precise "missing ..." messages).

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    name: Option<String>,
    version: Option<u32>,
    workflow_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    timeouts: RawTimeouts,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_attempts: Option<u32>,
    initial_backoff: Option<String>,
    backoff_coefficient: Option<f64>,
    max_backoff: Option<String>,
    jitter: Option<f64>,
    non_retryable: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    schedule_to_start: Option<String>,
    start_to_close: Option<String>,
    heartbeat: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: Option<String>,
    task_type: Option<String>,
    #[serde(default)]
    needs: Vec<String>,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    timeouts: RawTimeouts,
}

/// Rust names of the raw structs, as serde puts them in type errors.
const RAW_TYPE_NAMES: [&str; 5] = [
    "RawHeader",
    "RawDefaults",
    "RawRetry",
    "RawTimeouts",
    "RawStep",
];

/// Retry policy used where neither the file's `[defaults.retry]` nor the step
/// says otherwise.
fn builtin_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        initial_backoff_ms: 1_000,
        backoff_coefficient: 2.0,
        max_backoff_ms: 60_000,
        jitter: 0.2,
        non_retryable: Vec::new(),
    }
}

/// No deadline of any kind unless the file asks for one.
fn builtin_timeouts() -> StepTimeouts {
    StepTimeouts {
        schedule_to_start_ms: None,
        start_to_close_ms: None,
        heartbeat_ms: None,
    }
}

// ---------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------

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

/// Loads every `*.toml` file of `dir`, in file-name order. All problems are
/// reported, not only the first: one error per broken file, plus one per file
/// that declares a (name, version) already declared by an earlier file.
/// A directory without pipeline files is not an error here; whether that is
/// acceptable is the caller's decision.
pub fn load_pipeline_dir(
    dir: &Path,
    limits: &PipelineLimits,
) -> Result<Vec<PipelineDef>, Vec<PipelineError>> {
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

    let mut defs: Vec<PipelineDef> = Vec::new();
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
                    seen.insert(key, file);
                    defs.push(def);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(defs)
    } else {
        Err(errors)
    }
}

// ---------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------

const MS_PER_SECOND: u64 = 1_000;
const MS_PER_MINUTE: u64 = 60 * MS_PER_SECOND;
const MS_PER_HOUR: u64 = 60 * MS_PER_MINUTE;
const MS_PER_DAY: u64 = 24 * MS_PER_HOUR;

/// Units from largest to smallest; a compound duration must use them in this
/// order, each at most once, so `1m30s` is accepted and the ambiguous-looking
/// `30s1m` or `1m1m` are not.
const UNITS: [(&str, u64); 5] = [
    ("d", MS_PER_DAY),
    ("h", MS_PER_HOUR),
    ("m", MS_PER_MINUTE),
    ("s", MS_PER_SECOND),
    ("ms", 1),
];

/// Parses `<integer><unit>` (units `ms`, `s`, `m`, `h`, `d`) or a compound of
/// such parts, largest unit first (`1h30m`, `1m30s`, `2s500ms`), into
/// milliseconds. Zero is accepted; callers reject it where it makes no sense.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    if s.is_empty() {
        return Err("empty duration".to_owned());
    }
    if s.starts_with('-') {
        return Err("negative durations are not allowed".to_owned());
    }
    let bytes = s.as_bytes();
    let mut pos = 0;
    let mut total: u64 = 0;
    // Index into UNITS of the previous part's unit.
    let mut previous_unit: Option<usize> = None;
    while pos < bytes.len() {
        let digits_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        if pos == digits_start {
            // Only ASCII bytes were consumed, so `pos` is on a char boundary.
            let found = s[pos..].chars().next().unwrap_or_default();
            return Err(format!("expected a number, found {found:?}"));
        }
        let digits = &s[digits_start..pos];
        let unit_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_alphabetic() {
            pos += 1;
        }
        let unit = &s[unit_start..pos];
        if unit.is_empty() {
            return Err(match bytes.get(pos) {
                None => format!("missing unit after {digits} (use ms, s, m, h or d)"),
                Some(b'.') => {
                    "fractions are not supported; use a smaller unit (1500ms, not 1.5s)".to_owned()
                }
                Some(_) => {
                    let found = s[pos..].chars().next().unwrap_or_default();
                    format!("unexpected {found:?} after {digits}")
                }
            });
        }
        let Some(unit_index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(format!("unknown unit {unit:?} (use ms, s, m, h or d)"));
        };
        if previous_unit.is_some_and(|prev| unit_index <= prev) {
            return Err("each unit may appear once, largest first (e.g. 1h30m)".to_owned());
        }
        previous_unit = Some(unit_index);
        let overflow = || "duration is too large".to_owned();
        // `digits` is non-empty ASCII digits, so parsing can only fail on overflow.
        let value: u64 = digits.parse().map_err(|_| overflow())?;
        total = value
            .checked_mul(UNITS[unit_index].1)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(overflow)?;
    }
    Ok(total)
}

/// Formats milliseconds in the syntax [`parse_duration_ms`] reads, using the
/// fewest parts: `200ms`, `10s`, `1h`, `1m30s`, `0ms`. Hours are the largest
/// unit because timeouts are commonly thought of in hours (`24h`, `48h`).
pub fn format_duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "0ms".to_owned();
    }
    let mut out = String::new();
    let mut rest = ms;
    // Skip days (UNITS[0]): see the doc comment.
    for &(unit, factor) in &UNITS[1..] {
        let count = rest / factor;
        if count > 0 {
            // Writing to a String cannot fail.
            let _ = write!(out, "{count}{unit}");
            rest %= factor;
        }
    }
    out
}

fn format_optional_ms(ms: Option<u64>) -> String {
    ms.map_or_else(|| "none".to_owned(), format_duration_ms)
}

// ---------------------------------------------------------------------------
// Parsing and validation
// ---------------------------------------------------------------------------

struct Parser<'a> {
    file: &'a str,
    text: &'a str,
    limits: &'a PipelineLimits,
}

/// What a `[[steps]]` table turned into after per-step validation, before the
/// whole graph is checked for cycles.
struct CheckedStep {
    name: String,
    task_type: String,
    needs: Vec<u16>,
    retry: RetryPolicy,
    timeouts: StepTimeouts,
}

impl<'a> Parser<'a> {
    fn error(&self, step: Option<&str>, kind: PipelineErrorKind) -> PipelineError {
        PipelineError::new(self.file, step, kind)
    }

    /// 1-based line and column of a byte offset into the text.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }

    fn line_of(&self, span: Option<Range<usize>>) -> Option<usize> {
        span.map(|span| self.line_col(span.start).0)
    }

    /// Deserializes one section of the spanned document, keeping the line of
    /// the offending key or value in the error.
    fn section<T: Deserialize<'a>>(
        &self,
        value: Spanned<DeValue<'a>>,
        section: &str,
        step: Option<&str>,
    ) -> Result<T, PipelineError> {
        T::deserialize(ValueDeserializer::from(value)).map_err(|e| {
            let section = section.to_owned();
            let line = self.line_of(e.span());
            // serde names the expected Rust type; users only know TOML tables.
            let message = RAW_TYPE_NAMES
                .iter()
                .fold(e.message().to_owned(), |m, name| {
                    m.replace(&format!("struct {name}"), "a table")
                });
            // serde reports `deny_unknown_fields` violations with this prefix.
            let kind = if message.starts_with("unknown field") {
                PipelineErrorKind::UnknownField {
                    section,
                    line,
                    message,
                }
            } else {
                PipelineErrorKind::InvalidValue {
                    section,
                    line,
                    message,
                }
            };
            self.error(step, kind)
        })
    }

    fn parse(&self) -> Result<PipelineDef, PipelineError> {
        let doc = DeTable::parse(self.text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |span| self.line_col(span.start));
            self.error(
                None,
                PipelineErrorKind::Syntax {
                    line,
                    column,
                    message: e.message().to_owned(),
                },
            )
        })?;
        let mut top = doc.into_inner();
        let header = top.remove("pipeline");
        let defaults = top.remove("defaults");
        let steps = top.remove("steps");
        // Whatever is left is unknown; report the first one in file order.
        if let Some(key) = top.keys().min_by_key(|key| key.span().start) {
            return Err(self.error(
                None,
                PipelineErrorKind::UnknownField {
                    section: "the top level".to_owned(),
                    line: self.line_of(Some(key.span())),
                    message: format!(
                        "unknown field `{}`, expected `pipeline`, `defaults` or `steps`",
                        key.get_ref()
                    ),
                },
            ));
        }

        let header: RawHeader = match header {
            Some(value) => self.section(value, "[pipeline]", None)?,
            None => RawHeader::default(),
        };
        let name = header
            .name
            .ok_or_else(|| self.error(None, PipelineErrorKind::MissingName))?;
        self.check_name(&name, "pipeline name", false, None)?;
        let version = header
            .version
            .ok_or_else(|| self.error(None, PipelineErrorKind::MissingVersion))?;
        if version == 0 {
            return Err(self.error(None, PipelineErrorKind::VersionZero));
        }
        let workflow_timeout_ms = match &header.workflow_timeout {
            Some(text) => self.timeout(text, "workflow_timeout", None)?,
            None => None,
        };

        let defaults: RawDefaults = match defaults {
            Some(value) => self.section(value, "[defaults]", None)?,
            None => RawDefaults::default(),
        };
        let default_retry =
            self.merge_retry(&builtin_retry(), &defaults.retry, "defaults.retry", None)?;
        let default_timeouts = self.merge_timeouts(
            &builtin_timeouts(),
            &defaults.timeouts,
            "defaults.timeouts",
            None,
        )?;

        let raw_steps = self.raw_steps(steps)?;
        let checked = self.check_steps(&raw_steps, &default_retry, &default_timeouts)?;
        self.check_acyclic(&checked)?;

        Ok(PipelineDef {
            name,
            version,
            steps: checked
                .into_iter()
                .map(|s| StepDef {
                    name: s.name,
                    task_type: s.task_type,
                    needs: s.needs,
                    retry: s.retry,
                    timeouts: s.timeouts,
                })
                .collect(),
            workflow_timeout_ms,
        })
    }

    /// Deserializes the `[[steps]]` array, checking its size before doing any
    /// per-step work so an oversized file is rejected cheaply.
    fn raw_steps(
        &self,
        steps: Option<Spanned<DeValue<'a>>>,
    ) -> Result<Vec<RawStep>, PipelineError> {
        let Some(steps) = steps else {
            return Err(self.error(None, PipelineErrorKind::NoSteps));
        };
        let span = steps.span();
        let DeValue::Array(array) = steps.into_inner() else {
            return Err(self.error(
                None,
                PipelineErrorKind::InvalidValue {
                    section: "the top level".to_owned(),
                    line: self.line_of(Some(span)),
                    message: "`steps` must be an array of tables ([[steps]])".to_owned(),
                },
            ));
        };
        if array.is_empty() {
            return Err(self.error(None, PipelineErrorKind::NoSteps));
        }
        // `needs` is stored as u16 indices, which caps the step count whatever the limit says.
        let max = self.limits.steps_max.min(usize::from(u16::MAX) + 1);
        if array.len() > max {
            return Err(self.error(
                None,
                PipelineErrorKind::TooManySteps {
                    count: array.len(),
                    max,
                },
            ));
        }
        array
            .into_iter()
            .enumerate()
            .map(|(i, value)| {
                // Name the step in errors when its name is readable, even if
                // another field of the same table is broken.
                let name = value
                    .get_ref()
                    .as_table()
                    .and_then(|t| t.get("name"))
                    .and_then(|v| v.get_ref().as_str())
                    .map(str::to_owned);
                let section = format!("[[steps]] #{}", i + 1);
                self.section(value, &section, name.as_deref())
            })
            .collect()
    }

    fn check_steps(
        &self,
        raw: &[RawStep],
        default_retry: &RetryPolicy,
        default_timeouts: &StepTimeouts,
    ) -> Result<Vec<CheckedStep>, PipelineError> {
        // Pass 1: names, so that pass 2 can resolve `needs` in any declaration order.
        let mut index_of: HashMap<&str, usize> = HashMap::with_capacity(raw.len());
        let mut names = Vec::with_capacity(raw.len());
        for (i, step) in raw.iter().enumerate() {
            let Some(name) = step.name.as_deref() else {
                return Err(
                    self.error(None, PipelineErrorKind::MissingStepName { position: i + 1 })
                );
            };
            self.check_name(name, "step name", false, None)?;
            if let Some(&first) = index_of.get(name) {
                return Err(self.error(
                    Some(name),
                    PipelineErrorKind::DuplicateStep {
                        first: first + 1,
                        second: i + 1,
                    },
                ));
            }
            index_of.insert(name, i);
            names.push(name);
        }

        // Pass 2: everything else that can be checked one step at a time.
        let mut checked = Vec::with_capacity(raw.len());
        for (step, &name) in raw.iter().zip(&names) {
            let task_type = step.task_type.as_deref().unwrap_or(name);
            self.check_name(task_type, "task type", true, Some(name))?;

            if step.needs.len() > self.limits.needs_max {
                return Err(self.error(
                    Some(name),
                    PipelineErrorKind::TooManyNeeds {
                        count: step.needs.len(),
                        max: self.limits.needs_max,
                    },
                ));
            }
            let mut needs: Vec<u16> = Vec::with_capacity(step.needs.len());
            for dep in &step.needs {
                if dep == name {
                    return Err(self.error(Some(name), PipelineErrorKind::SelfDependency));
                }
                let Some(&index) = index_of.get(dep.as_str()) else {
                    return Err(self.error(
                        Some(name),
                        PipelineErrorKind::UnknownDependency { dep: dep.clone() },
                    ));
                };
                // Lossless: the step count was capped at u16::MAX + 1 above.
                let index = index as u16;
                if needs.contains(&index) {
                    return Err(self.error(
                        Some(name),
                        PipelineErrorKind::DuplicateDependency { dep: dep.clone() },
                    ));
                }
                needs.push(index);
            }
            needs.sort_unstable();

            let retry = self.merge_retry(default_retry, &step.retry, "retry", Some(name))?;
            let timeouts =
                self.merge_timeouts(default_timeouts, &step.timeouts, "timeouts", Some(name))?;
            checked.push(CheckedStep {
                name: name.to_owned(),
                task_type: task_type.to_owned(),
                needs,
                retry,
                timeouts,
            });
        }
        Ok(checked)
    }

    /// Rejects a dependency cycle, naming the steps on it.
    fn check_acyclic(&self, steps: &[CheckedStep]) -> Result<(), PipelineError> {
        let levels = compute_levels(steps.len(), |i| &steps[i].needs);
        let Some(start) = levels.iter().position(Option::is_none) else {
            return Ok(());
        };
        // Every step left without a level has at least one need that is also
        // left without one (otherwise it would have been levelled), so walking
        // such needs must eventually revisit a step: that closes the cycle.
        let mut path: Vec<usize> = vec![start];
        loop {
            let current = path[path.len() - 1];
            let next = steps[current]
                .needs
                .iter()
                .map(|&d| usize::from(d))
                .find(|&d| levels[d].is_none())
                .unwrap_or(start); // unreachable by the argument above; stay total anyway
            if let Some(pos) = path.iter().position(|&p| p == next) {
                let mut names: Vec<String> =
                    path[pos..].iter().map(|&i| steps[i].name.clone()).collect();
                names.push(steps[next].name.clone());
                return Err(self.error(None, PipelineErrorKind::Cycle { path: names }));
            }
            path.push(next);
        }
    }

    /// Names travel in NATS subjects and metric labels, hence the small alphabet.
    /// Task types and error kinds are chosen by worker teams and may use
    /// upper-case letters as well.
    fn check_name(
        &self,
        value: &str,
        what: &'static str,
        allow_upper: bool,
        step: Option<&str>,
    ) -> Result<(), PipelineError> {
        let invalid = |reason: String| {
            self.error(
                step,
                PipelineErrorKind::InvalidName {
                    what,
                    value: value.to_owned(),
                    reason,
                },
            )
        };
        if value.is_empty() {
            return Err(invalid("must not be empty".to_owned()));
        }
        let max = self.limits.name_len_max;
        let len = value.chars().count();
        if len > max {
            return Err(invalid(format!(
                "is {len} characters long, the limit is {max}"
            )));
        }
        let allowed = |c: char| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || c == '_'
                || c == '-'
                || (allow_upper && c.is_ascii_uppercase())
        };
        if let Some(bad) = value.chars().find(|&c| !allowed(c)) {
            let alphabet = if allow_upper {
                "a-z, A-Z, 0-9, '_' and '-'"
            } else {
                "a-z, 0-9, '_' and '-'"
            };
            return Err(invalid(format!("contains {bad:?}; allowed are {alphabet}")));
        }
        Ok(())
    }

    fn duration(&self, text: &str, field: &str, step: Option<&str>) -> Result<u64, PipelineError> {
        parse_duration_ms(text).map_err(|reason| {
            let reason = if text == "none" {
                "\"none\" is only allowed for timeouts".to_owned()
            } else {
                reason
            };
            self.bad_duration(text, field, step, reason)
        })
    }

    /// A timeout: a positive duration, or `none` for no deadline.
    fn timeout(
        &self,
        text: &str,
        field: &str,
        step: Option<&str>,
    ) -> Result<Option<u64>, PipelineError> {
        if text == "none" {
            return Ok(None);
        }
        let ms = parse_duration_ms(text).map_err(|r| self.bad_duration(text, field, step, r))?;
        if ms == 0 {
            return Err(self.bad_duration(
                text,
                field,
                step,
                "a timeout must be greater than zero (use \"none\" for no timeout)".to_owned(),
            ));
        }
        Ok(Some(ms))
    }

    fn bad_duration(
        &self,
        text: &str,
        field: &str,
        step: Option<&str>,
        reason: String,
    ) -> PipelineError {
        self.error(
            step,
            PipelineErrorKind::BadDuration {
                field: field.to_owned(),
                value: text.to_owned(),
                reason,
            },
        )
    }

    /// Overrides `base` field by field with what `raw` sets, validating each
    /// value set and then the combination. `prefix` is how the table is called
    /// in messages (`defaults.retry` or, inside a step, `retry`).
    fn merge_retry(
        &self,
        base: &RetryPolicy,
        raw: &RawRetry,
        prefix: &str,
        step: Option<&str>,
    ) -> Result<RetryPolicy, PipelineError> {
        let field = |name: &str| format!("{prefix}.{name}");
        let mut policy = base.clone();
        if let Some(value) = raw.max_attempts {
            let max = self.limits.max_attempts_max;
            if value == 0 || value > max {
                return Err(self.error(
                    step,
                    PipelineErrorKind::MaxAttempts {
                        field: field("max_attempts"),
                        value,
                        max,
                    },
                ));
            }
            policy.max_attempts = value;
        }
        if let Some(text) = &raw.initial_backoff {
            policy.initial_backoff_ms = self.duration(text, &field("initial_backoff"), step)?;
        }
        if let Some(value) = raw.backoff_coefficient {
            // `!(value >= 1.0)` also catches NaN; infinity would overflow every delay.
            if !value.is_finite() || value < 1.0 {
                return Err(self.error(
                    step,
                    PipelineErrorKind::BadCoefficient {
                        field: field("backoff_coefficient"),
                        value,
                    },
                ));
            }
            policy.backoff_coefficient = value;
        }
        if let Some(text) = &raw.max_backoff {
            policy.max_backoff_ms = self.duration(text, &field("max_backoff"), step)?;
        }
        if let Some(value) = raw.jitter {
            // The range check is false for NaN, which is rejected too.
            if !(0.0..=1.0).contains(&value) {
                return Err(self.error(
                    step,
                    PipelineErrorKind::BadJitter {
                        field: field("jitter"),
                        value,
                    },
                ));
            }
            policy.jitter = value;
        }
        if let Some(kinds) = &raw.non_retryable {
            for kind in kinds {
                self.check_name(kind, "error kind in non_retryable", true, step)?;
            }
            // Order and repetition carry no meaning; a canonical list keeps
            // `content_hash` stable across cosmetic edits.
            let mut kinds = kinds.clone();
            kinds.sort();
            kinds.dedup();
            policy.non_retryable = kinds;
        }
        if policy.initial_backoff_ms > policy.max_backoff_ms {
            return Err(self.error(
                step,
                PipelineErrorKind::BackoffOrder {
                    field: prefix.to_owned(),
                    initial: format_duration_ms(policy.initial_backoff_ms),
                    max: format_duration_ms(policy.max_backoff_ms),
                },
            ));
        }
        Ok(policy)
    }

    /// Like [`Self::merge_retry`], for timeouts.
    fn merge_timeouts(
        &self,
        base: &StepTimeouts,
        raw: &RawTimeouts,
        prefix: &str,
        step: Option<&str>,
    ) -> Result<StepTimeouts, PipelineError> {
        let merge = |current: Option<u64>, raw: &Option<String>, name: &str| match raw {
            Some(text) => self.timeout(text, &format!("{prefix}.{name}"), step),
            None => Ok(current),
        };
        Ok(StepTimeouts {
            schedule_to_start_ms: merge(
                base.schedule_to_start_ms,
                &raw.schedule_to_start,
                "schedule_to_start",
            )?,
            start_to_close_ms: merge(
                base.start_to_close_ms,
                &raw.start_to_close,
                "start_to_close",
            )?,
            heartbeat_ms: merge(base.heartbeat_ms, &raw.heartbeat, "heartbeat")?,
        })
    }
}

// ---------------------------------------------------------------------------
// Graph views
// ---------------------------------------------------------------------------

/// Level of each step: 0 without needs, else one more than its deepest need.
/// `None` marks steps on or behind a cycle (possible only in definitions built
/// by hand rather than loaded). Out-of-range indices are ignored for the same
/// reason: these views must never panic.
fn compute_levels<'s>(count: usize, needs_of: impl Fn(usize) -> &'s [u16]) -> Vec<Option<usize>> {
    // Kahn's algorithm: a step is levelled once all its needs are.
    let mut unresolved = vec![0usize; count];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (step, pending) in unresolved.iter_mut().enumerate() {
        for &need in needs_of(step) {
            let need = usize::from(need);
            if need < count {
                *pending += 1;
                dependents[need].push(step);
            }
        }
    }
    let mut level: Vec<Option<usize>> = unresolved
        .iter()
        .map(|&pending| (pending == 0).then_some(0))
        .collect();
    let mut depth = vec![0usize; count];
    let mut queue: VecDeque<usize> = (0..count).filter(|&i| unresolved[i] == 0).collect();
    while let Some(step) = queue.pop_front() {
        let next = depth[step] + 1;
        for &dependent in &dependents[step] {
            depth[dependent] = depth[dependent].max(next);
            unresolved[dependent] -= 1;
            if unresolved[dependent] == 0 {
                level[dependent] = Some(depth[dependent]);
                queue.push_back(dependent);
            }
        }
    }
    level
}

impl PipelineDef {
    /// Step indices grouped by level: level 0 holds the steps without needs,
    /// level n the steps whose deepest need is on level n - 1. Steps within a
    /// level keep declaration order and can run in parallel.
    pub fn levels(&self) -> Vec<Vec<usize>> {
        let levels = compute_levels(self.steps.len(), |i| &self.steps[i].needs);
        let mut grouped: Vec<Vec<usize>> = Vec::new();
        for (step, level) in levels.into_iter().enumerate() {
            if let Some(level) = level {
                if grouped.len() <= level {
                    grouped.resize_with(level + 1, Vec::new);
                }
                grouped[level].push(step);
            }
        }
        grouped
    }

    /// Step indices in a topological order (every step after all its needs):
    /// by level, then declaration order, so the order is deterministic.
    pub fn topo_order(&self) -> Vec<usize> {
        self.levels().into_iter().flatten().collect()
    }

    /// Human-readable rendering of the DAG and the step policies, for
    /// `orchestrator pipelines check`.
    pub fn render_dag(&self) -> String {
        let mut out = String::new();
        let count = self.steps.len();
        let plural = if count == 1 { "" } else { "s" };
        let timeout = match self.workflow_timeout_ms {
            Some(ms) => format!("workflow timeout {}", format_duration_ms(ms)),
            None => "no workflow timeout".to_owned(),
        };
        // Writing to a String cannot fail, hence the ignored results below.
        let _ = writeln!(
            out,
            "pipeline {} v{} ({count} step{plural}, {timeout})",
            self.name, self.version
        );

        let name_of = |i: usize| self.steps.get(i).map_or("?", |s| s.name.as_str());
        for (level, steps) in self.levels().iter().enumerate() {
            let rendered: Vec<String> = steps
                .iter()
                .map(|&i| {
                    let step = &self.steps[i];
                    if step.needs.is_empty() {
                        step.name.clone()
                    } else {
                        let needs: Vec<&str> = step
                            .needs
                            .iter()
                            .map(|&d| name_of(usize::from(d)))
                            .collect();
                        format!("{} <- {}", step.name, needs.join(", "))
                    }
                })
                .collect();
            let _ = writeln!(out, "  level {level}: {}", rendered.join(" | "));
        }

        let _ = writeln!(out, "  steps:");
        let width = self.steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for i in self.topo_order() {
            let step = &self.steps[i];
            let r = &step.retry;
            let non_retryable = if r.non_retryable.is_empty() {
                "none".to_owned()
            } else {
                r.non_retryable.join(", ")
            };
            let _ = writeln!(
                out,
                "    {:width$}  task {}; {} attempts; backoff {} x{} up to {}, jitter {}; non-retryable: {}",
                step.name,
                step.task_type,
                r.max_attempts,
                format_duration_ms(r.initial_backoff_ms),
                r.backoff_coefficient,
                format_duration_ms(r.max_backoff_ms),
                r.jitter,
                non_retryable,
            );
            let t = &step.timeouts;
            let _ = writeln!(
                out,
                "    {:width$}  timeouts: schedule_to_start {}, start_to_close {}, heartbeat {}",
                "",
                format_optional_ms(t.schedule_to_start_ms),
                format_optional_ms(t.start_to_close_ms),
                format_optional_ms(t.heartbeat_ms),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "pipelines/test.toml";

    fn limits() -> PipelineLimits {
        PipelineLimits::default()
    }

    fn parse(text: &str) -> Result<PipelineDef, PipelineError> {
        parse_pipeline(text, FILE, &limits())
    }

    /// The error for `text`, asserting that its message names the test file.
    fn error(text: &str) -> PipelineError {
        let err = parse(text).expect_err("the pipeline should be rejected");
        assert_eq!(err.file, FILE);
        assert!(err.to_string().starts_with(&format!("{FILE}: ")), "{err}");
        err
    }

    /// Asserts the rendered message names the step (or no step) and contains
    /// every fragment.
    fn assert_message(err: &PipelineError, step: Option<&str>, fragments: &[&str]) {
        let message = err.to_string();
        assert_eq!(err.step.as_deref(), step, "{message}");
        if let Some(step) = step {
            assert!(message.contains(&format!("step \"{step}\": ")), "{message}");
        } else {
            assert!(!message.contains(": step \""), "{message}");
        }
        for fragment in fragments {
            assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
        }
    }

    const HEADER: &str = "[pipeline]\nname = \"p\"\nversion = 1\n";

    /// A pipeline with the standard header and the given step tables.
    fn with_steps(steps: &str) -> String {
        format!("{HEADER}\n{steps}")
    }

    fn video() -> PipelineDef {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pipelines/video.toml");
        load_pipeline_file(&path, &limits()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn needs_names(def: &PipelineDef, step: &str) -> Vec<String> {
        let step = &def.steps[def.step_index(step).expect("step exists")];
        step.needs
            .iter()
            .map(|&d| def.steps[usize::from(d)].name.clone())
            .collect()
    }

    // --- the shipped pipeline ----------------------------------------------

    #[test]
    fn video_pipeline_parses_with_expected_shape_and_policies() {
        let def = video();
        assert_eq!(def.name, "video");
        assert_eq!(def.version, 1);
        assert_eq!(def.workflow_timeout_ms, Some(24 * MS_PER_HOUR));
        let names: Vec<&str> = def.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "ingest",
                "extract_audio",
                "transcribe",
                "segment",
                "enrich_topics",
                "enrich_entities",
                "enrich_sentiment",
                "embed",
                "index"
            ]
        );
        for step in &def.steps {
            assert_eq!(step.task_type, step.name);
            assert_eq!(step.retry.max_attempts, 10, "{}", step.name);
            assert_eq!(step.retry.initial_backoff_ms, 200);
            assert_eq!(step.retry.backoff_coefficient, 2.0);
            assert_eq!(step.retry.max_backoff_ms, 10_000);
            assert_eq!(step.retry.jitter, 0.2);
            assert_eq!(step.retry.non_retryable, ["invalid_input"]);
            assert_eq!(step.timeouts.schedule_to_start_ms, Some(10 * MS_PER_MINUTE));
            assert_eq!(step.timeouts.heartbeat_ms, Some(60 * MS_PER_SECOND));
        }
        let start_to_close = |name: &str| {
            def.steps[def.step_index(name).unwrap()]
                .timeouts
                .start_to_close_ms
        };
        assert_eq!(start_to_close("transcribe"), Some(4 * MS_PER_HOUR));
        assert_eq!(start_to_close("segment"), Some(MS_PER_HOUR));

        let mut embed_needs = needs_names(&def, "embed");
        embed_needs.sort();
        assert_eq!(
            embed_needs,
            ["enrich_entities", "enrich_sentiment", "enrich_topics"]
        );
        for enrich in ["enrich_topics", "enrich_entities", "enrich_sentiment"] {
            assert_eq!(needs_names(&def, enrich), ["segment"]);
        }
        assert_eq!(needs_names(&def, "index"), ["embed"]);
        assert!(needs_names(&def, "ingest").is_empty());
    }

    #[test]
    fn video_render_dag_shows_seven_levels() {
        let rendered = video().render_dag();
        let mut lines = rendered.lines();
        assert_eq!(
            lines.next(),
            Some("pipeline video v1 (9 steps, workflow timeout 24h)")
        );
        let levels: Vec<&str> = rendered
            .lines()
            .filter(|l| l.starts_with("  level "))
            .collect();
        assert_eq!(levels.len(), 7, "{rendered}");
        assert_eq!(levels[0], "  level 0: ingest");
        assert_eq!(levels[1], "  level 1: extract_audio <- ingest");
        assert_eq!(
            levels[4],
            "  level 4: enrich_topics <- segment | enrich_entities <- segment | enrich_sentiment <- segment"
        );
        assert_eq!(
            levels[5],
            "  level 5: embed <- enrich_topics, enrich_entities, enrich_sentiment"
        );
        assert_eq!(levels[6], "  level 6: index <- embed");
        // Policy lines, with the per-step override visible.
        assert!(rendered.contains(
            "transcribe        task transcribe; 10 attempts; backoff 200ms x2 up to 10s, jitter 0.2; non-retryable: invalid_input"
        ), "{rendered}");
        assert!(
            rendered.contains("timeouts: schedule_to_start 10m, start_to_close 4h, heartbeat 1m"),
            "{rendered}"
        );
    }

    #[test]
    fn topo_order_puts_every_step_after_its_needs() {
        let text = with_steps(
            "[[steps]]\nname = \"c\"\nneeds = [\"b\", \"a\"]\n\
             [[steps]]\nname = \"b\"\nneeds = [\"a\"]\n\
             [[steps]]\nname = \"a\"\n",
        );
        let def = parse(&text).unwrap();
        // needs are sorted indices, whatever order the file lists them in.
        assert_eq!(def.steps[0].needs, [1, 2]);
        let order = def.topo_order();
        assert_eq!(order, [2, 1, 0]);
        let position = |i: usize| order.iter().position(|&o| o == i).unwrap();
        for (i, step) in def.steps.iter().enumerate() {
            for &d in &step.needs {
                assert!(position(usize::from(d)) < position(i));
            }
        }
        assert_eq!(def.levels(), [vec![2], vec![1], vec![0]]);
    }

    #[test]
    fn graph_views_survive_hand_built_cycles() {
        let mut def = parse(&with_steps(
            "[[steps]]\nname = \"a\"\n[[steps]]\nname = \"b\"\n",
        ))
        .unwrap();
        def.steps[0].needs = vec![1];
        def.steps[1].needs = vec![0, 7];
        assert!(def.topo_order().is_empty());
        assert!(def
            .render_dag()
            .starts_with("pipeline p v1 (2 steps, no workflow timeout)"));
    }

    // --- defaults and overrides --------------------------------------------

    #[test]
    fn built_in_defaults_apply_without_a_defaults_table() {
        let def = parse(&with_steps("[[steps]]\nname = \"only\"\n")).unwrap();
        let step = &def.steps[0];
        assert_eq!(step.task_type, "only");
        assert_eq!(step.retry, builtin_retry());
        assert_eq!(step.retry.max_attempts, 3);
        assert_eq!(step.retry.initial_backoff_ms, 1_000);
        assert_eq!(step.retry.max_backoff_ms, 60_000);
        assert_eq!(step.timeouts, builtin_timeouts());
        assert_eq!(def.workflow_timeout_ms, None);
    }

    #[test]
    fn step_overrides_merge_per_field() {
        let text = format!(
            "{HEADER}\
             [defaults.retry]\nmax_attempts = 7\ninitial_backoff = \"100ms\"\nmax_backoff = \"5s\"\n\
             non_retryable = [\"invalid_input\"]\n\
             [defaults.timeouts]\nschedule_to_start = \"5m\"\nstart_to_close = \"1h\"\n\
             [[steps]]\nname = \"plain\"\n\
             [[steps]]\nname = \"custom\"\ntask_type = \"CustomWorker\"\n\
             [steps.retry]\nmax_attempts = 2\njitter = 0.5\nnon_retryable = [\"b\", \"a\", \"b\"]\n\
             [steps.timeouts]\nstart_to_close = \"1m30s\"\nschedule_to_start = \"none\"\nheartbeat = \"20s\"\n"
        );
        let def = parse(&text).unwrap();
        let plain = &def.steps[0];
        assert_eq!(plain.retry.max_attempts, 7);
        assert_eq!(plain.retry.initial_backoff_ms, 100);
        assert_eq!(plain.retry.backoff_coefficient, 2.0); // built-in
        assert_eq!(plain.retry.jitter, 0.2); // built-in
        assert_eq!(plain.timeouts.schedule_to_start_ms, Some(5 * MS_PER_MINUTE));
        assert_eq!(plain.timeouts.heartbeat_ms, None);

        let custom = &def.steps[1];
        assert_eq!(custom.task_type, "CustomWorker");
        assert_eq!(custom.retry.max_attempts, 2); // overridden
        assert_eq!(custom.retry.jitter, 0.5); // overridden
        assert_eq!(custom.retry.initial_backoff_ms, 100); // from defaults
        assert_eq!(custom.retry.max_backoff_ms, 5_000); // from defaults
        assert_eq!(custom.retry.non_retryable, ["a", "b"]); // replaced, canonical
        assert_eq!(custom.timeouts.start_to_close_ms, Some(90_000));
        assert_eq!(custom.timeouts.schedule_to_start_ms, None); // disabled by "none"
        assert_eq!(custom.timeouts.heartbeat_ms, Some(20_000));
    }

    // --- durations -----------------------------------------------------------

    #[test]
    fn durations_parse() {
        let cases = [
            ("0ms", 0),
            ("200ms", 200),
            ("10s", 10_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("2d", 172_800_000),
            ("1m30s", 90_000),
            ("1h30m", 5_400_000),
            ("1d2h3m4s5ms", 93_784_005),
            ("007s", 7_000),
        ];
        for (text, ms) in cases {
            assert_eq!(parse_duration_ms(text), Ok(ms), "{text}");
        }
    }

    #[test]
    fn bad_durations_are_rejected_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("-5s", "negative"),
            ("10", "missing unit"),
            ("s", "expected a number"),
            ("10x", "unknown unit \"x\""),
            ("10sec", "unknown unit \"sec\""),
            ("1.5s", "fractions"),
            ("30s1m", "largest first"),
            ("1m1m", "largest first"),
            ("1 s", "unexpected ' '"),
            ("5s ", "expected a number"),
            ("none", "expected a number"),
            ("18446744073709551616ms", "too large"),
            ("18446744073709551615s", "too large"),
            ("213503982335d", "too large"),
        ];
        for (text, reason) in cases {
            let err = parse_duration_ms(text).expect_err(text);
            assert!(err.contains(reason), "{text:?}: {err:?} lacks {reason:?}");
        }
    }

    #[test]
    fn durations_format_and_round_trip() {
        let cases = [
            (0, "0ms"),
            (200, "200ms"),
            (10_000, "10s"),
            (60_000, "1m"),
            (90_000, "1m30s"),
            (3_600_000, "1h"),
            (86_400_000, "24h"),
            (3_723_004, "1h2m3s4ms"),
        ];
        for (ms, text) in cases {
            assert_eq!(format_duration_ms(ms), text);
            assert_eq!(parse_duration_ms(text), Ok(ms));
        }
        let mut ms: u64 = 1;
        while ms < u64::MAX / 3 {
            for candidate in [ms, ms + 1, ms * 3 - 1, u64::MAX - ms] {
                assert_eq!(
                    parse_duration_ms(&format_duration_ms(candidate)),
                    Ok(candidate)
                );
            }
            ms *= 3;
        }
        assert_eq!(
            parse_duration_ms(&format_duration_ms(u64::MAX)),
            Ok(u64::MAX)
        );
        // Formatting is canonical: parse then format normalises.
        assert_eq!(
            format_duration_ms(parse_duration_ms("90s").unwrap()),
            "1m30s"
        );
        assert_eq!(format_duration_ms(parse_duration_ms("1d").unwrap()), "24h");
    }

    // --- one test per kind of mistake --------------------------------------

    #[test]
    fn rejects_toml_syntax_error_with_line() {
        let err = error("[pipeline]\nname = \"p\"\nversion = = 1\n");
        assert!(
            matches!(*err.kind, PipelineErrorKind::Syntax { line: 3, .. }),
            "{err:?}"
        );
        assert_message(&err, None, &["TOML syntax error at line 3"]);
    }

    #[test]
    fn rejects_unknown_fields_everywhere() {
        let err = error(&format!("{HEADER}nmae = \"x\"\n[[steps]]\nname = \"a\"\n"));
        assert!(
            matches!(*err.kind, PipelineErrorKind::UnknownField { .. }),
            "{err:?}"
        );
        assert_message(
            &err,
            None,
            &["unknown field in [pipeline] at line 4", "`nmae`"],
        );

        let err = error(&with_steps("[[step]]\nname = \"a\"\n"));
        assert_message(
            &err,
            None,
            &["unknown field in the top level at line 5", "`step`"],
        );

        let err = error(&format!(
            "{HEADER}[defaults.retry]\nmax_attempt = 3\n[[steps]]\nname = \"a\"\n"
        ));
        assert_message(
            &err,
            None,
            &["unknown field in [defaults] at line 5", "`max_attempt`"],
        );

        let err = error(&with_steps(
            "[[steps]]\nname = \"a\"\n[[steps]]\nname = \"b\"\nneed = [\"a\"]\n",
        ));
        assert!(
            matches!(*err.kind, PipelineErrorKind::UnknownField { .. }),
            "{err:?}"
        );
        assert_message(
            &err,
            Some("b"),
            &["unknown field in [[steps]] #2 at line 9", "`need`"],
        );

        let err = error(&with_steps(
            "[[steps]]\nname = \"a\"\n[steps.timeouts]\nheartbeet = \"1s\"\n",
        ));
        assert_message(&err, Some("a"), &["unknown field", "`heartbeet`"]);
    }

    #[test]
    fn rejects_values_of_the_wrong_type() {
        let err = error(&with_steps(
            "[[steps]]\nname = \"a\"\n[steps.retry]\nmax_attempts = \"ten\"\n",
        ));
        assert!(
            matches!(*err.kind, PipelineErrorKind::InvalidValue { .. }),
            "{err:?}"
        );
        assert_message(
            &err,
            Some("a"),
            &["invalid value in [[steps]] #1 at line 8", "invalid type"],
        );

        let err = error("[pipeline]\nname = \"p\"\nversion = -1\n[[steps]]\nname = \"a\"\n");
        assert_message(&err, None, &["invalid value in [pipeline] at line 3"]);

        // Top-level keys must come before the first table header.
        let err = error(&format!(
            "{HEADER}[defaults]\nretry = 5\n[[steps]]\nname = \"a\"\n"
        ));
        assert_message(
            &err,
            None,
            &["invalid value in [defaults] at line 5", "expected a table"],
        );

        let err = error(&format!("steps = 3\n{HEADER}"));
        assert_message(&err, None, &["`steps` must be an array of tables"]);
    }

    #[test]
    fn rejects_missing_pipeline_name() {
        let err = error("[pipeline]\nversion = 1\n[[steps]]\nname = \"a\"\n");
        assert_eq!(*err.kind, PipelineErrorKind::MissingName);
        assert_message(&err, None, &["missing pipeline name"]);

        // No [pipeline] table at all is the same mistake.
        let err = error("[[steps]]\nname = \"a\"\n");
        assert_eq!(*err.kind, PipelineErrorKind::MissingName);
    }

    #[test]
    fn rejects_missing_pipeline_version() {
        let err = error("[pipeline]\nname = \"p\"\n[[steps]]\nname = \"a\"\n");
        assert_eq!(*err.kind, PipelineErrorKind::MissingVersion);
        assert_message(&err, None, &["missing pipeline version"]);
    }

    #[test]
    fn rejects_missing_step_name() {
        let err = error(&with_steps(
            "[[steps]]\nname = \"a\"\n[[steps]]\nneeds = [\"a\"]\n",
        ));
        assert_eq!(
            *err.kind,
            PipelineErrorKind::MissingStepName { position: 2 }
        );
        assert_message(&err, None, &["step #2 has no name"]);
    }

    #[test]
    fn rejects_invalid_names() {
        let err = error("[pipeline]\nname = \"Video\"\nversion = 1\n[[steps]]\nname = \"a\"\n");
        assert_message(
            &err,
            None,
            &["invalid pipeline name \"Video\"", "contains 'V'"],
        );

        let err = error("[pipeline]\nname = \"\"\nversion = 1\n[[steps]]\nname = \"a\"\n");
        assert_message(
            &err,
            None,
            &["invalid pipeline name \"\"", "must not be empty"],
        );

        let err = error(&with_steps("[[steps]]\nname = \"a.b\"\n"));
        assert!(matches!(
            *err.kind,
            PipelineErrorKind::InvalidName {
                what: "step name",
                ..
            }
        ));
        assert_message(&err, None, &["invalid step name \"a.b\"", "contains '.'"]);

        let long = "x".repeat(65);
        let err = error(&with_steps(&format!("[[steps]]\nname = \"{long}\"\n")));
        assert_message(&err, None, &["is 65 characters long, the limit is 64"]);
        let ok = "x".repeat(64);
        assert!(parse(&with_steps(&format!("[[steps]]\nname = \"{ok}\"\n"))).is_ok());

        // Task types may use upper case, but not subject separators.
        let err = error(&with_steps(
            "[[steps]]\nname = \"a\"\ntask_type = \"Gpu.Transcribe\"\n",
        ));
        assert_message(
            &err,
            Some("a"),
            &["invalid task type \"Gpu.Transcribe\"", "contains '.'"],
        );

        let err = error(&with_steps(
            "[[steps]]\nname = \"a\"\n[steps.retry]\nnon_retryable = [\"bad kind\"]\n",
        ));
        assert_message(
            &err,
            Some("a"),
            &["invalid error kind in non_retryable \"bad kind\""],
        );
    }

    #[test]
    fn rejects_version_zero() {
        let err = error("[pipeline]\nname = \"p\"\nversion = 0\n[[steps]]\nname = \"a\"\n");
        assert_eq!(*err.kind, PipelineErrorKind::VersionZero);
        assert_message(&err, None, &["version must be at least 1, got 0"]);
    }

    #[test]
    fn rejects_pipeline_without_steps() {
        let err = error(HEADER);
        assert_eq!(*err.kind, PipelineErrorKind::NoSteps);
        assert_message(&err, None, &["pipeline has no steps"]);

        let err = error(&format!("steps = []\n{HEADER}"));
        assert_eq!(*err.kind, PipelineErrorKind::NoSteps);
    }

    #[test]
    fn rejects_duplicate_step_name() {
        let err = error(&with_steps(
            "[[steps]]\nname = \"a\"\n[[steps]]\nname = \"b\"\n[[steps]]\nname = \"a\"\n",
        ));
        assert_eq!(
            *err.kind,
            PipelineErrorKind::DuplicateStep {
                first: 1,
                second: 3
            }
        );
        assert_message(
            &err,
            Some("a"),
            &["duplicate step name (declared as step #1 and step #3)"],
        );
    }

    #[test]
    fn rejects_unknown_dependency() {
        let err = error(&with_steps(
            "[[steps]]\nname = \"segment\"\n[[steps]]\nname = \"embed\"\nneeds = [\"segment\", \"enrich_topic\"]\n",
        ));
        assert_eq!(
            err.to_string(),
            format!("{FILE}: step \"embed\": needs unknown step \"enrich_topic\"")
        );
    }

    #[test]
    fn rejects_self_dependency() {
        let err = error(&with_steps("[[steps]]\nname = \"a\"\nneeds = [\"a\"]\n"));
        assert_eq!(*err.kind, PipelineErrorKind::SelfDependency);
        assert_eq!(err.to_string(), format!("{FILE}: step \"a\": needs itself"));
    }

    #[test]
    fn rejects_duplicate_dependency() {
        let err = error(&with_steps(
            "[[steps]]\nname = \"a\"\n[[steps]]\nname = \"b\"\nneeds = [\"a\", \"a\"]\n",
        ));
        assert_message(&err, Some("b"), &["needs \"a\" more than once"]);
    }

    #[test]
    fn rejects_cycle_naming_its_steps() {
        // root <- a <- b <- c <- a: the cycle is a -> c -> b -> a ("needs" order),
        // and `root`, which is not on it, must not be named.
        let err = error(&with_steps(
            "[[steps]]\nname = \"root\"\n\
             [[steps]]\nname = \"a\"\nneeds = [\"root\", \"c\"]\n\
             [[steps]]\nname = \"b\"\nneeds = [\"a\"]\n\
             [[steps]]\nname = \"c\"\nneeds = [\"b\"]\n",
        ));
        let PipelineErrorKind::Cycle { path } = &*err.kind else {
            panic!("{err:?}")
        };
        assert_eq!(path, &["a", "c", "b", "a"]);
        assert_message(&err, None, &["dependency cycle a -> c -> b -> a"]);

        let err = error(&with_steps(
            "[[steps]]\nname = \"x\"\nneeds = [\"y\"]\n[[steps]]\nname = \"y\"\nneeds = [\"x\"]\n",
        ));
        assert_message(&err, None, &["cycle x -> y -> x"]);
    }

    #[test]
    fn rejects_more_steps_than_the_limit() {
        let limits = PipelineLimits {
            steps_max: 2,
            ..PipelineLimits::default()
        };
        let text = with_steps(
            "[[steps]]\nname = \"a\"\n[[steps]]\nname = \"b\"\n[[steps]]\nname = \"c\"\n",
        );
        let err = parse_pipeline(&text, FILE, &limits).unwrap_err();
        assert_eq!(
            *err.kind,
            PipelineErrorKind::TooManySteps { count: 3, max: 2 }
        );
        assert_message(&err, None, &["too many steps: 3 declared, the limit is 2"]);
        assert!(parse_pipeline(
            &text,
            FILE,
            &PipelineLimits {
                steps_max: 3,
                ..limits
            }
        )
        .is_ok());
    }

    #[test]
    fn rejects_more_needs_than_the_limit() {
        let limits = PipelineLimits {
            needs_max: 1,
            ..PipelineLimits::default()
        };
        let text = with_steps(
            "[[steps]]\nname = \"a\"\n[[steps]]\nname = \"b\"\n\
             [[steps]]\nname = \"c\"\nneeds = [\"a\", \"b\"]\n",
        );
        let err = parse_pipeline(&text, FILE, &limits).unwrap_err();
        assert_eq!(
            *err.kind,
            PipelineErrorKind::TooManyNeeds { count: 2, max: 1 }
        );
        assert_message(
            &err,
            Some("c"),
            &["too many dependencies: 2 listed in needs, the limit is 1"],
        );
    }

    #[test]
    fn rejects_bad_durations_in_every_place() {
        let err = error(&with_steps(
            "[[steps]]\nname = \"a\"\n[steps.retry]\ninitial_backoff = \"5x\"\n",
        ));
        assert_message(
            &err,
            Some("a"),
            &[
                "invalid duration for retry.initial_backoff \"5x\"",
                "unknown unit",
            ],
        );

        let err = error(&with_steps(
            "[[steps]]\nname = \"a\"\n[steps.timeouts]\nheartbeat = \"0s\"\n",
        ));
        assert_message(
            &err,
            Some("a"),
            &["timeouts.heartbeat \"0s\"", "greater than zero"],
        );

        let err = error(&format!(
            "{HEADER}[defaults.timeouts]\nstart_to_close = \"-1h\"\n[[steps]]\nname = \"a\"\n"
        ));
        assert_message(
            &err,
            None,
            &["defaults.timeouts.start_to_close \"-1h\"", "negative"],
        );

        let err = error(&format!(
            "{HEADER}[defaults.retry]\nmax_backoff = \"none\"\n[[steps]]\nname = \"a\"\n"
        ));
        assert_message(
            &err,
            None,
            &["defaults.retry.max_backoff", "only allowed for timeouts"],
        );

        let err = error("[pipeline]\nname = \"p\"\nversion = 1\nworkflow_timeout = \"\"\n[[steps]]\nname = \"a\"\n");
        assert_message(&err, None, &["workflow_timeout \"\"", "empty duration"]);

        let err = error(&with_steps("[[steps]]\nname = \"a\"\n[steps.timeouts]\nstart_to_close = \"99999999999999999999s\"\n"));
        assert_message(&err, Some("a"), &["too large"]);

        // A zero backoff is meaningful (retry at once), a zero timeout is not.
        let def = parse(&format!(
            "{HEADER}[defaults.retry]\ninitial_backoff = \"0ms\"\n[[steps]]\nname = \"a\"\n"
        ))
        .unwrap();
        assert_eq!(def.steps[0].retry.initial_backoff_ms, 0);
    }

    #[test]
    fn rejects_max_attempts_out_of_range() {
        let err = error(&format!(
            "{HEADER}[defaults.retry]\nmax_attempts = 0\n[[steps]]\nname = \"a\"\n"
        ));
        assert_message(
            &err,
            None,
            &["defaults.retry.max_attempts must be between 1 and 1000, got 0"],
        );

        let err = error(&with_steps(
            "[[steps]]\nname = \"a\"\n[steps.retry]\nmax_attempts = 1001\n",
        ));
        assert_eq!(
            *err.kind,
            PipelineErrorKind::MaxAttempts {
                field: "retry.max_attempts".to_owned(),
                value: 1001,
                max: 1000
            }
        );
        assert_message(
            &err,
            Some("a"),
            &["retry.max_attempts must be between 1 and 1000, got 1001"],
        );
    }

    #[test]
    fn rejects_bad_backoff_coefficient() {
        let err = error(&with_steps(
            "[[steps]]\nname = \"a\"\n[steps.retry]\nbackoff_coefficient = 0.5\n",
        ));
        assert_message(
            &err,
            Some("a"),
            &["retry.backoff_coefficient must be a finite number >= 1.0, got 0.5"],
        );
        for value in ["nan", "inf", "-inf"] {
            let err = error(&format!("{HEADER}[defaults.retry]\nbackoff_coefficient = {value}\n[[steps]]\nname = \"a\"\n"));
            assert!(
                matches!(*err.kind, PipelineErrorKind::BadCoefficient { .. }),
                "{value}: {err}"
            );
        }
        // An integer is accepted for a float field.
        assert!(parse(&format!(
            "{HEADER}[defaults.retry]\nbackoff_coefficient = 1\n[[steps]]\nname = \"a\"\n"
        ))
        .is_ok());
    }

    #[test]
    fn rejects_jitter_outside_unit_interval() {
        let err = error(&with_steps(
            "[[steps]]\nname = \"a\"\n[steps.retry]\njitter = 1.5\n",
        ));
        assert_message(
            &err,
            Some("a"),
            &["retry.jitter must be between 0.0 and 1.0, got 1.5"],
        );
        for value in ["-0.1", "nan"] {
            let err = error(&format!(
                "{HEADER}[defaults.retry]\njitter = {value}\n[[steps]]\nname = \"a\"\n"
            ));
            assert!(
                matches!(*err.kind, PipelineErrorKind::BadJitter { .. }),
                "{value}: {err}"
            );
        }
        for value in ["0", "1.0"] {
            assert!(parse(&format!(
                "{HEADER}[defaults.retry]\njitter = {value}\n[[steps]]\nname = \"a\"\n"
            ))
            .is_ok());
        }
    }

    #[test]
    fn rejects_initial_backoff_above_max_backoff() {
        // The defaults are fine on their own; the step's override breaks the combination.
        let err = error(&format!(
            "{HEADER}[defaults.retry]\ninitial_backoff = \"1s\"\nmax_backoff = \"10s\"\n\
             [[steps]]\nname = \"a\"\n[steps.retry]\ninitial_backoff = \"20s\"\n"
        ));
        assert_message(
            &err,
            Some("a"),
            &["retry.initial_backoff (20s) is greater than retry.max_backoff (10s)"],
        );

        // Against the built-in cap of 60s.
        let err = error(&format!(
            "{HEADER}[defaults.retry]\ninitial_backoff = \"2m\"\n[[steps]]\nname = \"a\"\n"
        ));
        assert_message(&err, None, &["defaults.retry.initial_backoff (2m) is greater than defaults.retry.max_backoff (1m)"]);
    }

    // --- files and directories -------------------------------------------

    #[test]
    fn io_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.toml");
        let err = load_pipeline_file(&path, &limits()).unwrap_err();
        assert!(matches!(*err.kind, PipelineErrorKind::Io { .. }));
        assert!(
            err.to_string()
                .starts_with(&format!("{}: cannot read: ", path.display())),
            "{err}"
        );

        let errors = load_pipeline_dir(&dir.path().join("nope"), &limits()).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().contains("nope: cannot read"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn load_dir_sorts_files_and_collects_every_error() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        let pipeline = |name: &str, version: u32| {
            format!("[pipeline]\nname = \"{name}\"\nversion = {version}\n[[steps]]\nname = \"a\"\n")
        };
        write("b.toml", &pipeline("beta", 1));
        write("a.toml", &pipeline("alpha", 1));
        write("c.toml", &pipeline("alpha", 2));
        write("notes.txt", "not a pipeline");
        let defs = load_pipeline_dir(dir.path(), &limits()).unwrap();
        let loaded: Vec<(&str, u32)> = defs.iter().map(|d| (d.name.as_str(), d.version)).collect();
        assert_eq!(loaded, [("alpha", 1), ("beta", 1), ("alpha", 2)]);

        write("d.toml", "this is not toml");
        write("e.toml", &pipeline("beta", 1));
        write(
            "f.toml",
            &with_steps("[[steps]]\nname = \"a\"\nneeds = [\"zz\"]\n"),
        );
        let errors = load_pipeline_dir(dir.path(), &limits()).unwrap_err();
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 3, "{messages:#?}");
        assert!(
            messages[0].contains("d.toml: TOML syntax error"),
            "{}",
            messages[0]
        );
        assert!(
            messages[1].contains("e.toml: pipeline \"beta\" version 1 is already declared in"),
            "{}",
            messages[1]
        );
        assert!(messages[1].ends_with("b.toml"), "{}", messages[1]);
        assert!(
            messages[2].contains("f.toml: step \"a\": needs unknown step \"zz\""),
            "{}",
            messages[2]
        );
    }

    #[test]
    fn shipped_pipeline_directory_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pipelines");
        let defs = load_pipeline_dir(&dir, &limits()).unwrap_or_else(|errors| {
            panic!(
                "{}",
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
        assert!(defs.iter().any(|d| d.name == "video" && d.version == 1));
    }
}
