//! Narralytica Orchestrator (layout map is filled in as modules land).
pub mod pipeline;
pub mod storage;
pub mod workflow;
