//! Loading one workflow from storage (snapshot + journal tail), recovering
//! a partition after a restart, and sending the tasks a workflow owes.

use std::sync::Arc;

use parking_lot::Mutex;

use super::capacity::Owed;
use super::metrics::Metrics;
use super::partition_shared::PartitionShared;
use super::EngineCtx;
use crate::capacity::Admitted;
use crate::storage::StatusEntry;
use crate::workflow::stored::OlderWorkflowStates;
use crate::workflow::{evolve, JournalRecord, Status, TaskSpec, TimerKind, WorkflowState};

/// Loads a workflow from its snapshot and journal tail. `Ok(None)` when it
/// does not exist; an error names the corrupt record.
pub fn load(ctx: &EngineCtx, partition: u16, id: &str) -> Result<Option<WorkflowState>, String> {
    if let Some(faults) = &ctx.hooks.faults {
        faults.maybe_panic_in_load(id);
    }
    let store = &ctx.store;
    let snapshot: Option<WorkflowState> = store
        .load_snapshot_compat::<WorkflowState, OlderWorkflowStates>(partition, id)
        .map_err(|e| e.to_string())?;
    // Without a snapshot a workflow's journal starts at seq 1. Every start
    // of a new id comes here first, so a point read answers "no such
    // workflow" before an iterator is built (≈ 4% of the CPU at 600
    // workflows/s was these reads; docs/benchmarks.md).
    if snapshot.is_none()
        && !store
            .journal_record_exists(partition, id, 1)
            .map_err(|e| e.to_string())?
    {
        return Ok(None);
    }
    let from = snapshot.as_ref().map_or(1, |s| s.next_seq);
    let records: Vec<(u64, JournalRecord)> = store
        .load_journal(partition, id, from)
        .map_err(|e| e.to_string())?;
    let mut state = snapshot;
    for (_, rec) in records {
        for (k, event) in rec.events.iter().enumerate() {
            let seq = rec.first_seq + k as u64;
            match &mut state {
                None => {
                    if seq != 1 {
                        return Err(format!("workflow {id}: journal starts at seq {seq}"));
                    }
                    state = crate::workflow::evolve::start(event);
                    if state.is_none() {
                        return Err(format!(
                            "workflow {id}: first event is {}",
                            event.kind.name()
                        ));
                    }
                }
                Some(s) => {
                    if seq < s.next_seq {
                        continue;
                    }
                    if seq != s.next_seq {
                        return Err(format!("workflow {id}: journal gap at seq {}", s.next_seq));
                    }
                    evolve(s, event);
                }
            }
        }
    }
    Ok(state)
}

/// What a partition rebuilds from storage when it starts.
pub struct Recovered {
    /// Every readable non-terminal workflow of the partition, with the tasks
    /// it owes for its in-flight steps (same task ids as before the restart).
    #[allow(clippy::vec_box)]
    pub workflows: Vec<(WorkflowState, Vec<Box<TaskSpec>>)>,
}

/// Recovery of one partition from storage alone, as after a restart: re-arms
/// the partition's durable timers in `shared`, loads every running or paused
/// workflow and computes the attempts to send again. Unreadable workflows are
/// counted (`corrupt_workflows`) and left out. The caller keeps the states
/// and sends the owed tasks ([`send_owed`]) when it sees fit.
pub fn recover(
    ctx: &EngineCtx,
    partition: u16,
    shared: &Mutex<PartitionShared>,
) -> Result<Recovered, String> {
    let now = ctx.clock.now_ms();
    let timers: Vec<crate::storage::store::DueTimer<TimerKind>> = ctx
        .store
        .due_timers(partition, u64::MAX, usize::MAX)
        .map_err(|e| format!("partition {partition}: reading timers: {e}"))?;
    {
        let mut t = shared.lock();
        for d in timers {
            t.schedule.timers.arm(d.due_ms, &d.id, d.value);
        }
    }
    let mut resumed = 0u64;
    let mut found = [0u64; 2];
    let mut workflows = Vec::new();
    for (k, status) in [Status::Running, Status::Paused].into_iter().enumerate() {
        let ids: Vec<(String, StatusEntry)> = ctx
            .store
            .list_status(partition, status.code(), usize::MAX)
            .map_err(|e| format!("partition {partition}: reading status index: {e}"))?;
        found[k] = ids.len() as u64;
        for (id, _) in ids {
            resumed += 1;
            let wf = match load(ctx, partition, &id) {
                Ok(Some(wf)) => wf,
                Ok(None) => continue,
                Err(e) => {
                    Metrics::inc(&ctx.metrics.corrupt_workflows);
                    tracing::error!(workflow_id = %id, error = %e, "cannot recover workflow");
                    continue;
                }
            };
            let def = match ctx.pipelines.get(&wf.pipeline) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(workflow_id = %id, error = %e, "pipeline of workflow missing");
                    continue;
                }
            };
            let owed: Vec<Box<TaskSpec>> = crate::workflow::redispatch_all(&wf, &def, now)
                .into_iter()
                .map(Box::new)
                .collect();
            // Children whose start or report a crash may have lost: their
            // start is performed again (a no-op for one that runs).
            if let Some(port) = ctx.hooks.lineage.get() {
                for spec in crate::workflow::restart_children(&wf, &def) {
                    port.start_child(spec);
                }
            }
            workflows.push((wf, owed));
        }
    }
    ctx.metrics
        .workflows_resumed
        .fetch_add(resumed, std::sync::atomic::Ordering::Relaxed);
    ctx.metrics.note_recovered(partition, found[0], found[1]);
    if resumed > 0 {
        tracing::info!(partition, resumed, "partition recovered");
    }
    Ok(Recovered { workflows })
}

/// Sends tasks owed by a workflow (just journaled, released from a backlog,
/// or re-sent after a restart when `resend`), through the admission gate
/// when it has limits: what it lets through is sent now, the rest when
/// capacity frees ([`send_admitted`]).
#[allow(clippy::vec_box)]
pub fn send_owed(
    ctx: &EngineCtx,
    shared: &Arc<Mutex<PartitionShared>>,
    specs: Vec<Box<TaskSpec>>,
    resend: bool,
) {
    let now = ctx.clock.now_ms();
    if ctx.capacity.is_active() {
        let owed = specs
            .into_iter()
            .map(|spec| Owed {
                spec,
                shared: shared.clone(),
                resend,
            })
            .collect();
        let ready = ctx.capacity.admit(owed, now);
        send_admitted(ctx, ready);
        return;
    }
    {
        let mut t = shared.lock();
        let budget = ctx.config.partition_retry_budget();
        for spec in &specs {
            t.schedule.liveness.watch(spec, now);
            if !resend && spec.attempt <= 1 {
                t.budgets.of(&spec.task_type).note_first(&budget, now);
            }
        }
    }
    for spec in specs {
        ctx.metrics.task_sent(&spec.task_type, spec.attempt, resend);
        ctx.transport.dispatch(spec);
    }
}

/// Sends tasks the admission gate let through: each is watched from now
/// (by its own partition, whichever partition freed the slot), counted
/// against its type's retry budget when it is a first attempt, then
/// dispatched. A task that waited has its absolute deadline moved by the
/// wait, since its timeouts run from admission.
pub fn send_admitted(ctx: &EngineCtx, ready: Vec<Admitted<Owed>>) {
    if ready.is_empty() {
        return;
    }
    let now = ctx.clock.now_ms();
    let budget = ctx.config.partition_retry_budget();
    let mut specs = Vec::with_capacity(ready.len());
    for Admitted {
        item,
        waited_ms,
        tracked,
    } in ready
    {
        let Owed {
            mut spec,
            shared,
            resend,
        } = item;
        if waited_ms > 0 {
            spec.deadline_ms = spec.deadline_ms.map(|d| d.saturating_add(waited_ms));
        }
        {
            let mut t = shared.lock();
            t.schedule.liveness.watch_capped(&spec, now, tracked);
            if !resend && spec.attempt <= 1 {
                t.budgets.of(&spec.task_type).note_first(&budget, now);
            }
        }
        if tracked {
            ctx.metrics
                .by_task_type
                .with(&spec.task_type, |s| s.queue_wait.record(waited_ms));
        }
        specs.push((spec, resend));
    }
    for (spec, resend) in specs {
        ctx.metrics.task_sent(&spec.task_type, spec.attempt, resend);
        ctx.transport.dispatch(spec);
    }
}

/// Attempts holding gate slots ended (`freed`) or were cancelled: their
/// slots go to waiting tasks, which are sent now.
pub fn release_slots(ctx: &EngineCtx, ended: &[String]) {
    if ended.is_empty() {
        return;
    }
    let ready = ctx.capacity.finish(ended, ctx.clock.now_ms());
    send_admitted(ctx, ready);
}
