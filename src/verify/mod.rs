//! `orchestrator verify`: an offline check of every journal in a data dir.
//!
//! For every workflow it decodes each journal record (checksums are checked
//! by the codec; a bad record is counted as corrupt, never interpreted),
//! runs the independent [`check_journal`] over the raw event sequence, and
//! cross-checks the status index against the journal's final status.
//! Snapshots are decoded too, so a corrupt snapshot is reported.

pub mod check;
mod check_child;
mod check_map;
mod check_wait;
mod lineage;
pub mod system;

use std::collections::HashMap;

pub use check::{check_journal, Checked, Violation};

use crate::pipeline::stored::OlderPipelineDefs;
use crate::pipeline::PipelineDef;
use crate::storage::store::WorkflowStore;
use crate::storage::StatusEntry;
use crate::workflow::stored::OlderWorkflowStates;
use crate::workflow::{EventKind, JournalRecord, Status, WorkflowState};

/// What `verify` found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub workflows: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub running: u64,
    pub events: u64,
    pub violations: u64,
    pub corrupt: u64,
    /// Human-readable details, one line per problem (capped).
    pub details: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "verify workflows={} completed={} failed={} cancelled={} running={} events={} violations={} corrupt={}",
            self.workflows, self.completed, self.failed, self.cancelled, self.running, self.events, self.violations, self.corrupt
        )
    }
}

const DETAILS_MAX: usize = 200;

impl Report {
    fn detail(&mut self, line: String) {
        if self.details.len() < DETAILS_MAX {
            self.details.push(line);
        }
    }
}

/// One workflow's journal as read from storage.
struct Journal {
    partition: u16,
    id: String,
    events: Vec<(u64, crate::workflow::Event)>,
    corrupt: bool,
}

/// Verifies every journal, snapshot and status entry of `store`.
pub fn verify_store(store: &WorkflowStore) -> Result<Report, String> {
    verify_store_knowing(store, &[])
}

/// [`verify_store`], also given the journals of workflows purged by
/// retention (id and records, as read just before the purge): the checks
/// across journals (a child and its parent) judge a purged workflow from
/// them instead of taking its journal for missing. The purged journals
/// themselves are not verified again.
pub fn verify_store_knowing(
    store: &WorkflowStore,
    purged: &[(&str, &[(u64, JournalRecord)])],
) -> Result<Report, String> {
    let mut report = Report::default();
    let mut pipelines: HashMap<(String, u32, u64), Option<PipelineDef>> = HashMap::new();
    let mut current: Option<Journal> = None;
    let mut finished: Vec<Journal> = Vec::new();

    // Journals come in key order: all records of one workflow are contiguous.
    let mut bad_keys = 0u64;
    store
        .scan_all_journals::<JournalRecord, _>(|key, record| {
            let Ok(key) = key else {
                bad_keys += 1;
                return true;
            };
            let same = current
                .as_ref()
                .is_some_and(|j| j.partition == key.partition && j.id == key.id);
            if !same {
                if let Some(j) = current.take() {
                    finished.push(j);
                }
                current = Some(Journal {
                    partition: key.partition,
                    id: key.id.clone(),
                    events: Vec::new(),
                    corrupt: false,
                });
            }
            let Some(j) = current.as_mut() else {
                return true;
            };
            match record {
                // The key and the record must agree on the sequence number.
                Ok(rec) if rec.first_seq == key.seq => {
                    for (k, e) in rec.events.into_iter().enumerate() {
                        j.events.push((key.seq + k as u64, e));
                    }
                }
                _ => j.corrupt = true,
            }
            true
        })
        .map_err(|e| e.to_string())?;
    if let Some(j) = current.take() {
        finished.push(j);
    }
    if bad_keys > 0 {
        report.corrupt += bad_keys;
        report.detail(format!("{bad_keys} journal key(s) cannot be decoded"));
    }

    let mut journal_status: HashMap<(u16, String), Status> = HashMap::new();
    let mut lineage: HashMap<String, lineage::LineageFacts> = HashMap::new();
    for j in finished {
        report.workflows += 1;
        if j.corrupt {
            report.corrupt += 1;
            report.detail(format!("workflow {}: corrupt journal record", j.id));
            continue;
        }
        let Some((_, first)) = j.events.first() else {
            continue;
        };
        let EventKind::WorkflowStarted { pipeline, .. } = &first.kind else {
            report.violations += 1;
            report.detail(format!(
                "workflow {}: journal does not start with workflow_started",
                j.id
            ));
            continue;
        };
        let key = (pipeline.name.clone(), pipeline.version, pipeline.hash);
        let def = pipelines.entry(key).or_insert_with(|| {
            store
                .load_pipeline_compat::<PipelineDef, OlderPipelineDefs>(
                    &pipeline.name,
                    pipeline.version,
                    pipeline.hash,
                )
                .ok()
                .flatten()
        });
        let Some(def) = def.as_ref() else {
            report.violations += 1;
            report.detail(format!(
                "workflow {}: pipeline {} v{} is not stored",
                j.id, pipeline.name, pipeline.version
            ));
            continue;
        };
        let checked = check_journal(&j.id, def, &j.events);
        report.events += checked.events;
        if !checked.violations.is_empty() {
            report.violations += checked.violations.len() as u64;
            for v in &checked.violations {
                report.detail(format!("workflow {} seq {}: {}", j.id, v.seq, v.message));
            }
        }
        match checked.status {
            Some(Status::Completed) => report.completed += 1,
            Some(Status::Failed) => report.failed += 1,
            Some(Status::Cancelled) => report.cancelled += 1,
            Some(Status::Running) | Some(Status::Paused) => report.running += 1,
            None => {}
        }
        let facts = lineage::LineageFacts::of(&j.events, checked.status);
        if facts.relevant(&j.id) {
            lineage.insert(j.id.clone(), facts);
        }
        if let Some(s) = checked.status {
            journal_status.insert((j.partition, j.id), s);
        }
    }
    for (id, records) in purged {
        if lineage.contains_key(*id) || journal_status.keys().any(|(_, j)| j == id) {
            continue;
        }
        let events: Vec<(u64, crate::workflow::Event)> = records
            .iter()
            .flat_map(|(seq, r)| {
                r.events
                    .iter()
                    .enumerate()
                    .map(move |(k, e)| (seq + k as u64, e.clone()))
            })
            .collect();
        let status = crate::workflow::replay(events.iter().map(|(_, e)| e)).map(|s| s.status);
        let facts = lineage::LineageFacts::of(&events, status);
        if facts.relevant(id) {
            lineage.insert(id.to_string(), facts);
        }
    }
    for line in lineage::check_lineage(&lineage) {
        report.violations += 1;
        report.detail(line);
    }

    // Snapshots: decodable (checksummed) and not ahead of their journal.
    store
        .scan_all_snapshots_compat::<WorkflowState, OlderWorkflowStates, _>(|key, snap| {
            match (key, snap) {
                (Ok(key), Ok(s)) => {
                    if s.id != key.id {
                        report.violations += 1;
                        report.detail(format!("snapshot under {} names workflow {}", key.id, s.id));
                    }
                }
                (key, Err(e)) => {
                    report.corrupt += 1;
                    let id = key.map(|k| k.id).unwrap_or_else(|_| "?".into());
                    report.detail(format!("workflow {id}: corrupt snapshot: {e}"));
                }
                (Err(e), Ok(_)) => {
                    report.corrupt += 1;
                    report.detail(format!("undecodable snapshot key: {e}"));
                }
            }
            true
        })
        .map_err(|e| e.to_string())?;

    // The status index must agree with the journals.
    for p in 0..store.partitions() {
        for status in Status::ALL {
            let entries: Vec<(String, StatusEntry)> =
                match store.list_status(p, status.code(), usize::MAX) {
                    Ok(v) => v,
                    Err(e) => {
                        report.corrupt += 1;
                        report.detail(format!("partition {p}: status index unreadable: {e}"));
                        continue;
                    }
                };
            for (id, _) in entries {
                match journal_status.get(&(p, id.clone())) {
                    Some(s) if *s == status => {}
                    Some(s) => {
                        report.violations += 1;
                        report.detail(format!(
                            "workflow {id}: status index says {status}, journal says {s}"
                        ));
                    }
                    None => {}
                }
            }
        }
    }
    Ok(report)
}

/// Default slack of the system checker's `stuck` rule: the partition's
/// timer tick, a retry timer's firing, worker latency and a restart
/// (storage open + recovery, ~0.1 s measured in the kill -9 storm) all fit
/// well within 5 s.
pub const STUCK_SLACK_MS: u64 = 5_000;

/// `orchestrator verify --data-dir DIR`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// The data dir to check; default: the one `orchestrator run` uses with
    /// the same `--config` and `--home` (`data/orchestrator` under the home).
    #[arg(long, env = "NARRALYTICA_DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// Print every problem found (up to 200), not just the counts.
    #[arg(long)]
    pub details: bool,
    /// Also run the system checker against this NATS server's lifecycle
    /// event stream (`<PREFIX>_EVENTS`, read whole): every journaled
    /// transition must be on it, per workflow in journal order.
    #[arg(long, value_name = "NATS_URL")]
    pub events_from: Option<String>,
    /// Subject prefix of the event stream read by `--events-from`.
    #[arg(long, default_value = "narralytica", requires = "events_from")]
    pub events_prefix: String,
    /// A simulated worker's `--record` file (repeat for several workers):
    /// every accepted success must be an execution a worker answered.
    #[arg(long, value_name = "FILE.jsonl")]
    pub record: Vec<std::path::PathBuf>,
    /// Every journaled workflow must be completed, failed or cancelled.
    #[arg(long)]
    pub expect_terminal: bool,
    /// Workflow ids a client was told were accepted (one per line): each
    /// must be in the journal (`accepted_lost`).
    #[arg(long, value_name = "FILE")]
    pub accepted: Option<std::path::PathBuf>,
    /// End of the observed run for the `stuck` rule, in ms since the epoch
    /// (default: the latest journaled event of any workflow).
    #[arg(long, value_name = "MS")]
    pub observed_until_ms: Option<u64>,
    /// Slack of the `stuck` rule on top of heartbeat timeout + max backoff.
    #[arg(long, value_name = "MS", default_value_t = STUCK_SLACK_MS)]
    pub stuck_slack_ms: u64,
    /// Clock skew allowed between worker records and the journal when
    /// checking that a task ran only after its dispatch was journaled.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub skew_ms: u64,
}

impl VerifyArgs {
    /// Whether the system checker (the `check ...` line) runs.
    pub fn system(&self) -> bool {
        self.events_from.is_some()
            || !self.record.is_empty()
            || self.expect_terminal
            || self.accepted.is_some()
            || self.observed_until_ms.is_some()
    }
}
