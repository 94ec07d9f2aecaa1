//! Per-partition time keeping, plain data structures driven by the partition
//! actor: durable timers (retry backoffs, workflow deadlines) mirrored from
//! storage, and liveness deadlines of attempts out with workers. Neither wakes
//! a workflow actor unless a deadline really passed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::workflow::{StepStatus, TaskSpec, TimeoutKind, TimerKind, WorkflowState};

/// In-memory mirror of one partition's durable timers, ordered by due time.
#[derive(Debug, Default)]
pub struct TimerWheel {
    due: BTreeSet<(u64, String, TimerKind)>,
    /// Timers put back by the retry budget ([`TimerWheel::defer`]): the due
    /// time of their storage row (the key a transition deletes) and the time
    /// they are queued for in `due`.
    deferred: HashMap<(String, TimerKind), (u64, u64)>,
}

impl TimerWheel {
    pub fn arm(&mut self, due_ms: u64, workflow_id: &str, timer: TimerKind) {
        self.due.insert((due_ms, workflow_id.to_string(), timer));
    }

    pub fn disarm(&mut self, due_ms: u64, workflow_id: &str, timer: &TimerKind) {
        let id = workflow_id.to_string();
        if !self.deferred.is_empty() {
            let key = (id, timer.clone());
            if let Some(&(row, at)) = self.deferred.get(&key) {
                if row == due_ms {
                    self.deferred.remove(&key);
                    self.due.remove(&(at, key.0, key.1));
                    return;
                }
            }
            self.due.remove(&(due_ms, key.0, key.1));
            return;
        }
        self.due.remove(&(due_ms, id, timer.clone()));
    }

    /// Puts a fired timer back, to fire again at `at_ms`; its storage row
    /// (due `row_due_ms`) stays as it is, and the next firing names that row.
    /// A restart before then finds the row and fires it at once (the budget
    /// is asked again).
    pub fn defer(&mut self, at_ms: u64, row_due_ms: u64, workflow_id: &str, timer: TimerKind) {
        let id = workflow_id.to_string();
        if let Some((_, old_at)) = self
            .deferred
            .insert((id.clone(), timer.clone()), (row_due_ms, at_ms))
        {
            self.due.remove(&(old_at, id.clone(), timer.clone()));
        }
        self.due.insert((at_ms, id, timer));
    }

    /// Forgets every timer of the workflows `select` picks (they were purged).
    pub fn disarm_where(&mut self, select: impl Fn(&str) -> bool) {
        self.due.retain(|(_, id, _)| !select(id));
        self.deferred.retain(|(id, _), _| !select(id));
    }

    /// Removes and returns every timer due at or before `now_ms`, up to `max`,
    /// each with the due time of its storage row.
    pub fn pop_due(&mut self, now_ms: u64, max: usize) -> Vec<(u64, String, TimerKind)> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.due.first() {
                Some((due, _, _)) if *due <= now_ms => {
                    if let Some(mut t) = self.due.pop_first() {
                        if !self.deferred.is_empty() {
                            if let Some((row, _)) =
                                self.deferred.remove(&(t.1.clone(), t.2.clone()))
                            {
                                t.0 = row;
                            }
                        }
                        out.push(t);
                    }
                }
                _ => break,
            }
        }
        out
    }

    /// Due time of the earliest armed timer (a shell can sleep until then).
    pub fn next_due(&self) -> Option<u64> {
        self.due.first().map(|(due, _, _)| *due)
    }

    /// Timers currently put back by the retry budget.
    pub fn deferred_len(&self) -> usize {
        self.deferred.len()
    }

    pub fn len(&self) -> usize {
        self.due.len()
    }

    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }
}

/// What the partition knows about one attempt out with workers. Heartbeats and
/// "started" notices land here and are not journaled: losing them in a crash
/// only means the attempt is watched afresh after recovery.
#[derive(Debug, Clone)]
struct Watch {
    workflow_id: String,
    task_type: Arc<str>,
    dispatched_ms: u64,
    started_ms: Option<u64>,
    last_beat_ms: u64,
    schedule_to_start_ms: Option<u64>,
    start_to_close_ms: Option<u64>,
    heartbeat_ms: Option<u64>,
    /// The time of this attempt's one entry in the deadline queue.
    queued_at: Option<u64>,
    /// It holds a slot of the admission gate, freed when the watch ends.
    capped: bool,
}

impl Watch {
    /// The earliest deadline of this attempt and its kind, if any.
    fn next_deadline(&self) -> Option<(u64, TimeoutKind)> {
        let mut best: Option<(u64, TimeoutKind)> = None;
        let mut consider = |at: Option<u64>, kind| {
            if let Some(at) = at {
                if best.is_none_or(|(b, _)| at < b) {
                    best = Some((at, kind));
                }
            }
        };
        match self.started_ms {
            None => consider(
                self.schedule_to_start_ms
                    .map(|t| self.dispatched_ms.saturating_add(t)),
                TimeoutKind::ScheduleToStart,
            ),
            Some(started) => {
                consider(
                    self.start_to_close_ms.map(|t| started.saturating_add(t)),
                    TimeoutKind::StartToClose,
                );
                consider(
                    self.heartbeat_ms
                        .map(|t| self.last_beat_ms.saturating_add(t)),
                    TimeoutKind::Heartbeat,
                );
            }
        }
        best
    }
}

/// Watched attempts of one task type: how many, and how many per dispatch
/// time (a multiset, so the oldest is the first key).
#[derive(Debug, Default)]
struct TypeBacklog {
    outstanding: u64,
    since: BTreeMap<u64, u32>,
}

/// Liveness deadlines of attempts out with workers, per partition.
#[derive(Debug, Default)]
pub struct Liveness {
    watches: HashMap<String, Watch>,
    /// Candidate deadlines; an entry may be outdated (the attempt started or
    /// heartbeated since) and is then re-queued at its real deadline.
    queue: BTreeSet<(u64, String)>,
    /// Watched attempts by task type, for the backlog metrics.
    by_type: HashMap<Arc<str>, TypeBacklog>,
    /// Attempts that held a slot of the admission gate and stopped being
    /// watched (result, timeout, cancel) since the last
    /// [`Liveness::take_freed`].
    freed: Vec<String>,
}

impl Liveness {
    fn count_in(&mut self, task_type: &str, dispatched_ms: u64) -> Arc<str> {
        let key = match self.by_type.get_key_value(task_type) {
            Some((k, _)) => k.clone(),
            None => Arc::from(task_type),
        };
        let b = self.by_type.entry(key.clone()).or_default();
        b.outstanding += 1;
        *b.since.entry(dispatched_ms).or_insert(0) += 1;
        key
    }

    fn count_out(&mut self, w: &Watch) {
        if let Some(b) = self.by_type.get_mut(&w.task_type) {
            b.outstanding = b.outstanding.saturating_sub(1);
            if let Some(n) = b.since.get_mut(&w.dispatched_ms) {
                *n -= 1;
                if *n == 0 {
                    b.since.remove(&w.dispatched_ms);
                }
            }
        }
    }

    /// `(task type, watched attempts, dispatch time of the oldest)` for
    /// every task type seen (types stay listed with 0 once drained).
    pub fn backlog(&self) -> impl Iterator<Item = (&str, u64, Option<u64>)> {
        self.by_type
            .iter()
            .map(|(t, b)| (&**t, b.outstanding, b.since.keys().next().copied()))
    }

    pub fn watch(&mut self, spec: &TaskSpec, now_ms: u64) {
        self.watch_capped(spec, now_ms, false);
    }

    /// Watches an attempt; `capped`: it holds a slot of the admission gate,
    /// listed in [`Liveness::take_freed`] once the watch ends.
    pub fn watch_capped(&mut self, spec: &TaskSpec, now_ms: u64, capped: bool) {
        let task_type = self.count_in(&spec.task_type, now_ms);
        let mut w = Watch {
            workflow_id: spec.workflow_id.clone(),
            task_type,
            dispatched_ms: now_ms,
            started_ms: None,
            last_beat_ms: now_ms,
            schedule_to_start_ms: spec.schedule_to_start_ms,
            start_to_close_ms: spec.start_to_close_ms,
            heartbeat_ms: spec.heartbeat_timeout_ms,
            queued_at: None,
            capped,
        };
        if let Some((at, _)) = w.next_deadline() {
            self.queue.insert((at, spec.task_id.clone()));
            w.queued_at = Some(at);
        }
        if let Some(old) = self.watches.insert(spec.task_id.clone(), w) {
            // The same attempt sent again: it is watched once, from now.
            self.dequeue(&spec.task_id, old.queued_at);
            self.count_out(&old);
        }
    }

    /// Removes a watch's queue entry (unless the new one is at the same time).
    fn dequeue(&mut self, task_id: &str, queued_at: Option<u64>) {
        if let Some(at) = queued_at {
            let still = self
                .watches
                .get(task_id)
                .is_some_and(|w| w.queued_at == Some(at));
            if !still {
                self.queue.remove(&(at, task_id.to_owned()));
            }
        }
    }

    pub fn unwatch(&mut self, task_id: &str) {
        // Its queue entry goes too: a stale entry used to stay until its
        // deadline came due (10 minutes for a schedule-to-start default),
        // which at 12k tasks/s held millions of entries (docs/benchmarks.md).
        if let Some(w) = self.watches.remove(task_id) {
            self.dequeue(task_id, w.queued_at);
            self.count_out(&w);
            if w.capped {
                self.freed.push(task_id.to_owned());
            }
        }
    }

    /// Every watched attempt holding a gate slot, and those freed since the
    /// last [`Liveness::take_freed`] (the partition is going away).
    pub fn take_all_capped(&mut self) -> Vec<String> {
        let mut ids = self.take_freed();
        ids.extend(
            self.watches
                .iter()
                .filter(|(_, w)| w.capped)
                .map(|(id, _)| id.clone()),
        );
        ids
    }

    /// Attempts holding a gate slot whose watch ended since the last call.
    pub fn take_freed(&mut self) -> Vec<String> {
        std::mem::take(&mut self.freed)
    }

    /// A worker took the task at `at_ms`: its queue entry moves to the
    /// deadline that now applies (a later report only refreshes the last
    /// beat). Returns false for an attempt not being watched.
    pub fn started(&mut self, task_id: &str, at_ms: u64) -> bool {
        let Some(w) = self.watches.get_mut(task_id) else {
            return false;
        };
        if w.started_ms.is_some() {
            w.last_beat_ms = w.last_beat_ms.max(at_ms);
            return true;
        }
        w.started_ms = Some(at_ms);
        w.last_beat_ms = at_ms;
        let old = w.queued_at;
        let new = w.next_deadline().map(|(at, _)| at);
        if old != new {
            w.queued_at = new;
            if let Some(at) = old {
                self.queue.remove(&(at, task_id.to_owned()));
            }
            if let Some(at) = new {
                self.queue.insert((at, task_id.to_owned()));
            }
        }
        true
    }

    /// When a worker reported `task_id` started (its first heartbeat or
    /// started notice), while the attempt is watched.
    pub fn started_at(&self, task_id: &str) -> Option<u64> {
        self.watches.get(task_id).and_then(|w| w.started_ms)
    }

    /// `wf` as `describe` shows it: a running attempt's step has the start
    /// time its worker reported by heartbeat. That time is not journaled
    /// (the result's `started_at_ms` is), so it is filled in here.
    pub fn with_starts(&self, mut wf: WorkflowState) -> WorkflowState {
        for s in &mut wf.steps {
            if s.status == StepStatus::Dispatched && s.started_at_ms.is_none() {
                s.started_at_ms = s.task_id.as_deref().and_then(|t| self.started_at(t));
            }
        }
        wf
    }

    /// A worker is still busy with the task (a heartbeat also implies
    /// started). A later deadline is not re-queued at once: the entry fires
    /// at the earlier one and is moved then (one entry per attempt).
    pub fn heartbeat(&mut self, task_id: &str, at_ms: u64) -> bool {
        self.started(task_id, at_ms)
    }

    /// Entries in the deadline queue: at most one per watched attempt.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Attempts whose deadline passed: `(workflow_id, task_id, kind)`. Each is
    /// reported once and stops being watched; the workflow decides what follows.
    pub fn expired(&mut self, now_ms: u64, max: usize) -> Vec<(String, String, TimeoutKind)> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some((at, _)) = self.queue.first() else {
                break;
            };
            if *at > now_ms {
                break;
            }
            let Some((_, task_id)) = self.queue.pop_first() else {
                break;
            };
            let Some(w) = self.watches.get_mut(&task_id) else {
                continue;
            };
            w.queued_at = None;
            match w.next_deadline() {
                Some((real, kind)) if real <= now_ms => {
                    if let Some(w) = self.watches.remove(&task_id) {
                        self.count_out(&w);
                        if w.capped {
                            self.freed.push(task_id.clone());
                        }
                        out.push((w.workflow_id, task_id, kind));
                    }
                }
                Some((real, _)) => {
                    w.queued_at = Some(real);
                    self.queue.insert((real, task_id));
                }
                None => {}
            }
        }
        out
    }

    /// The earliest time [`Liveness::expired`] may report something. It can
    /// be early (an attempt started or heartbeated since), never late.
    pub fn next_due(&self) -> Option<u64> {
        self.queue.first().map(|(at, _)| *at)
    }

    pub fn len(&self) -> usize {
        self.watches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watches.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(task_id: &str, s2s: Option<u64>, s2c: Option<u64>, hb: Option<u64>) -> TaskSpec {
        TaskSpec {
            task_id: task_id.into(),
            idempotency_key: "k".into(),
            workflow_id: "wf".into(),
            pipeline: "p".into(),
            pipeline_version: 1,
            step: "s".into(),
            step_index: 0,
            task_type: "s".into(),
            attempt: 1,
            max_attempts: 3,
            input: "{}".into(),
            deadline_ms: None,
            schedule_to_start_ms: s2s,
            start_to_close_ms: s2c,
            heartbeat_timeout_ms: hb,
            queue_timeout_ms: None,
        }
    }

    /// `describe` shows a running attempt started once its worker's first
    /// heartbeat came, before any result says so.
    #[test]
    fn a_heartbeat_shows_as_the_running_steps_start_time() {
        let step = |status, task_id: &str| crate::workflow::StepState {
            status,
            task_id: Some(task_id.into()),
            ..crate::workflow::StepState::new()
        };
        let wf = WorkflowState {
            id: "wf".into(),
            pipeline: crate::workflow::PipelineRef {
                name: "p".into(),
                version: 1,
                hash: 0,
            },
            input: "{}".into(),
            status: crate::workflow::Status::Running,
            generation: 0,
            steps: vec![
                step(StepStatus::Dispatched, "a"),
                step(StepStatus::Dispatched, "b"),
                step(StepStatus::Pending, "c"),
            ],
            created_at_ms: 0,
            updated_at_ms: 0,
            finished_at_ms: None,
            deadline_ms: None,
            reason: None,
            next_seq: 1,
            maps: Default::default(),
            signals: Vec::new(),
            waits: Default::default(),
        };
        let mut l = Liveness::default();
        for id in ["a", "b", "c"] {
            l.watch(&spec(id, None, None, Some(1000)), 10);
        }
        assert!(l.heartbeat("a", 40));
        assert!(l.heartbeat("a", 90));
        assert!(l.heartbeat("c", 50));
        let shown = l.with_starts(wf);
        let starts: Vec<_> = shown.steps.iter().map(|s| s.started_at_ms).collect();
        assert_eq!(starts, vec![Some(40), None, None]);
    }

    #[test]
    fn schedule_to_start_fires_unless_started() {
        let mut l = Liveness::default();
        l.watch(&spec("a", Some(100), Some(1000), None), 0);
        l.watch(&spec("b", Some(100), Some(1000), None), 0);
        assert!(l.started("b", 50));
        assert!(l.expired(99, 10).is_empty());
        let e = l.expired(100, 10);
        assert_eq!(
            e,
            vec![("wf".into(), "a".into(), TimeoutKind::ScheduleToStart)]
        );
        assert!(l.expired(1049, 10).is_empty());
        assert_eq!(l.expired(1050, 10)[0].2, TimeoutKind::StartToClose);
        assert!(l.is_empty());
    }

    #[test]
    fn the_deadline_queue_holds_one_entry_per_watched_attempt_and_none_after() {
        let mut l = Liveness::default();
        // Dispatched (schedule-to-start deadline), taken (heartbeat
        // deadline), answered: nothing may stay behind in the queue.
        for i in 0..1000 {
            let id = format!("t{i}");
            l.watch(&spec(&id, Some(600_000), Some(3_600_000), Some(60_000)), i);
            assert!(l.started(&id, i + 1));
            assert!(l.heartbeat(&id, i + 2));
            l.unwatch(&id);
        }
        assert_eq!((l.len(), l.queued()), (0, 0));
        // Re-sent attempts and started ones keep exactly one entry each.
        for i in 0..10 {
            let id = format!("r{i}");
            l.watch(&spec(&id, Some(100), None, Some(50)), 0);
            l.watch(&spec(&id, Some(100), None, Some(50)), 5);
            l.started(&id, 7);
        }
        assert_eq!((l.len(), l.queued()), (10, 10));
        // Heartbeats move the deadline lazily: the entry fires early and moves.
        l.heartbeat("r0", 40);
        let gone = l.expired(57, 100);
        assert_eq!(gone.len(), 9, "r1..r9 missed their heartbeat at 57");
        assert_eq!((l.len(), l.queued()), (1, 1));
        assert_eq!(l.expired(90, 10)[0].1, "r0");
        assert_eq!((l.len(), l.queued()), (0, 0));
    }

    #[test]
    fn heartbeats_keep_an_attempt_alive() {
        let mut l = Liveness::default();
        l.watch(&spec("a", None, None, Some(100)), 0);
        assert!(l.heartbeat("a", 10));
        for t in (60..1000).step_by(60) {
            assert!(l.expired(t, 10).is_empty(), "expired at {t}");
            assert!(l.heartbeat("a", t));
        }
        assert_eq!(l.expired(2000, 10)[0].2, TimeoutKind::Heartbeat);
        assert!(!l.heartbeat("a", 2001), "no longer watched");
    }

    #[test]
    fn backlog_counts_watched_attempts_by_type_with_the_oldest() {
        let mut l = Liveness::default();
        let mut a = spec("a", Some(10), None, None);
        a.task_type = "ingest".into();
        l.watch(&a, 5);
        l.watch(&spec("b", None, None, None), 7);
        l.watch(&spec("c", None, None, None), 9);
        // A re-send of a watched attempt is not a second attempt.
        l.watch(&spec("c", None, None, None), 12);
        let mut b: Vec<(String, u64, Option<u64>)> =
            l.backlog().map(|(t, n, o)| (t.to_string(), n, o)).collect();
        b.sort();
        assert_eq!(
            b,
            vec![("ingest".into(), 1, Some(5)), ("s".into(), 2, Some(7))]
        );
        l.unwatch("b");
        assert_eq!(l.expired(100, 10).len(), 1, "a timed out");
        let mut b: Vec<(String, u64, Option<u64>)> =
            l.backlog().map(|(t, n, o)| (t.to_string(), n, o)).collect();
        b.sort();
        assert_eq!(
            b,
            vec![("ingest".into(), 0, None), ("s".into(), 1, Some(12))]
        );
    }

    #[test]
    fn unwatched_attempts_never_fire() {
        let mut l = Liveness::default();
        l.watch(&spec("a", Some(10), None, None), 0);
        l.unwatch("a");
        assert!(l.expired(1000, 10).is_empty());
    }

    #[test]
    fn timer_wheel_pops_in_due_order() {
        let mut w = TimerWheel::default();
        w.arm(30, "x", TimerKind::Workflow { generation: 0 });
        w.arm(10, "y", TimerKind::Workflow { generation: 0 });
        w.arm(20, "z", TimerKind::Workflow { generation: 0 });
        w.disarm(20, "z", &TimerKind::Workflow { generation: 0 });
        let due = w.pop_due(25, 10);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, "y");
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn a_deferred_timer_fires_later_naming_its_storage_row() {
        let mut w = TimerWheel::default();
        let retry = |attempt| TimerKind::Retry {
            step: 0,
            generation: 0,
            attempt,
        };
        w.arm(10, "a", retry(2));
        w.arm(10, "b", retry(2));
        let fired = w.pop_due(10, 10);
        assert_eq!(fired.len(), 2);
        // The budget puts both back: a to 50, b to 70, then b again to 90.
        w.defer(50, 10, "a", retry(2));
        w.defer(70, 10, "b", retry(2));
        w.defer(90, 10, "b", retry(2));
        assert_eq!(w.len(), 2);
        assert_eq!(w.deferred_len(), 2);
        assert!(w.pop_due(49, 10).is_empty());
        assert_eq!(w.pop_due(89, 10), vec![(10, "a".to_string(), retry(2))]);
        // Disarming by the row's due time finds the deferred entry.
        w.disarm(10, "b", &retry(2));
        assert!(w.is_empty());
        assert_eq!(w.deferred_len(), 0);
        w.defer(5, 1, "c", retry(3));
        w.disarm_where(|id| id == "c");
        assert!(w.is_empty() && w.deferred_len() == 0);
    }
}
