//! Runtime fan-out: a step with `map = { over = "<dep>/<JSON pointer>", ... }`
//! runs one task per element of an array found in a dependency's output.
//!
//! This file holds the validated form ([`MapDef`]), the file form
//! (`RawMap`) and the rules that turn one into the other; the runtime lives
//! in `workflow::map` and `workflow::decide::map`.

use serde::{Deserialize, Serialize};

use super::error::PipelineErrorKind;

/// Elements one map step may fan out to, unless the step says otherwise.
pub const DEFAULT_ELEMENTS_MAX: u32 = 10_000;
/// Elements of one map step out with workers (or in backoff) at once, unless
/// the step says otherwise.
pub const DEFAULT_MAX_PARALLEL: u32 = 64;
/// Bytes of the step's assembled output (the array of element outputs),
/// unless the step says otherwise.
pub const DEFAULT_OUTPUT_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// The largest `max_elements` a file may ask for: element state lives in the
/// workflow's memory and snapshots.
pub const ELEMENTS_MAX_CAP: u32 = 100_000;

/// A validated `map` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapDef {
    /// Index of the dependency whose output holds the array.
    pub over_step: u16,
    /// RFC 6901 JSON pointer into that output ("" for the output itself).
    pub pointer: String,
    /// Elements out with workers or waiting for a retry at once (>= 1).
    pub max_parallel: u32,
    /// Elements that must succeed, in basis points of the array's length
    /// (10_000 = all of them). Rounded up: 95% of 3 elements is 3.
    pub min_success_bp: u32,
    /// An array longer than this fails the step.
    pub elements_max: u32,
    /// An assembled output longer than this fails the step.
    pub output_bytes_max: u64,
}

impl MapDef {
    /// Elements of an array of `len` that must succeed for the step to succeed.
    pub fn required(&self, len: u32) -> u32 {
        let need = (u64::from(len) * u64::from(self.min_success_bp)).div_ceil(10_000);
        need.min(u64::from(len)) as u32
    }

    /// `over` as written in a file: `<dep>/<pointer>`.
    pub fn over_text(&self, dep_name: &str) -> String {
        format!("{dep_name}{}", self.pointer)
    }
}

/// The `map` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMap {
    pub(super) over: Option<String>,
    pub(super) max_parallel: Option<u32>,
    pub(super) min_success: Option<String>,
    pub(super) max_elements: Option<u32>,
    pub(super) max_output_bytes: Option<u64>,
}

/// Checks a step's `map` table against the step's resolved `needs`
/// (`dep_index` finds a step by name). The error is the problem only; the
/// caller adds the file and step.
pub(super) fn check_map(
    raw: &RawMap,
    needs: &[u16],
    dep_index: impl Fn(&str) -> Option<u16>,
) -> Result<MapDef, PipelineErrorKind> {
    let invalid = |message: String| PipelineErrorKind::InvalidValue {
        section: "map".to_owned(),
        line: None,
        message,
    };
    let over = raw.over.as_deref().ok_or_else(|| {
        invalid(
            "missing `over`: name a dependency and a JSON pointer, e.g. \"segment/segments\""
                .into(),
        )
    })?;
    let (dep, pointer) = match over.find('/') {
        Some(at) => (&over[..at], &over[at..]),
        None => (over, ""),
    };
    let over_step = dep_index(dep)
        .filter(|i| needs.contains(i))
        .ok_or_else(|| {
            invalid(format!(
                "`over = \"{over}\"` must start with a step listed in needs, found \"{dep}\""
            ))
        })?;
    check_pointer(pointer).map_err(|reason| invalid(format!("`over = \"{over}\"`: {reason}")))?;
    let max_parallel = raw.max_parallel.unwrap_or(DEFAULT_MAX_PARALLEL);
    if max_parallel == 0 {
        return Err(invalid("`max_parallel` must be at least 1".into()));
    }
    let min_success_bp = match raw.min_success.as_deref() {
        Some(text) => parse_percent_bp(text)
            .ok_or_else(|| invalid(format!("`min_success = \"{text}\"`: expected a percentage between 0% and 100%, e.g. \"95%\"")))?,
        None => 10_000,
    };
    let elements_max = raw.max_elements.unwrap_or(DEFAULT_ELEMENTS_MAX);
    if elements_max == 0 || elements_max > ELEMENTS_MAX_CAP {
        return Err(invalid(format!(
            "`max_elements` must be between 1 and {ELEMENTS_MAX_CAP}, got {elements_max}"
        )));
    }
    let output_bytes_max = raw.max_output_bytes.unwrap_or(DEFAULT_OUTPUT_BYTES_MAX);
    if output_bytes_max == 0 {
        return Err(invalid("`max_output_bytes` must be at least 1".into()));
    }
    Ok(MapDef {
        over_step,
        pointer: pointer.to_owned(),
        max_parallel,
        min_success_bp,
        elements_max,
        output_bytes_max,
    })
}

/// A JSON pointer is empty or starts with `/`; `~` is only legal as `~0` or `~1`.
fn check_pointer(pointer: &str) -> Result<(), String> {
    let bytes = pointer.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'~' && !matches!(bytes.get(i + 1), Some(b'0' | b'1')) {
            return Err("`~` in a JSON pointer must be written `~0` (or `~1` for `/`)".into());
        }
    }
    Ok(())
}

/// `"95%"` → 9500; at most two decimals; `None` outside 0%..=100%.
pub(super) fn parse_percent_bp(text: &str) -> Option<u32> {
    let number = text.trim().strip_suffix('%')?.trim();
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || frac.len() > 2 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u32 = whole.parse().ok()?;
    let frac: u32 = format!("{frac:0<2}").parse().ok()?;
    let bp = whole.checked_mul(100)?.checked_add(frac)?;
    (bp <= 10_000).then_some(bp)
}
