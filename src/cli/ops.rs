//! Operator commands over the admin subjects: `describe`, `history`, `list`,
//! `cancel`, `pause`, `resume`, `retry`, `rerun`, plus the client helpers the
//! batch and backfill commands share (admin client, progress bar, times).

use std::future::Future;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::NatsArgs;
use crate::admin::{
    CancelRequest, DescribeRequest, Filter, HistoryEvent, HistoryReply, HistoryRequest, ListReply,
    ListRequest, ListedWorkflow, RerunRequest, WorkflowReply, LIST_PAGE_MAX,
};
use crate::protocol::subjects::Subjects;
use crate::protocol::VERSION;

/// How long a client waits for one admin reply.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An admin failure as the client sees it.
#[derive(Debug, Clone)]
pub struct ClientError {
    pub message: String,
    /// The reply's `code`, when the orchestrator answered with an error.
    pub code: Option<String>,
}

impl From<String> for ClientError {
    fn from(message: String) -> Self {
        ClientError {
            message,
            code: None,
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A connection to NATS that sends admin requests.
pub struct AdminClient {
    client: async_nats::Client,
    subjects: Subjects,
}

impl AdminClient {
    pub async fn connect(nats: &NatsArgs) -> Result<AdminClient, String> {
        let subjects = Subjects::new(&nats.prefix)?;
        let (client, _) = crate::transport::nats::connect(&nats.config()).await?;
        Ok(AdminClient { client, subjects })
    }

    /// Sends `req` on `<prefix>.admin.<verb>`; an error reply becomes `Err`.
    pub async fn call<Q: Serialize, R: DeserializeOwned>(
        &self,
        verb: &str,
        req: &Q,
    ) -> Result<R, ClientError> {
        let subject = self.subjects.admin(verb);
        let body = serde_json::to_vec(req).map_err(|e| e.to_string())?;
        let msg = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.client.request(subject.clone(), body.into()),
        )
        .await
        .map_err(|_| {
            format!(
                "no reply on {subject} within {} s (is `orchestrator run` up?)",
                REQUEST_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| {
            if e.to_string().contains("no responders") {
                format!("no orchestrator is listening on {subject} (is `orchestrator run` up?)")
            } else {
                format!("request on {subject} failed: {e}")
            }
        })?;
        let value: serde_json::Value =
            serde_json::from_slice(&msg.payload).map_err(|e| format!("bad reply: {e}"))?;
        if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
            return Err(ClientError {
                message: error.to_string(),
                code: value
                    .get("code")
                    .and_then(|c| c.as_str())
                    .map(str::to_string),
            });
        }
        serde_json::from_value(value).map_err(|e| format!("bad reply: {e}").into())
    }
}

/// Runs an async command body; `Err` prints one `error: ...` line and exits 1.
pub fn block_on<F>(body: F) -> ExitCode
where
    F: Future<Output = Result<ExitCode, String>>,
{
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(body) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn one_line(s: &str) -> String {
    s.lines().collect::<Vec<_>>().join("; ")
}

/// Unix ms as RFC 3339 UTC with milliseconds, e.g. `2026-11-25T21:04:36.123Z`.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        ms % 1000
    )
}

pub use crate::progress::Progress;

/// `--status`: one of the five statuses.
pub fn parse_status(s: &str) -> Result<String, String> {
    crate::workflow::Status::parse(s)
        .map(|st| st.to_string())
        .ok_or_else(|| {
            format!(
                "--status {s:?} is not a status (running, paused, completed, failed, cancelled)"
            )
        })
}

/// `--since`: a positive duration such as `24h`, `30m`, `1h30m`.
pub fn parse_since(s: &str) -> Result<u64, String> {
    match crate::durations::parse_ms(s) {
        Ok(0) => Err("--since must be above 0".to_string()),
        Ok(ms) => Ok(ms),
        Err(e) => Err(format!("--since {s:?}: {e} (e.g. 24h, 30m, 1h30m)")),
    }
}

/// Filter flags shared by `list` and `batch`.
#[derive(Debug, Clone, Args, Default)]
pub struct FilterArgs {
    /// Only workflows with this status: running, paused, completed, failed or cancelled.
    #[arg(long)]
    pub status: Option<String>,
    /// Only workflows of this pipeline.
    #[arg(long)]
    pub pipeline: Option<String>,
    /// Only workflows whose status changed within this long (e.g. 24h, 30m).
    #[arg(long, visible_alias = "changed-since")]
    pub since: Option<String>,
    /// Only workflows created within this long before now (e.g. 24h).
    #[arg(long)]
    pub created_since: Option<String>,
    /// Only workflows created more than this long before now (e.g. 1h).
    #[arg(long)]
    pub created_until: Option<String>,
    /// Only workflows whose id starts with this.
    #[arg(long)]
    pub id_prefix: Option<String>,
}

impl FilterArgs {
    pub fn filter(&self) -> Result<Filter, String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let ago = |flag: &str, v: &Option<String>| -> Result<Option<u64>, String> {
            v.as_deref()
                .map(|s| {
                    parse_since(s)
                        .map(|ms| now.saturating_sub(ms))
                        .map_err(|e| e.replace("--since", flag))
                })
                .transpose()
        };
        if self.id_prefix.as_deref() == Some("") {
            return Err("--id-prefix must not be empty".to_string());
        }
        Ok(Filter {
            status: self.status.as_deref().map(parse_status).transpose()?,
            pipeline: self.pipeline.clone(),
            since_ms: self.since.as_deref().map(parse_since).transpose()?,
            created_after_ms: ago("--created-since", &self.created_since)?,
            created_before_ms: ago("--created-until", &self.created_until)?,
            id_prefix: self.id_prefix.clone(),
            error_kind: None,
        })
    }
}

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
            if let Some(c) = &s.elements {
                line.push_str(&format!(
                    " elements={} pending={} out={} backoff={} succeeded={} failed={}",
                    c.total, c.pending, c.dispatched, c.backoff, c.succeeded, c.failed
                ));
            }
            if let Some(p) = &s.progress {
                line.push_str(&format!(" progress={p}"));
            }
            if let Some(o) = &s.output {
                line.push_str(&format!(" output={o}"));
            }
            println!("{line}");
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

// ---------------------------------------------------------------------------
// cancel, pause, resume, retry, rerun

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Example: orchestrator cancel video-123 --reason \"duplicate upload\"\n  # on a workflow already cancelled: exit 0, `(already cancelled)`; with --strict: exit 1"
)]
pub struct CancelArgs {
    /// Workflow id.
    pub id: String,
    /// Why, kept in the workflow's history.
    #[arg(long)]
    pub reason: Option<String>,
    /// Fail (exit 1) when the workflow is already cancelled, instead of saying so and exiting 0.
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// `pause`, `resume`: repeating one on a workflow already in its state succeeds.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Example: orchestrator pause video-123   (resume: same form)\n  # on a workflow already paused: exit 0, `(already paused)`; with --strict: exit 1"
)]
pub struct ControlArgs {
    /// Workflow id.
    pub id: String,
    /// Fail (exit 1) when the workflow is already in the requested state, instead of saying so and exiting 0.
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Debug, Clone, Args)]
#[command(after_help = "Example: orchestrator retry video-123")]
pub struct IdArgs {
    /// Workflow id.
    pub id: String,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Debug, Clone, Args)]
#[command(after_help = "Example: orchestrator rerun video-123 --from-step enrich_topics")]
pub struct RerunArgs {
    /// Workflow id.
    pub id: String,
    /// Run this step and everything downstream of it again (upstream outputs are kept).
    #[arg(long)]
    pub from_step: String,
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// The status a control verb leads to, when repeating it is harmless.
fn target_status(verb: &str) -> Option<&'static str> {
    match verb {
        "pause" => Some("paused"),
        "resume" => Some("running"),
        "cancel" => Some("cancelled"),
        _ => None,
    }
}

/// Sends a control verb. Refused because the workflow is already where the
/// verb leads (and not `strict`): says so and succeeds, so scripts may retry.
fn control<Q: Serialize + Send + 'static>(
    nats: NatsArgs,
    verb: &'static str,
    id: String,
    strict: bool,
    req: Q,
) -> ExitCode {
    block_on(async move {
        let c = AdminClient::connect(&nats).await?;
        let (r, already) = match c.call::<_, WorkflowReply>(verb, &req).await {
            Ok(r) => (r, false),
            Err(e)
                if !strict && e.code.as_deref() == Some(crate::admin::code::ILLEGAL_TRANSITION) =>
            {
                let now: WorkflowReply = c
                    .call("describe", &DescribeRequest { v: VERSION, id })
                    .await
                    .map_err(|d| d.message)?;
                match target_status(verb) {
                    Some(t) if now.status.as_deref() == Some(t) => (now, true),
                    _ => return Err(e.message),
                }
            }
            Err(e) => return Err(e.message),
        };
        let status = r.status.as_deref().unwrap_or_default();
        println!(
            "workflow id={} status={status} generation={}{}",
            r.id.as_deref().unwrap_or_default(),
            r.generation.unwrap_or_default(),
            if already {
                format!(" (already {status})")
            } else {
                String::new()
            }
        );
        Ok(ExitCode::SUCCESS)
    })
}

pub fn cancel(args: CancelArgs) -> ExitCode {
    let req = CancelRequest {
        v: VERSION,
        id: args.id.clone(),
        reason: args.reason,
    };
    control(args.nats, "cancel", args.id, args.strict, req)
}

/// `pause` or `resume`.
pub fn pause_resume(args: ControlArgs, verb: &'static str) -> ExitCode {
    let req = DescribeRequest {
        v: VERSION,
        id: args.id.clone(),
    };
    control(args.nats, verb, args.id, args.strict, req)
}

/// `retry`: refused on a workflow that is not failed or cancelled.
pub fn retry(args: IdArgs) -> ExitCode {
    let req = DescribeRequest {
        v: VERSION,
        id: args.id.clone(),
    };
    control(args.nats, "retry", args.id, true, req)
}

pub fn rerun(args: RerunArgs) -> ExitCode {
    let req = RerunRequest {
        v: VERSION,
        id: args.id.clone(),
        from_step: args.from_step,
    };
    control(args.nats, "rerun", args.id, true, req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_764_104_676_007), "2025-11-25T21:04:36.007Z");
    }

    #[test]
    fn filters_are_checked_with_one_line_errors() {
        assert_eq!(parse_since("24h"), Ok(86_400_000));
        assert!(parse_since("0s").is_err());
        assert!(parse_since("5 parsecs").unwrap_err().starts_with("--since"));
        assert_eq!(parse_status("failed").as_deref(), Ok("failed"));
        assert!(parse_status("broken").is_err());
    }
}
