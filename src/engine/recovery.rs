//! Loading one workflow from storage (snapshot + journal tail), recovering
//! a partition after a restart, and sending the tasks a workflow owes.

use parking_lot::Mutex;

use super::metrics::Metrics;
use super::transition::PartitionTimes;
use super::EngineCtx;
use crate::storage::StatusEntry;
use crate::workflow::stored::WorkflowStateV1;
use crate::workflow::{evolve, JournalRecord, Status, TaskSpec, TimerKind, WorkflowState};

/// Loads a workflow from its snapshot and journal tail. `Ok(None)` when it
/// does not exist; an error names the corrupt record.
pub fn load(ctx: &EngineCtx, partition: u16, id: &str) -> Result<Option<WorkflowState>, String> {
    if let Some(faults) = &ctx.hooks.faults {
        faults.maybe_panic_in_load(id);
    }
    let store = &ctx.store;
    let snapshot: Option<WorkflowState> = store
        .load_snapshot_compat::<WorkflowState, WorkflowStateV1>(partition, id)
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
/// the partition's durable timers in `times`, loads every running or paused
/// workflow and computes the attempts to send again. Unreadable workflows are
/// counted (`corrupt_workflows`) and left out. The caller keeps the states
/// and sends the owed tasks ([`send_owed`]) when it sees fit.
pub fn recover(
    ctx: &EngineCtx,
    partition: u16,
    times: &Mutex<PartitionTimes>,
) -> Result<Recovered, String> {
    let now = ctx.clock.now_ms();
    let timers: Vec<crate::storage::store::DueTimer<TimerKind>> = ctx
        .store
        .due_timers(partition, u64::MAX, usize::MAX)
        .map_err(|e| format!("partition {partition}: reading timers: {e}"))?;
    {
        let mut t = times.lock();
        for d in timers {
            t.timers.arm(d.due_ms, &d.id, d.value);
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
/// or re-sent after a restart when `resend`): each is watched from now,
/// counted against its task type's retry budget when it is a first attempt
/// (not on a re-send), then dispatched.
#[allow(clippy::vec_box)]
pub fn send_owed(
    ctx: &EngineCtx,
    times: &Mutex<PartitionTimes>,
    specs: Vec<Box<TaskSpec>>,
    resend: bool,
) {
    let now = ctx.clock.now_ms();
    {
        let mut t = times.lock();
        let budget = ctx.config.partition_retry_budget();
        for spec in &specs {
            t.liveness.watch(spec, now);
            if !resend && spec.attempt <= 1 {
                t.budget(&spec.task_type).note_first(&budget, now);
            }
        }
    }
    for spec in specs {
        ctx.metrics.task_sent(&spec.task_type, spec.attempt, resend);
        ctx.transport.dispatch(spec);
    }
}
