//! The web console: pages an operator looks at when something goes wrong,
//! served by `orchestrator run` under `/console` on the HTTP port, off
//! unless `[console] enabled`. Server-rendered HTML (strings built with
//! [`html::escape`]) and one small hand-written script; no build step.
//!
//! It reads through the admin verbs in-process ([`LocalAdmin`]: the same
//! `list`, `describe`, `history`, `signal` and batch code the CLI reaches over
//! NATS), the metrics the `/metrics` page exposes, and the lifecycle
//! events and heartbeats on NATS. It is read-only unless an operator token
//! is configured and the operator signed in with it ([`auth`]).
//!
//! | file | owns |
//! | --- | --- |
//! | `routes` | the router, the shared request helpers |
//! | `auth` | the operator token, sessions, CSRF |
//! | `html` | escaping, the page frame, formatting |
//! | `assets` | the style sheet and the script |
//! | `list_page` | the workflow list |
//! | `workflow_page` | one workflow: summary, steps, input, lineage |
//! | `dag` | the DAG of one workflow as SVG |
//! | `timeline` | every attempt of one workflow, as a Gantt chart |
//! | `inbox` | the failed inbox |
//! | `actions` | retry and rerun, with their preview; the action post |
//! | `signal` | signal forms for waiting steps, and sending one |
//! | `health` | capacity and health |
//! | `live` | lifecycle events and heartbeats from NATS; the SSE stream |

mod actions;
mod assets;
mod auth;
mod dag;
mod health;
mod html;
mod inbox;
mod list_page;
mod live;
mod routes;
mod signal;
mod timeline;
mod workflow_page;

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::admin::LocalAdmin;
use crate::http::HttpState;

pub use routes::router;

/// The console's settings (from `[console]`).
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    /// The operator token; `None`: read-only.
    pub token: Option<String>,
    pub page_size: u32,
    pub inbox_scan_max: u32,
    pub sessions_max: usize,
}

/// Everything the pages read. The admin verbs arrive once the engine has
/// started ([`Console::attach`]); until then the pages say so.
pub struct Console {
    opts: ConsoleOptions,
    auth: auth::Auth,
    http: HttpState,
    admin: OnceLock<LocalAdmin>,
    live: live::Live,
    rates: health::Rates,
    /// How long one SSE response may last: a little less than the HTTP
    /// server lets a connection live, so the stream ends cleanly and the
    /// browser reconnects.
    stream_for: Duration,
}

impl Console {
    pub fn new(opts: ConsoleOptions, http: HttpState) -> Arc<Console> {
        let lifetime = http.limits.read_timeout + http.limits.write_timeout;
        Arc::new(Console {
            auth: auth::Auth::new(opts.token.clone(), opts.sessions_max),
            opts,
            http,
            admin: OnceLock::new(),
            live: live::Live::default(),
            rates: health::Rates::default(),
            stream_for: lifetime
                .saturating_sub(Duration::from_secs(1))
                .max(Duration::from_secs(1)),
        })
    }

    /// The engine is up: serve its data, follow the lifecycle events and
    /// heartbeats of `prefix` on `client`, and sample the rates. The tasks
    /// end when the returned guard is dropped.
    pub fn attach(
        self: &Arc<Self>,
        admin: LocalAdmin,
        client: async_nats::Client,
        prefix: &str,
    ) -> Result<ConsoleTasks, String> {
        let _ = self.admin.set(admin);
        let subjects = crate::protocol::subjects::Subjects::new(prefix)?;
        let mut tasks = vec![
            tokio::spawn(live::follow_events(
                self.clone(),
                client.clone(),
                subjects.events_all(),
            )),
            tokio::spawn(live::follow_heartbeats(
                self.clone(),
                client,
                subjects.heartbeats_all(),
            )),
        ];
        tasks.push(tokio::spawn(health::sample(self.clone())));
        Ok(ConsoleTasks(tasks))
    }

    fn admin(&self) -> Option<&LocalAdmin> {
        self.admin.get()
    }
}

/// The console's background tasks; dropping it stops them.
pub struct ConsoleTasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for ConsoleTasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// The operator token from `token_file` (its first line, when the path is
/// not empty) or else `token`; `None` when neither holds one. The error
/// names the file, never the token.
pub fn load_token(token: &str, token_file: &Path) -> Result<Option<String>, String> {
    if !token_file.as_os_str().is_empty() {
        let text = std::fs::read_to_string(token_file).map_err(|e| {
            format!(
                "cannot read console.token_file {}: {e}",
                token_file.display()
            )
        })?;
        let first = text.lines().next().unwrap_or("").trim();
        if first.is_empty() {
            return Err(format!(
                "console.token_file {} holds no token on its first line",
                token_file.display()
            ));
        }
        return Ok(Some(first.to_string()));
    }
    let t = token.trim();
    Ok((!t.is_empty()).then(|| t.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_file_wins_and_an_empty_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "from-file\nignored\n").unwrap();
        assert_eq!(
            load_token("inline", &f).unwrap().as_deref(),
            Some("from-file")
        );
        assert_eq!(
            load_token(" inline ", Path::new("")).unwrap().as_deref(),
            Some("inline")
        );
        assert_eq!(load_token("", Path::new("")).unwrap(), None);
        std::fs::write(&f, "\n").unwrap();
        let e = load_token("inline", &f).unwrap_err();
        assert!(e.contains("no token"), "{e}");
        let e = load_token("", &dir.path().join("missing")).unwrap_err();
        assert!(e.contains("cannot read console.token_file"), "{e}");
    }
}
