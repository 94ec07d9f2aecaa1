//! One transition, the write-ahead way: decide → make the events durable
//! (with the status index, timers and snapshot they imply, in one batch) →
//! evolve → run the commands. Shared by the workflow actor and by the
//! partition (bulk accept, parking a crashing workflow).

use std::sync::Arc;

use parking_lot::Mutex;

use super::metrics::Metrics;
use super::EngineCtx;
use crate::pipeline::PipelineDef;
use crate::storage::Op;
use crate::workflow::{
    evolve, replay, Command, Decision, EventKind, JournalRecordRef, Outcome, Status, TaskSpec,
    TimerKind, WorkflowState,
};

use super::partition_shared::PartitionShared;
use super::recovery::{release_slots, send_owed};

use crate::storage::StatusEntry;

/// Stable 64-bit tag of a timer, for its storage key.
pub fn timer_tag(timer: &TimerKind) -> u64 {
    match *timer {
        TimerKind::Retry {
            step,
            generation,
            attempt,
        } => {
            (1 << 63)
                | (u64::from(generation) << 40)
                | (u64::from(step) << 24)
                | u64::from(attempt & 0xff_ffff)
        }
        TimerKind::Workflow { generation } => u64::from(generation),
        // Bit 62 sets element retries apart; within one workflow and due
        // time the low bits of generation, step, index and attempt tell
        // them apart (indices stay below 2^20: `map::ELEMENTS_MAX_CAP`).
        TimerKind::ElementRetry {
            step,
            index,
            generation,
            attempt,
        } => {
            (1 << 62)
                | (u64::from(generation & 0x3ff) << 52)
                | (u64::from(step & 0xff) << 44)
                | (u64::from(index & 0xf_ffff) << 24)
                | u64::from(attempt & 0xff_ffff)
        }
        // Bit 61 sets wait timeouts apart (one per wait step and generation).
        TimerKind::Wait { step, generation } => {
            (1 << 61) | (u64::from(generation) << 16) | u64::from(step)
        }
    }
}

/// Storage ops of a decision, before it is durable.
pub struct Prepared {
    pub ops: Vec<Op>,
    /// The lifecycle message of the record, for the publisher once durable.
    pub event: Option<crate::engine::outbox::OutboxItem>,
    /// The state of a workflow created by this decision (`prev` was `None`).
    pub next: Option<WorkflowState>,
    pub decision: Decision,
}

/// The workflow status after `decision`'s events, without building the state.
pub fn status_after(mut status: Status, decision: &Decision) -> Status {
    for ev in &decision.events {
        status = match ev.kind {
            EventKind::WorkflowPaused => Status::Paused,
            EventKind::WorkflowResumed | EventKind::WorkflowReopened { .. } => Status::Running,
            EventKind::WorkflowCompleted => Status::Completed,
            EventKind::WorkflowFailed { .. } => Status::Failed,
            EventKind::WorkflowCancelled { .. } => Status::Cancelled,
            _ => status,
        };
    }
    status
}

/// Applies the (durable) events of `decision` to the live state.
pub fn apply(state: &mut WorkflowState, decision: &Decision) {
    for ev in &decision.events {
        evolve(state, ev);
    }
}

/// Builds the batch for `decision` on `prev` (`None` for a new workflow).
/// `fired` is the durable timer whose firing caused the decision: its row goes too.
pub fn prepare(
    ctx: &EngineCtx,
    partition: u16,
    id: &str,
    prev: Option<&WorkflowState>,
    decision: Decision,
    fired: Option<&(u64, TimerKind)>,
) -> Result<Prepared, String> {
    let store = &ctx.store;
    let mut ops = Vec::new();
    if let Some((due, timer)) = fired {
        ops.push(
            store
                .timer_delete(partition, *due, id, timer_tag(timer))
                .map_err(e)?,
        );
    }
    if decision.events.is_empty() {
        return Ok(Prepared {
            ops,
            event: None,
            next: None,
            decision,
        });
    }
    // A new workflow's state is built from its first events; an existing one
    // is evolved in place after the commit, so it is not cloned here unless a
    // snapshot of the post-state is due.
    let created = match prev {
        Some(_) => None,
        None => match replay(decision.events.iter()) {
            Some(n) => Some(n),
            None => {
                return Ok(Prepared {
                    ops,
                    event: None,
                    next: None,
                    decision,
                })
            }
        },
    };
    let prev_status = prev.map(|p| p.status);
    let next_status = match (prev, &created) {
        (Some(p), _) => status_after(p.status, &decision),
        (None, Some(c)) => c.status,
        (None, None) => Status::Running,
    };
    let first_seq = prev.map_or(1, |p| p.next_seq);
    let record = JournalRecordRef {
        first_seq,
        events: &decision.events,
    };
    ops.push(
        store
            .journal_put(partition, id, first_seq, &record)
            .map_err(e)?,
    );
    let mut event = None;
    if let Some(outbox) = ctx.hooks.outbox.as_ref().filter(|o| !o.dropping()) {
        // `created` is set whenever `prev` is not (see above).
        let (pref, generation) = match (prev, &created) {
            (Some(p), _) => (&p.pipeline, p.generation),
            (None, c) => (
                c.as_ref()
                    .map(|c| &c.pipeline)
                    .ok_or("internal: no state")?,
                0,
            ),
        };
        let def = ctx.pipelines.get(pref)?;
        if let Some(entry) = outbox.message(
            id,
            &def,
            first_seq,
            generation,
            next_status,
            &decision.events,
        ) {
            let mark =
                crate::engine::outbox::OutboxValue::Mark(crate::engine::outbox::OutboxMark {
                    pipeline: pref.clone(),
                    generation,
                    status: next_status.code(),
                });
            ops.push(
                store
                    .outbox_put(partition, id, first_seq, &mark)
                    .map_err(e)?,
            );
            event = Some(crate::engine::outbox::OutboxItem {
                partition,
                workflow_id: id.to_owned(),
                seq: first_seq,
                subject: entry.subject,
                payload: entry.payload.into(),
            });
        }
    }
    if prev_status != Some(next_status) {
        if let Some(s) = prev_status {
            ops.push(store.status_delete(partition, s.code(), id).map_err(e)?);
        }
        let (pipeline, created_at_ms) = match (prev, &created) {
            (Some(p), _) => (p.pipeline.name.clone(), p.created_at_ms),
            (None, Some(c)) => (c.pipeline.name.clone(), c.created_at_ms),
            (None, None) => (String::new(), 0),
        };
        let entry = StatusEntry {
            pipeline,
            created_at_ms,
            updated_at_ms: decision.events.last().map_or(0, |ev| ev.at_ms),
        };
        ops.push(
            store
                .status_put(partition, next_status.code(), id, &entry)
                .map_err(e)?,
        );
    }
    for c in &decision.commands {
        match c {
            Command::ArmTimer { due_ms, timer } => ops.push(
                store
                    .timer_put(partition, *due_ms, id, timer_tag(timer), timer)
                    .map_err(e)?,
            ),
            Command::DisarmTimer { due_ms, timer } => ops.push(
                store
                    .timer_delete(partition, *due_ms, id, timer_tag(timer))
                    .map_err(e)?,
            ),
            _ => {}
        }
    }
    let every = ctx.config.snapshot_every_events.max(1);
    let last_seq = first_seq + decision.events.len() as u64 - 1;
    let crossed = last_seq / every != (first_seq - 1) / every;
    let ended = next_status.is_terminal() && prev_status != Some(next_status);
    if crossed || ended {
        let snapshot = match (prev, &created) {
            (Some(p), _) => {
                let mut n = p.clone();
                apply(&mut n, &decision);
                Some(n)
            }
            (None, c) => c.clone(),
        };
        if let Some(snapshot) = snapshot {
            ops.push(store.snapshot_put(partition, id, &snapshot).map_err(e)?);
            Metrics::inc(&ctx.metrics.snapshots);
            crate::failpoints::point("snapshot.write");
        }
    }
    Ok(Prepared {
        ops,
        event,
        next: created,
        decision,
    })
}

fn e(err: crate::storage::Error) -> String {
    err.to_string()
}

/// A parking transition prepared for its commit.
pub struct ParkPlan {
    wf: WorkflowState,
    def: std::sync::Arc<PipelineDef>,
    pub prepared: Prepared,
}

/// Decides and prepares parking `wf` as failed with `reason`; `None` when
/// there is nothing to write (already terminal).
pub fn prepare_park(
    ctx: &EngineCtx,
    partition: u16,
    wf: WorkflowState,
    reason: String,
) -> Result<Option<ParkPlan>, String> {
    let def = ctx.pipelines.get(&wf.pipeline)?;
    let decision = crate::workflow::decide(
        &wf,
        &def,
        &crate::workflow::Input::Park { reason },
        ctx.clock.now_ms(),
    );
    let id = wf.id.clone();
    let prepared = prepare(ctx, partition, &id, Some(&wf), decision, None)?;
    if prepared.ops.is_empty() {
        return Ok(None);
    }
    Ok(Some(ParkPlan { wf, def, prepared }))
}

/// The parking's batch is durable: evolve and run its commands.
pub fn park_committed(ctx: &EngineCtx, shared: &Arc<Mutex<PartitionShared>>, plan: ParkPlan) {
    let ParkPlan {
        mut wf,
        def,
        prepared,
    } = plan;
    let _event = EventHandOver::new(ctx, prepared.event);
    let prev_status = wf.status;
    apply(&mut wf, &prepared.decision);
    after_commit(ctx, shared, Some(prev_status), &wf, &def, prepared.decision);
}

/// Hands a committed record's lifecycle message to the publisher when it
/// is dropped: create it before [`after_commit`], so the tasks the record
/// dispatched go out first (a task is on a workflow's critical path, its
/// event is not, and nats-server handles whichever arrives first first: an
/// event ahead of its offer delays every unloaded stage by ≈ 0.1 ms).
/// Being a drop, the hand-over also
/// happens on an early return and while a panic in `after_commit` unwinds:
/// the row is durable either way, but storage is read back only at a start
/// or after an overflow, so a message never handed over would reach
/// consumers after the workflow's later ones.
pub struct EventHandOver<'a> {
    ctx: &'a EngineCtx,
    event: Option<crate::engine::outbox::OutboxItem>,
}

impl<'a> EventHandOver<'a> {
    pub fn new(ctx: &'a EngineCtx, event: Option<crate::engine::outbox::OutboxItem>) -> Self {
        EventHandOver { ctx, event }
    }
}

impl Drop for EventHandOver<'_> {
    fn drop(&mut self) {
        if let (Some(outbox), Some(item)) = (&self.ctx.hooks.outbox, self.event.take()) {
            outbox.committed(item);
        }
    }
}

/// After the batch is durable: count, run the commands, call the hooks.
pub fn after_commit(
    ctx: &EngineCtx,
    shared: &Arc<Mutex<PartitionShared>>,
    prev_status: Option<Status>,
    next: &WorkflowState,
    def: &PipelineDef,
    decision: Decision,
) {
    let m = &ctx.metrics;
    let now = ctx.clock.now_ms();
    if !decision.events.is_empty() {
        Metrics::inc(&m.journal_records);
        m.journal_events.fetch_add(
            decision.events.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
    let task_type = |step: u16| {
        def.steps
            .get(usize::from(step))
            .map(|s| s.task_type.as_str())
    };
    for e in &decision.events {
        match &e.kind {
            EventKind::WorkflowStarted { .. } => {
                Metrics::inc(&m.workflows_started);
                m.by_pipeline
                    .with(&next.pipeline.name, |p| Metrics::inc(&p.started));
                m.note_start(e.at_ms);
            }
            EventKind::TaskSucceeded { step, attempt, .. } => {
                note_task_result(m, next, *step, *attempt, e.at_ms, task_type(*step), false);
            }
            EventKind::TaskFailed { step, attempt, .. } => {
                Metrics::inc(&m.task_failures);
                note_task_result(m, next, *step, *attempt, e.at_ms, task_type(*step), true);
            }
            EventKind::TaskTimedOut { step, .. } => {
                Metrics::inc(&m.task_timeouts);
                if let Some(t) = task_type(*step) {
                    m.by_task_type.with(t, |s| Metrics::inc(&s.timeouts));
                }
            }
            EventKind::WorkflowReopened { .. } => Metrics::inc(&m.workflows_reopened),
            // Map elements count per task type like any task (their latency
            // is not tracked: the element's dispatch time is not in the state).
            EventKind::ElementFailed { step, .. } => {
                Metrics::inc(&m.task_failures);
                if let Some(t) = task_type(*step) {
                    m.by_task_type.with(t, |s| Metrics::inc(&s.failures));
                }
            }
            EventKind::ElementSucceeded { step, .. } => {
                if let Some(t) = task_type(*step) {
                    m.by_task_type.with(t, |s| Metrics::inc(&s.successes));
                }
            }
            EventKind::ElementTimedOut { step, .. } => {
                Metrics::inc(&m.task_timeouts);
                if let Some(t) = task_type(*step) {
                    m.by_task_type.with(t, |s| Metrics::inc(&s.timeouts));
                }
            }
            _ => {}
        }
    }
    super::observe::committed(
        ctx.hooks.spans.as_deref(),
        prev_status,
        next,
        def,
        &decision,
        now,
    );
    m.status_changed(prev_status, next.status);
    if prev_status != Some(next.status) && next.status.is_terminal() {
        let c = match next.status {
            Status::Completed => &m.workflows_completed,
            Status::Failed => &m.workflows_failed,
            _ => &m.workflows_cancelled,
        };
        Metrics::inc(c);
        m.note_terminal(now);
        let latency = now.saturating_sub(next.created_at_ms);
        m.workflow_latency_ms.record(latency);
        m.by_pipeline.with(&next.pipeline.name, |p| {
            Metrics::inc(match next.status {
                Status::Completed => &p.completed,
                Status::Failed => &p.failed,
                _ => &p.cancelled,
            });
            p.latency.record(latency);
        });
        if let Some(hook) = &ctx.hooks.on_terminal {
            hook(next, def);
        }
        shared.lock().reports.finished.push(next.id.clone());
    }
    let mut dispatches: Vec<Box<TaskSpec>> = Vec::new();
    // Attempts whose gate slot (or place in its queue) this transition ends.
    let mut ended: Vec<String> = Vec::new();
    // Starts of children and signals to them, performed after the rest.
    let mut lineage: Vec<Command> = Vec::new();
    {
        let mut t = shared.lock();
        let budget = ctx.config.partition_retry_budget();
        for e in &decision.events {
            if let EventKind::TaskSucceeded { step, attempt, .. } = &e.kind {
                if let (true, Some(tt)) = (*attempt > 1, task_type(*step)) {
                    t.budgets.of(tt).note_retry_succeeded(&budget, now);
                }
            }
        }
        for c in decision.commands {
            match c {
                Command::Dispatch(spec) => dispatches.push(spec),
                Command::CancelTask {
                    task_id,
                    task_type,
                    reason,
                } => {
                    t.schedule.liveness.unwatch(&task_id);
                    if ctx.capacity.is_active() {
                        // Still waiting in the gate: it must not be sent.
                        ended.push(task_id.clone());
                    }
                    ctx.transport.cancel(&task_id, &task_type, &reason);
                }
                Command::ArmTimer { due_ms, timer } => {
                    t.schedule.timers.arm(due_ms, &next.id, timer)
                }
                Command::DisarmTimer { due_ms, timer } => {
                    t.schedule.timers.disarm(due_ms, &next.id, &timer)
                }
                c @ (Command::StartChild(_) | Command::SignalChild { .. }) => lineage.push(c),
            }
        }
        ended.extend(t.schedule.liveness.take_freed());
    }
    release_slots(ctx, &ended);
    if !dispatches.is_empty() {
        crate::failpoints::point("dispatch.after_append");
        send_owed(ctx, shared, dispatches, false);
    }
    let just_ended = prev_status != Some(next.status) && next.status.is_terminal();
    if just_ended || !lineage.is_empty() {
        super::lineage::after_commit(ctx, next, def, just_ended, lineage);
    }
}

/// Counts an accepted result of attempt `attempt` of `step`, with its
/// latency from the journaled dispatch. The latency is skipped when the
/// same decision already dispatched the next attempt (the state then holds
/// that attempt's dispatch time).
fn note_task_result(
    m: &Metrics,
    next: &WorkflowState,
    step: u16,
    attempt: u32,
    at_ms: u64,
    task_type: Option<&str>,
    failed: bool,
) {
    let Some(task_type) = task_type else {
        return;
    };
    let dispatched = next
        .steps
        .get(usize::from(step))
        .filter(|s| s.attempt == attempt)
        .and_then(|s| s.dispatched_at_ms);
    m.by_task_type.with(task_type, |s| {
        if failed {
            Metrics::inc(&s.failures);
        } else {
            Metrics::inc(&s.successes);
        }
        if let Some(d) = dispatched {
            s.latency.record(at_ms.saturating_sub(d));
        }
    });
}

/// Counts an input that changed nothing.
pub fn note_outcome(ctx: &EngineCtx, outcome: &Outcome) {
    match outcome {
        Outcome::Applied => {}
        Outcome::Ignored(r) => ctx.metrics.ignored(*r),
        Outcome::Rejected(_) => Metrics::inc(&ctx.metrics.rejected_inputs),
    }
}
