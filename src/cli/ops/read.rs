//! `describe`, `history` and `list`: reading workflows over the admin subjects.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::{block_on, rfc3339, AdminClient, FilterArgs};
use crate::admin::{
    DescribeRequest, HistoryEvent, HistoryReply, HistoryRequest, ListReply, ListRequest,
    ListedWorkflow, WorkflowReply, LIST_PAGE_MAX,
};
use crate::cli::NatsArgs;
use crate::protocol::VERSION;

// ---------------------------------------------------------------------------
// describe

#[derive(Debug, Clone, Args)]
#[command(after_help = "Example: orchestrator describe video-123")]
pub struct DescribeArgs {
    /// Workflow id.
    pub id: String,
    /// Print the admin reply as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

pub fn describe(args: DescribeArgs) -> ExitCode {
    block_on(async move {
        let c = AdminClient::connect(&args.nats).await?;
        let r: WorkflowReply = c
            .call(
                "describe",
                &DescribeRequest {
                    v: VERSION,
                    id: args.id.clone(),
                },
            )
            .await
            .map_err(|e| e.message)?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?
            );
            return Ok(ExitCode::SUCCESS);
        }
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), rfc3339);
        let mut line = format!(
            "workflow id={} status={} pipeline={} v{} generation={} created={} updated={} finished={}",
            r.id.as_deref().unwrap_or_default(),
            r.status.as_deref().unwrap_or_default(),
            r.pipeline.as_deref().unwrap_or_default(),
            r.pipeline_version.unwrap_or_default(),
            r.generation.unwrap_or_default(),
            opt(r.created_at_ms),
            opt(r.updated_at_ms),
            opt(r.finished_at_ms),
        );
        if let Some(reason) = &r.reason {
            line.push_str(&format!(" reason={reason:?}"));
        }
        println!("{line}");
        if let (Some(parent), Some(step)) = (&r.parent, &r.parent_step) {
            println!("  parent: {parent} ({step})");
        }
        for s in r.steps.unwrap_or_default() {
            let took = match (s.dispatched_at_ms, s.finished_at_ms) {
                (Some(a), Some(b)) if b >= a => format!("{}ms", b - a),
                _ => "-".to_string(),
            };
            let mut line = format!(
                "  step {:<18} status={:<10} attempts={} worker={} dispatched={} started={} finished={} took={took}",
                s.name,
                s.status,
                s.attempts,
                s.worker.as_deref().unwrap_or("-"),
                opt(s.dispatched_at_ms),
                opt(s.started_at_ms),
                opt(s.finished_at_ms),
            );
            if let Some(e) = &s.last_error {
                line.push_str(&format!(" last_error={e:?}"));
            }
            if let Some(signal) = &s.waiting_for {
                line.push_str(&format!(
                    " waiting for signal {signal:?} since {} (times out at {})",
                    opt(s.dispatched_at_ms),
                    opt(s.wait_due_ms)
                ));
            }
            if let Some(q) = &s.queued {
                line.push_str(&format!(" queued={q:?} since={}", opt(s.queued_since_ms)));
            }
            if let Some(c) = &s.elements {
                line.push_str(&format!(
                    " elements={} pending={} out={} backoff={} succeeded={} failed={}",
                    c.total, c.pending, c.dispatched, c.backoff, c.succeeded, c.failed
                ));
            }
            if let Some(p) = &s.progress {
                line.push_str(&format!(" progress={p}"));
            }
            if let Some(c) = &s.child {
                let status = s.child_status.as_deref().unwrap_or("unknown");
                line.push_str(&format!(" child={c} ({status})"));
            }
            if let Some(o) = &s.output {
                line.push_str(&format!(" output={o}"));
            }
            println!("{line}");
        }
        for p in r.signals.unwrap_or_default() {
            println!(
                "  signal {:?} id={} received={} unconsumed",
                p.name,
                p.id,
                rfc3339(p.received_at_ms)
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

// ---------------------------------------------------------------------------
// history

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Example: orchestrator history video-123 --json | jq '.[] | select(.generation == 1)'"
)]
pub struct HistoryArgs {
    /// Workflow id.
    pub id: String,
    /// A JSON array of {seq, at, event, generation, step, attempt, worker, error, output,
    /// progress}; `at` is unix ms, `output` is a succeeded step's output, `progress` the last
    /// progress reported for a dispatched attempt.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

pub fn history(args: HistoryArgs) -> ExitCode {
    block_on(async move {
        let c = AdminClient::connect(&args.nats).await?;
        let mut events: Vec<HistoryEvent> = Vec::new();
        let mut after_seq = 0;
        loop {
            let r: HistoryReply = c
                .call(
                    "history",
                    &HistoryRequest {
                        v: VERSION,
                        id: args.id.clone(),
                        after_seq,
                        limit: None,
                    },
                )
                .await
                .map_err(|e| e.message)?;
            events.extend(r.events);
            match r.next_after_seq {
                Some(s) if s > after_seq => after_seq = s,
                _ => break,
            }
        }
        if args.json {
            println!(
                "{}",
                serde_json::to_string(&events).map_err(|e| e.to_string())?
            );
            return Ok(ExitCode::SUCCESS);
        }
        for e in &events {
            let mut line = format!(
                "{:>5} {} gen={} {}",
                e.seq,
                rfc3339(e.at),
                e.generation,
                e.event
            );
            if let Some(s) = &e.step {
                line.push_str(&format!(" step={s}"));
            }
            if let Some(a) = e.attempt {
                line.push_str(&format!(" attempt={a}"));
            }
            if let Some(w) = &e.worker {
                line.push_str(&format!(" worker={w}"));
            }
            if let Some(err) = &e.error {
                line.push_str(&format!(" error={err:?}"));
            }
            if let Some(c) = &e.child {
                line.push_str(&format!(" child={c}"));
            }
            println!("{line}");
        }
        Ok(ExitCode::SUCCESS)
    })
}

// ---------------------------------------------------------------------------
// list

/// Matches `list` collects at most, to sort them (newest change first).
pub const LIST_SORT_MAX: usize = 100_000;

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Examples:\n  orchestrator list --status failed --pipeline video --changed-since 24h --limit 50\n  orchestrator list --id-prefix video-12 --created-since 1h --json\n  orchestrator list --status failed --error-kind invalid_input"
)]
pub struct ListArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Only workflows with a step whose last error has this kind (`timeout` for timeouts).
    #[arg(long)]
    pub error_kind: Option<String>,
    /// Most workflows to print (the most recently changed first).
    #[arg(long, default_value_t = 100)]
    pub limit: u64,
    /// Print a JSON array of {id, status, pipeline, created_at_ms, updated_at_ms}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

pub fn list(args: ListArgs) -> ExitCode {
    block_on(async move {
        let mut filter = args.filter.filter()?;
        filter.error_kind = args.error_kind.clone();
        if args.limit == 0 {
            return Err("--limit must be above 0".to_string());
        }
        let c = AdminClient::connect(&args.nats).await?;
        // The index is walked by status, then partition: every match is
        // collected, then sorted by last change, newest first.
        let mut found: Vec<ListedWorkflow> = Vec::new();
        let mut cursor = None;
        loop {
            let r: ListReply = c
                .call(
                    "list",
                    &ListRequest {
                        v: VERSION,
                        filter: filter.clone(),
                        limit: Some(LIST_PAGE_MAX),
                        cursor: cursor.take(),
                        cell: false,
                    },
                )
                .await
                .map_err(|e| e.message)?;
            found.extend(r.workflows);
            cursor = r.cursor;
            if cursor.is_none() {
                break;
            }
            if found.len() >= LIST_SORT_MAX {
                eprintln!(
                    "warning: more than {LIST_SORT_MAX} workflows match; sorted among the first {LIST_SORT_MAX} found (narrow the filter)"
                );
                break;
            }
        }
        found.sort_by(|a, b| (b.updated_at_ms, &b.id).cmp(&(a.updated_at_ms, &a.id)));
        found.truncate(usize::try_from(args.limit).unwrap_or(usize::MAX));
        let mut out = std::io::stdout().lock();
        if args.json {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string(&found).map_err(|e| e.to_string())?
            );
            return Ok(ExitCode::SUCCESS);
        }
        for w in found {
            let _ = writeln!(
                out,
                "{} status={} pipeline={} created={} updated={}",
                w.id,
                w.status,
                w.pipeline,
                rfc3339(w.created_at_ms),
                rfc3339(w.updated_at_ms)
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
