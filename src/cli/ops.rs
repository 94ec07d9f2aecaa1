//! Operator commands over the admin subjects: `describe`, `history`, `list`,
//! `cancel`, `pause`, `resume`, `retry`, `rerun`, plus the client helpers the
//! batch and backfill commands share (admin client, progress bar, times).

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::NatsArgs;
use crate::admin::Filter;
use crate::protocol::subjects::Subjects;

mod control;
mod read;

pub use control::{cancel, pause_resume, rerun, retry, CancelArgs, ControlArgs, IdArgs, RerunArgs};
pub use read::{describe, history, list, DescribeArgs, HistoryArgs, ListArgs, LIST_SORT_MAX};

/// How long a client waits for one admin reply.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An admin failure as the client sees it.
#[derive(Debug, Clone)]
pub struct ClientError {
    pub message: String,
    /// The reply's `code`, when the orchestrator answered with an error.
    pub code: Option<String>,
}

impl From<String> for ClientError {
    fn from(message: String) -> Self {
        ClientError {
            message,
            code: None,
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A connection to NATS that sends admin requests.
pub struct AdminClient {
    client: async_nats::Client,
    subjects: Subjects,
}

impl AdminClient {
    pub async fn connect(nats: &NatsArgs) -> Result<AdminClient, String> {
        let subjects = Subjects::new(&nats.prefix)?;
        let (client, _) = crate::transport::nats::connect(&nats.config()).await?;
        Ok(AdminClient { client, subjects })
    }

    /// Sends `req` on `<prefix>.admin.<verb>`; an error reply becomes `Err`.
    pub async fn call<Q: Serialize, R: DeserializeOwned>(
        &self,
        verb: &str,
        req: &Q,
    ) -> Result<R, ClientError> {
        let subject = self.subjects.admin(verb);
        let body = serde_json::to_vec(req).map_err(|e| e.to_string())?;
        let msg = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.client.request(subject.clone(), body.into()),
        )
        .await
        .map_err(|_| {
            format!(
                "no reply on {subject} within {} s (is `orchestrator run` up?)",
                REQUEST_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| {
            if e.kind() == async_nats::RequestErrorKind::NoResponders {
                format!("no orchestrator is listening on {subject} (is `orchestrator run` up?)")
            } else {
                format!("request on {subject} failed: {e}")
            }
        })?;
        let value: serde_json::Value =
            serde_json::from_slice(&msg.payload).map_err(|e| format!("bad reply: {e}"))?;
        if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
            return Err(ClientError {
                message: error.to_string(),
                code: value
                    .get("code")
                    .and_then(|c| c.as_str())
                    .map(str::to_string),
            });
        }
        serde_json::from_value(value).map_err(|e| format!("bad reply: {e}").into())
    }
}

/// Runs an async command body; `Err` prints one `error: ...` line and exits 1.
pub fn block_on<F>(body: F) -> ExitCode
where
    F: Future<Output = Result<ExitCode, String>>,
{
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(body) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn one_line(s: &str) -> String {
    s.lines().collect::<Vec<_>>().join("; ")
}

/// Unix ms as RFC 3339 UTC with milliseconds, e.g. `2026-11-25T21:04:36.123Z`.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        ms % 1000
    )
}

pub use crate::progress::Progress;

/// `--status`: one of the five statuses.
pub fn parse_status(s: &str) -> Result<String, String> {
    crate::workflow::Status::parse(s)
        .map(|st| st.to_string())
        .ok_or_else(|| {
            format!(
                "--status {s:?} is not a status (running, paused, completed, failed, cancelled)"
            )
        })
}

/// `--since`: a positive duration such as `24h`, `30m`, `1h30m`.
pub fn parse_since(s: &str) -> Result<u64, String> {
    match crate::durations::parse_ms(s) {
        Ok(0) => Err("--since must be above 0".to_string()),
        Ok(ms) => Ok(ms),
        Err(e) => Err(format!("--since {s:?}: {e} (e.g. 24h, 30m, 1h30m)")),
    }
}

/// Filter flags shared by `list` and `batch`.
#[derive(Debug, Clone, Args, Default)]
pub struct FilterArgs {
    /// Only workflows with this status: running, paused, completed, failed or cancelled.
    #[arg(long)]
    pub status: Option<String>,
    /// Only workflows of this pipeline.
    #[arg(long)]
    pub pipeline: Option<String>,
    /// Only workflows whose status changed within this long (e.g. 24h, 30m).
    #[arg(long, visible_alias = "changed-since")]
    pub since: Option<String>,
    /// Only workflows created within this long before now (e.g. 24h).
    #[arg(long)]
    pub created_since: Option<String>,
    /// Only workflows created more than this long before now (e.g. 1h).
    #[arg(long)]
    pub created_until: Option<String>,
    /// Only workflows whose id starts with this.
    #[arg(long)]
    pub id_prefix: Option<String>,
}

impl FilterArgs {
    pub fn filter(&self) -> Result<Filter, String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let ago = |flag: &str, v: &Option<String>| -> Result<Option<u64>, String> {
            v.as_deref()
                .map(|s| {
                    parse_since(s)
                        .map(|ms| now.saturating_sub(ms))
                        .map_err(|e| e.replace("--since", flag))
                })
                .transpose()
        };
        if self.id_prefix.as_deref() == Some("") {
            return Err("--id-prefix must not be empty".to_string());
        }
        Ok(Filter {
            status: self.status.as_deref().map(parse_status).transpose()?,
            pipeline: self.pipeline.clone(),
            since_ms: self.since.as_deref().map(parse_since).transpose()?,
            created_after_ms: ago("--created-since", &self.created_since)?,
            created_before_ms: ago("--created-until", &self.created_until)?,
            id_prefix: self.id_prefix.clone(),
            error_kind: None,
        })
    }
}

#[cfg(test)]
mod tests;
