//! Validation of a parsed pipeline file: each section is deserialized into
//! the raw structs (`raw.rs`), then turned into a [`PipelineDef`], merging
//! step overrides over `[defaults]` over the built-in defaults; the first
//! problem is reported as a [`PipelineError`] naming the file, the step and
//! the problem.

use std::collections::HashMap;
use std::ops::Range;

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::error::{PipelineError, PipelineErrorKind};
use super::graph::compute_levels;
use super::map::check_map;
use super::raw::{
    builtin_retry, builtin_timeouts, RawDefaults, RawHeader, RawRetry, RawStep, RawTimeouts,
    RAW_TYPE_NAMES,
};
use super::wait::{check_wait, WaitStepShape};
use super::when::{check_when, WhenLimits};
use super::{
    ChildDef, MapDef, PipelineDef, PipelineLimits, RetryPolicy, StepDef, StepTimeouts, WaitDef,
    WhenDef,
};
use crate::durations::{format_ms as format_duration_ms, parse_ms as parse_duration_ms};

pub(super) struct Parser<'a> {
    pub(super) file: &'a str,
    pub(super) text: &'a str,
    pub(super) limits: &'a PipelineLimits,
}

/// What a `[[steps]]` table turned into after per-step validation, before the
/// whole graph is checked for cycles.
struct CheckedStep {
    name: String,
    task_type: String,
    needs: Vec<u16>,
    retry: RetryPolicy,
    timeouts: StepTimeouts,
    queue_timeout_ms: Option<u64>,
    map: Option<MapDef>,
    when: Option<WhenDef>,
    wait: Option<WaitDef>,
    child: Option<ChildDef>,
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

    pub(super) fn parse(&self) -> Result<PipelineDef, PipelineError> {
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
        if header.in_progress_max == Some(0) {
            return Err(self.error(
                None,
                PipelineErrorKind::InvalidValue {
                    section: "[pipeline]".to_owned(),
                    line: None,
                    message: "in_progress_max must be at least 1".to_owned(),
                },
            ));
        }

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
        let default_queue_timeout =
            self.merge_queue_timeout(None, &defaults.timeouts, "defaults.timeouts", None)?;

        let raw_steps = self.raw_steps(steps)?;
        let checked = self.check_steps(
            &raw_steps,
            &default_retry,
            &default_timeouts,
            default_queue_timeout,
        )?;
        self.check_acyclic(&checked)?;

        let step_maps: Vec<Option<MapDef>> = if checked.iter().any(|s| s.map.is_some()) {
            checked.iter().map(|s| s.map.clone()).collect()
        } else {
            Vec::new()
        };
        let step_whens: Vec<Option<WhenDef>> = if checked.iter().any(|s| s.when.is_some()) {
            checked.iter().map(|s| s.when.clone()).collect()
        } else {
            Vec::new()
        };
        let step_waits: Vec<Option<WaitDef>> = if checked.iter().any(|s| s.wait.is_some()) {
            checked.iter().map(|s| s.wait.clone()).collect()
        } else {
            Vec::new()
        };
        let step_queue_timeouts: Vec<Option<u64>> =
            if checked.iter().any(|s| s.queue_timeout_ms.is_some()) {
                checked.iter().map(|s| s.queue_timeout_ms).collect()
            } else {
                Vec::new()
            };
        let step_children: Vec<Option<ChildDef>> = if checked.iter().any(|s| s.child.is_some()) {
            checked.iter().map(|s| s.child.clone()).collect()
        } else {
            Vec::new()
        };
        Ok(PipelineDef {
            name,
            version,
            step_maps,
            step_whens,
            step_waits,
            step_queue_timeouts,
            in_progress_max: header.in_progress_max,
            step_children,
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
        default_queue_timeout: Option<u64>,
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
            // A wait step dispatches no task: its task type stays empty, and
            // `task_types` (what workers subscribe to) leaves it out.
            let task_type = match &step.wait {
                Some(_) => "",
                None => {
                    let task_type = step.task_type.as_deref().unwrap_or(name);
                    self.check_name(task_type, "task type", true, Some(name))?;
                    task_type
                }
            };

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
            let queue_timeout_ms = self.merge_queue_timeout(
                default_queue_timeout,
                &step.timeouts,
                "timeouts",
                Some(name),
            )?;
            let map = match &step.map {
                Some(raw) => Some(
                    check_map(raw, &needs, |dep| index_of.get(dep).map(|&i| i as u16))
                        .map_err(|kind| self.error(Some(name), kind))?,
                ),
                None => None,
            };
            let when = match &step.when {
                Some(text) => {
                    let need_names: Vec<&str> =
                        needs.iter().map(|&d| names[usize::from(d)]).collect();
                    let limits = WhenLimits {
                        len_max: self.limits.when_len_max,
                        macros_max: self.limits.when_macros_max,
                        values_max: self.limits.when_values_max,
                    };
                    Some(
                        check_when(text, &need_names, limits)
                            .map_err(|kind| self.error(Some(name), kind))?,
                    )
                }
                None => None,
            };
            let wait = match &step.wait {
                Some(raw) => {
                    let shape = WaitStepShape {
                        task_type: step.task_type.is_some(),
                        map: step.map.is_some(),
                        retry: raw_retry_set(&step.retry),
                        timeouts: raw_timeouts_set(&step.timeouts),
                    };
                    let check_name = |signal: &str| {
                        self.check_name(signal, "signal name", false, Some(name))
                            .map(|_| ())
                            .map_err(|e| match *e.kind {
                                PipelineErrorKind::InvalidName { reason, .. } => reason,
                                other => other.to_string(),
                            })
                    };
                    Some(
                        check_wait(raw, &shape, check_name)
                            .map_err(|kind| self.error(Some(name), kind))?,
                    )
                }
                None => None,
            };
            let child = self.check_child(step, name)?;
            checked.push(CheckedStep {
                name: name.to_owned(),
                task_type: task_type.to_owned(),
                needs,
                retry,
                timeouts,
                queue_timeout_ms,
                map,
                when,
                wait,
                child,
            });
        }
        Ok(checked)
    }

    /// The child pipeline of a step with `pipeline`: its name is valid, and
    /// the step declares nothing only a task step has. Whether the pipeline
    /// exists is a question for the whole directory (`child::check_children`).
    fn check_child(&self, step: &RawStep, name: &str) -> Result<Option<ChildDef>, PipelineError> {
        let Some(pipeline) = step.pipeline.as_deref() else {
            if step.pipeline_version.is_some() {
                return Err(self.error(Some(name), PipelineErrorKind::VersionWithoutChild));
            }
            return Ok(None);
        };
        self.check_name(pipeline, "pipeline name", false, Some(name))?;
        let conflict = |field: &'static str, hint: &'static str| {
            Err(self.error(
                Some(name),
                PipelineErrorKind::ChildStepConflict { field, hint },
            ))
        };
        if step.task_type.is_some() {
            return conflict("task_type", "workers never see it");
        }
        if step.map.is_some() {
            return conflict("map", "map inside the child pipeline instead");
        }
        let r = &step.retry;
        if r.max_attempts.is_some()
            || r.initial_backoff.is_some()
            || r.backoff_coefficient.is_some()
            || r.max_backoff.is_some()
            || r.jitter.is_some()
            || r.non_retryable.is_some()
        {
            return conflict("retry", "the child's own steps retry their tasks");
        }
        let t = &step.timeouts;
        if t.schedule_to_start.is_some() || t.start_to_close.is_some() || t.heartbeat.is_some() {
            return conflict(
                "timeouts",
                "bound the child with its own workflow_timeout instead",
            );
        }
        if step.pipeline_version == Some(0) {
            return Err(self.error(Some(name), PipelineErrorKind::VersionZero));
        }
        Ok(Some(ChildDef {
            pipeline: pipeline.to_owned(),
            version: step.pipeline_version,
            depth_max: self.limits.child_depth_max,
        }))
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
                reason.to_string()
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
        let ms = parse_duration_ms(text)
            .map_err(|r| self.bad_duration(text, field, step, r.to_string()))?;
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

    /// The step's `queue_timeout` over the file's default (`none`: no
    /// bound), kept apart from [`StepTimeouts`] because it lives in its own
    /// trailing field of the stored definition.
    fn merge_queue_timeout(
        &self,
        base: Option<u64>,
        raw: &RawTimeouts,
        prefix: &str,
        step: Option<&str>,
    ) -> Result<Option<u64>, PipelineError> {
        match &raw.queue_timeout {
            Some(text) => self.timeout(text, &format!("{prefix}.queue_timeout"), step),
            None => Ok(base),
        }
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

/// Whether a step's `retry` table sets anything.
fn raw_retry_set(r: &super::raw::RawRetry) -> bool {
    r.max_attempts.is_some()
        || r.initial_backoff.is_some()
        || r.backoff_coefficient.is_some()
        || r.max_backoff.is_some()
        || r.jitter.is_some()
        || r.non_retryable.is_some()
}

/// Whether a step's `timeouts` table sets anything.
fn raw_timeouts_set(t: &super::raw::RawTimeouts) -> bool {
    t.schedule_to_start.is_some() || t.start_to_close.is_some() || t.heartbeat.is_some()
}
