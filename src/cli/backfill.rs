//! `orchestrator backfill PIPELINE --input-file FILE.jsonl`: one workflow
//! per line, each with a deterministic id, so a second run starts nothing
//! twice (`start` returns an existing id instead of starting it again).

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use futures_util::StreamExt;

use super::batch::parse_rate;
use super::ops::{block_on, AdminClient, Progress};
use super::NatsArgs;
use crate::admin::{code, StartRequest, WorkflowReply};
use crate::protocol::VERSION;

/// Longest accepted line (a workflow input must also fit in one NATS message).
pub const LINE_MAX_BYTES: usize = 512 * 1024;
/// Start requests in flight at once.
pub const IN_FLIGHT: usize = 16;

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Example: orchestrator backfill video --input-file videos.jsonl --id-field video_id --rate 50/s\n\
                  Ids: the --id-field value as is; without it `<pipeline>-<hash of the line's JSON>`."
)]
pub struct BackfillArgs {
    /// Pipeline every line starts.
    pub pipeline: String,
    /// JSON Lines file: one workflow input (a JSON document) per line; blank lines are skipped.
    #[arg(long)]
    pub input_file: PathBuf,
    /// Field of each line (a string or an integer) used as the workflow id.
    #[arg(long)]
    pub id_field: Option<String>,
    /// Starts per second, e.g. `100/s`.
    #[arg(long, default_value = "100/s")]
    pub rate: String,
    /// Priority of the started workflows for capacity (`low`, `normal`,
    /// `high`), unless a line's input sets it (docs/capacity.md).
    #[arg(long, default_value = "low", value_name = "LEVEL")]
    pub priority: String,
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// FNV-1a 64 of `bytes` (specified, so ids stay stable across releases).
fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The workflow id and input of one line, or why the line is bad.
pub fn line_to_start(
    pipeline: &str,
    id_field: Option<&str>,
    line: &str,
) -> Result<(String, serde_json::Value), String> {
    if line.len() > LINE_MAX_BYTES {
        return Err(format!(
            "line of {} bytes exceeds {LINE_MAX_BYTES}",
            line.len()
        ));
    }
    let input: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let id = match id_field {
        Some(f) => match input.get(f) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
            Some(serde_json::Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
            Some(_) => {
                return Err(format!(
                    "field {f:?} is not a non-empty string or an integer"
                ))
            }
            None => return Err(format!("no field {f:?}")),
        },
        // serde_json's map is ordered by key, so this text is canonical:
        // the same document spelled differently gets the same id.
        None => format!("{pipeline}-{:016x}", fnv1a_64(input.to_string().as_bytes())),
    };
    Ok((id, input))
}

enum Line {
    Started,
    Existing,
    Failed(String),
}

pub fn run(args: BackfillArgs) -> ExitCode {
    let rate = match parse_rate(&args.rate) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let file = match std::fs::File::open(&args.input_file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", args.input_file.display());
            return ExitCode::FAILURE;
        }
    };
    // Read up front: the total drives the progress bar, and an unreadable
    // file fails before anything is started.
    let mut lines = Vec::new();
    for (i, l) in std::io::BufReader::new(file).lines().enumerate() {
        match l {
            Ok(l) if l.trim().is_empty() => {}
            Ok(l) => lines.push((i + 1, l)),
            Err(e) => {
                eprintln!(
                    "error: cannot read {} at line {}: {e}",
                    args.input_file.display(),
                    i + 1
                );
                return ExitCode::FAILURE;
            }
        }
    }
    block_on(async move {
        let c = AdminClient::connect(&args.nats).await?;
        let total = lines.len() as u64;
        let interval = Duration::from_secs_f64(1.0 / rate);
        let t0 = tokio::time::Instant::now();
        let c = &c;
        let pipeline = args.pipeline.as_str();
        let id_field = args.id_field.as_deref();
        let priority = args.priority.as_str();
        let mut results = futures_util::stream::iter(lines.into_iter().enumerate())
            .map(|(k, (line_no, text))| async move {
                let (id, input) = match line_to_start(pipeline, id_field, &text) {
                    Ok(x) => x,
                    Err(e) => return (line_no, Line::Failed(e), false),
                };
                tokio::time::sleep_until(t0 + interval.mul_f64(k as f64)).await;
                let req = StartRequest {
                    v: VERSION,
                    pipeline: pipeline.to_string(),
                    id,
                    input,
                    pipeline_version: None,
                    priority: Some(priority.to_string()),
                };
                match c.call::<_, WorkflowReply>("start", &req).await {
                    Ok(r) if r.created == Some(true) => (line_no, Line::Started, false),
                    Ok(_) => (line_no, Line::Existing, false),
                    Err(e) => {
                        let fatal =
                            e.code.as_deref() == Some(code::UNKNOWN_PIPELINE) || e.code.is_none();
                        (line_no, Line::Failed(e.message), fatal)
                    }
                }
            })
            .buffered(IN_FLIGHT);
        let (mut started, mut existing, mut failed) = (0u64, 0u64, 0u64);
        let mut bar = Progress::new();
        while let Some((line_no, outcome, fatal)) = results.next().await {
            match outcome {
                Line::Started => started += 1,
                Line::Existing => existing += 1,
                Line::Failed(e) => {
                    if fatal {
                        bar.finish();
                        return Err(format!(
                            "line {line_no}: {e} (stopped; started={started} existing={existing})"
                        ));
                    }
                    failed += 1;
                    bar.finish();
                    eprintln!("line {line_no}: {e}");
                }
            }
            bar.draw(
                started + existing + failed,
                total,
                &format!("started={started} existing={existing} failed={failed}"),
            );
        }
        bar.finish();
        println!(
            "backfill pipeline={} lines={total} started={started} existing={existing} failed={failed}",
            args.pipeline
        );
        Ok(if failed > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic() {
        let (a, _) = line_to_start("video", None, r#"{"b":1,"a":2}"#).unwrap();
        let (b, _) = line_to_start("video", None, r#"{ "a": 2, "b": 1 }"#).unwrap();
        assert_eq!(a, b);
        assert!(a.starts_with("video-"));
        let (c, _) = line_to_start("video", Some("vid"), r#"{"vid":"x-1"}"#).unwrap();
        assert_eq!(c, "x-1");
        let (d, _) = line_to_start("video", Some("vid"), r#"{"vid":42}"#).unwrap();
        assert_eq!(d, "42");
        assert!(line_to_start("video", Some("vid"), r#"{"other":1}"#).is_err());
        assert!(line_to_start("video", None, "{nope").is_err());
    }
}
