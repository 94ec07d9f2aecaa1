//! `cancel`, `pause`, `resume`, `retry` and `rerun`: control verbs over the
//! admin subjects.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use super::{block_on, AdminClient};
use crate::admin::{CancelRequest, DescribeRequest, RerunRequest, WorkflowReply};
use crate::cli::NatsArgs;
use crate::protocol::VERSION;

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
#[command(after_help = "Example: orchestrator rerun video-123 --from-step enrich")]
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
