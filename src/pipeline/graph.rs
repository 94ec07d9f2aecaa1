//! Views of a pipeline's DAG: levels, a topological order, and the rendering
//! `orchestrator pipelines check` prints.

use std::collections::VecDeque;
use std::fmt::Write as _;

use super::PipelineDef;
use crate::durations::format_ms as format_duration_ms;

/// Level of each step: 0 without needs, else one more than its deepest need.
/// `None` marks steps on or behind a cycle (possible only in definitions built
/// by hand rather than loaded). Out-of-range indices are ignored for the same
/// reason: these views must never panic.
pub(super) fn compute_levels<'s>(
    count: usize,
    needs_of: impl Fn(usize) -> &'s [u16],
) -> Vec<Option<usize>> {
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
                    let mut marker = if self.map_of(i).is_some() { "[*]" } else { "" }.to_owned();
                    if self.wait_of(i).is_some() {
                        marker.push_str("[wait]");
                    }
                    if self.when_of(i).is_some() {
                        marker.push_str("[?]");
                    }
                    if self.child_of(i).is_some() {
                        marker.push_str("[>]");
                    }
                    if step.needs.is_empty() {
                        format!("{}{marker}", step.name)
                    } else {
                        let needs: Vec<&str> = step
                            .needs
                            .iter()
                            .map(|&d| name_of(usize::from(d)))
                            .collect();
                        format!("{}{marker} <- {}", step.name, needs.join(", "))
                    }
                })
                .collect();
            let _ = writeln!(out, "  level {level}: {}", rendered.join(" | "));
        }

        let _ = writeln!(out, "  steps:");
        let width = self.steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for i in self.topo_order() {
            let step = &self.steps[i];
            if let Some(w) = self.wait_of(i) {
                let _ = writeln!(out, "    {:width$}  {}", step.name, w.describe());
                if let Some(w) = self.when_of(i) {
                    let _ = writeln!(
                        out,
                        "    {:width$}  when {}: runs only if true, else skipped (dependents read null)",
                        "",
                        super::when::one_line(&w.text, 200),
                    );
                }
                continue;
            }
            if let Some(c) = self.child_of(i) {
                let version = c
                    .version
                    .map_or("its current version".to_owned(), |v| format!("version {v}"));
                let _ = writeln!(
                    out,
                    "    {:width$}  child pipeline {} ({version}, pinned when the child starts); nesting at most {}",
                    step.name, c.pipeline, c.depth_max,
                );
                if let Some(w) = self.when_of(i) {
                    let _ = writeln!(
                        out,
                        "    {:width$}  when {}: runs only if true, else skipped (dependents read null)",
                        "",
                        super::when::one_line(&w.text, 200),
                    );
                }
                continue;
            }
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
            if let Some(q) = self.queue_timeout_of(i) {
                let _ = writeln!(
                    out,
                    "    {:width$}  queue_timeout {} (longest wait in the admission gate)",
                    "",
                    format_duration_ms(q),
                );
            }
            if let Some(m) = self.map_of(i) {
                let min = if m.min_success_bp == 10_000 {
                    "all".to_owned()
                } else {
                    format!("{}%", f64::from(m.min_success_bp) / 100.0)
                };
                let _ = writeln!(
                    out,
                    "    {:width$}  map over {}: one task per element, {} at a time; must succeed: {}; at most {} elements, {} output bytes",
                    "",
                    m.over_text(name_of(usize::from(m.over_step))),
                    m.max_parallel,
                    min,
                    m.elements_max,
                    m.output_bytes_max,
                );
            }
            if let Some(w) = self.when_of(i) {
                let _ = writeln!(
                    out,
                    "    {:width$}  when {}: runs only if true, else skipped (dependents read null)",
                    "",
                    super::when::one_line(&w.text, 200),
                );
            }
        }
        out
    }
}

fn format_optional_ms(ms: Option<u64>) -> String {
    ms.map_or_else(|| "none".to_owned(), format_duration_ms)
}
