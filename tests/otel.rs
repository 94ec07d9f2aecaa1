//! Logs and traces: structured log fields, spans exported over OTLP/HTTP
//! (JSON) to a fake collector, and a dead or stalled collector never
//! holding the engine up.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use orchestrator::engine::Metrics;
use orchestrator::otel::OtlpConfig;
use orchestrator::protocol::trace::{span_id, task_traceparent, trace_id, TraceParent};
use orchestrator::sim::SimConfig;
use orchestrator::storage::memory::MemoryStorage;
use orchestrator::workflow::Status;

use crate::support::{video_input, Harness, Options};

fn sim(fail_rate: f64, otlp: Option<OtlpConfig>) -> Options {
    Options {
        sim: SimConfig {
            fail_rate,
            seed: 7,
            ..SimConfig::default()
        },
        otlp,
        ..Options::default()
    }
}

fn otlp(endpoint: String) -> OtlpConfig {
    OtlpConfig {
        endpoint,
        flush_every: Duration::from_millis(20),
        batch_max: 64,
        ..OtlpConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Logs

/// Logs as a user gets them: the real binary with `--log-format json`. (In
/// this test binary a thread-scoped subscriber is unreliable: tracing's
/// per-callsite interest cache is process-wide and races with the other
/// tests' subscribers, which once lost every `workflow finished` line.)
/// On version 1 of the video pipeline: every attempt is a step's task
/// (map elements get no `task dispatched` or `task succeeded` lines).
#[test]
fn log_lines_carry_workflow_step_and_attempt_as_json_fields() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "dev",
            "--pipelines",
            "tests/fixtures/pipelines",
            "--workflows",
            "3",
            "--fail-rate",
            "0.3",
            "--exit-when-done",
        ])
        .args(["--log-format", "json", "--log-level", "orchestrator=debug"])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // `tasks=` of the summary: attempts sent to workers.
    let dispatched: u64 = stdout
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("tasks="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no tasks= in {stdout}"));
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let with_msg = |m: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| {
                l["message"] == m
                    && l["workflow_id"]
                        .as_str()
                        .is_some_and(|w| w.starts_with("dev-"))
            })
            .collect()
    };
    // One info line per terminal transition, with the workflow's fields.
    let finished = with_msg("workflow finished");
    assert_eq!(finished.len(), 3, "{text}");
    for l in &finished {
        assert_eq!(l["level"], "INFO");
        assert_eq!(l["status"], "completed");
        assert_eq!(l["pipeline"], "video");
        assert!(l["duration_ms"].is_u64(), "{l}");
    }
    // One debug line per dispatch and per result, each with step, attempt and task id.
    let sent = with_msg("task dispatched");
    assert_eq!(sent.len() as u64, dispatched, "{text}");
    let failed = with_msg("task failed");
    assert!(!failed.is_empty(), "fail rate 0.3 must fail some attempts");
    let results: Vec<&Value> = with_msg("task succeeded")
        .into_iter()
        .chain(failed)
        .collect();
    assert_eq!(results.len() as u64, dispatched);
    let mut seen = BTreeSet::new();
    for l in sent.iter().chain(results.iter()) {
        assert_eq!(l["level"], "DEBUG");
        let wf = l["workflow_id"].as_str().unwrap();
        let step = l["step"].as_str().expect("step field");
        let attempt = l["attempt"].as_u64().expect("attempt field");
        assert!(attempt >= 1);
        assert_eq!(
            l["task_id"].as_str().expect("task_id field"),
            format!("{wf}:{step}:0:{attempt}"),
            "{l}"
        );
        seen.insert(step.to_string());
    }
    assert!(
        seen.contains("ingest") && seen.contains("index"),
        "{seen:?}"
    );
}

// ---------------------------------------------------------------------------
// Traces

/// What the fake collector received: each request's line, content type and JSON body.
#[derive(Default)]
struct Received {
    requests: Vec<(String, String, Value)>,
}

/// A fake OTLP/HTTP collector: parses each POST (keep-alive), answers `200 {}`.
async fn collector() -> (String, Arc<Mutex<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Received::default()));
    let g = got.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let g = g.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i;
                        }
                        let mut chunk = [0u8; 65536];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    buf.drain(..head_end + 4);
                    let mut lines = head.split("\r\n");
                    let request_line = lines.next().unwrap_or_default().to_string();
                    let mut length = 0usize;
                    let mut content_type = String::new();
                    for l in lines {
                        if let Some((k, v)) = l.split_once(':') {
                            match k.trim().to_ascii_lowercase().as_str() {
                                "content-length" => length = v.trim().parse().unwrap(),
                                "content-type" => content_type = v.trim().to_string(),
                                _ => {}
                            }
                        }
                    }
                    while buf.len() < length {
                        let mut chunk = [0u8; 65536];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body: Vec<u8> = buf.drain(..length).collect();
                    let json: Value = serde_json::from_slice(&body).expect("body is JSON");
                    g.lock().requests.push((request_line, content_type, json));
                    let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), got)
}

/// Every span received, flattened, with its attributes as a map.
fn spans(got: &Received) -> Vec<(Value, BTreeMap<String, Value>)> {
    let mut out = Vec::new();
    for (_, _, body) in &got.requests {
        for rs in body["resourceSpans"].as_array().unwrap() {
            assert_eq!(
                rs["resource"]["attributes"][0],
                serde_json::json!({"key": "service.name", "value": {"stringValue": "narralytica-orchestrator"}})
            );
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for s in ss["spans"].as_array().unwrap() {
                    let attrs = s["attributes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|kv| {
                            let v = &kv["value"];
                            let v = v
                                .get("stringValue")
                                .or_else(|| v.get("intValue"))
                                .cloned()
                                .unwrap();
                            (kv["key"].as_str().unwrap().to_string(), v)
                        })
                        .collect();
                    out.push((s.clone(), attrs));
                }
            }
        }
    }
    out
}

fn nanos(v: &Value) -> u128 {
    v.as_str().expect("a string").parse().expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_workflow_is_one_trace_with_a_span_per_task_attempt() {
    let (endpoint, got) = collector().await;
    let h = Harness::start(
        Arc::new(MemoryStorage::new()),
        sim(0.3, Some(otlp(endpoint))),
    )
    .await;
    let id = "traced-1";
    h.engine
        .start_workflow("video", id, &video_input(id))
        .await
        .unwrap();
    h.wait_terminal(1, Duration::from_secs(30)).await;
    let exporter = h.exporter.clone().unwrap();
    assert!(exporter.flush(Duration::from_secs(10)).await);
    let attempts = Metrics::get(&h.metrics.tasks_dispatched);
    let wf = h.engine.describe(id).await.unwrap().unwrap();
    assert_eq!(wf.status, Status::Completed);
    assert!(attempts > 9, "fail rate 0.3 must retry some of the 9 steps");

    let got = Received {
        requests: std::mem::take(&mut got.lock().requests),
    };
    for (line, ct, _) in &got.requests {
        assert_eq!(line, "POST /v1/traces HTTP/1.1");
        assert_eq!(ct, "application/json");
    }
    let spans = spans(&got);
    assert_eq!(
        spans.len() as u64,
        attempts + 1,
        "one span per attempt + the workflow's"
    );
    assert_eq!(Metrics::get(&h.metrics.spans_exported), attempts + 1);
    assert_eq!(Metrics::get(&h.metrics.spans_dropped), 0);
    assert_eq!(Metrics::get(&h.metrics.spans_failed), 0);

    let trace = trace_id(id);
    let root_id = span_id(&format!("{id}/workflow"));
    let roots: Vec<_> = spans
        .iter()
        .filter(|(s, _)| s.get("parentSpanId").is_none())
        .collect();
    assert_eq!(roots.len(), 1);
    let (root, rattrs) = roots[0];
    assert_eq!(root["traceId"], trace);
    assert_eq!(root["spanId"], root_id);
    assert_eq!(root["name"], "workflow video");
    assert_eq!(root["status"]["code"], 1);
    assert_eq!(rattrs["workflow.id"], id);
    assert_eq!(rattrs["workflow.status"], "completed");
    assert_eq!(rattrs["workflow.pipeline"], "video");
    let (rstart, rend) = (
        nanos(&root["startTimeUnixNano"]),
        nanos(&root["endTimeUnixNano"]),
    );
    assert!(rstart <= rend);
    assert_eq!(rstart, u128::from(wf.created_at_ms) * 1_000_000);

    let mut per_step: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (s, a) in spans
        .iter()
        .filter(|(s, _)| s.get("parentSpanId").is_some())
    {
        assert_eq!(s["traceId"], trace);
        assert_eq!(s["parentSpanId"], root_id);
        let task_id = a["task.id"].as_str().unwrap();
        // The span is the one the task's traceparent named: workers' spans join it.
        let tp = TraceParent::parse(&task_traceparent(id, task_id)).unwrap();
        assert_eq!(s["spanId"], tp.parent_id);
        assert_eq!(s["traceId"], tp.trace_id);
        let (start, end) = (nanos(&s["startTimeUnixNano"]), nanos(&s["endTimeUnixNano"]));
        assert!(rstart <= start && start <= end && end <= rend, "{s}");
        let step = a["task.step"].as_str().unwrap();
        assert_eq!(s["name"], step);
        assert_eq!(a["workflow.id"], id);
        assert_eq!(a["task.worker"], "sim-0");
        let attempt: u64 = a["task.attempt"].as_str().unwrap().parse().unwrap();
        assert_eq!(task_id, format!("{id}:{step}:0:{attempt}"));
        match a["task.outcome"].as_str().unwrap() {
            "succeeded" => assert_eq!(s["status"]["code"], 1),
            "failed" => {
                assert_eq!(s["status"]["code"], 2);
                assert!(a.contains_key("task.error.message"), "{a:?}");
            }
            other => panic!("unexpected outcome {other}"),
        }
        per_step.entry(step.to_string()).or_default().push(attempt);
    }
    assert_eq!(per_step.len(), 9, "{per_step:?}");
    for (step, mut a) in per_step {
        a.sort_unstable();
        let n = a.len() as u64;
        assert_eq!(a, (1..=n).collect::<Vec<_>>(), "attempts of {step}");
    }
    h.stop().await;
}

async fn run_with_bad_collector(endpoint: String, queue_max: usize) -> (Metrics, u64) {
    let cfg = OtlpConfig {
        endpoint,
        queue_max,
        batch_max: 16,
        flush_every: Duration::from_millis(10),
        timeout: Duration::from_millis(200),
        attempts: 2,
        ..OtlpConfig::default()
    };
    let h = Harness::start(Arc::new(MemoryStorage::new()), sim(0.0, Some(cfg))).await;
    let began = std::time::Instant::now();
    let items: Vec<(String, String)> = (0..200)
        .map(|i| {
            let id = format!("dark-{i}");
            let input = video_input(&id);
            (id, input)
        })
        .collect();
    h.engine.accept_many("video", items).await.unwrap();
    h.engine.release_held();
    // The engine runs at its own pace: export trouble never blocks it.
    h.wait_terminal(200, Duration::from_secs(30)).await;
    let took = began.elapsed();
    assert_eq!(Metrics::get(&h.metrics.workflows_completed), 200);
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let exporter = h.exporter.clone().unwrap();
    assert!(exporter.flush(Duration::from_secs(20)).await);
    let m = &h.metrics;
    let spans = Metrics::get(&m.tasks_dispatched) + 200;
    let out = Metrics::default();
    for (to, from) in [
        (&out.spans_exported, &m.spans_exported),
        (&out.spans_dropped, &m.spans_dropped),
        (&out.spans_failed, &m.spans_failed),
    ] {
        to.store(Metrics::get(from), std::sync::atomic::Ordering::Relaxed);
    }
    h.stop().await;
    (out, spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_does_not_hold_the_engine_and_spans_are_counted() {
    // A port nobody listens on: every connect is refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (m, spans) = run_with_bad_collector(format!("http://127.0.0.1:{port}"), 65_536).await;
    assert_eq!(Metrics::get(&m.spans_exported), 0);
    assert_eq!(
        Metrics::get(&m.spans_dropped) + Metrics::get(&m.spans_failed),
        spans,
        "every span is either dropped or failed"
    );
    assert!(Metrics::get(&m.spans_failed) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_collector_fills_the_bounded_queue_and_spans_are_dropped() {
    // Accepts connections, reads, never answers: each attempt waits for its timeout.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            let mut s = s;
            held.push(tokio::spawn(async move {
                let mut sink = [0u8; 65536];
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
            }));
        }
    });
    let (m, spans) = run_with_bad_collector(format!("http://{addr}"), 32).await;
    hole.abort();
    assert_eq!(Metrics::get(&m.spans_exported), 0);
    assert!(
        Metrics::get(&m.spans_dropped) > 0,
        "a queue of 32 must overflow"
    );
    assert_eq!(
        Metrics::get(&m.spans_dropped) + Metrics::get(&m.spans_failed),
        spans
    );
}
