//! Span records: what the engine builds after each commit that finishes a
//! span, and the sink it hands them to. A leaf, so the engine does not
//! depend on the OTLP exporter (`crate::otel`) that implements the sink.

use crate::protocol::trace::{span_id, trace_id};

/// An attribute value: OTLP `stringValue` or `intValue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
}

impl From<&str> for AttrValue {
    fn from(s: &str) -> Self {
        AttrValue::Str(s.to_owned())
    }
}

impl From<String> for AttrValue {
    fn from(s: String) -> Self {
        AttrValue::Str(s)
    }
}

impl From<u32> for AttrValue {
    fn from(n: u32) -> Self {
        AttrValue::Int(i64::from(n))
    }
}

impl From<u64> for AttrValue {
    fn from(n: u64) -> Self {
        AttrValue::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

/// OTLP span kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Internal,
    Producer,
}

impl SpanKind {
    /// The OTLP enum value.
    pub fn code(self) -> u8 {
        match self {
            SpanKind::Internal => 1,
            SpanKind::Producer => 4,
        }
    }
}

/// OTLP span status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanStatus {
    Unset,
    Ok,
    Error(String),
}

/// One finished span, as the engine sees it. Ids are kept as the strings
/// they are derived from and hashed by the exporter, off the engine's path.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    pub workflow_id: String,
    /// Hashed into the span id: a task id, or `<workflow id>/workflow[/<generation>]`.
    pub span_key: String,
    /// The parent's key; `None` for a root span.
    pub parent_key: Option<String>,
    pub name: String,
    pub kind: SpanKind,
    pub start_ms: u64,
    pub end_ms: u64,
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// Timed events inside the span (name, unix ms), e.g. `started`.
    pub events: Vec<(&'static str, u64)>,
    pub status: SpanStatus,
}

impl SpanRecord {
    pub fn trace_id(&self) -> String {
        trace_id(&self.workflow_id)
    }
    pub fn span_id(&self) -> String {
        span_id(&self.span_key)
    }
    pub fn parent_span_id(&self) -> Option<String> {
        self.parent_key.as_deref().map(span_id)
    }
}

/// The span key of a workflow generation's root span.
pub fn workflow_span_key(workflow_id: &str, generation: u32) -> String {
    if generation == 0 {
        format!("{workflow_id}/workflow")
    } else {
        format!("{workflow_id}/workflow/{generation}")
    }
}

/// Where the engine puts finished spans. Must not block: it is called on
/// the engine's path after every commit that finishes a span.
pub trait SpanSink: Send + Sync {
    fn submit(&self, span: SpanRecord);
}
