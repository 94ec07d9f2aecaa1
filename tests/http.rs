//! `/healthz`, `/readyz` and `/metrics`: the exposition checked by a strict
//! Prometheus text-format parser, readiness through real start-up, and bad
//! requests.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use orchestrator::http::{Endpoint, HttpLimits, HttpState, Readiness};
use orchestrator::sim::SimConfig;
use orchestrator::storage::memory::MemoryStorage;
use orchestrator::storage::Storage;
use orchestrator::transport::nats::NatsStats;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use crate::support::{video_input, Harness, Options};

/// Sends `raw` and reads the whole answer (the server closes): status, head, body.
async fn request(addr: SocketAddr, raw: &[u8]) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer (and close) before taking everything.
    let _ = s.write_all(raw).await;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("server answers within 10 s")
        .expect("read");
    let text = String::from_utf8(buf).expect("utf-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("status line of {head:?}"));
    (status, head.to_string(), body.to_string())
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .await
}

#[derive(Debug)]
struct Family {
    kind: String,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

fn valid_name(n: &str, colon: bool) -> bool {
    let mut chars = n.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
    chars.next().is_some_and(ok_first) && chars.all(|c| ok_first(c) || c.is_ascii_digit())
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse::<f64>().map_err(|e| format!("value {v:?}: {e}")),
    }
}

/// `name{labels} value`, strictly.
fn parse_sample(line: &str) -> Result<(String, BTreeMap<String, String>, f64), String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("no value in {line:?}"))?;
    let name = &line[..name_end];
    if !valid_name(name, true) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let end;
        loop {
            let Some(&(i, c)) = chars.peek() else {
                return Err(format!("unterminated labels in {line:?}"));
            };
            if c == '}' {
                end = i + 1;
                break;
            }
            let mut key = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if c == '=' {
                    break;
                }
                key.push(c);
                chars.next();
            }
            if !valid_name(&key, false) {
                return Err(format!("bad label name {key:?} in {line:?}"));
            }
            chars.next(); // '='
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label value not quoted in {line:?}"));
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    None => return Err(format!("unterminated label value in {line:?}")),
                    Some('"') => break,
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("bad escape {other:?} in {line:?}")),
                    },
                    Some(c) => value.push(c),
                }
            }
            if labels.insert(key.clone(), value).is_some() {
                return Err(format!("duplicate label {key} in {line:?}"));
            }
            match chars.peek().map(|&(_, c)| c) {
                Some(',') => {
                    chars.next();
                }
                Some('}') => {}
                other => return Err(format!("unexpected {other:?} after a label in {line:?}")),
            }
        }
        rest = &r[end..];
    }
    let value = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("no space before the value in {line:?}"))?;
    if value.contains(' ') {
        return Err(format!("timestamps are not expected: {line:?}"));
    }
    Ok((name.to_string(), labels, parse_value(value)?))
}

/// One histogram series: `(le, cumulative)` buckets, `_count`, has `_sum`.
type Series = (Vec<(f64, f64)>, Option<f64>, bool);

/// A strict parser of text format 0.0.4 as this exposition uses it: every
/// family has HELP then TYPE before its samples, samples follow their own
/// family, counters end in `_total`, histograms are complete and monotone.
fn parse_exposition(text: &str) -> Result<HashMap<String, Family>, String> {
    if !text.ends_with('\n') {
        return Err("exposition does not end with a line feed".into());
    }
    let mut families: HashMap<String, Family> = HashMap::new();
    let mut current: Option<String> = None;
    let mut helped: Option<String> = None;
    for line in text.lines() {
        if let Some(r) = line.strip_prefix("# HELP ") {
            let (name, help) = r.split_once(' ').ok_or("HELP without text")?;
            if !valid_name(name, true) || help.is_empty() {
                return Err(format!("bad HELP line {line:?}"));
            }
            if families.contains_key(name) {
                return Err(format!("family {name} declared twice"));
            }
            helped = Some(name.to_string());
            current = None;
        } else if let Some(r) = line.strip_prefix("# TYPE ") {
            let (name, kind) = r.split_once(' ').ok_or("TYPE without type")?;
            if helped.as_deref() != Some(name) {
                return Err(format!("TYPE of {name} without its HELP just before"));
            }
            if !["counter", "gauge", "histogram"].contains(&kind) {
                return Err(format!("unexpected type {kind} of {name}"));
            }
            if kind == "counter" && !name.ends_with("_total") {
                return Err(format!("counter {name} does not end in _total"));
            }
            if !name.starts_with("narralytica_") {
                return Err(format!("family {name} lacks the narralytica_ prefix"));
            }
            families.insert(
                name.to_string(),
                Family {
                    kind: kind.to_string(),
                    samples: Vec::new(),
                },
            );
            current = Some(name.to_string());
            helped = None;
        } else if line.starts_with('#') || line.is_empty() {
            return Err(format!("unexpected line {line:?}"));
        } else {
            let (name, labels, value) = parse_sample(line)?;
            let fam_name = current
                .as_deref()
                .ok_or_else(|| format!("sample {line:?} outside a family"))?;
            let fam = families.get_mut(fam_name).expect("declared");
            let belongs = match fam.kind.as_str() {
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name == format!("{fam_name}{s}")),
                _ => name == fam_name,
            };
            if !belongs {
                return Err(format!("sample {name} does not belong to {fam_name}"));
            }
            if fam.kind == "counter" && (value.is_nan() || value < 0.0) {
                return Err(format!("counter sample {line:?} is negative or NaN"));
            }
            fam.samples.push((name, labels, value));
        }
    }
    for (name, fam) in &families {
        if fam.kind != "histogram" {
            continue;
        }
        // Per label set (le removed): buckets increasing, +Inf = _count.
        let mut series: BTreeMap<Vec<(String, String)>, Series> = BTreeMap::new();
        for (sname, labels, value) in &fam.samples {
            let mut key: BTreeMap<String, String> = labels.clone();
            let le = key.remove("le");
            let key: Vec<(String, String)> = key.into_iter().collect();
            let e = series.entry(key).or_default();
            if sname.ends_with("_bucket") {
                let le = le.ok_or_else(|| format!("{sname} without le"))?;
                e.0.push((parse_value(&le)?, *value));
            } else if sname.ends_with("_count") {
                e.1 = Some(*value);
            } else {
                e.2 = true;
            }
        }
        for (key, (buckets, count, sum)) in series {
            let count = count.ok_or_else(|| format!("{name}{key:?} has no _count"))?;
            if !sum {
                return Err(format!("{name}{key:?} has no _sum"));
            }
            let last = buckets
                .last()
                .ok_or(format!("{name}{key:?} has no buckets"))?;
            if last.0 != f64::INFINITY || last.1 != count {
                return Err(format!(
                    "{name}{key:?}: +Inf bucket {last:?} != count {count}"
                ));
            }
            for w in buckets.windows(2) {
                if !(w[0].0 < w[1].0 && w[0].1 <= w[1].1) {
                    return Err(format!("{name}{key:?}: buckets not monotone: {w:?}"));
                }
            }
        }
    }
    Ok(families)
}

fn value(f: &HashMap<String, Family>, family: &str, sample: &str, label: (&str, &str)) -> f64 {
    f[family]
        .samples
        .iter()
        .find(|(n, l, _)| n == sample && l.get(label.0).map(String::as_str) == Some(label.1))
        .unwrap_or_else(|| panic!("no {sample}{{{}={:?}}}", label.0, label.1))
        .2
}

#[test]
fn the_parser_refuses_what_prometheus_would() {
    let ok = "# HELP narralytica_x_total X.\n# TYPE narralytica_x_total counter\nnarralytica_x_total{a=\"b\\\"\"} 1\n";
    assert!(parse_exposition(ok).is_ok());
    for bad in [
        // sample without a family
        "narralytica_x_total 1\n",
        // counter without _total
        "# HELP narralytica_x X.\n# TYPE narralytica_x counter\nnarralytica_x 1\n",
        // sample of another family
        "# HELP narralytica_x_total X.\n# TYPE narralytica_x_total counter\nnarralytica_y_total 1\n",
        // value not a float
        "# HELP narralytica_g G.\n# TYPE narralytica_g gauge\nnarralytica_g one\n",
        // bad escape
        "# HELP narralytica_g G.\n# TYPE narralytica_g gauge\nnarralytica_g{a=\"\\x\"} 1\n",
        // +Inf bucket != count
        "# HELP narralytica_h H.\n# TYPE narralytica_h histogram\nnarralytica_h_bucket{le=\"1\"} 1\nnarralytica_h_bucket{le=\"+Inf\"} 2\nnarralytica_h_sum 1\nnarralytica_h_count 3\n",
        // buckets decreasing
        "# HELP narralytica_h H.\n# TYPE narralytica_h histogram\nnarralytica_h_bucket{le=\"1\"} 2\nnarralytica_h_bucket{le=\"+Inf\"} 1\nnarralytica_h_sum 1\nnarralytica_h_count 1\n",
        // no trailing line feed
        "# HELP narralytica_g G.\n# TYPE narralytica_g gauge\nnarralytica_g 1",
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

/// Every family the exposition promises, by name and type.
const FAMILIES: &[(&str, &str)] = &[
    ("narralytica_workflows_started_total", "counter"),
    ("narralytica_workflows_completed_total", "counter"),
    ("narralytica_workflows_failed_total", "counter"),
    ("narralytica_workflows_cancelled_total", "counter"),
    ("narralytica_workflow_latency_seconds", "histogram"),
    ("narralytica_workflows_running", "gauge"),
    ("narralytica_workflows_paused", "gauge"),
    ("narralytica_task_attempts_total", "counter"),
    ("narralytica_task_retries_total", "counter"),
    ("narralytica_task_timeouts_total", "counter"),
    ("narralytica_task_failures_total", "counter"),
    ("narralytica_task_successes_total", "counter"),
    ("narralytica_backfills_held", "gauge"),
    ("narralytica_backfill_holds_total", "counter"),
    ("narralytica_task_latency_seconds", "histogram"),
    ("narralytica_task_backlog", "gauge"),
    ("narralytica_task_oldest_age_seconds", "gauge"),
    ("narralytica_messages_ignored_total", "counter"),
    ("narralytica_messages_rejected_total", "counter"),
    ("narralytica_journal_commit_batch_entries", "histogram"),
    ("narralytica_journal_commit_latency_seconds", "histogram"),
    ("narralytica_journal_wal_syncs_total", "counter"),
    ("narralytica_actor_restarts_total", "counter"),
    ("narralytica_workflows_resident", "gauge"),
    ("narralytica_workflows_in_progress", "gauge"),
    ("narralytica_workflows_in_progress_limit", "gauge"),
    ("narralytica_workflows_backlog_held", "gauge"),
    ("narralytica_workflows_passivated", "gauge"),
    ("narralytica_nats_connected", "gauge"),
    ("narralytica_nats_reconnects_total", "counter"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_real_workflows_parse_strictly_and_cover_every_family() {
    let storage = Arc::new(MemoryStorage::new());
    let mut opts = Options {
        sim: SimConfig {
            fail_rate: 0.3,
            ..SimConfig::default()
        },
        ..Options::default()
    };
    // Long enough that the paused workflow's first task stays outstanding.
    opts.sim.latency_ms = 20;
    let h = Harness::start(storage.clone(), opts).await;
    let nats = Arc::new(NatsStats::default());
    nats.note_connected();
    nats.note_disconnected();
    nats.note_connected();
    let state = HttpState {
        metrics: h.metrics.clone(),
        readiness: Arc::new(Readiness::with_nats(nats.clone())),
        nats: Some(nats),
        ..Default::default()
    };
    let dyn_storage: Arc<dyn Storage> = storage.clone();
    state.journal.attach(h.committer.histograms(), &dyn_storage);
    let mut ep = Endpoint::start("127.0.0.1:0", state).await.unwrap();
    let addr = ep.local_addr().unwrap();

    let n = 20u64;
    for i in 0..n {
        let id = format!("m-{i}");
        h.engine
            .start_workflow("video", &id, &video_input(&id))
            .await
            .unwrap();
    }
    h.wait_terminal(n, Duration::from_secs(60)).await;
    // One more that stays running and one paused.
    h.engine
        .start_workflow("video", "m-run", &video_input("m-run"))
        .await
        .unwrap();
    h.engine
        .start_workflow("video", "m-pause", &video_input("m-pause"))
        .await
        .unwrap();
    h.engine
        .send("m-pause", orchestrator::workflow::Input::Pause)
        .await
        .unwrap();

    let (status, head, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(head.contains("Connection: close"), "{head}");
    let f = parse_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    for (name, kind) in FAMILIES {
        let fam = f
            .get(*name)
            .unwrap_or_else(|| panic!("family {name} missing"));
        assert_eq!(fam.kind, *kind, "{name}");
        assert!(!fam.samples.is_empty(), "family {name} has no samples");
    }
    let video = ("pipeline", "video");
    let started = value(
        &f,
        "narralytica_workflows_started_total",
        "narralytica_workflows_started_total",
        video,
    );
    assert_eq!(started, (n + 2) as f64);
    let ended: f64 = [
        "narralytica_workflows_completed_total",
        "narralytica_workflows_failed_total",
        "narralytica_workflows_cancelled_total",
    ]
    .iter()
    .map(|fam| value(&f, fam, fam, video))
    .sum();
    assert_eq!(ended, n as f64);
    assert_eq!(
        value(
            &f,
            "narralytica_workflow_latency_seconds",
            "narralytica_workflow_latency_seconds_count",
            video
        ),
        n as f64
    );
    assert_eq!(f["narralytica_workflows_running"].samples[0].2, 1.0);
    assert_eq!(f["narralytica_workflows_paused"].samples[0].2, 1.0);
    let ingest = ("task_type", "ingest");
    let attempts = value(
        &f,
        "narralytica_task_attempts_total",
        "narralytica_task_attempts_total",
        ingest,
    );
    let retries = value(
        &f,
        "narralytica_task_retries_total",
        "narralytica_task_retries_total",
        ingest,
    );
    assert!(attempts >= (n + 2) as f64, "{attempts}");
    let all_retries: f64 = f["narralytica_task_retries_total"]
        .samples
        .iter()
        .map(|s| s.2)
        .sum();
    let all_failures: f64 = f["narralytica_task_failures_total"]
        .samples
        .iter()
        .map(|s| s.2)
        .sum();
    assert!(
        all_retries > 0.0 && all_failures > 0.0,
        "fail rate 0.3 retries"
    );
    assert!(retries <= attempts);
    assert!(
        value(
            &f,
            "narralytica_task_latency_seconds",
            "narralytica_task_latency_seconds_count",
            ingest
        ) >= n as f64
    );
    // m-run and m-pause each have an ingest attempt out (20 ms tasks).
    let backlog: f64 = f["narralytica_task_backlog"]
        .samples
        .iter()
        .map(|s| s.2)
        .sum();
    assert!(backlog <= 2.0, "{backlog}");
    assert!(
        value(
            &f,
            "narralytica_messages_ignored_total",
            "narralytica_messages_ignored_total",
            ("reason", "duplicate")
        ) >= 0.0
    );
    for fam in [
        "narralytica_journal_commit_batch_entries",
        "narralytica_journal_commit_latency_seconds",
    ] {
        let count = f[fam]
            .samples
            .iter()
            .find(|s| s.0.ends_with("_count"))
            .map_or(0.0, |s| s.2);
        assert!(count > 0.0, "{fam} recorded no write");
    }
    assert_eq!(f["narralytica_nats_connected"].samples[0].2, 1.0);
    assert_eq!(f["narralytica_nats_reconnects_total"].samples[0].2, 1.0);
    assert_eq!(
        f["narralytica_journal_wal_syncs_total"].samples[0].2,
        storage.wal_syncs() as f64
    );

    // HEAD: the head of a GET, no body.
    let (status, head, body) = request(addr, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 200, "{head}");
    assert!(body.is_empty());
    ep.stop().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_what_is_missing_until_storage_recovery_and_nats_are_there() {
    let nats = Arc::new(NatsStats::default());
    let readiness = Arc::new(Readiness::with_nats(nats.clone()));
    let state = HttpState {
        readiness: readiness.clone(),
        nats: Some(nats.clone()),
        ..Default::default()
    };
    let mut ep = Endpoint::start("127.0.0.1:0", state).await.unwrap();
    let addr = ep.local_addr().unwrap();
    assert_eq!(get(addr, "/healthz").await.0, 200);
    let (s, _, body) = get(addr, "/readyz").await;
    assert_eq!(s, 503);
    assert_eq!(
        body,
        "not ready: storage not open, recovery not done, nats not connected\n"
    );
    readiness.set_storage_open();
    let (s, _, body) = get(addr, "/readyz").await;
    assert_eq!(
        (s, body.as_str()),
        (503, "not ready: recovery not done, nats not connected\n")
    );
    readiness.set_recovery_done();
    let (s, _, body) = get(addr, "/readyz").await;
    assert_eq!((s, body.as_str()), (503, "not ready: nats not connected\n"));
    nats.note_connected();
    let (s, _, body) = get(addr, "/readyz?verbose=1").await;
    assert_eq!((s, body.as_str()), (200, "ready\n"));
    nats.note_disconnected();
    assert_eq!(
        get(addr, "/readyz").await.0,
        503,
        "a lost connection is not ready"
    );
    ep.stop().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "stopped server still accepts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_requests_get_4xx_and_the_server_keeps_serving() {
    let state = HttpState {
        limits: HttpLimits {
            read_timeout: Duration::from_millis(300),
            ..HttpLimits::default()
        },
        ..Default::default()
    };
    let mut ep = Endpoint::start("127.0.0.1:0", state).await.unwrap();
    let addr = ep.local_addr().unwrap();
    let big = format!(
        "GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(9 * 1024)
    );
    let endless = "GET /healthz HTTP/1.1\r\n".to_string() + &"X: y\r\n".repeat(4000);
    let cases: Vec<(&[u8], u16)> = vec![
        (b"\x00\xff\xfe garbage\r\n\r\n", 400),
        (b"hello\r\n\r\n", 400),
        (b"GET\r\n\r\n", 400),
        (b"GET  /healthz HTTP/1.1\r\n\r\n", 400),
        (b"get /healthz HTTP/1.1\r\n\r\n", 400),
        (b"GET healthz HTTP/1.1\r\n\r\n", 400),
        (b"GET /healthz FTP/1.0\r\n\r\n", 400),
        (b"GET /healthz HTTP/2.0\r\n\r\n", 400),
        (b"GET /nope HTTP/1.1\r\n\r\n", 404),
        (
            b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            405,
        ),
        (b"DELETE /readyz HTTP/1.1\r\n\r\n", 405),
        (big.as_bytes(), 431),
        (endless.as_bytes(), 431),
    ];
    for (raw, want) in cases {
        let (status, head, _) = request(addr, raw).await;
        assert_eq!(
            status,
            want,
            "{:?} → {head}",
            String::from_utf8_lossy(&raw[..raw.len().min(60)])
        );
        assert!(head.contains("Connection: close"), "{head}");
        if want == 405 {
            assert!(head.contains("Allow: GET, HEAD"), "{head}");
        }
    }
    // An unfinished head: the client is too slow, and the server closes
    // the connection after the read timeout without an answer.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer))
        .await
        .expect("the server closes a slow client's connection")
        .expect("read");
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    // A client that connects and leaves without a byte gets nothing, and
    // breaks nothing.
    drop(tokio::net::TcpStream::connect(addr).await.unwrap());
    let (status, _, body) = get(addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    ep.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_is_ready_only_after_nats_is_up_and_recovery_is_done() {
    let nats_port = crate::support::nats::free_port();
    let http_port = crate::support::nats::free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut args = orchestrator::config::Config::default();
    args.nats.url = format!("nats://127.0.0.1:{nats_port}");
    args.node.data_dir = dir.path().to_path_buf();
    args.node.pipelines_dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pipelines");
    args.engine.partitions = 2;
    args.engine.resident_max = 1000;
    args.http.addr = format!("127.0.0.1:{http_port}");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(orchestrator::cli::run::serve(args, async {
        let _ = stop_rx.await;
    }));
    let addr: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
    // The HTTP server is up before anything else; NATS is not running yet,
    // so the engine has not even started recovering.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let body = loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            let _ = s.shutdown().await;
            let (status, _, body) = get(addr, "/readyz").await;
            assert_eq!(status, 503, "{body}");
            if body.contains("storage not open") {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "storage never opened"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "no HTTP server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(body, "not ready: recovery not done, nats not connected\n");
    assert_eq!(get(addr, "/healthz").await.0, 200);
    let (_, _, metrics) = get(addr, "/metrics").await;
    let f = parse_exposition(&metrics).unwrap_or_else(|e| panic!("{e}\n{metrics}"));
    assert_eq!(f["narralytica_nats_connected"].samples[0].2, 0.0);

    let _server = crate::support::nats::NatsServer::start_on(nats_port);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _, body) = get(addr, "/readyz").await;
        if status == 200 {
            assert_eq!(body, "ready\n");
            break;
        }
        assert_eq!(status, 503);
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready 60 s after NATS came up: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, _, metrics) = get(addr, "/metrics").await;
    let f = parse_exposition(&metrics).unwrap_or_else(|e| panic!("{e}\n{metrics}"));
    assert_eq!(f["narralytica_nats_connected"].samples[0].2, 1.0);
    assert_eq!(f["narralytica_ready"].samples[0].2, 1.0);
    for (name, _) in FAMILIES {
        assert!(
            f.contains_key(*name),
            "{name} missing from run's exposition"
        );
    }
    let _ = stop_tx.send(());
    let r = tokio::time::timeout(Duration::from_secs(20), service)
        .await
        .expect("run stops within 20 s")
        .expect("no panic");
    assert_eq!(r, Ok(()));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "HTTP still served after shutdown"
    );
}

/// Opens `clients` connections to `addr` that never finish a request: the
/// even ones stay silent, the odd ones send one byte of a request head every
/// 4 s. Each reopens its connection a second after the server closes it, as
/// a retrying client or an attacker would. Returns the number connected now,
/// the number of connections opened so far, and the handles to stop them.
fn flood(addr: SocketAddr, clients: usize) -> (Arc<AtomicUsize>, Arc<AtomicUsize>, JoinSet<()>) {
    use std::sync::atomic::Ordering::Relaxed;
    let connected = Arc::new(AtomicUsize::new(0));
    let opened = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for i in 0..clients {
        let connected = connected.clone();
        let opened = opened.clone();
        set.spawn(async move {
            let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
            loop {
                let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                };
                connected.fetch_add(1, Relaxed);
                opened.fetch_add(1, Relaxed);
                let mut buf = [0u8; 64];
                if i % 2 == 0 {
                    // Silent: wait for the server to close.
                    let _ = s.read(&mut buf).await;
                } else {
                    for b in head.iter().take(head.len() - 1) {
                        if s.write_all(&[*b]).await.is_err() {
                            break;
                        }
                        // Closed by the server meanwhile: read returns.
                        if let Ok(r) =
                            tokio::time::timeout(Duration::from_secs(4), s.read(&mut buf)).await
                        {
                            let _ = r;
                            break;
                        }
                    }
                }
                connected.fetch_sub(1, Relaxed);
                drop(s);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    (connected, opened, set)
}

/// Probes `/healthz` and `/readyz` every 100 ms through two read timeouts
/// of the server (idle and slow clients are closed and come back meanwhile);
/// every probe must be answered 200.
async fn probes_answer_through(addr: SocketAddr, rounds: usize) {
    for round in 0..rounds {
        for path in ["/healthz", "/readyz"] {
            let (status, _, body) = get(addr, path).await;
            assert_eq!(status, 200, "round {round}: {path} answered {body:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for(count: &AtomicUsize, want: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while count.load(std::sync::atomic::Ordering::Relaxed) < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{want} clients never connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ready_state(limits: HttpLimits) -> HttpState {
    let readiness = Arc::new(Readiness::default());
    readiness.set_storage_open();
    readiness.set_recovery_done();
    HttpState {
        readiness,
        limits,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_while_a_thousand_idle_or_slow_connections_are_open() {
    let limits = HttpLimits::default();
    assert!(limits.connections_max > 1000, "the default cap holds them");
    let mut ep = Endpoint::start("127.0.0.1:0", ready_state(limits))
        .await
        .unwrap();
    let addr = ep.local_addr().unwrap();
    let (connected, _, mut clients) = flood(addr, 1000);
    // All open at once: the default cap holds them.
    wait_for(&connected, 1000).await;
    probes_answer_through(addr, 50).await;
    clients.shutdown().await;
    ep.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_when_idle_connections_fill_the_cap() {
    // A cap far below the flood: new connections evict the oldest ones
    // that have not sent a request head, so a probe always gets a slot.
    let limits = HttpLimits {
        read_timeout: Duration::from_secs(2),
        connections_max: 64,
        ..HttpLimits::default()
    };
    let mut ep = Endpoint::start("127.0.0.1:0", ready_state(limits))
        .await
        .unwrap();
    let addr = ep.local_addr().unwrap();
    let (_, opened, mut clients) = flood(addr, 1000);
    // Every client has connected at least once; the cap keeps 64 open, so
    // the rest are being evicted and reconnecting.
    wait_for(&opened, 1000).await;
    probes_answer_through(addr, 50).await;
    clients.shutdown().await;
    ep.stop().await;
}
