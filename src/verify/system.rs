//! The system checker: one verdict from the three independent records of a
//! run — the journals on disk, the lifecycle event stream and the simulated
//! workers' execution records (`worker --simulate --record FILE`).
//!
//! Rules (each breach is counted; any count makes the verdict fail):
//! - every journal replays cleanly ([`verify_store`]: `journal_violations`);
//! - nothing lost: with `expect_terminal`, every accepted (journaled)
//!   workflow is completed, failed or cancelled (`not_terminal`);
//! - at most one accepted success per step per generation: per idempotency
//!   key (`<workflow>:<step>:<generation>`) at most one `task_succeeded` in
//!   the journal (`double_accepts`);
//! - with records: the accepted attempt's task id was answered by a worker
//!   (`unrecorded_accepts`); every other execution a worker saw of the same
//!   key is then, by the previous rule, one the orchestrator did not accept;
//! - with events: every journaled transition is on the stream
//!   (`events_missing`), and per workflow the event ids, deduplicated (first
//!   occurrence kept) and in stream order, are exactly `1..=N` in order
//!   (`events_out_of_order` counts workflows where they are not, including
//!   events the journal does not have);
//! - with records, write-ahead: every execution a worker recorded is of a
//!   task id the journal dispatched, at or before the execution
//!   (`unjournaled_executions`);
//! - with accepted ids: every id a client was told was accepted is in the
//!   journal (`accepted_lost`);
//! - nothing stuck: no running (not terminal, not paused) workflow goes
//!   without a journaled transition for longer than its pipeline's
//!   heartbeat timeout + max backoff + a slack, between two of its events or
//!   from its last event to the end of the observed run (`stuck`).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::events::EventMessage;
use crate::pipeline::stored::OlderPipelineDefs;
use crate::pipeline::PipelineDef;
use crate::storage::store::WorkflowStore;
use crate::worker::ExecutionRecord;
use crate::workflow::decide::idempotency_key;
use crate::workflow::map::{element_idempotency_key, element_task_id};
use crate::workflow::{Event, EventKind, JournalRecord};

use super::{verify_store, STUCK_SLACK_MS};

/// What the system checker found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SystemReport {
    pub workflows: u64,
    pub terminal: u64,
    pub not_terminal: u64,
    pub journal_violations: u64,
    pub events_missing: u64,
    pub events_out_of_order: u64,
    pub double_accepts: u64,
    pub unrecorded_accepts: u64,
    pub unjournaled_executions: u64,
    pub accepted_lost: u64,
    pub stuck: u64,
    /// Executions beyond the accepted one seen by workers (not a violation).
    pub extra_executions: u64,
    pub details: Vec<String>,
}

impl SystemReport {
    pub fn violations(&self) -> u64 {
        self.not_terminal
            + self.journal_violations
            + self.events_missing
            + self.events_out_of_order
            + self.double_accepts
            + self.unrecorded_accepts
            + self.unjournaled_executions
            + self.accepted_lost
            + self.stuck
    }

    fn detail(&mut self, line: String) {
        if self.details.len() < 200 {
            self.details.push(line);
        }
    }
}

impl std::fmt::Display for SystemReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "check workflows={} terminal={} events_missing={} events_out_of_order={} double_accepts={} unrecorded_accepts={} not_terminal={} journal_violations={} unjournaled_executions={} accepted_lost={} stuck={} extra_executions={} violations={}",
            self.workflows,
            self.terminal,
            self.events_missing,
            self.events_out_of_order,
            self.double_accepts,
            self.unrecorded_accepts,
            self.not_terminal,
            self.journal_violations,
            self.unjournaled_executions,
            self.accepted_lost,
            self.stuck,
            self.extra_executions,
            self.violations()
        )
    }
}

/// Inputs besides the store.
#[derive(Debug)]
pub struct SystemInputs {
    pub expect_terminal: bool,
    /// The whole event stream, in stream order (None: not checked).
    pub events: Option<Vec<EventMessage>>,
    /// Every execution record of every worker (None: not checked).
    pub records: Option<Vec<ExecutionRecord>>,
    /// Ids a client was told were accepted (None: not checked).
    pub accepted: Option<Vec<String>>,
    /// End of the observed run (None: the latest journaled event).
    pub observed_until_ms: Option<u64>,
    pub stuck_slack_ms: u64,
    /// Clock skew allowed between worker records and the journal.
    pub skew_ms: u64,
}

impl Default for SystemInputs {
    fn default() -> Self {
        SystemInputs {
            expect_terminal: false,
            events: None,
            records: None,
            accepted: None,
            observed_until_ms: None,
            stuck_slack_ms: STUCK_SLACK_MS,
            skew_ms: 0,
        }
    }
}

/// How long a running workflow of `def` may go without a transition:
/// the longest attempt silence a step allows (heartbeat timeout, else
/// start-to-close, else schedule-to-start; a wait step's timeout) + the
/// longest retry backoff. `None` when some step has no bound at all.
pub fn idle_bound_ms(def: &PipelineDef) -> Option<u64> {
    let mut silence = 0u64;
    let mut backoff = 0u64;
    for (i, s) in def.steps.iter().enumerate() {
        // A wait step is silent until its signal or its timeout.
        if let Some(w) = def.wait_of(i) {
            silence = silence.max(w.timeout_ms);
            continue;
        }
        let t = &s.timeouts;
        silence = silence.max(
            t.heartbeat_ms
                .or(t.start_to_close_ms)
                .or(t.schedule_to_start_ms)?,
        );
        backoff = backoff.max(s.retry.max_backoff_ms);
    }
    Some(silence.saturating_add(backoff))
}

/// Runs every rule of the module doc over `store` and `inputs`.
pub fn check_system(store: &WorkflowStore, inputs: &SystemInputs) -> Result<SystemReport, String> {
    let mut r = SystemReport::default();
    let base = verify_store(store)?;
    r.journal_violations = base.violations + base.corrupt;
    for d in base.details {
        r.detail(d);
    }

    // Raw journals, by workflow id.
    let mut journals: HashMap<String, Vec<(u64, Event)>> = HashMap::new();
    store
        .scan_all_journals::<JournalRecord, _>(|k, rec| {
            if let (Ok(k), Ok(rec)) = (k, rec) {
                let list = journals.entry(k.id).or_default();
                for (i, e) in rec.events.into_iter().enumerate() {
                    list.push((rec.first_seq + i as u64, e));
                }
            }
            true
        })
        .map_err(|e| e.to_string())?;

    let answered: Option<HashSet<&str>> = inputs.records.as_ref().map(|recs| {
        recs.iter()
            .filter(|x| x.answers > 0)
            .map(|x| x.task_id.as_str())
            .collect()
    });
    let observed_until = inputs.observed_until_ms.unwrap_or_else(|| {
        journals
            .values()
            .flat_map(|evs| evs.iter().map(|(_, e)| e.at_ms))
            .max()
            .unwrap_or(0)
    });
    // Task id -> when its dispatch was journaled (for write-ahead).
    let mut dispatched_at: HashMap<&str, u64> = HashMap::new();
    let mut pipelines: HashMap<(String, u32, u64), Option<PipelineDef>> = HashMap::new();
    let mut accepted_keys: HashSet<String> = HashSet::new();
    let mut ids: Vec<&String> = journals.keys().collect();
    ids.sort();
    for id in ids {
        let events = &journals[id];
        r.workflows += 1;
        let Some(EventKind::WorkflowStarted { pipeline, .. }) = events.first().map(|e| &e.1.kind)
        else {
            continue; // verify_store already counted it
        };
        let key = (pipeline.name.clone(), pipeline.version, pipeline.hash);
        let def = pipelines
            .entry(key)
            .or_insert_with(|| {
                store
                    .load_pipeline_compat::<PipelineDef, OlderPipelineDefs>(
                        &pipeline.name,
                        pipeline.version,
                        pipeline.hash,
                    )
                    .ok()
                    .flatten()
            })
            .clone();
        let Some(def) = def else { continue };
        let step_name = |s: u16| {
            def.steps
                .get(usize::from(s))
                .map_or_else(|| format!("#{s}"), |d| d.name.clone())
        };
        let bound = idle_bound_ms(&def).map(|b| b.saturating_add(inputs.stuck_slack_ms));
        let mut generation = 0u32;
        let mut terminal = false;
        let mut paused = false;
        let mut prev_at: Option<u64> = None;
        let mut stuck_gap: Option<(u64, u64)> = None;
        let mut task_ids: HashMap<(u32, u16, u32), &str> = HashMap::new();
        let mut successes: HashMap<String, u32> = HashMap::new();
        let mut element_task_ids: HashSet<String> = HashSet::new();
        for (seq, e) in events {
            if let (Some(p), Some(b)) = (prev_at, bound) {
                let gap = e.at_ms.saturating_sub(p);
                if !terminal && !paused && gap > b && stuck_gap.is_none() {
                    stuck_gap = Some((*seq, gap));
                }
            }
            prev_at = Some(e.at_ms);
            match &e.kind {
                EventKind::WorkflowReopened { generation: g, .. } => {
                    generation = *g;
                    terminal = false;
                    paused = false;
                }
                EventKind::WorkflowPaused => paused = true,
                EventKind::WorkflowResumed => paused = false,
                EventKind::TaskDispatched {
                    step,
                    attempt,
                    task_id,
                } => {
                    task_ids.insert((generation, *step, *attempt), task_id);
                    dispatched_at.entry(task_id).or_insert(e.at_ms);
                }
                EventKind::TaskSucceeded { step, attempt, .. } => {
                    let key = idempotency_key(id, &step_name(*step), generation);
                    let n = successes.entry(key.clone()).or_default();
                    *n += 1;
                    if *n > 1 {
                        r.double_accepts += 1;
                        r.detail(format!(
                            "workflow {id} seq {seq}: second accepted success for {key}"
                        ));
                    }
                    accepted_keys.insert(key.clone());
                    if let Some(answered) = &answered {
                        match task_ids.get(&(generation, *step, *attempt)) {
                            Some(t) if answered.contains(t) => {}
                            t => {
                                r.unrecorded_accepts += 1;
                                r.detail(format!(
                                    "workflow {id} seq {seq}: accepted task {} of {key} was answered by no recorded worker",
                                    t.unwrap_or(&"?")
                                ));
                            }
                        }
                    }
                }
                EventKind::ElementDispatched { task_id, .. } => {
                    dispatched_at.entry(task_id).or_insert(e.at_ms);
                    element_task_ids.insert(task_id.to_string());
                }
                EventKind::ElementSucceeded {
                    step,
                    index,
                    attempt,
                    ..
                } => {
                    let task_id =
                        element_task_id(id, &step_name(*step), *index, generation, *attempt);
                    let key = element_idempotency_key(id, &step_name(*step), *index, generation);
                    let n = successes.entry(key.clone()).or_default();
                    *n += 1;
                    if *n > 1 {
                        r.double_accepts += 1;
                        r.detail(format!(
                            "workflow {id} seq {seq}: second accepted success for {key}"
                        ));
                    }
                    accepted_keys.insert(key.clone());
                    if let Some(answered) = &answered {
                        if !element_task_ids.contains(&task_id)
                            || !answered.contains(task_id.as_str())
                        {
                            r.unrecorded_accepts += 1;
                            r.detail(format!(
                                "workflow {id} seq {seq}: accepted task {task_id} of {key} was answered by no recorded worker"
                            ));
                        }
                    }
                }
                EventKind::WorkflowCompleted
                | EventKind::WorkflowFailed { .. }
                | EventKind::WorkflowCancelled { .. } => terminal = true,
                _ => {}
            }
        }
        if let (Some(p), Some(b), false, false) = (prev_at, bound, terminal, paused) {
            let gap = observed_until.saturating_sub(p);
            if gap > b && stuck_gap.is_none() {
                stuck_gap = Some((0, gap));
            }
        }
        if let (Some((seq, gap)), Some(b)) = (stuck_gap, bound) {
            r.stuck += 1;
            let at = if seq == 0 {
                "before the end of the observed run".to_owned()
            } else {
                format!("before seq {seq}")
            };
            r.detail(format!(
                "workflow {id}: stuck, running without a transition for {gap} ms {at} (bound {b} ms)"
            ));
        }
        if terminal {
            r.terminal += 1;
        } else if inputs.expect_terminal {
            r.not_terminal += 1;
            r.detail(format!("workflow {id}: not terminal"));
        }
    }

    if let Some(recs) = &inputs.records {
        for x in recs {
            match dispatched_at.get(x.task_id.as_str()) {
                Some(&at) if at <= x.at_ms.saturating_add(inputs.skew_ms) => {}
                at => {
                    r.unjournaled_executions += 1;
                    let why = match at {
                        Some(at) => format!(
                            "ran at {} ms, its dispatch was journaled at {at} ms",
                            x.at_ms
                        ),
                        None => "ran, its dispatch is not in the journal".to_owned(),
                    };
                    r.detail(format!(
                        "workflow {}: task {} ({}) {why}",
                        x.workflow_id, x.task_id, x.outcome
                    ));
                }
            }
        }
    }
    if let Some(ids) = &inputs.accepted {
        for id in ids {
            if !journals.contains_key(id) {
                r.accepted_lost += 1;
                r.detail(format!(
                    "workflow {id}: a client was told it was accepted; not in the journal"
                ));
            }
        }
    }
    if let Some(recs) = &inputs.records {
        let mut per_key: HashMap<&str, u64> = HashMap::new();
        for x in recs {
            *per_key.entry(x.idempotency_key.as_str()).or_default() += 1;
            if x.answers > 1 {
                r.extra_executions += u64::from(x.answers - 1);
            }
        }
        r.extra_executions += per_key.values().map(|n| n.saturating_sub(1)).sum::<u64>();
    }

    if let Some(msgs) = &inputs.events {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut streamed: HashMap<&str, Vec<u64>> = HashMap::new();
        for m in msgs {
            for e in &m.events {
                if seen.insert(e.id.as_str()) {
                    streamed
                        .entry(m.workflow_id.as_str())
                        .or_default()
                        .push(e.seq);
                }
            }
        }
        let mut ids: Vec<&String> = journals.keys().collect();
        ids.sort();
        for id in ids {
            let n = journals[id].len() as u64;
            let got = streamed.remove(id.as_str()).unwrap_or_default();
            let present: HashSet<u64> = got
                .iter()
                .copied()
                .filter(|s| (1..=n).contains(s))
                .collect();
            let missing = n - present.len() as u64;
            if missing > 0 {
                r.events_missing += missing;
                r.detail(format!(
                    "workflow {id}: {missing} of {n} journaled events not on the stream"
                ));
            }
            if !is_prefix_order(&got, n) {
                r.events_out_of_order += 1;
                r.detail(format!(
                    "workflow {id}: stream order {got:?} is not journal order 1..={n}"
                ));
            }
        }
        for (id, got) in streamed {
            r.events_out_of_order += 1;
            r.detail(format!(
                "workflow {id}: {} events on the stream, no journal",
                got.len()
            ));
        }
    }
    Ok(r)
}

/// True when `got` is strictly increasing within `1..=n`: what is there is
/// in journal order (gaps are counted as missing, not as out of order).
fn is_prefix_order(got: &[u64], n: u64) -> bool {
    got.windows(2).all(|w| w[0] < w[1]) && got.iter().all(|s| (1..=n).contains(s))
}

/// Every message of the stream `<PREFIX>_EVENTS`, in stream order.
pub async fn read_event_stream(
    nats: &crate::transport::nats::NatsConfig,
) -> Result<Vec<EventMessage>, String> {
    use async_nats::jetstream::consumer;
    use futures_util::StreamExt;
    let (_client, js) = crate::transport::nats::connect(nats).await?;
    let name = crate::transport::nats::stream_name(&nats.prefix, "EVENTS");
    let mut stream = js
        .get_stream(&name)
        .await
        .map_err(|e| format!("cannot open stream {name}: {e}"))?;
    let last = stream
        .info()
        .await
        .map_err(|e| format!("cannot read stream {name}: {e}"))?
        .state
        .last_sequence;
    let mut out = Vec::new();
    if last == 0 {
        return Ok(out);
    }
    let c: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot read stream {name}: {e}"))?;
    let mut msgs = c
        .messages()
        .await
        .map_err(|e| format!("cannot read stream {name}: {e}"))?;
    loop {
        let m = match tokio::time::timeout(Duration::from_secs(5), msgs.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(format!("reading stream {name}: {e}")),
            Ok(None) | Err(_) => {
                return Err(format!(
                    "stream {name}: stopped before its last message (seq {last})"
                ))
            }
        };
        let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
        let records = crate::events::decode_message(&m.payload)
            .map_err(|e| format!("stream {name} seq {seq}: not an event message: {e}"))?;
        out.extend(records);
        if seq >= last {
            return Ok(out);
        }
    }
}

/// The execution records of `--record` files (whole lines only: a killed
/// worker may leave a partial last line, which is skipped).
pub fn read_records(paths: &[std::path::PathBuf]) -> Result<Vec<ExecutionRecord>, String> {
    let mut out = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(p)
            .map_err(|e| format!("cannot read record file {}: {e}", p.display()))?;
        let complete = if text.ends_with('\n') {
            &text[..]
        } else {
            &text[..text.rfind('\n').map_or(0, |i| i + 1)]
        };
        for (i, line) in complete.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let rec: ExecutionRecord = serde_json::from_str(line)
                .map_err(|e| format!("{} line {}: {e}", p.display(), i + 1))?;
            out.push(rec);
        }
    }
    Ok(out)
}
