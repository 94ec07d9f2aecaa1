//! The verdict on child workflows, which the client never starts: each
//! belongs to a parent the client started and that journaled its start;
//! each is judged like the client's workflows (terminal, no step accepted
//! twice, correct outputs); each parent took exactly the outcome its child
//! ended with, started at most one child per step and generation (under the
//! id derived from them), and a doomed family failed with its child.

use std::collections::{BTreeMap, BTreeSet};

use super::{journal, judge, Evidence};
use crate::dst::Stats;
use crate::storage::store::WorkflowStore;
use crate::workflow::lineage::{child_id, parent_of, ChildOutcome};
use crate::workflow::{EventKind, JournalRecord};

/// Where the per-workflow verdicts go.
pub(super) struct Judged<'a> {
    pub out: &'a mut Vec<String>,
    pub journal_success: &'a mut BTreeMap<String, String>,
}

/// Checks every child in storage or purged, and every parent among the
/// client's workflows (`journals`, by id); counts the children's ends.
pub(super) fn check(
    ev: &Evidence<'_>,
    store: &WorkflowStore,
    journals: &BTreeMap<String, Vec<(u64, JournalRecord)>>,
    j: &mut Judged<'_>,
    stats: &mut Stats,
) {
    let mut ids: BTreeSet<String> = ev.log.purged.keys().cloned().collect();
    let scanned = store.scan_all_journals::<JournalRecord, _>(|key, _| {
        if let Ok(key) = key {
            ids.insert(key.id);
        }
        true
    });
    if let Err(e) = scanned {
        j.out.push(format!("children: journals unreadable: {e}"));
        return;
    }
    // How each child ended (its terminal event's name).
    let mut ended: BTreeMap<String, &'static str> = BTreeMap::new();
    for id in ids.iter().filter(|id| parent_of(id).is_some()) {
        let Some(records) = journal(store, ev, id, j.out) else {
            continue;
        };
        check_belongs(ev, id, journals, j.out);
        let started = records.first().and_then(|(_, r)| r.events.first());
        let pipeline = match started.map(|e| &e.kind) {
            Some(EventKind::WorkflowStarted { pipeline, .. }) => pipeline.name.clone(),
            _ => {
                j.out.push(format!(
                    "{id}: journal does not start with workflow_started"
                ));
                continue;
            }
        };
        let Some(def) = ev.defs.iter().find(|d| d.name == pipeline) else {
            j.out.push(format!("{id}: pipeline {pipeline} unknown"));
            continue;
        };
        let terminal = judge(ev, id, def, &records, j.out, j.journal_success);
        match terminal {
            Some("workflow_completed") => stats.children_completed += 1,
            Some("workflow_failed") => stats.children_failed += 1,
            _ => {}
        }
        if let Some(t) = terminal {
            ended.insert(id.clone(), t);
        }
    }
    for c in ev.client {
        if let Some(records) = journals.get(&c.id) {
            let doom = c.input.contains(r#""doom":true"#);
            check_parent(ev, &c.id, records, doom, &ended, j.out);
        }
    }
}

/// A child's parent is one of the client's workflows, and its journal
/// holds the child's start.
fn check_belongs(
    ev: &Evidence<'_>,
    id: &str,
    journals: &BTreeMap<String, Vec<(u64, JournalRecord)>>,
    out: &mut Vec<String>,
) {
    let Some(link) = parent_of(id) else {
        return;
    };
    if !ev.client.iter().any(|c| c.id == link.parent) {
        out.push(format!(
            "orphan child: {id}: no workflow {} was started",
            link.parent
        ));
        return;
    }
    let started = journals.get(link.parent).is_some_and(|records| {
        records
            .iter()
            .flat_map(|(_, r)| r.events.iter())
            .any(|e| matches!(&e.kind, EventKind::ChildStarted { child_id: c, .. } if &**c == id))
    });
    if !started {
        out.push(format!(
            "orphan child: {id}: its parent {} never journaled its start",
            link.parent
        ));
    }
}

/// The terminal event a child that ended with `outcome` journaled.
fn ended_as(outcome: &ChildOutcome) -> &'static str {
    match outcome {
        ChildOutcome::Succeeded { .. } => "workflow_completed",
        ChildOutcome::Failed { .. } => "workflow_failed",
        ChildOutcome::Cancelled { .. } => "workflow_cancelled",
    }
}

/// One parent's child steps against its children's ends (`ended`).
fn check_parent(
    ev: &Evidence<'_>,
    id: &str,
    records: &[(u64, JournalRecord)],
    doom: bool,
    ended: &BTreeMap<String, &'static str>,
    out: &mut Vec<String>,
) {
    let Some(def) = ev.defs.iter().find(|d| {
        matches!(
            records.first().and_then(|(_, r)| r.events.first()).map(|e| &e.kind),
            Some(EventKind::WorkflowStarted { pipeline, .. }) if pipeline.name == d.name
        )
    }) else {
        return;
    };
    let name = |step: u16| def.steps.get(usize::from(step)).map_or("?", |s| &s.name);
    let mut generation = 0u32;
    // (generation, step) → the children started.
    let mut started: BTreeMap<(u32, u16), Vec<String>> = BTreeMap::new();
    // Children whose success the parent took.
    let mut succeeded: BTreeSet<String> = BTreeSet::new();
    // Steps that need a child step and were dispatched.
    let mut after_child: BTreeSet<u16> = BTreeSet::new();
    let mut terminal: Option<&'static str> = None;
    for e in records.iter().flat_map(|(_, r)| r.events.iter()) {
        match &e.kind {
            EventKind::WorkflowReopened { generation: g, .. } => {
                generation = *g;
                terminal = None;
            }
            EventKind::ChildStarted { step, child_id: c } => {
                let expected = child_id(id, name(*step), generation);
                if **c != *expected {
                    out.push(format!(
                        "child id: {id} step {} generation {generation} started {c}, expected {expected}",
                        name(*step)
                    ));
                }
                let list = started.entry((generation, *step)).or_default();
                list.push(c.to_string());
                if list.len() > 1 {
                    out.push(format!(
                        "two children: {id} step {} generation {generation} started {}",
                        name(*step),
                        list.join(", ")
                    ));
                }
            }
            EventKind::ChildFinished {
                step,
                child_id: c,
                outcome,
            } => {
                let want = ended_as(outcome);
                match ended.get(&**c) {
                    Some(&got) if got == want => {}
                    got => out.push(format!(
                        "child outcome: {id} step {} took {} from child {c}, which ended {}",
                        name(*step),
                        outcome.as_str(),
                        got.copied().unwrap_or("without a journal")
                    )),
                }
                if matches!(outcome, ChildOutcome::Succeeded { .. }) {
                    succeeded.insert(c.to_string());
                }
            }
            EventKind::TaskDispatched { step, .. } => {
                let needs = def.steps.get(usize::from(*step)).map(|s| &s.needs);
                if needs.is_some_and(|n| n.iter().any(|&d| def.child_of(usize::from(d)).is_some()))
                {
                    after_child.insert(*step);
                }
            }
            k if k.is_terminal() => terminal = Some(k.name()),
            _ => {}
        }
    }
    if terminal == Some("workflow_completed") {
        for ((_, step), children) in started.range((generation, 0)..) {
            if !children.iter().any(|c| succeeded.contains(c)) {
                out.push(format!(
                    "child outcome: {id} completed without the success of its child of step {}",
                    name(*step)
                ));
            }
        }
    }
    if doom {
        if terminal != Some("workflow_failed") {
            out.push(format!(
                "{id}: ended {}, expected failed (its child always fails)",
                terminal.unwrap_or("not terminal")
            ));
        }
        for children in started.values() {
            for c in children {
                if ended.get(c).is_some_and(|&t| t != "workflow_failed") {
                    out.push(format!(
                        "{id}: its child {c} ended {}, expected failed",
                        ended[c]
                    ));
                }
            }
        }
        for step in after_child {
            out.push(format!(
                "{id}: step {} ran although its child always fails",
                name(step)
            ));
        }
    }
}
