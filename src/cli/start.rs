//! `orchestrator start PIPELINE --id ID --input JSON [--wait]`: starts a
//! workflow through the admin subject; an existing id returns the existing
//! workflow (`created=false`), never a second one.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use super::NatsArgs;
use crate::admin::{DescribeRequest, StartRequest, WorkflowReply};
use crate::protocol::subjects::Subjects;
use crate::protocol::VERSION;

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Example:\n  orchestrator start video --id v-1 --input '{\"video_url\":\"s3://media/v-1.mp4\"}' --wait\n  # -> workflow id=v-1 status=completed created=true"
)]
pub struct StartArgs {
    /// Pipeline name (e.g. `video`).
    pub pipeline: String,
    /// Workflow id, e.g. the video id; a UUIDv7 when omitted.
    #[arg(long)]
    pub id: Option<String>,
    /// Workflow input, a JSON document.
    #[arg(long, default_value = "{}")]
    pub input: String,
    /// Wait until the workflow is completed, failed or cancelled (exit 1 unless completed).
    #[arg(long)]
    pub wait: bool,
    /// Longest wait with --wait, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
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

async fn request(
    client: &async_nats::Client,
    subject: String,
    body: Vec<u8>,
) -> Result<WorkflowReply, String> {
    let msg = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(subject.clone(), body.into()),
    )
    .await
    .map_err(|_| format!("no reply on {subject} within 10 s (is `orchestrator run` up?)"))?
    .map_err(|e| {
        if e.to_string().contains("no responders") {
            format!("no orchestrator is listening on {subject} (is `orchestrator run` up?)")
        } else {
            format!("request on {subject} failed: {e}")
        }
    })?;
    let reply: WorkflowReply =
        serde_json::from_slice(&msg.payload).map_err(|e| format!("bad reply: {e}"))?;
    match reply.error {
        Some(e) => Err(e),
        None => Ok(reply),
    }
}

async fn start(args: StartArgs) -> Result<ExitCode, String> {
    let input: serde_json::Value =
        serde_json::from_str(&args.input).map_err(|e| format!("--input is not valid JSON: {e}"))?;
    let subjects = Subjects::new(&args.nats.prefix)?;
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(&args.nats.nats_url)
        .await
        .map_err(|e| format!("cannot connect to NATS at {}: {e}", args.nats.nats_url))?;
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let body = serde_json::to_vec(&StartRequest {
        v: VERSION,
        pipeline: args.pipeline.clone(),
        id,
        input,
    })
    .map_err(|e| e.to_string())?;
    let reply = request(&client, subjects.admin("start"), body).await?;
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
            let body = serde_json::to_vec(&DescribeRequest {
                v: VERSION,
                id: id.clone(),
            })
            .map_err(|e| e.to_string())?;
            status = request(&client, subjects.admin("describe"), body)
                .await?
                .status
                .unwrap_or_default();
        }
    }
    println!("workflow id={id} status={status} created={created}");
    Ok(if args.wait && status != "completed" {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
