//! `orchestrator start PIPELINE --id ID --input JSON [--pipeline-version N]
//! [--wait]`: starts a workflow through the admin subject; an existing id
//! returns the existing workflow (`created=false`), never a second one.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use super::ops::AdminClient;
use super::NatsArgs;
use crate::admin::{DescribeRequest, StartRequest, WorkflowReply};
use crate::protocol::VERSION;

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Examples:\n  orchestrator start video --id v-1 --input '{\"video_url\":\"s3://media/v-1.mp4\"}' --wait\n  # -> workflow id=v-1 status=completed created=true\n  orchestrator start video --pipeline-version 1 --id v-2 --input '{\"video_url\":\"s3://media/v-2.mp4\"}'\n  # -> workflow id=v-2 status=running created=true (on version 1 of video, even if a higher version is registered)"
)]
pub struct StartArgs {
    /// Pipeline name (e.g. `video`).
    pub pipeline: String,
    /// A registered version of the pipeline to start on; default: its current
    /// (highest registered) version. An unregistered version is an error that
    /// lists the registered ones.
    #[arg(long, value_name = "N")]
    pub pipeline_version: Option<u32>,
    /// Workflow id, e.g. the video id; a UUIDv7 when omitted.
    #[arg(long)]
    pub id: Option<String>,
    /// Workflow input, a JSON document.
    #[arg(long, default_value = "{}")]
    pub input: String,
    /// Wait until the workflow is completed, failed or cancelled (exit 1 unless completed).
    /// To wait later for workflows already started, use `orchestrator wait ID…`: it never
    /// starts one (a `start` after a retention purge would create a new workflow).
    #[arg(long)]
    pub wait: bool,
    /// Longest wait with --wait, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
    /// `low`, `normal` or `high`: the workflow's priority for capacity,
    /// written into the input at the orchestrator's `[capacity] priority`
    /// pointer unless the input sets it (docs/capacity.md).
    #[arg(long, value_name = "LEVEL")]
    pub priority: Option<String>,
    #[command(flatten)]
    pub nats: NatsArgs,
}

pub fn run(args: StartArgs) -> ExitCode {
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(start(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn start(args: StartArgs) -> Result<ExitCode, String> {
    let input: serde_json::Value =
        serde_json::from_str(&args.input).map_err(|e| format!("--input is not valid JSON: {e}"))?;
    let client = AdminClient::connect(&args.nats).await?;
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let req = StartRequest {
        v: VERSION,
        pipeline: args.pipeline.clone(),
        id,
        input,
        pipeline_version: args.pipeline_version,
        priority: args.priority.clone(),
    };
    let reply: WorkflowReply = client.call("start", &req).await.map_err(|e| e.message)?;
    let id = reply.id.clone().unwrap_or_default();
    let created = reply.created.unwrap_or(false);
    let mut status = reply.status.unwrap_or_default();
    if args.wait {
        let deadline = Instant::now() + Duration::from_secs(args.timeout);
        while !matches!(status.as_str(), "completed" | "failed" | "cancelled") {
            if Instant::now() >= deadline {
                return Err(format!(
                    "workflow {id} still {status} after {} s",
                    args.timeout
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let req = DescribeRequest {
                v: VERSION,
                id: id.clone(),
            };
            let reply: WorkflowReply =
                client.call("describe", &req).await.map_err(|e| e.message)?;
            status = reply.status.unwrap_or_default();
        }
    }
    println!("workflow id={id} status={status} created={created}");
    Ok(if args.wait && status != "completed" {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
