//! The OTLP exporter's transport as a collector sees it: configured headers
//! (credentials) on every request, gzip bodies, and https to a collector
//! whose certificate is signed by a CA made in the test.

use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use orchestrator::engine::Metrics;
use orchestrator::otel::{
    Compression, OtlpConfig, OtlpExporter, OtlpHeaders, SpanKind, SpanRecord, SpanSink, SpanStatus,
};

use crate::support::secure::Pki;

/// One request as the collector got it: its headers and its body, gunzipped
/// when `Content-Encoding: gzip` says so, as JSON.
struct Got {
    headers: hyper::HeaderMap,
    json: Value,
}

/// A loopback OTLP/HTTP collector on hyper, over TLS when `tls` is given;
/// answers `200 {}` to each request it could read.
async fn collector(tls: Option<TlsAcceptor>) -> (u16, Arc<Mutex<Vec<Got>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let record = got.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (tls, record) = (tls.clone(), record.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let record = record.clone();
                    async move {
                        let headers = req.headers().clone();
                        let body = req.into_body().collect().await?.to_bytes();
                        let gzipped = headers.get("content-encoding").is_some_and(|v| v == "gzip");
                        let json = if gzipped {
                            let mut text = Vec::new();
                            flate2::read::GzDecoder::new(&body[..])
                                .read_to_end(&mut text)
                                .expect("a gzip body");
                            serde_json::from_slice(&text).expect("JSON inside the gzip")
                        } else {
                            serde_json::from_slice(&body).expect("a JSON body")
                        };
                        record.lock().push(Got { headers, json });
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(b"{}"))))
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(acceptor) => {
                        // A failed handshake (an untrusted client) just ends.
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                    }
                }
            });
        }
    });
    (port, got)
}

fn tls_acceptor(pki: &Pki) -> TlsAcceptor {
    let certs = CertificateDer::pem_file_iter(pki.path("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.path("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

fn span(i: usize) -> SpanRecord {
    SpanRecord {
        workflow_id: format!("wf-{i}"),
        span_key: format!("wf-{i}/workflow"),
        parent_key: None,
        name: "video".into(),
        kind: SpanKind::Internal,
        start_ms: 1_700_000_000_000,
        end_ms: 1_700_000_000_100,
        attributes: vec![("workflow.id", format!("wf-{i}").into())],
        events: Vec::new(),
        status: SpanStatus::Ok,
    }
}

/// Exports `n` spans with `cfg` and waits for the flush; returns the metrics.
async fn export(cfg: OtlpConfig, n: usize) -> Arc<Metrics> {
    let metrics = Arc::new(Metrics::default());
    let exporter = OtlpExporter::start(cfg, metrics.clone()).expect("exporter starts");
    for i in 0..n {
        exporter.submit(span(i));
    }
    assert!(exporter.flush(Duration::from_secs(20)).await, "flushed");
    metrics
}

fn exported_ids(got: &[Got]) -> Vec<String> {
    let mut ids = Vec::new();
    for g in got {
        for rs in g.json["resourceSpans"].as_array().unwrap() {
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for s in ss["spans"].as_array().unwrap() {
                    ids.push(
                        s["attributes"][0]["value"]["stringValue"]
                            .as_str()
                            .unwrap()
                            .to_owned(),
                    );
                }
            }
        }
    }
    ids.sort();
    ids
}

fn config(endpoint: String) -> OtlpConfig {
    OtlpConfig {
        endpoint,
        batch_max: 4,
        timeout: Duration::from_secs(5),
        attempts: 1,
        ..OtlpConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_carry_the_configured_headers_and_gzip_bodies() {
    let (port, got) = collector(None).await;
    let cfg = OtlpConfig {
        headers: OtlpHeaders::parse("Authorization=Bearer%20t0ken,x-tenant=acme").unwrap(),
        compression: Compression::Gzip,
        ..config(format!("http://127.0.0.1:{port}"))
    };
    let metrics = export(cfg, 10).await;
    assert_eq!(Metrics::get(&metrics.spans_exported), 10);
    assert_eq!(Metrics::get(&metrics.spans_failed), 0);
    let got = got.lock();
    // Ten spans in batches of at most four: at least three requests, each
    // with the headers and a gzip body.
    assert!(got.len() >= 3, "{} requests", got.len());
    for g in got.iter() {
        assert_eq!(g.headers["authorization"], "Bearer t0ken");
        assert_eq!(g.headers["x-tenant"], "acme");
        assert_eq!(g.headers["content-encoding"], "gzip");
        assert_eq!(g.headers["content-type"], "application/json");
    }
    let want: Vec<String> = {
        let mut ids: Vec<String> = (0..10).map(|i| format!("wf-{i}")).collect();
        ids.sort();
        ids
    };
    assert_eq!(exported_ids(&got), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncompressed_bodies_have_no_content_encoding() {
    let (port, got) = collector(None).await;
    let metrics = export(config(format!("http://127.0.0.1:{port}")), 3).await;
    assert_eq!(Metrics::get(&metrics.spans_exported), 3);
    let got = got.lock();
    assert!(got
        .iter()
        .all(|g| g.headers.get("content-encoding").is_none()));
    assert!(got.iter().all(|g| g.headers.get("authorization").is_none()));
    assert_eq!(exported_ids(&got).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_over_https_to_a_collector_signed_by_the_configured_ca() {
    let pki = Pki::new();
    let (port, got) = collector(Some(tls_acceptor(&pki))).await;
    let endpoint = format!("https://127.0.0.1:{port}");

    // Trusting the test CA: every span arrives, with its headers.
    let cfg = OtlpConfig {
        ca_file: Some(pki.path("ca.pem")),
        headers: OtlpHeaders::parse("api-key=s3cret").unwrap(),
        ..config(endpoint.clone())
    };
    let metrics = export(cfg, 5).await;
    assert_eq!(Metrics::get(&metrics.spans_exported), 5);
    assert_eq!(exported_ids(&got.lock()).len(), 5);
    assert!(got.lock().iter().all(|g| g.headers["api-key"] == "s3cret"));

    // With the system's roots only, the test CA is unknown: the handshake
    // fails, nothing reaches the collector and the spans count as failed.
    got.lock().clear();
    let metrics = export(config(endpoint), 5).await;
    assert_eq!(Metrics::get(&metrics.spans_exported), 0);
    assert_eq!(Metrics::get(&metrics.spans_failed), 5);
    assert!(got.lock().is_empty());
}

#[test]
fn a_bad_ca_file_is_refused_at_start_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for path in [not_pem, dir.path().join("missing.pem")] {
        let cfg = OtlpConfig {
            ca_file: Some(path.clone()),
            ..config("https://127.0.0.1:4318".into())
        };
        let err = rt
            .block_on(async { OtlpExporter::start(cfg, Arc::new(Metrics::default())).err() })
            .expect("refused");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}
