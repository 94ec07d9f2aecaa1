use super::*;
use crate::protocol::trace::{span_id, trace_id};

#[test]
fn endpoints_parse_with_defaults_and_bad_ones_are_refused() {
    let url = |text: &str| OtlpEndpoint::parse(text).unwrap().url.to_string();
    assert_eq!(
        url("http://127.0.0.1:4318"),
        "http://127.0.0.1:4318/v1/traces"
    );
    assert_eq!(
        url("http://collector/otlp/"),
        "http://collector:4318/otlp/v1/traces"
    );
    assert_eq!(url("HTTP://[::1]:9999/"), "http://[::1]:9999/v1/traces");
    assert_eq!(url("https://collector"), "https://collector:4318/v1/traces");
    // A port equal to the scheme's default is kept as written.
    assert_eq!(url("http://collector:80"), "http://collector/v1/traces");
    assert_eq!(
        url("https://collector:443/base"),
        "https://collector/base/v1/traces"
    );
    for bad in [
        "",
        "collector:4318",
        "ftp://collector",
        "http://",
        "http://host:0",
        "http://host:99999",
        "http://host:1/x?y",
        "http://host:1/x#y",
        "http://[::1:1",
    ] {
        assert!(OtlpEndpoint::parse(bad).is_err(), "{bad:?}");
    }
    // Credentials in the URL are refused, and the error points to headers.
    let err = OtlpEndpoint::parse("https://user:hunter2@collector").unwrap_err();
    assert!(err.contains("trace.headers"), "{err}");
}

#[test]
fn headers_parse_percent_decoded_and_never_print_their_values() {
    let h = OtlpHeaders::parse("Authorization=Bearer%20s3cret, api-key = k%2C1 ,,").unwrap();
    assert_eq!(h.names(), ["authorization", "api-key"]);
    let map = h.to_map();
    assert_eq!(map["authorization"], "Bearer s3cret");
    assert_eq!(map["api-key"], "k,1");
    assert!(map["authorization"].is_sensitive());
    let shown = format!("{h:?}");
    assert!(
        !shown.contains("s3cret") && !shown.contains("k,1"),
        "{shown}"
    );
    assert!(shown.contains("authorization"), "{shown}");
    let cfg = OtlpConfig {
        headers: h,
        ..Default::default()
    };
    assert!(!format!("{cfg:?}").contains("s3cret"));
    assert!(OtlpHeaders::parse("").unwrap().is_empty());
    // Errors name the entry or header, never the value.
    for (bad, shown) in [
        ("Bearer s3cret", "entry 1"),
        ("a=1,bad name=s3cret", "\"bad name\""),
        ("x-key=s3cret%0A", "\"x-key\""),
        ("x-key=%FF%FEs3cret", "\"x-key\""),
    ] {
        let err = OtlpHeaders::parse(bad).unwrap_err();
        assert!(err.contains(shown), "{bad:?}: {err}");
        assert!(!err.contains("s3cret"), "{bad:?}: {err}");
    }
}

#[test]
fn compression_names_parse() {
    assert_eq!("gzip".parse(), Ok(Compression::Gzip));
    assert_eq!("none".parse(), Ok(Compression::None));
    assert_eq!("".parse(), Ok(Compression::None));
    assert!("zstd".parse::<Compression>().is_err());
}

#[test]
fn requests_follow_the_otlp_json_mapping() {
    let span = SpanRecord {
        workflow_id: "v-1".into(),
        span_key: "v-1:ingest:0:1".into(),
        parent_key: Some(workflow_span_key("v-1", 0)),
        name: "ingest".into(),
        kind: SpanKind::Producer,
        start_ms: 1_700_000_000_000,
        end_ms: 1_700_000_000_250,
        attributes: vec![
            ("task.attempt", 1u32.into()),
            ("task.step", "ingest".into()),
        ],
        events: vec![("started", 1_700_000_000_010)],
        status: SpanStatus::Error("boom".into()),
    };
    let body = encode_request("svc", std::slice::from_ref(&span));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let rs = &v["resourceSpans"][0];
    assert_eq!(rs["resource"]["attributes"][0]["key"], "service.name");
    assert_eq!(
        rs["resource"]["attributes"][0]["value"]["stringValue"],
        "svc"
    );
    let s = &rs["scopeSpans"][0]["spans"][0];
    assert_eq!(s["traceId"], trace_id("v-1"));
    assert_eq!(s["spanId"], span_id("v-1:ingest:0:1"));
    assert_eq!(s["parentSpanId"], span_id("v-1/workflow"));
    assert_eq!(s["kind"], 4);
    assert_eq!(s["startTimeUnixNano"], "1700000000000000000");
    assert_eq!(s["endTimeUnixNano"], "1700000000250000000");
    assert_eq!(s["attributes"][0]["value"]["intValue"], "1");
    assert_eq!(s["attributes"][1]["value"]["stringValue"], "ingest");
    assert_eq!(s["events"][0]["name"], "started");
    assert_eq!(s["status"]["code"], 2);
    assert_eq!(s["status"]["message"], "boom");
}

#[test]
fn partial_success_counts_rejected_spans() {
    use encode::rejected_spans;
    assert_eq!(rejected_spans(b"{}"), 0);
    assert_eq!(rejected_spans(b""), 0);
    assert_eq!(
        rejected_spans(br#"{"partialSuccess":{"rejectedSpans":"3"}}"#),
        3
    );
    assert_eq!(
        rejected_spans(br#"{"partialSuccess":{"rejectedSpans":2}}"#),
        2
    );
}
