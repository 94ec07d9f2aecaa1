//! The engine's side of the admission gate: one [`Gate`] per process,
//! shared by every partition behind a mutex, with the task's key and
//! priority read from its workflow input.
//!
//! Every owed task goes through [`super::recovery::send_owed`]: with no
//! limits configured that costs one relaxed flag read. With limits, the
//! task is offered to the gate; what it lets through is sent with its
//! deadlines armed from that moment (schedule-to-start runs from
//! admission), what it holds waits in memory. Nothing about the wait is
//! journaled: the task is journaled as dispatched before it is offered, so
//! after a restart recovery owes it again and offers it again (same task
//! id), and the gate rebuilds its queues from those offers.
//!
//! A step's `queue_timeout` bounds the wait: the deadline is armed when the
//! task is offered (now + the timeout) and dropped when it is admitted.
//! Each partition, on its tick, takes its own tasks past their deadline
//! out of the gate ([`Capacity::expire`]) and hands each to its workflow as
//! a [`crate::workflow::TimeoutKind::QueueTimeout`], which the workflow
//! core journals like any timeout. After a restart the re-offered task gets
//! a fresh deadline from its re-offer: the wait is not journaled, and a
//! task that was out with a worker before the restart cannot be told from
//! one that waited, so timing it out from its old offer could throw away
//! work in progress. So a task waits at most `queue_timeout` after its last
//! offer, and at most `queue_timeout` plus its wait before each restart in
//! all.
//!
//! Locks: the gate's mutex is never held while a partition's
//! [`PartitionShared`] is locked, nor the other way round; the gate returns
//! items and the caller sends them after letting go.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap as FastMap;

use super::partition_shared::PartitionShared;
use crate::capacity::share::node_limits;
use crate::capacity::{
    Admitted, BackfillReport, BackfillView, Backfills, Expired, Gate, GateView, Limits, Ticket,
    WaitingView, PRIORITY_NORMAL,
};
use crate::workflow::TaskSpec;

/// A task the gate holds or lets through: the attempt, the partition whose
/// liveness deadlines watch it once sent, and whether it is a re-send.
pub struct Owed {
    pub spec: Box<TaskSpec>,
    pub shared: Arc<Mutex<PartitionShared>>,
    pub resend: bool,
}

impl std::fmt::Debug for Owed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owed")
            .field("task_id", &self.spec.task_id)
            .field("resend", &self.resend)
            .finish()
    }
}

/// The process's admission gate.
#[derive(Debug)]
pub struct Capacity {
    gate: Mutex<Gate<Owed>>,
    /// The gate limits, holds or queues something; read without the lock
    /// on every dispatch.
    active: AtomicBool,
    /// The backfills that report their error-rate holds.
    backfills: Mutex<Backfills>,
    /// The configured limits and this node's partition share; the gate
    /// applies that share of them (`capacity::share`). Locked before the
    /// gate, never after.
    split: Mutex<Split>,
    /// Where each limited type's key and the priority are read, copied
    /// from the gate's limits whenever they change, so that tasks are
    /// tagged (their workflow input parsed) outside the gate's lock.
    tags: RwLock<Arc<TagPointers>>,
}

/// The limited task types with their key pointers, and the priority
/// pointer.
#[derive(Debug, Default)]
struct TagPointers {
    keys: FastMap<String, Option<String>>,
    priority: Option<String>,
}

impl TagPointers {
    fn of(gate: &Gate<Owed>) -> Self {
        let limits = gate.limits();
        TagPointers {
            keys: gate
                .limited_types()
                .map(|t| {
                    let key = limits.task_types.get(t).and_then(|l| l.key.clone());
                    (t.to_string(), key)
                })
                .collect(),
            priority: limits.priority.clone(),
        }
    }
}

/// The limits as configured (for the whole cluster) and the partitions
/// this node owns of all.
#[derive(Debug)]
struct Split {
    configured: Limits,
    owned: u16,
    total: u16,
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity::new(Limits::default(), 0)
    }
}

impl Capacity {
    pub fn new(limits: Limits, now: u64) -> Self {
        let gate = Gate::new(limits.clone(), now);
        Capacity {
            active: AtomicBool::new(gate.is_active()),
            tags: RwLock::new(Arc::new(TagPointers::of(&gate))),
            gate: Mutex::new(gate),
            backfills: Mutex::new(Backfills::default()),
            split: Mutex::new(Split {
                configured: limits,
                owned: 0,
                total: 0,
            }),
        }
    }

    /// This node owns `owned` of the cluster's `total` partitions: its gate
    /// applies that share of every configured cap and rate from now on
    /// (`capacity::share`). Returns the waiting tasks a larger share lets
    /// through. Outside a cluster it is never called and the gate applies
    /// the configured limits.
    pub fn set_share(&self, owned: u16, total: u16, now: u64) -> Vec<Admitted<Owed>> {
        let mut split = self.split.lock();
        if (split.owned, split.total) == (owned, total) {
            return Vec::new();
        }
        split.owned = owned;
        split.total = total;
        let limits = node_limits(&split.configured, owned, total);
        let mut g = self.gate.lock();
        let out = g.reconfigure(limits, now);
        self.settle(&g);
        *self.tags.write() = Arc::new(TagPointers::of(&g));
        out
    }

    /// Takes a backfill's report; returns the holds it began since its
    /// previous one.
    pub fn report_backfill(&self, now: u64, report: BackfillReport) -> u64 {
        self.backfills.lock().report(now, report)
    }

    /// The backfills heard of recently, by name.
    pub fn backfills(&self, now: u64) -> Vec<BackfillView> {
        self.backfills.lock().view(now)
    }

    /// Whether tasks must be offered to the gate and their ends reported.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    fn settle(&self, gate: &Gate<Owed>) {
        self.active.store(gate.is_active(), Ordering::Relaxed);
    }

    /// Offers owed tasks; returns those to send now (these or others).
    /// Each task of a limited type is tagged with its key and priority
    /// first, without the gate's lock; tasks of one workflow in a row share
    /// one reading of its input.
    pub fn admit(&self, owed: Vec<Owed>, now: u64) -> Vec<Admitted<Owed>> {
        let pointers = self.tags.read().clone();
        let mut last: Option<(&str, Option<&str>, (String, u8))> = None;
        let mut tags: Vec<Option<(String, u8)>> = Vec::with_capacity(owed.len());
        for o in &owed {
            let Some(key_ptr) = pointers.keys.get(&o.spec.task_type) else {
                tags.push(None);
                continue;
            };
            let key_ptr = key_ptr.as_deref();
            let tag = match &last {
                Some((wf, k, tag)) if *wf == o.spec.workflow_id && *k == key_ptr => tag.clone(),
                _ => key_and_priority(&o.spec, key_ptr, pointers.priority.as_deref()),
            };
            last = Some((&o.spec.workflow_id, key_ptr, tag.clone()));
            tags.push(Some(tag));
        }
        drop(last);
        let mut g = self.gate.lock();
        let mut out = Vec::with_capacity(owed.len());
        for (o, tag) in owed.into_iter().zip(tags) {
            if !g.is_limited(&o.spec.task_type) {
                out.push(Admitted {
                    item: o,
                    waited_ms: 0,
                    tracked: false,
                });
                continue;
            }
            // Limited since the pointers were copied (a reload between):
            // read them from the gate.
            let (key, priority) = tag.unwrap_or_else(|| {
                let limits = g.limits();
                let key_ptr = limits
                    .task_types
                    .get(&o.spec.task_type)
                    .and_then(|t| t.key.as_deref());
                key_and_priority(&o.spec, key_ptr, limits.priority.as_deref())
            });
            let task_id = o.spec.task_id.clone();
            let task_type = o.spec.task_type.clone();
            let ticket = Ticket {
                task_id: &task_id,
                task_type: &task_type,
                key: &key,
                priority,
                queue_deadline_ms: o.spec.queue_timeout_ms.map(|t| now.saturating_add(t)),
            };
            out.extend(g.admit(ticket, o, now));
        }
        self.settle(&g);
        out
    }

    /// Attempts that ended (or were cancelled while waiting); returns the
    /// waiting tasks that take their slots.
    pub fn finish(&self, task_ids: &[String], now: u64) -> Vec<Admitted<Owed>> {
        let mut g = self.gate.lock();
        let out = g.finish(task_ids.iter().map(String::as_str), now);
        self.settle(&g);
        out
    }

    /// A partition stops here (shutdown, or handover in a cluster): its
    /// waiting tasks are dropped (its next owner owes them again) and the
    /// slots of its attempts out (`held`) are freed. Returns the tasks of
    /// other partitions that take those slots.
    pub fn forget_partition(
        &self,
        shared: &Arc<Mutex<PartitionShared>>,
        held: &[String],
        now: u64,
    ) -> Vec<Admitted<Owed>> {
        if !self.is_active() {
            return Vec::new();
        }
        let mut g = self.gate.lock();
        g.drop_waiting(|o| Arc::ptr_eq(&o.shared, shared));
        let out = g.finish(held.iter().map(String::as_str), now);
        self.settle(&g);
        out
    }

    /// Takes out of the gate, at most `max`, the tasks of the partition
    /// `shared` that still wait past their queue deadline; they are never
    /// sent, and their workflows end their attempts as queue timeouts.
    pub fn expire(
        &self,
        shared: &Arc<Mutex<PartitionShared>>,
        now: u64,
        max: usize,
    ) -> Vec<Expired<Owed>> {
        if !self.is_active() {
            return Vec::new();
        }
        let mut g = self.gate.lock();
        if g.next_queue_deadline().is_none_or(|d| d > now) {
            return Vec::new();
        }
        let out = g.expire(now, max, |o| Arc::ptr_eq(&o.shared, shared));
        self.settle(&g);
        out
    }

    /// Admits what rate limits allow by now.
    pub fn tick(&self, now: u64) -> Vec<Admitted<Owed>> {
        let mut g = self.gate.lock();
        let out = g.tick(now);
        self.settle(&g);
        out
    }

    /// New limits (a reload); returns the tasks they let through. In a
    /// cluster the node applies its partition share of them.
    pub fn reconfigure(&self, limits: Limits, now: u64) -> Vec<Admitted<Owed>> {
        let mut split = self.split.lock();
        let node = node_limits(&limits, split.owned, split.total);
        split.configured = limits;
        let mut g = self.gate.lock();
        let out = g.reconfigure(node, now);
        self.settle(&g);
        *self.tags.write() = Arc::new(TagPointers::of(&g));
        out
    }

    /// Limits and usage, for `capacity` and the metrics.
    pub fn view(&self) -> GateView {
        self.gate.lock().view()
    }

    /// The `[capacity] priority` pointer, if one is configured.
    pub fn priority_pointer(&self) -> Option<String> {
        self.gate.lock().limits().priority.clone()
    }

    /// Why the attempt `task_id` waits, if it does.
    pub fn waiting(&self, task_id: &str) -> Option<WaitingView> {
        if !self.is_active() {
            return None;
        }
        self.gate.lock().waiting(task_id)
    }
}

impl crate::telemetry::metrics::CapacitySource for Capacity {
    fn capacity_view(&self) -> GateView {
        if !self.is_active() {
            return GateView::default();
        }
        self.view()
    }

    fn backfills_held(&self, now_ms: u64) -> u64 {
        self.backfills.lock().held(now_ms)
    }
}

/// One partition's share of `pipeline`'s `[pipeline] in_progress_max`
/// (of its current version), rounded up, at least 1; `None` when it has
/// none. Also sets the pipeline's limit gauge.
pub fn pipeline_in_progress_cap(ctx: &super::EngineCtx, pipeline: &str) -> Option<usize> {
    let limit = ctx
        .pipelines
        .current(pipeline)
        .and_then(|(_, def)| def.in_progress_max);
    ctx.metrics.by_pipeline.with(pipeline, |p| {
        p.in_progress_limit
            .store(limit.map_or(0, i64::from), Ordering::Relaxed)
    });
    let parts = usize::from(ctx.config.partitions.max(1));
    limit.map(|l| (l as usize).div_ceil(parts).max(1))
}

/// Longest key kept; longer values are cut (at a character boundary).
pub const KEY_MAX_BYTES: usize = 128;

/// The key and priority of `spec`, read from its workflow input by JSON
/// pointer. A missing or unreadable value is the empty key and normal
/// priority.
fn key_and_priority(spec: &TaskSpec, key: Option<&str>, priority: Option<&str>) -> (String, u8) {
    if key.is_none() && priority.is_none() {
        return (String::new(), PRIORITY_NORMAL);
    }
    // Only the workflow input is read: the rest of the task input (the
    // dependencies' outputs) is skipped without being built.
    #[derive(serde::Deserialize)]
    struct Input<'a> {
        #[serde(borrow)]
        workflow: Option<&'a serde_json::value::RawValue>,
    }
    let input = serde_json::from_str::<Input<'_>>(&spec.input)
        .ok()
        .and_then(|i| i.workflow)
        .and_then(|w| serde_json::from_str::<serde_json::Value>(w.get()).ok());
    let at = |ptr: &str| input.as_ref().and_then(|i| i.pointer(ptr));
    let key = key
        .and_then(at)
        .map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .map(|mut s| {
            if s.len() > KEY_MAX_BYTES {
                let mut end = KEY_MAX_BYTES;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
            }
            s
        })
        .unwrap_or_default();
    let priority = priority
        .and_then(at)
        .and_then(parse_priority)
        .unwrap_or(PRIORITY_NORMAL);
    (key, priority)
}

/// Writes `level` (`low`, `normal`, `high`) into a start's `input` at the
/// priority `pointer`, creating objects on the way, unless the input has a
/// value there already (the input wins) or is not an object. No pointer:
/// nothing to write. A level that is none of the three is an error.
pub fn set_priority(
    input: &mut serde_json::Value,
    level: &str,
    pointer: Option<&str>,
) -> Result<(), String> {
    let level = level.trim().to_ascii_lowercase();
    if parse_priority(&serde_json::Value::String(level.clone())).is_none() {
        return Err(format!(
            "priority must be low, normal or high, got {level:?}"
        ));
    }
    let Some(pointer) = pointer else {
        return Ok(());
    };
    if input.pointer(pointer).is_some() {
        return Ok(());
    }
    let tokens: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    let mut cur = input;
    for (i, token) in tokens.iter().enumerate() {
        let Some(obj) = cur.as_object_mut() else {
            return Ok(());
        };
        if i + 1 == tokens.len() {
            obj.insert(token.clone(), serde_json::Value::String(level));
            return Ok(());
        }
        cur = obj
            .entry(token.clone())
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
    }
    Ok(())
}

/// `"low"`, `"normal"`, `"high"` or 0..=2.
pub fn parse_priority(v: &serde_json::Value) -> Option<u8> {
    match v {
        serde_json::Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "low" => Some(0),
            "normal" => Some(1),
            "high" => Some(2),
            _ => None,
        },
        serde_json::Value::Number(n) => n
            .as_u64()
            .filter(|p| *p <= u64::from(crate::capacity::PRIORITY_MAX))
            .map(|p| p as u8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(input: &str) -> TaskSpec {
        TaskSpec {
            task_id: "t".into(),
            idempotency_key: "k".into(),
            workflow_id: "w".into(),
            pipeline: "p".into(),
            pipeline_version: 1,
            step: "s".into(),
            step_index: 0,
            task_type: "transcribe".into(),
            attempt: 1,
            max_attempts: 1,
            input: input.into(),
            deadline_ms: None,
            schedule_to_start_ms: None,
            start_to_close_ms: None,
            heartbeat_timeout_ms: None,
            queue_timeout_ms: None,
        }
    }

    #[test]
    fn key_and_priority_come_from_the_workflow_input() {
        let s = spec(r#"{"workflow":{"tenant":"a","p":"high","n":7},"deps":{}}"#);
        assert_eq!(
            key_and_priority(&s, Some("/tenant"), Some("/p")),
            ("a".to_string(), 2)
        );
        assert_eq!(key_and_priority(&s, Some("/n"), None), ("7".to_string(), 1));
        assert_eq!(
            key_and_priority(&s, Some("/missing"), Some("/tenant")),
            (String::new(), 1)
        );
        let bad = spec("not json");
        assert_eq!(key_and_priority(&bad, Some("/x"), None), (String::new(), 1));
        let long = spec(&format!(r#"{{"workflow":{{"k":"{}"}}}}"#, "é".repeat(100)));
        assert!(key_and_priority(&long, Some("/k"), None).0.len() <= KEY_MAX_BYTES);
    }

    #[test]
    fn a_start_priority_is_written_at_the_pointer_unless_the_input_has_one() {
        let mut v = serde_json::json!({"video": 1});
        set_priority(&mut v, "Low", Some("/opts/priority")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"video": 1, "opts": {"priority": "low"}})
        );
        set_priority(&mut v, "high", Some("/opts/priority")).unwrap();
        assert_eq!(v["opts"]["priority"], "low", "the input wins");
        let mut w = serde_json::json!({});
        set_priority(&mut w, "high", None).unwrap();
        assert_eq!(w, serde_json::json!({}), "no pointer: nothing written");
        assert!(set_priority(&mut w, "urgent", Some("/p")).is_err());
    }
}
