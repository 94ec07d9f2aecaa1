//! `pipelines.reload`: the pipeline directory read again without a restart
//! (the same as SIGHUP to `orchestrator run`).

use serde::{Deserialize, Serialize};

use super::{code, AdminError};
use crate::engine::registry::{ReloadError, ReloadReport};
use crate::engine::Engine;
use crate::protocol::VERSION;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelinesReloadRequest {
    pub v: u32,
}

/// One registered version of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineVersionView {
    pub name: String,
    pub version: u32,
    /// Content hash of the definition, 16 hex digits.
    pub hash: String,
    /// The highest version of its name: what a start without a version gets.
    pub current: bool,
    /// Registered by this reload.
    pub added: bool,
}

/// A version no longer startable (its file is gone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedVersionView {
    pub name: String,
    pub version: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PipelinesReloadReply {
    pub v: u32,
    /// Every registered version, by name then version.
    #[serde(default)]
    pub pipelines: Vec<PipelineVersionView>,
    #[serde(default)]
    pub removed: Vec<RemovedVersionView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl From<ReloadError> for AdminError {
    fn from(e: ReloadError) -> Self {
        let c = match &e {
            ReloadError::Invalid(_) => code::INVALID_PIPELINE,
            ReloadError::Changed(_) => code::PIPELINE_CHANGED,
            ReloadError::NoSource => code::UNSUPPORTED,
            ReloadError::Storage(_) => code::UNAVAILABLE,
        };
        AdminError::new(c, crate::protocol::one_line(e.to_string()))
    }
}

impl From<ReloadReport> for PipelinesReloadReply {
    fn from(r: ReloadReport) -> Self {
        PipelinesReloadReply {
            v: VERSION,
            pipelines: r
                .registered
                .into_iter()
                .map(|p| PipelineVersionView {
                    name: p.name,
                    version: p.version,
                    hash: format!("{:016x}", p.hash),
                    current: p.current,
                    added: p.added,
                })
                .collect(),
            removed: r
                .removed
                .into_iter()
                .map(|(name, version)| RemovedVersionView { name, version })
                .collect(),
            ..PipelinesReloadReply::default()
        }
    }
}

pub(super) async fn reload(engine: &Engine) -> Result<PipelinesReloadReply, AdminError> {
    let ctx = engine.ctx();
    let report = ctx.pipelines.reload(&ctx.committer).await.map_err(|e| {
        tracing::warn!(error = %e, "pipelines not reloaded");
        AdminError::from(e)
    })?;
    log_reload(&report);
    Ok(report.into())
}

/// One log line per reload that took effect.
pub fn log_reload(report: &ReloadReport) {
    let added: Vec<String> = report
        .registered
        .iter()
        .filter(|p| p.added)
        .map(|p| format!("{}@{}", p.name, p.version))
        .collect();
    let removed: Vec<String> = report
        .removed
        .iter()
        .map(|(n, v)| format!("{n}@{v}"))
        .collect();
    tracing::info!(
        registered = report.registered.len(),
        added = %added.join(","),
        removed = %removed.join(","),
        "pipelines reloaded"
    );
}
