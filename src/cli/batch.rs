//! `orchestrator batch <cancel|retry|rerun|status|pause|resume|list>`: durable
//! batch jobs run by the orchestrator (see `crate::admin::batch`). The client only
//! creates, inspects, pauses and resumes them; stopping the client (Ctrl-C)
//! leaves the job running.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::ops::{block_on, AdminClient, FilterArgs, Progress};
use super::NatsArgs;
use crate::admin::{
    BatchCreateRequest, BatchJobRequest, BatchJobView, BatchListReply, BatchListRequest, BatchReply,
};
use crate::protocol::VERSION;

/// How often the client polls `batch.status` while it waits.
const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  orchestrator batch retry --status failed --since 24h --dry-run\n  orchestrator batch rerun --pipeline video --status completed --from-step enrich --rate 20/s\n  orchestrator batch status b-0199...   # and: batch pause JOB, batch resume JOB"
)]
pub struct BatchArgs {
    #[command(subcommand)]
    pub cmd: BatchCmd,
}

#[derive(Debug, Subcommand)]
pub enum BatchCmd {
    /// Cancel every workflow the filter matches now.
    #[command(
        after_help = "Example: orchestrator batch cancel --pipeline video --status running --rate 20/s --reason \"bad model\""
    )]
    Cancel {
        #[command(flatten)]
        run: RunArgs,
        /// Cancel reason kept in each workflow's history.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reopen every failed (or cancelled) workflow the filter matches, as a new generation.
    #[command(
        after_help = "Example: orchestrator batch retry --status failed --since 24h --dry-run"
    )]
    Retry {
        #[command(flatten)]
        run: RunArgs,
    },
    /// Rerun a step and everything downstream of it on every workflow the filter matches.
    #[command(
        after_help = "Example: orchestrator batch rerun --pipeline video --status completed --from-step enrich --rate 10/s"
    )]
    Rerun {
        #[command(flatten)]
        run: RunArgs,
        /// The step to rerun from.
        #[arg(long)]
        from_step: String,
    },
    /// Progress of a job, and its failed items.
    #[command(after_help = "Example: orchestrator batch status b-0199...")]
    Status(JobArgs),
    /// Pause a job; it stays paused across restarts until resumed.
    #[command(after_help = "Example: orchestrator batch pause b-0199...")]
    Pause(JobArgs),
    /// Resume a paused job where it stopped.
    #[command(after_help = "Example: orchestrator batch resume b-0199...")]
    Resume(JobArgs),
    /// Every job the orchestrator keeps, newest first: its id, action, state and progress.
    #[command(
        after_help = "Example: orchestrator batch list --limit 20\n  # -> batch job=b-0199... action=retry state=running total=120 done=40 ... created=2026-..."
    )]
    List(ListJobsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ListJobsArgs {
    /// Most jobs to print.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Print the jobs as a JSON array.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Items per second, e.g. `20/s` or `20` (at most 10000/s).
    #[arg(long, default_value = "50/s")]
    pub rate: String,
    /// Print the count and a sample; create nothing, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the job line and exit; the job runs on in the orchestrator.
    #[arg(long)]
    pub detach: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Debug, Clone, Args)]
pub struct JobArgs {
    /// Batch job id (`b-...`), as printed when the job was created.
    pub job: String,
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// `--rate` in the crate's rate grammar ([`crate::durations`]: `20/s`,
/// `600/m`, a bare `20` per second), at most [`crate::admin::batch::RATE_MAX`].
pub fn parse_rate(s: &str) -> Result<f64, String> {
    crate::durations::parse_rate(s, crate::admin::batch::RATE_MAX)
        .map_err(|e| format!("--rate {s:?}: {e}"))
}

pub fn run(args: BatchArgs) -> ExitCode {
    match args.cmd {
        BatchCmd::Cancel { run, reason } => create("cancel", run, None, reason),
        BatchCmd::Retry { run } => create("retry", run, None, None),
        BatchCmd::Rerun { run, from_step } => create("rerun", run, Some(from_step), None),
        BatchCmd::Status(a) => job_verb("batch.status", a),
        BatchCmd::Pause(a) => job_verb("batch.pause", a),
        BatchCmd::Resume(a) => job_verb("batch.resume", a),
        BatchCmd::List(a) => list_jobs(a),
    }
}

fn list_jobs(args: ListJobsArgs) -> ExitCode {
    block_on(async move {
        if args.limit == 0 {
            return Err("--limit must be above 0".to_string());
        }
        let c = AdminClient::connect(&args.nats).await?;
        let req = BatchListRequest {
            v: VERSION,
            limit: Some(args.limit),
        };
        let r: BatchListReply = c.call("batch.list", &req).await.map_err(|e| e.message)?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string(&r.jobs).map_err(|e| e.to_string())?
            );
            return Ok(ExitCode::SUCCESS);
        }
        for j in &r.jobs {
            println!(
                "{} created={} updated={}",
                line(j),
                super::ops::rfc3339(j.created_at_ms),
                super::ops::rfc3339(j.updated_at_ms)
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn line(j: &BatchJobView) -> String {
    let mut s = format!(
        "batch job={} action={} state={} total={} done={} succeeded={} skipped={} failed={} rate={}/s",
        j.id, j.action, j.state, j.total, j.done, j.succeeded, j.skipped, j.failed, j.rate
    );
    if let Some(step) = &j.from_step {
        s.push_str(&format!(" from_step={step}"));
    }
    s
}

fn print_failures(r: &BatchReply) {
    for f in &r.failures {
        println!("failed id={} error={:?}", f.id, f.error);
    }
    if let Some(j) = &r.job {
        let shown = r.failures.len() as u64;
        if j.failed > shown {
            println!("… and {} more failed item(s) not shown", j.failed - shown);
        }
    }
}

fn create(
    action: &'static str,
    args: RunArgs,
    from_step: Option<String>,
    reason: Option<String>,
) -> ExitCode {
    let filter = match args.filter.filter() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if filter.is_empty() {
        eprintln!(
            "error: batch {action} needs at least one filter: --status, --pipeline or --since"
        );
        return ExitCode::from(2);
    }
    let rate = match parse_rate(&args.rate) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    block_on(async move {
        let c = AdminClient::connect(&args.nats).await?;
        let req = BatchCreateRequest {
            v: VERSION,
            action: action.to_string(),
            filter,
            from_step,
            reason,
            rate: Some(rate),
            dry_run: args.dry_run,
        };
        let r: BatchReply = c.call("batch.create", &req).await.map_err(|e| e.message)?;
        if args.dry_run {
            println!(
                "batch action={action} count={} dry_run=true",
                r.count.unwrap_or_default()
            );
            for w in &r.sample {
                println!(
                    "sample {} status={} pipeline={}",
                    w.id, w.status, w.pipeline
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        let job = r.job.ok_or("the orchestrator returned no job")?;
        println!("{}", line(&job));
        if args.detach {
            return Ok(ExitCode::SUCCESS);
        }
        let mut bar = Progress::new();
        let req = BatchJobRequest {
            v: VERSION,
            job: job.id.clone(),
        };
        loop {
            let r: BatchReply = c.call("batch.status", &req).await.map_err(|e| e.message)?;
            let j = r.job.clone().ok_or("the orchestrator returned no job")?;
            bar.draw(
                j.done,
                j.total,
                &format!("{} failed={} {}", j.action, j.failed, j.state),
            );
            if j.state != "running" {
                bar.finish();
                println!("{}", line(&j));
                print_failures(&r);
                if j.state == "paused" {
                    eprintln!(
                        "batch job {} is paused; `orchestrator batch resume {}` continues it",
                        j.id, j.id
                    );
                }
                return Ok(if j.failed > 0 {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                });
            }
            tokio::time::sleep(POLL).await;
        }
    })
}

fn job_verb(verb: &'static str, args: JobArgs) -> ExitCode {
    block_on(async move {
        let c = AdminClient::connect(&args.nats).await?;
        let r: BatchReply = c
            .call(
                verb,
                &BatchJobRequest {
                    v: VERSION,
                    job: args.job.clone(),
                },
            )
            .await
            .map_err(|e| e.message)?;
        let j = r.job.as_ref().ok_or("the orchestrator returned no job")?;
        println!("{}", line(j));
        print_failures(&r);
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_or_without_unit() {
        assert_eq!(parse_rate("20/s"), Ok(20.0));
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        assert_eq!(parse_rate("600/m"), Ok(10.0));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("1e9/s").is_err());
    }
}
