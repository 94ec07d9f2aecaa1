//! The errors of pipeline files: one line that names the file, the step and
//! the problem, with a kind per mistake so tests and tools can match on it.

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
    /// A definition that differs from the one already registered (or
    /// stored) under the same name and version: a changed definition needs a
    /// new version, so every workflow keeps meaning one definition.
    #[error(
        "pipeline \"{name}\" version {version} differs from the definition already registered under that version; give the changed definition a new version (or restore the file)"
    )]
    ChangedWithoutNewVersion { name: String, version: u32 },
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
    /// A step's `when` that cannot run: too long, not CEL, or reading
    /// something other than the workflow input and the step's dependencies.
    #[error("when = {expression:?}: {message}")]
    BadCondition { expression: String, message: String },
    /// A child step (`pipeline = ...`) with a field only task steps have.
    #[error("a step with `pipeline` starts a child workflow and cannot have `{field}`; {hint}")]
    ChildStepConflict {
        field: &'static str,
        hint: &'static str,
    },
    /// `pipeline_version` on a step without `pipeline`.
    #[error("`pipeline_version` needs `pipeline = \"<name>\"` on the same step")]
    VersionWithoutChild,
    /// A child step names a pipeline (or version) the directory does not declare.
    #[error("child pipeline \"{name}\"{} is not declared in the pipeline directory{}", child_version(.version), registered_versions(.registered))]
    UnknownChildPipeline {
        name: String,
        version: Option<u32>,
        /// The versions of `name` that are declared, comma-separated.
        registered: String,
    },
    /// Pipelines that start each other as children, in a cycle.
    #[error("child pipeline cycle {} (each pipeline starts the next as a child)", .path.join(" -> "))]
    ChildPipelineCycle { path: Vec<String> },
}

fn child_version(version: &Option<u32>) -> String {
    version.map(|v| format!(" version {v}")).unwrap_or_default()
}

fn registered_versions(registered: &str) -> String {
    if registered.is_empty() {
        String::new()
    } else {
        format!(" (declared versions: {registered})")
    }
}
