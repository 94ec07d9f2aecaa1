//! `orchestrator pipelines check [DIR]` and `orchestrator pipelines reload`.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use super::ops::{block_on, AdminClient};
use super::NatsArgs;
use crate::admin::{PipelinesReloadReply, PipelinesReloadRequest};
use crate::pipeline::load::load_pipeline_dir;
use crate::pipeline::PipelineLimits;
use crate::protocol::VERSION;

pub fn check(dir: &Path) -> ExitCode {
    match load_pipeline_dir(dir, &PipelineLimits::default()) {
        Ok(defs) if defs.is_empty() => {
            eprintln!("error: no pipeline files (*.toml) in {}", dir.display());
            ExitCode::FAILURE
        }
        Ok(defs) => {
            for def in &defs {
                println!("{}", def.render_dag());
            }
            println!("ok: {} pipeline(s) valid in {}", defs.len(), dir.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!("{} error(s) in {}", errors.len(), dir.display());
            ExitCode::FAILURE
        }
    }
}

/// `orchestrator pipelines reload`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Example:\n  orchestrator pipelines reload --nats-url nats://127.0.0.1:4222\n  # -> pipeline name=video version=2 hash=… current=true added=true\n  # -> reloaded: 3 version(s) registered, 1 added, 0 removed\n  # A file whose definition changed without a new version fails it, and nothing changes:\n  # -> error: config/pipelines/video.toml: pipeline \"video\" version 2 differs from the definition …\nSIGHUP to `orchestrator run` does the same (its log says what happened)."
)]
pub struct ReloadArgs {
    /// Print the reply as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

pub fn reload(args: ReloadArgs) -> ExitCode {
    block_on(async move {
        let c = AdminClient::connect(&args.nats).await?;
        let r: PipelinesReloadReply = c
            .call("pipelines.reload", &PipelinesReloadRequest { v: VERSION })
            .await
            .map_err(|e| e.message)?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?
            );
            return Ok(ExitCode::SUCCESS);
        }
        for p in &r.pipelines {
            println!(
                "pipeline name={} version={} hash={} current={} added={}",
                p.name, p.version, p.hash, p.current, p.added
            );
        }
        for p in &r.removed {
            println!("removed name={} version={}", p.name, p.version);
        }
        println!(
            "reloaded: {} version(s) registered, {} added, {} removed",
            r.pipelines.len(),
            r.pipelines.iter().filter(|p| p.added).count(),
            r.removed.len()
        );
        Ok(ExitCode::SUCCESS)
    })
}
