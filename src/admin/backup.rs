//! `backup`: a checkpoint of the live store on the orchestrator's host.

use serde::{Deserialize, Serialize};

use super::{code, AdminError};
use crate::engine::Engine;
use crate::protocol::VERSION;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupRequest {
    pub v: u32,
    /// A new directory under the orchestrator's backup root: relative to
    /// it, or an absolute path inside it.
    pub to: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct BackupReply {
    pub v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl From<crate::backup::BackupError> for AdminError {
    fn from(e: crate::backup::BackupError) -> Self {
        use crate::backup::BackupError as B;
        let c = match &e {
            B::BadTarget(_) => code::BAD_REQUEST,
            B::Unsupported(_) => code::UNSUPPORTED,
            B::Failed(_) => code::BACKUP_FAILED,
        };
        AdminError::new(c, e.to_string())
    }
}

pub(super) async fn backup(r: BackupRequest, engine: &Engine) -> Result<BackupReply, AdminError> {
    let report = engine
        .checkpoint(std::path::Path::new(&r.to))
        .await
        .map_err(AdminError::from)?;
    tracing::info!(path = %report.path.display(), files = report.files, bytes = report.bytes,
        took_ms = report.took_ms, "backup written");
    Ok(BackupReply {
        v: VERSION,
        path: Some(report.path.display().to_string()),
        files: Some(report.files),
        bytes: Some(report.bytes),
        took_ms: Some(report.took_ms),
        ..BackupReply::default()
    })
}
