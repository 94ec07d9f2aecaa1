//! Child steps: a step with `pipeline = "<name>"` runs a whole workflow of
//! that pipeline (its *child*) instead of a task, and succeeds or fails
//! with it (docs/pipelines.md, "Child pipelines").
//!
//! A single file names the pipeline it starts; whether that pipeline
//! exists, and whether pipelines start each other in a cycle, is a
//! property of the whole directory, checked by [`check_children`] when a
//! directory is loaded (`pipelines check`, `run`, `reload`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::error::{PipelineError, PipelineErrorKind};
use super::PipelineDef;

/// Default of [`super::PipelineLimits::child_depth_max`].
pub const DEFAULT_CHILD_DEPTH_MAX: u32 = 8;

/// The child of one step, as validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildDef {
    /// Name of the pipeline the child runs.
    pub pipeline: String,
    /// The version the child runs; `None`: the current version when the
    /// child starts (pinned from then on, like any workflow's).
    pub version: Option<u32>,
    /// Most workflows one chain of parents and children may nest, the
    /// first parent counting 1: a child that would be deeper fails its
    /// parent's step instead of starting. Stored with the definition.
    pub depth_max: u32,
}

/// One definition's child steps: (step name, child pipeline, version).
fn children_of(def: &PipelineDef) -> impl Iterator<Item = (&str, &ChildDef)> {
    def.steps
        .iter()
        .enumerate()
        .filter_map(|(i, s)| def.child_of(i).map(|c| (s.name.as_str(), c)))
}

/// Checks the child steps of a loaded directory: every child pipeline (and
/// pinned version) is declared, and no pipeline starts itself, directly or
/// through other pipelines. `file_of(i)` names the file of `defs[i]` in the
/// errors. All problems are reported.
pub fn check_children(
    defs: &[PipelineDef],
    file_of: impl Fn(usize) -> String,
) -> Result<(), Vec<PipelineError>> {
    let mut versions: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
    for d in defs {
        versions.entry(&d.name).or_default().insert(d.version);
    }
    let mut errors = Vec::new();
    for (i, def) in defs.iter().enumerate() {
        for (step, child) in children_of(def) {
            let registered = versions.get(child.pipeline.as_str());
            let known = match (registered, child.version) {
                (None, _) => false,
                (Some(v), Some(pinned)) => v.contains(&pinned),
                (Some(_), None) => true,
            };
            if !known {
                errors.push(PipelineError::new(
                    file_of(i),
                    Some(step),
                    PipelineErrorKind::UnknownChildPipeline {
                        name: child.pipeline.clone(),
                        version: child.version,
                        registered: registered
                            .map(|v| v.iter().map(u32::to_string).collect::<Vec<_>>().join(", "))
                            .unwrap_or_default(),
                    },
                ));
            }
        }
    }
    // Pipelines start each other by name (a child without a pinned version
    // runs whatever version is current then), so the graph is over names:
    // an edge from every version of a name to the child's name.
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for def in defs {
        for (_, child) in children_of(def) {
            edges
                .entry(def.name.as_str())
                .or_default()
                .insert(child.pipeline.as_str());
        }
    }
    let mut reported: BTreeSet<Vec<String>> = BTreeSet::new();
    for (i, def) in defs.iter().enumerate() {
        if let Some(cycle) = cycle_from(&def.name, &edges) {
            // The same cycle found from each of its pipelines: one report.
            let mut key = cycle[1..].to_vec();
            key.sort();
            if reported.insert(key) {
                errors.push(PipelineError::new(
                    file_of(i),
                    None,
                    PipelineErrorKind::ChildPipelineCycle { path: cycle },
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// A path of pipeline names from `start` back to `start`, if there is one.
fn cycle_from(start: &str, edges: &BTreeMap<&str, BTreeSet<&str>>) -> Option<Vec<String>> {
    // Depth-first over names; the graph is as small as the directory.
    let mut stack: Vec<(&str, Vec<&str>)> = vec![(start, vec![start])];
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for &next in edges.get(at).into_iter().flatten() {
            if next == start {
                let mut cycle: Vec<String> = path.iter().map(|s| s.to_string()).collect();
                cycle.push(start.to_string());
                return Some(cycle);
            }
            if seen.insert(next) {
                let mut p = path.clone();
                p.push(next);
                stack.push((next, p));
            }
        }
    }
    None
}
