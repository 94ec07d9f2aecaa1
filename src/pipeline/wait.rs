//! Steps completed by a signal: `wait = { signal = "approved", timeout =
//! "48h", on_timeout = "fail" }`. A wait step dispatches no task; it
//! succeeds when an operator (or another system) sends the named signal to
//! the workflow, and the signal's payload is its output.
//!
//! This file holds the validated form ([`WaitDef`]), the file form
//! (`RawWait`) and the rules that turn one into the other; the runtime
//! lives in `workflow::decide::wait`.

use serde::{Deserialize, Serialize};

use super::error::PipelineErrorKind;
use crate::durations::{format_ms, parse_ms};

/// The longest `timeout` a wait step may ask for (a year): the timer is
/// durable, but a wait of years is a design mistake, not a workflow.
pub const WAIT_TIMEOUT_MAX_MS: u64 = 366 * 24 * 3600 * 1000;

/// What a wait that timed out does to its workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnTimeout {
    /// The step fails, and the workflow with it.
    Fail,
    /// The step is skipped: its dependents run and read `null` as its output.
    Skip,
}

impl OnTimeout {
    pub fn as_str(self) -> &'static str {
        match self {
            OnTimeout::Fail => "fail",
            OnTimeout::Skip => "skip",
        }
    }
}

/// A validated `wait` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitDef {
    /// Name of the signal that completes the step (`[a-z0-9_-]`, like step names).
    pub signal: String,
    /// From the moment the step starts waiting until it times out.
    pub timeout_ms: u64,
    pub on_timeout: OnTimeout,
}

impl WaitDef {
    /// One line for `pipelines check`.
    pub fn describe(&self) -> String {
        let then = match self.on_timeout {
            OnTimeout::Fail => "then fails the workflow",
            OnTimeout::Skip => "then skipped (dependents read null)",
        };
        format!(
            "wait for signal {:?}: no task; its payload is the output; times out after {}, {then}",
            self.signal,
            format_ms(self.timeout_ms)
        )
    }
}

/// The `wait` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWait {
    pub(super) signal: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) on_timeout: Option<String>,
}

/// What else a step declares, to refuse what does not apply to a wait.
pub(super) struct WaitStepShape {
    pub(super) task_type: bool,
    pub(super) map: bool,
    pub(super) retry: bool,
    pub(super) timeouts: bool,
}

/// Checks a step's `wait` table. `check_name` applies the grammar of step
/// names to the signal name. The error is the problem only; the caller adds
/// the file and step.
pub(super) fn check_wait(
    raw: &RawWait,
    shape: &WaitStepShape,
    check_name: impl Fn(&str) -> Result<(), String>,
) -> Result<WaitDef, PipelineErrorKind> {
    let invalid = |message: String| PipelineErrorKind::InvalidValue {
        section: "wait".to_owned(),
        line: None,
        message,
    };
    let refused = [
        (shape.task_type, "task_type"),
        (shape.map, "map"),
        (shape.retry, "retry"),
        (shape.timeouts, "timeouts"),
    ];
    if let Some((_, key)) = refused.iter().find(|(set, _)| *set) {
        return Err(invalid(format!(
            "a wait step dispatches no task, so `{key}` does not apply; remove it (or the `wait`)"
        )));
    }
    let signal = raw.signal.as_deref().ok_or_else(|| {
        invalid(
            "missing `signal`: name the signal that completes the step, e.g. \"approved\"".into(),
        )
    })?;
    check_name(signal).map_err(|reason| invalid(format!("`signal = {signal:?}` {reason}")))?;
    let timeout = raw.timeout.as_deref().ok_or_else(|| {
        invalid("missing `timeout`: how long the step waits for its signal, e.g. \"48h\"".into())
    })?;
    let timeout_ms =
        parse_ms(timeout).map_err(|e| invalid(format!("`timeout = {timeout:?}`: {e}")))?;
    if timeout_ms == 0 || timeout_ms > WAIT_TIMEOUT_MAX_MS {
        return Err(invalid(format!(
            "`timeout = {timeout:?}` must be greater than zero and at most {}",
            format_ms(WAIT_TIMEOUT_MAX_MS)
        )));
    }
    let on_timeout = match raw.on_timeout.as_deref() {
        None | Some("fail") => OnTimeout::Fail,
        Some("skip") => OnTimeout::Skip,
        Some(other) => {
            return Err(invalid(format!(
                "`on_timeout = {other:?}`: expected \"fail\" or \"skip\""
            )))
        }
    };
    Ok(WaitDef {
        signal: signal.to_owned(),
        timeout_ms,
        on_timeout,
    })
}
