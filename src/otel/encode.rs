//! The OTLP JSON encoding of span batches (opentelemetry-proto's JSON
//! mapping: camelCase names, hex trace and span ids, 64-bit integers as
//! strings, enums as numbers) and the reading of the collector's answer.

use serde::Serialize;

use super::{AttrValue, SpanRecord, SpanStatus};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExportRequest<'a> {
    resource_spans: [ResourceSpans<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpans<'a> {
    resource: Resource<'a>,
    scope_spans: [ScopeSpans<'a>; 1],
}

#[derive(Serialize)]
struct Resource<'a> {
    attributes: Vec<KeyValue<'a>>,
}

#[derive(Serialize)]
struct ScopeSpans<'a> {
    scope: Scope,
    spans: Vec<Span<'a>>,
}

#[derive(Serialize)]
struct Scope {
    name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Span<'a> {
    trace_id: String,
    span_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_span_id: Option<String>,
    name: &'a str,
    kind: u8,
    start_time_unix_nano: String,
    end_time_unix_nano: String,
    attributes: Vec<KeyValue<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    events: Vec<SpanEvent>,
    status: Status<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SpanEvent {
    time_unix_nano: String,
    name: &'static str,
}

#[derive(Serialize)]
struct Status<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    code: u8,
}

#[derive(Serialize)]
struct KeyValue<'a> {
    key: &'a str,
    value: AnyValue<'a>,
}

#[derive(Serialize)]
enum AnyValue<'a> {
    #[serde(rename = "stringValue")]
    Str(&'a str),
    #[serde(rename = "intValue")]
    Int(String),
}

fn nanos(ms: u64) -> String {
    (u128::from(ms) * 1_000_000).to_string()
}

fn kv<'a>(key: &'a str, v: &'a AttrValue) -> KeyValue<'a> {
    KeyValue {
        key,
        value: match v {
            AttrValue::Str(s) => AnyValue::Str(s),
            AttrValue::Int(n) => AnyValue::Int(n.to_string()),
        },
    }
}

/// The body of one `POST /v1/traces` (an `ExportTraceServiceRequest` as JSON).
pub fn encode_request(service_name: &str, spans: &[SpanRecord]) -> Vec<u8> {
    let service = AttrValue::Str(service_name.to_owned());
    let version = AttrValue::Str(env!("CARGO_PKG_VERSION").to_owned());
    let req = ExportRequest {
        resource_spans: [ResourceSpans {
            resource: Resource {
                attributes: vec![
                    kv("service.name", &service),
                    kv("service.version", &version),
                ],
            },
            scope_spans: [ScopeSpans {
                scope: Scope {
                    name: "narralytica-orchestrator",
                    version: env!("CARGO_PKG_VERSION"),
                },
                spans: spans
                    .iter()
                    .map(|s| {
                        let (code, message) = match &s.status {
                            SpanStatus::Unset => (0, ""),
                            SpanStatus::Ok => (1, ""),
                            SpanStatus::Error(m) => (2, m.as_str()),
                        };
                        Span {
                            trace_id: s.trace_id(),
                            span_id: s.span_id(),
                            parent_span_id: s.parent_span_id(),
                            name: &s.name,
                            kind: s.kind.code(),
                            start_time_unix_nano: nanos(s.start_ms),
                            end_time_unix_nano: nanos(s.end_ms.max(s.start_ms)),
                            attributes: s.attributes.iter().map(|(k, v)| kv(k, v)).collect(),
                            events: s
                                .events
                                .iter()
                                .map(|(name, at)| SpanEvent {
                                    time_unix_nano: nanos(*at),
                                    name,
                                })
                                .collect(),
                            status: Status { message, code },
                        }
                    })
                    .collect(),
            }],
        }],
    };
    serde_json::to_vec(&req).unwrap_or_default()
}

/// `partialSuccess.rejectedSpans` of an OTLP JSON answer, 0 when absent.
pub(super) fn rejected_spans(body: &[u8]) -> u64 {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return 0;
    };
    match v.pointer("/partialSuccess/rejectedSpans") {
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}
