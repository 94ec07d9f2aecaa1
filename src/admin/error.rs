//! Admin failures: the stable error codes, the error reply and how every
//! reply is encoded.

use serde::{Deserialize, Serialize};

use crate::protocol::VERSION;

/// Stable machine-readable error classes (`code` of an error reply).
pub mod code {
    pub const BAD_REQUEST: &str = "bad_request";
    pub const UNKNOWN_WORKFLOW: &str = "unknown_workflow";
    pub const UNKNOWN_PIPELINE: &str = "unknown_pipeline";
    /// `start --pipeline-version N` where N is not registered.
    pub const UNKNOWN_PIPELINE_VERSION: &str = "unknown_pipeline_version";
    /// `pipelines.reload`: a file does not parse or validate.
    pub const INVALID_PIPELINE: &str = "invalid_pipeline";
    /// `pipelines.reload`: a definition changed without a new version.
    pub const PIPELINE_CHANGED: &str = "pipeline_changed";
    pub const UNKNOWN_STEP: &str = "unknown_step";
    pub const ILLEGAL_TRANSITION: &str = "illegal_transition";
    pub const UNKNOWN_JOB: &str = "unknown_job";
    /// `signal` to a completed, failed or cancelled workflow.
    pub const WORKFLOW_TERMINAL: &str = "workflow_terminal";
    pub const UNAVAILABLE: &str = "unavailable";
    /// `backup` on a storage that cannot checkpoint (never in `run`).
    pub const UNSUPPORTED: &str = "unsupported";
    /// `backup`: RocksDB or the filesystem failed while checkpointing.
    pub const BACKUP_FAILED: &str = "backup_failed";
}

/// An error reply; it parses as any reply type above (all their other fields default).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorReply {
    pub v: u32,
    pub error: String,
    pub code: String,
}

/// An admin failure: a message and its [`code`].
#[derive(Debug, Clone, PartialEq)]
pub struct AdminError {
    pub code: &'static str,
    pub message: String,
}

impl AdminError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        AdminError {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self::new(code::BAD_REQUEST, message)
    }
}

impl From<crate::engine::Error> for AdminError {
    fn from(e: crate::engine::Error) -> Self {
        use crate::engine::Error as E;
        match e {
            E::Rejected(m) => AdminError::new(code::BAD_REQUEST, m),
            e @ E::UnknownWorkflow(_) => AdminError::new(code::UNKNOWN_WORKFLOW, e.to_string()),
            other => AdminError::new(code::UNAVAILABLE, other.to_string()),
        }
    }
}

pub(crate) fn encode<T: Serialize>(r: Result<T, AdminError>) -> Vec<u8> {
    let body = match r {
        Ok(reply) => serde_json::to_vec(&reply),
        Err(e) => serde_json::to_vec(&ErrorReply {
            v: VERSION,
            error: e.message,
            code: e.code.to_string(),
        }),
    };
    body.unwrap_or_else(|e| {
        format!(r#"{{"v":1,"error":"cannot encode reply: {e}","code":"internal"}}"#).into_bytes()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{BatchReply, HistoryReply, ListReply, WorkflowReply};

    #[test]
    fn an_error_reply_parses_as_every_reply_type() {
        let body = encode::<()>(Err(AdminError::new(code::UNKNOWN_JOB, "unknown job x")));
        let w: WorkflowReply = serde_json::from_slice(&body).unwrap();
        assert_eq!(w.error.as_deref(), Some("unknown job x"));
        assert_eq!(w.code.as_deref(), Some("unknown_job"));
        let b: BatchReply = serde_json::from_slice(&body).unwrap();
        assert!(b.job.is_none());
        let l: ListReply = serde_json::from_slice(&body).unwrap();
        assert!(l.workflows.is_empty());
        let h: HistoryReply = serde_json::from_slice(&body).unwrap();
        assert!(h.events.is_empty());
    }
}
