//! `orchestrator backfill PIPELINE --input-file FILE.jsonl`: one workflow
//! per line, each with a deterministic id, so a second run starts nothing
//! twice (`start` returns an existing id instead of starting it again).

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;

use super::batch::parse_rate;
use super::ops::{block_on, AdminClient, Progress};
use super::NatsArgs;
use crate::admin::{code, CapacityReply, CapacityRequest, StartRequest, WorkflowReply};
use crate::capacity::{parse_error_rate, BackfillReport, ErrorBound, ErrorThrottle, Verdict};
use crate::protocol::VERSION;

/// Longest accepted line (a workflow input must also fit in one NATS message).
pub const LINE_MAX_BYTES: usize = 512 * 1024;
/// Start requests in flight at once.
pub const IN_FLIGHT: usize = 16;

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Example: orchestrator backfill video --input-file videos.jsonl --id-field video_id --rate 50/s --max-error-rate 5%\n\
                  Ids: the --id-field value as is; without it `<pipeline>-<hash of the line's JSON>`.\n\
                  While the error rate of the pipeline's task types is over --max-error-rate, no new\n\
                  workflow is started (`backfill held: ...` on stderr) until it falls (docs/capacity.md)."
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
    /// Hold new starts while more than this share of the attempts of the
    /// pipeline's task types failed or timed out within --error-window
    /// (`10%`, `0.1`; `off`: never hold). Measured on every workflow's
    /// attempts of those types, not only this backfill's.
    #[arg(long, default_value = "10%", value_name = "RATE")]
    pub max_error_rate: String,
    /// The window the error rate is measured over.
    #[arg(long, default_value = "1m", value_name = "DURATION", value_parser = parse_window)]
    pub error_window: Duration,
    /// Attempts of a task type that must end within the window before its
    /// error rate can hold the backfill.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub error_min_attempts: u64,
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

/// How often the engine's attempt outcomes are read while a throttle is
/// on: a twentieth of the window, between 100 ms and 1 s.
fn poll_every(window: Duration) -> Duration {
    (window / 20).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// A fraction as a percentage to a tenth: 0.05 → `5`, 0.025 → `2.5`.
fn percent(fraction: f64) -> f64 {
    (fraction * 1000.0).round() / 10.0
}

fn parse_window(text: &str) -> Result<Duration, String> {
    crate::durations::parse(text).map_err(|e| format!("{text:?}: {e}"))
}

/// The error-rate throttle of one backfill and the engine it reads.
struct Throttle<'a> {
    c: &'a AdminClient,
    pipeline: &'a str,
    state: ErrorThrottle,
    poll: Duration,
    next_poll: tokio::time::Instant,
    t0: tokio::time::Instant,
    /// The reason new starts are held, `None` while they go.
    held: Option<String>,
    /// Reported to the engine with every read (`orchestrator capacity`).
    name: String,
    total: u64,
}

impl Throttle<'_> {
    /// Reads the outcomes if a read is due and says whether starts may go.
    /// An unknown pipeline is fatal; an engine that cannot answer leaves
    /// the verdict as it was (logged; a start then fails on its own).
    async fn may_start(&mut self, done: u64) -> Result<bool, String> {
        let now = tokio::time::Instant::now();
        if now < self.next_poll {
            return Ok(self.held.is_none());
        }
        self.next_poll = now + self.poll;
        let req = CapacityRequest {
            v: VERSION,
            pipeline: Some(self.pipeline.to_string()),
            backfill: Some(BackfillReport {
                name: self.name.clone(),
                pipeline: self.pipeline.to_string(),
                total: self.total,
                done,
                held: self.held.clone(),
                holds: self.state.episodes(),
            }),
        };
        let reply = match self.c.call::<_, CapacityReply>("capacity", &req).await {
            Ok(r) => r,
            Err(e) if e.code.as_deref() == Some(code::UNKNOWN_PIPELINE) => return Err(e.message),
            Err(e) => {
                tracing::warn!(error = %e.message, "backfill: attempt outcomes not read");
                return Ok(self.held.is_none());
            }
        };
        let at_ms = u64::try_from(now.duration_since(self.t0).as_millis()).unwrap_or(u64::MAX);
        match self.state.observe(at_ms, &reply.outcomes) {
            Verdict::Release => {
                if self.held.take().is_some() {
                    eprintln!(
                        "backfill resumed: error rate under --max-error-rate {}% (held {} in all)",
                        percent(self.state.bound().max_error_rate),
                        crate::durations::format_ms(self.state.held_ms(at_ms))
                    );
                }
            }
            Verdict::Hold { cause, .. } => {
                let why = format!(
                    "{cause}, over --max-error-rate {}%",
                    percent(self.state.bound().max_error_rate)
                );
                if self.held.is_none() {
                    eprintln!("backfill held: {why}; new starts wait");
                }
                self.held = Some(why);
            }
        }
        Ok(self.held.is_none())
    }
}

pub fn run(args: BackfillArgs) -> ExitCode {
    let rate = match parse_rate(&args.rate) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bound = match parse_error_rate(&args.max_error_rate) {
        Ok(None) => None,
        Ok(Some(max_error_rate)) => {
            let b = ErrorBound {
                max_error_rate,
                window_ms: u64::try_from(args.error_window.as_millis()).unwrap_or(u64::MAX),
                min_attempts: args.error_min_attempts,
            };
            if let Err(e) = b.validate() {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            Some(b)
        }
        Err(e) => {
            eprintln!("error: --max-error-rate {e}");
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
        let c = &c;
        let pipeline = args.pipeline.as_str();
        let id_field = args.id_field.as_deref();
        let priority = args.priority.as_str();
        let t0 = tokio::time::Instant::now();
        let mut throttle = bound.map(|b| Throttle {
            c,
            pipeline,
            state: ErrorThrottle::new(b),
            poll: poll_every(args.error_window),
            next_poll: t0,
            t0,
            held: None,
            name: format!(
                "{}#{}",
                args.input_file
                    .file_name()
                    .map_or_else(|| "-".into(), |f| f.to_string_lossy()),
                std::process::id()
            ),
            total,
        });
        let start = |line_no: usize, text: String| async move {
            let (id, input) = match line_to_start(pipeline, id_field, &text) {
                Ok(x) => x,
                Err(e) => return (line_no, Line::Failed(e), false),
            };
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
        };
        let mut pending = lines.into_iter();
        let mut next_line = pending.next();
        let mut in_flight = FuturesOrdered::new();
        let mut next_slot = t0;
        let (mut started, mut existing, mut failed) = (0u64, 0u64, 0u64);
        let mut bar = Progress::new();
        loop {
            let can_start = next_line.is_some() && in_flight.len() < IN_FLIGHT;
            tokio::select! {
                biased;
                Some((line_no, outcome, fatal)) = in_flight.next(), if !in_flight.is_empty() => {
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
                }
                _ = tokio::time::sleep_until(next_slot), if can_start => {
                    if let Some(t) = throttle.as_mut() {
                        if !t.may_start(started + existing + failed).await? {
                            // Held: look again at the next read; no burst
                            // to catch up once released.
                            next_slot = t.next_poll;
                            bar.draw(started + existing + failed, total, "held (error rate)");
                            continue;
                        }
                    }
                    if let Some((line_no, text)) = next_line.take() {
                        in_flight.push_back(start(line_no, text));
                        next_line = pending.next();
                    }
                    let now = tokio::time::Instant::now();
                    // Paced from the previous slot, so a late wake-up is
                    // caught up, but never more than one slot behind now.
                    next_slot = (next_slot + interval).max(now.checked_sub(interval).unwrap_or(now));
                }
                else => break,
            }
            bar.draw(
                started + existing + failed,
                total,
                &format!("started={started} existing={existing} failed={failed}"),
            );
        }
        bar.finish();
        let (held, held_ms) = throttle.as_ref().map_or((0, 0), |t| {
            let at = u64::try_from(t.t0.elapsed().as_millis()).unwrap_or(u64::MAX);
            (t.state.episodes(), t.state.held_ms(at))
        });
        println!(
            "backfill pipeline={} lines={total} started={started} existing={existing} failed={failed} held={held} held_ms={held_ms}",
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
