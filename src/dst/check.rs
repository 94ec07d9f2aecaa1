//! The verdict on one run, from three records kept independently: the
//! durable store (journals, snapshots, status index), the workers' execution
//! log, and the orchestrator's acknowledgements of results.

use std::collections::BTreeMap;
use std::sync::Arc;

mod lineage;

use super::world::{ClientWf, DOOMED};
use super::Stats;
use crate::pipeline::PipelineDef;
use crate::storage::store::WorkflowStore;
use crate::storage::MemoryStorage;
use crate::workflow::{EventKind, JournalRecord};

/// How the orchestrator took a result, recorded when it acknowledged it
/// (after the transition it caused was durable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ack {
    AppliedSuccess = 1,
    AppliedOther = 2,
    /// Flagged: duplicate, stale attempt, unknown task or terminal workflow.
    Ignored = 3,
    Rejected = 4,
}

/// What one task id went through at the workers.
#[derive(Debug, Default)]
pub(super) struct Execution {
    pub key: String,
    /// Times a worker took it.
    pub runs: u64,
    /// Success answers sent for it.
    pub success_answers: u64,
}

#[derive(Debug, Default)]
pub(super) struct Log {
    pub executions: BTreeMap<String, Execution>,
    pub acks: Vec<(String, Ack)>,
    /// The journals of workflows purged by retention, read just before.
    pub purged: BTreeMap<String, Vec<(u64, JournalRecord)>>,
}

impl Log {
    pub fn executed(&mut self, task_id: &str, key: &str) {
        let e = self.executions.entry(task_id.to_string()).or_default();
        e.key = key.to_string();
        e.runs += 1;
    }

    pub fn answered(&mut self, task_id: &str, success: bool) {
        if success {
            if let Some(e) = self.executions.get_mut(task_id) {
                e.success_answers += 1;
            }
        }
    }
}

pub(super) struct Evidence<'a> {
    pub storage: &'a MemoryStorage,
    pub defs: &'a [PipelineDef],
    pub client: &'a [ClientWf],
    pub log: &'a Log,
}

/// The journal of `id`: from storage, or as it was purged by retention;
/// empty when it has none. `None` (and a violation) when unreadable.
pub(super) fn journal(
    store: &WorkflowStore,
    ev: &Evidence<'_>,
    id: &str,
    out: &mut Vec<String>,
) -> Option<Vec<(u64, JournalRecord)>> {
    let p = store.partition_of(id);
    let records = match store.load_journal(p, id, 1) {
        Ok(r) => r,
        Err(e) => {
            out.push(format!("{id}: journal unreadable: {e}"));
            return None;
        }
    };
    if records.is_empty() {
        // Purged by retention: judged from its journal as it was then.
        if let Some(purged) = ev.log.purged.get(id) {
            return Some(purged.clone());
        }
    }
    Some(records)
}

/// Judges one workflow of pipeline `def` from its journal: no step or
/// element accepted twice, each accepted success answered by a worker
/// (its key noted in `journal_success`), terminal, correct outputs when it
/// completed, failed when a step always fails. Returns how it ended.
pub(super) fn judge(
    ev: &Evidence<'_>,
    id: &str,
    def: &PipelineDef,
    records: &[(u64, JournalRecord)],
    out: &mut Vec<String>,
    journal_success: &mut BTreeMap<String, String>,
) -> Option<&'static str> {
    let mut generation = 0u32;
    let mut dispatched: BTreeMap<(u32, u16, u32), String> = BTreeMap::new();
    let mut successes: BTreeMap<(u32, u16), Vec<String>> = BTreeMap::new();
    // Map elements: (generation, step, index, attempt) → task id, and
    // (generation, step, index) → the task ids whose success was journaled.
    let mut element_dispatched: BTreeMap<(u32, u16, u32, u32), String> = BTreeMap::new();
    let mut element_successes: BTreeMap<(u32, u16, u32), Vec<String>> = BTreeMap::new();
    let mut outputs: BTreeMap<u16, String> = BTreeMap::new();
    let mut terminal: Option<&'static str> = None;
    for (_, rec) in records {
        for e in &rec.events {
            match &e.kind {
                EventKind::WorkflowReopened { generation: g, .. } => {
                    generation = *g;
                    terminal = None;
                }
                EventKind::TaskDispatched {
                    step,
                    attempt,
                    task_id,
                } => {
                    dispatched.insert((generation, *step, *attempt), task_id.to_string());
                }
                EventKind::TaskSucceeded {
                    step,
                    attempt,
                    output,
                    ..
                } => {
                    let task_id = dispatched
                        .get(&(generation, *step, *attempt))
                        .cloned()
                        .unwrap_or_else(|| format!("{}:?{step}:{generation}:{attempt}", id));
                    successes
                        .entry((generation, *step))
                        .or_default()
                        .push(task_id);
                    outputs.insert(*step, output.to_string());
                }
                EventKind::ElementDispatched {
                    step,
                    index,
                    attempt,
                    task_id,
                } => {
                    element_dispatched
                        .insert((generation, *step, *index, *attempt), task_id.to_string());
                }
                EventKind::ElementSucceeded {
                    step,
                    index,
                    attempt,
                    ..
                } => {
                    let task_id = element_dispatched
                        .get(&(generation, *step, *index, *attempt))
                        .cloned()
                        .unwrap_or_else(|| {
                            format!("{}:?{step}[{index}]:{generation}:{attempt}", id)
                        });
                    element_successes
                        .entry((generation, *step, *index))
                        .or_default()
                        .push(task_id);
                }
                k if k.is_terminal() => terminal = Some(k.name()),
                _ => {}
            }
        }
    }
    // A map step's output is assembled from its elements' by `evolve`:
    // take it from the replayed state.
    if let Some(state) = crate::workflow::replay(records.iter().flat_map(|(_, r)| r.events.iter()))
    {
        // So is a wait step's: the payload of the signal it consumed.
        for s in &state.signals {
            if let Some((step, _)) = s.consumed_by {
                outputs.insert(step, s.payload.to_string());
            }
        }
        for &step in state.maps.keys() {
            if let Some(o) = state
                .steps
                .get(usize::from(step))
                .and_then(|s| s.output.as_ref())
            {
                outputs.insert(step, o.to_string());
            }
        }
    }
    for ((g, step, index), ids) in &element_successes {
        let what = format!("{id} step {step} element {index} generation {g}");
        judge_successes(ev, &what, ids, out, journal_success);
    }
    let Some(terminal) = terminal else {
        out.push(format!("stuck: {id} is not terminal"));
        return None;
    };
    for ((g, step), ids) in &successes {
        let what = format!("{id} step {step} generation {g}");
        judge_successes(ev, &what, ids, out, journal_success);
    }
    if terminal == "workflow_completed" {
        let outs: Vec<Option<&str>> = (0..def.steps.len())
            .map(|i| outputs.get(&(i as u16)).map(String::as_str))
            .collect();
        let wrong = crate::sim::check_outputs(def, &outs);
        if !wrong.is_empty() {
            out.push(format!("wrong outputs: {}: {}", id, wrong.join(", ")));
        }
    }
    let doomed = def.steps.iter().position(|s| s.task_type == DOOMED);
    if let Some(d) = doomed {
        if terminal != "workflow_failed" {
            out.push(format!("{id}: ended {terminal}, expected failed"));
        }
        let after: Vec<u16> = (0..def.steps.len() as u16)
            .filter(|&i| def.steps[usize::from(i)].needs.contains(&(d as u16)))
            .collect();
        for i in after {
            if outputs.contains_key(&i) {
                out.push(format!(
                    "{}: step {} ran although its dependency always fails",
                    id,
                    def.steps[usize::from(i)].name
                ));
            }
        }
    }
    Some(terminal)
}

/// The successes the journal accepted for one step (or element) of one
/// generation, by task id: more than one is a double accept, one no
/// worker answered with success is an unrecorded accept; each is noted
/// under its key in `journal_success`.
fn judge_successes(
    ev: &Evidence<'_>,
    what: &str,
    ids: &[String],
    out: &mut Vec<String>,
    journal_success: &mut BTreeMap<String, String>,
) {
    if ids.len() > 1 {
        out.push(format!(
            "double accept: {what} succeeded {} times ({})",
            ids.len(),
            ids.join(", ")
        ));
    }
    for task_id in ids {
        let answered = ev
            .log
            .executions
            .get(task_id)
            .is_some_and(|e| e.success_answers > 0);
        if !answered {
            out.push(format!(
                "unrecorded accept: {task_id} accepted but no worker answered it with success"
            ));
        }
        journal_success.insert(key_of(task_id).to_string(), task_id.clone());
    }
}

/// The idempotency key of one of our task ids (`<key>:<attempt>`).
fn key_of(task_id: &str) -> &str {
    task_id.rsplit_once(':').map_or(task_id, |(k, _)| k)
}

/// Every violation found, one line each; fills the outcome counters of `stats`.
pub(super) fn check(ev: &Evidence<'_>, stats: &mut Stats) -> Vec<String> {
    let mut out = Vec::new();
    // Only what survived: the run ends with nothing unsynced, but a cut-off
    // run may not have.
    ev.storage.crash();
    let store = match WorkflowStore::open_existing(Arc::new(ev.storage.clone())) {
        Ok(s) => s,
        Err(e) => return vec![format!("store: {e}")],
    };
    let purged: Vec<(&str, &[(u64, JournalRecord)])> = ev
        .log
        .purged
        .iter()
        .map(|(id, records)| (id.as_str(), records.as_slice()))
        .collect();
    match crate::verify::verify_store_knowing(&store, &purged) {
        Ok(r) => {
            if r.violations > 0 || r.corrupt > 0 {
                out.push(format!("journal replay: {r}: {}", r.details.join("; ")));
            }
            if r.running > 0 {
                out.push(format!(
                    "stuck: {} journaled workflows not terminal after the drain",
                    r.running
                ));
            }
        }
        Err(e) => out.push(format!("verify: {e}")),
    }
    // The accepted success of each key, from the journals.
    let mut journal_success: BTreeMap<String, String> = BTreeMap::new();
    // The journals of the client's workflows, for the checks of their children.
    let mut journals: BTreeMap<String, Vec<(u64, JournalRecord)>> = BTreeMap::new();
    for c in ev.client {
        let Some(records) = journal(&store, ev, &c.id, &mut out) else {
            continue;
        };
        if records.is_empty() {
            if c.accepted {
                out.push(format!("lost: {} was accepted but has no journal", c.id));
            }
            continue;
        }
        let Some(def) = ev.defs.iter().find(|d| d.name == c.pipeline) else {
            out.push(format!("{}: pipeline {} unknown", c.id, c.pipeline));
            continue;
        };
        match judge(ev, &c.id, def, &records, &mut out, &mut journal_success) {
            Some("workflow_completed") => stats.completed += 1,
            Some("workflow_failed") => stats.failed += 1,
            _ => {}
        }
        journals.insert(c.id.clone(), records);
    }
    let mut judged = lineage::Judged {
        out: &mut out,
        journal_success: &mut journal_success,
    };
    lineage::check(ev, &store, &journals, &mut judged, stats);
    // Acknowledgements: per key at most one accepted success, and it is the
    // one the journal holds; every other answer was flagged.
    let mut acked: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (task_id, ack) in &ev.log.acks {
        match ack {
            Ack::AppliedSuccess => acked.entry(key_of(task_id)).or_default().push(task_id),
            Ack::Ignored => stats.flagged += 1,
            Ack::AppliedOther | Ack::Rejected => {}
        }
    }
    for (key, ids) in &acked {
        if ids.len() > 1 {
            out.push(format!(
                "unflagged extra execution: key {key} had {} answers acknowledged as its success ({})",
                ids.len(),
                ids.join(", ")
            ));
        }
        for id in ids {
            if journal_success.get(*key).map(String::as_str) != Some(*id) {
                out.push(format!(
                    "acknowledged but not durable: success of {id} was acknowledged, the journal holds {:?}",
                    journal_success.get(*key)
                ));
            }
        }
    }
    let mut per_key: BTreeMap<&str, u64> = BTreeMap::new();
    for e in ev.log.executions.values() {
        *per_key.entry(e.key.as_str()).or_default() += e.runs;
    }
    stats.extra_executions = per_key.values().map(|n| n.saturating_sub(1)).sum();
    out
}
