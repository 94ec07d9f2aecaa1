//! `orchestrator capacity`: a running orchestrator's capacity limits, their
//! usage and queues.

use std::process::ExitCode;

use clap::Args;

use super::ops::{block_on, AdminClient};
use super::NatsArgs;
use crate::admin::{CapacityReply, CapacityRequest};
use crate::protocol::VERSION;

/// `orchestrator capacity`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Example:\n  orchestrator capacity --nats-url nats://127.0.0.1:4222\n  # -> in_progress=1200 limit=1000000 backlog_held=0\n  # -> pipeline video in_progress=1200 limit=5000\n  # -> task_type transcribe cap=8 rate=20/s pool=gpu in_flight=8 queued=312 oldest_wait=41s\n  # ->   key \"tenant-a\" cap=16 in_flight=5 queued=300\n  # -> pool gpu cap=12 in_flight=12 task_types=transcribe,embed\n  # -> backfill videos.jsonl#4242 pipeline=video done=310/5000 holds=1 state=held for=12s why=\"task type transcribe failed ...\"\nLimits are set in [task_types.*] and [pools.*] of the config file and read again on SIGHUP (docs/capacity.md)."
)]
pub struct CapacityArgs {
    /// Print the reply as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

pub fn capacity(args: CapacityArgs) -> ExitCode {
    block_on(async move {
        let c = AdminClient::connect(&args.nats).await?;
        let r: CapacityReply = c
            .call(
                "capacity",
                &CapacityRequest {
                    v: VERSION,
                    pipeline: None,
                    backfill: None,
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
        print!(
            "{}",
            render(
                &r,
                crate::engine::Clock::now_ms(&crate::engine::SystemClock)
            )
        );
        Ok(ExitCode::SUCCESS)
    })
}

fn or_dash<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The reply as lines of `name=value` fields.
fn render(r: &CapacityReply, now_ms: u64) -> String {
    let mut out = format!(
        "in_progress={} limit={} backlog_held={}\n",
        r.in_progress, r.in_progress_limit, r.backlog_held
    );
    for p in &r.pipelines {
        out.push_str(&format!(
            "pipeline {} in_progress={} limit={}\n",
            p.pipeline,
            p.in_progress,
            or_dash(p.limit)
        ));
    }
    if r.task_types.is_empty() && r.pools.is_empty() {
        out.push_str("no capacity limits configured ([task_types.*], [pools.*])\n");
    }
    for t in &r.task_types {
        let wait = t
            .oldest_since_ms
            .map(|s| crate::durations::format_ms((now_ms.saturating_sub(s) / 1000) * 1000));
        out.push_str(&format!(
            "task_type {} cap={} rate={} pool={} in_flight={} queued={} oldest_wait={}\n",
            t.task_type,
            or_dash(t.cap),
            or_dash(t.rate_per_sec.map(|r| format!("{r}/s"))),
            or_dash(t.pool.as_deref()),
            t.in_flight,
            t.queued,
            or_dash(wait),
        ));
        for k in t.keys.iter().filter(|k| !k.key.is_empty()) {
            out.push_str(&format!(
                "  key {:?} cap={} in_flight={} queued={}\n",
                k.key,
                or_dash(k.cap),
                k.in_flight,
                k.queued
            ));
        }
    }
    for p in &r.pools {
        out.push_str(&format!(
            "pool {} cap={} in_flight={} task_types={}\n",
            p.pool,
            p.cap,
            p.in_flight,
            p.task_types.join(",")
        ));
    }
    for b in &r.backfills {
        let state = match (&b.report.held, b.held_since_ms) {
            (Some(why), since) => format!(
                "held for={} why={why:?}",
                or_dash(since.map(|s| crate::durations::format_ms(
                    (now_ms.saturating_sub(s) / 1000) * 1000
                )))
            ),
            (None, _) => "running".to_string(),
        };
        out.push_str(&format!(
            "backfill {} pipeline={} done={}/{} holds={} state={state}\n",
            b.report.name, b.report.pipeline, b.report.done, b.report.total, b.report.holds
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::{BackfillReport, BackfillView, KeyView, PoolView, TypeView};

    #[test]
    fn the_listing_names_every_cap_its_usage_and_queue() {
        let r = CapacityReply {
            v: 1,
            in_progress_limit: 1_000_000,
            in_progress: 3,
            backlog_held: 0,
            pipelines: vec![
                crate::admin::PipelineInProgress {
                    pipeline: "backfills".into(),
                    in_progress: 2,
                    limit: Some(50),
                },
                crate::admin::PipelineInProgress {
                    pipeline: "video".into(),
                    in_progress: 1,
                    limit: None,
                },
            ],
            task_types: vec![TypeView {
                task_type: "transcribe".into(),
                cap: Some(8),
                rate_per_sec: Some(20.0),
                pool: Some("gpu".into()),
                in_flight: 8,
                queued: 2,
                oldest_since_ms: Some(1_000),
                keys: vec![KeyView {
                    key: "tenant-a".into(),
                    cap: Some(16),
                    in_flight: 5,
                    queued: 2,
                }],
            }],
            pools: vec![PoolView {
                pool: "gpu".into(),
                cap: 12,
                in_flight: 8,
                task_types: vec!["transcribe".into(), "embed".into()],
            }],
            backfills: vec![BackfillView {
                report: BackfillReport {
                    name: "videos.jsonl#42".into(),
                    pipeline: "video".into(),
                    total: 5_000,
                    done: 310,
                    held: Some(
                        "task type transcribe failed 9 of 10 attempts (90%) in the last 1m".into(),
                    ),
                    holds: 2,
                },
                held_since_ms: Some(30_000),
                seen_ms: 41_000,
            }],
            ..CapacityReply::default()
        };
        assert_eq!(
            render(&r, 42_000),
            "in_progress=3 limit=1000000 backlog_held=0\n\
             pipeline backfills in_progress=2 limit=50\n\
             pipeline video in_progress=1 limit=-\n\
             task_type transcribe cap=8 rate=20/s pool=gpu in_flight=8 queued=2 oldest_wait=41s\n  \
             key \"tenant-a\" cap=16 in_flight=5 queued=2\n\
             pool gpu cap=12 in_flight=8 task_types=transcribe,embed\n\
             backfill videos.jsonl#42 pipeline=video done=310/5000 holds=2 state=held for=12s \
             why=\"task type transcribe failed 9 of 10 attempts (90%) in the last 1m\"\n"
        );
    }
}
