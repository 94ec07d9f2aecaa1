//! `orchestrator wait ID…`: waits until every named workflow is completed,
//! failed or cancelled, prints one line per workflow as it ends, and exits
//! 0 only when all of them completed. It never starts anything, so a
//! workflow purged by retention is reported as unknown, not created again.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use super::ops::{block_on, AdminClient};
use super::NatsArgs;
use crate::admin::{code, DescribeRequest, WorkflowReply};
use crate::protocol::VERSION;

/// How often each unfinished workflow is described again.
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Example:\n  orchestrator wait v-1 v-2 --timeout 600\n  # -> workflow id=v-1 status=completed\n  #    workflow id=v-2 status=failed reason=\"step transcribe failed: ...\"\n  # exit 0 when every workflow completed, 1 when one failed or was cancelled or\n  # is unknown, 2 on --timeout"
)]
pub struct WaitArgs {
    /// Workflow ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// Longest wait, in seconds; then the workflows still running are listed and the exit status is 2.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
    #[command(flatten)]
    pub nats: NatsArgs,
}

pub fn run(args: WaitArgs) -> ExitCode {
    block_on(async move {
        let c = AdminClient::connect(&args.nats).await?;
        let deadline = Instant::now() + Duration::from_secs(args.timeout);
        let mut open: BTreeSet<String> = args.ids.iter().cloned().collect();
        let mut all_completed = true;
        loop {
            for id in open.clone() {
                let req = DescribeRequest {
                    v: VERSION,
                    id: id.clone(),
                };
                match c.call::<_, WorkflowReply>("describe", &req).await {
                    Ok(r) => {
                        let status = r.status.unwrap_or_default();
                        if !matches!(status.as_str(), "completed" | "failed" | "cancelled") {
                            continue;
                        }
                        let mut line = format!("workflow id={id} status={status}");
                        if let Some(reason) = r.reason {
                            line.push_str(&format!(" reason={reason:?}"));
                        }
                        println!("{line}");
                        all_completed &= status == "completed";
                        open.remove(&id);
                    }
                    Err(e) if e.code.as_deref() == Some(code::UNKNOWN_WORKFLOW) => {
                        println!("workflow id={id} status=unknown");
                        all_completed = false;
                        open.remove(&id);
                    }
                    Err(e) => return Err(e.message),
                }
            }
            if open.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                for id in &open {
                    println!("workflow id={id} status=unfinished");
                }
                eprintln!(
                    "error: {} workflow(s) unfinished after {} s",
                    open.len(),
                    args.timeout
                );
                return Ok(ExitCode::from(2));
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(if all_completed {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}
