//! The value of a status-index entry.

use serde::{Deserialize, Serialize};

/// Value of a status-index entry: enough to list workflows without loading
/// them. Written with every status change, in the transition's batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusEntry {
    /// The pipeline's name.
    pub pipeline: String,
    /// When the workflow started (unix ms).
    pub created_at_ms: u64,
    /// When it entered its current status (unix ms).
    pub updated_at_ms: u64,
}
