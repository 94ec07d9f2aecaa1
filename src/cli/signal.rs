//! `orchestrator signal WF NAME [--payload JSON] [--id ID]`: sends a signal
//! to a workflow's wait steps over the admin subjects.

use std::process::ExitCode;

use clap::Args;

use super::ops::{block_on, AdminClient};
use super::NatsArgs;
use crate::admin::{code, SignalReply, SignalRequest};
use crate::protocol::VERSION;

/// Exit status when the workflow does not exist.
const EXIT_UNKNOWN_WORKFLOW: u8 = 3;
/// Exit status when the workflow is completed, failed or cancelled.
const EXIT_TERMINAL: u8 = 4;
/// Exit status when the workflow keeps too many unconsumed signals.
const EXIT_OVER_LIMIT: u8 = 5;

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Example: orchestrator signal video-123 approved --payload '{\"by\":\"ann\"}'\n\
  prints `signal accepted ...` (consumed_by=<step> when a step was waiting) or\n\
  `signal duplicate ...` (that id was sent before; nothing changes): exit 0.\n\
  Exit 3: unknown workflow; 4: workflow already completed, failed or cancelled;\n\
  5: too many unconsumed signals (engine.signals_pending_max); 1: any other error\n\
  (no step waits for NAME, payload or id too long, NATS unreachable)."
)]
pub struct SignalArgs {
    /// Workflow id.
    pub id: String,
    /// Signal name, as a wait step of the workflow's pipeline declares it.
    pub name: String,
    /// JSON payload; the output of the wait step that consumes the signal (default `{}`).
    #[arg(long)]
    pub payload: Option<String>,
    /// Signal id, the idempotency key: sending the same id again changes
    /// nothing. Default: a fresh UUIDv7, printed in the answer.
    #[arg(long = "id")]
    pub signal_id: Option<String>,
    #[command(flatten)]
    pub nats: NatsArgs,
}

pub fn run(args: SignalArgs) -> ExitCode {
    let payload = match args.payload.as_deref().map(serde_json::from_str) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => {
            eprintln!("error: --payload is not JSON: {e}");
            return ExitCode::FAILURE;
        }
    };
    let req = SignalRequest {
        v: VERSION,
        id: args.id,
        name: args.name,
        signal_id: args
            .signal_id
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        payload,
    };
    block_on(async move {
        let c = AdminClient::connect(&args.nats).await?;
        match c.call::<_, SignalReply>("signal", &req).await {
            Ok(r) => {
                let consumed = r
                    .consumed_by
                    .as_deref()
                    .map(|s| format!(" consumed_by={s}"))
                    .unwrap_or_default();
                println!(
                    "signal {} workflow={} name={} id={}{consumed} status={}",
                    r.result.as_deref().unwrap_or("accepted"),
                    req.id,
                    req.name,
                    req.signal_id,
                    r.status.as_deref().unwrap_or("?"),
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {}", e.message);
                Ok(match e.code.as_deref() {
                    Some(code::UNKNOWN_WORKFLOW) => ExitCode::from(EXIT_UNKNOWN_WORKFLOW),
                    Some(code::WORKFLOW_TERMINAL) => ExitCode::from(EXIT_TERMINAL),
                    Some(code::UNAVAILABLE) => ExitCode::from(EXIT_OVER_LIMIT),
                    _ => ExitCode::FAILURE,
                })
            }
        }
    })
}
