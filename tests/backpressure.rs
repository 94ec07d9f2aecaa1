//! Intake under pressure, against a real nats-server and `orchestrator run`:
//! a flood of `start` requests gets an answer for every request (`ok`, or
//! `unavailable` when over a bound) and every accepted start completes; an
//! input that could never be sent is refused at the door; a full disk
//! answers `unavailable`, turns `/readyz` to 503 and heals by itself once
//! space is back; and deleted streams and consumers are put back while
//! `run` keeps going.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::{bin, Reaper};
use crate::support::nats::{free_port, NatsServer};

/// Requests in the flood; `NARRALYTICA_FLOOD_STARTS=100000` for the long
/// variant (docs/operations.md, "Backpressure").
fn flood_size() -> usize {
    std::env::var("NARRALYTICA_FLOOD_STARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

/// `run` and a simulated worker over one nats-server, with a test client.
struct Service {
    _nats: NatsServer,
    client: async_nats::Client,
    http: SocketAddr,
    logs: tempfile::TempDir,
    run: Reaper,
    _worker: Reaper,
    _dirs: Vec<tempfile::TempDir>,
}

impl Service {
    /// Starts `run` with `config` (TOML) over `data_dir` (a fresh temporary
    /// directory when `None`) and waits until `/readyz` answers 200.
    async fn start(config: &str, data_dir: Option<PathBuf>) -> Service {
        let nats = NatsServer::start();
        let mut dirs = Vec::new();
        let data_dir = data_dir.unwrap_or_else(|| {
            let d = tempfile::tempdir().unwrap();
            let p = d.path().to_path_buf();
            dirs.push(d);
            p
        });
        let logs = tempfile::tempdir().unwrap();
        let config_file = logs.path().join("orchestrator.toml");
        std::fs::write(&config_file, config).unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = |name: &str| std::fs::File::create(logs.path().join(name)).unwrap();
        let run = Reaper(
            bin()
                .args([
                    "run",
                    "--nats-url",
                    &nats.url(),
                    "--http-addr",
                    &http.to_string(),
                ])
                .arg("--config")
                .arg(&config_file)
                .arg("--data-dir")
                .arg(&data_dir)
                .stdout(log("run.out"))
                .stderr(log("run.err"))
                .spawn()
                .unwrap(),
        );
        let worker = Reaper(
            bin()
                .args(["worker", "--simulate", "--concurrency", "500"])
                .args(["--nats-url", &nats.url()])
                .stdout(Stdio::null())
                .stderr(log("worker.err"))
                .spawn()
                .unwrap(),
        );
        let client = async_nats::ConnectOptions::new()
            .request_timeout(Some(Duration::from_secs(60)))
            .connect(nats.url())
            .await
            .unwrap();
        let s = Service {
            _nats: nats,
            client,
            http,
            logs,
            run,
            _worker: worker,
            _dirs: dirs,
        };
        s.wait_ready(Duration::from_secs(120)).await;
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("run.err")).unwrap_or_default()
    }

    /// The last lines `run` and the worker wrote, for a failure message.
    fn log_tails(&self) -> String {
        let tail = |name: &str| {
            let text = std::fs::read_to_string(self.logs.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        format!(
            "--- run.err\n{}\n--- worker.err\n{}",
            tail("run.err"),
            tail("worker.err")
        )
    }

    async fn wait_ready(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some((200, _)) = http_get(self.http, "/readyz").await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not ready within {within:?}: {:?}\n{}",
                http_get(self.http, "/readyz").await,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `/readyz` answers 503 with a body containing `reason`.
    async fn wait_not_ready(&self, reason: &str, within: Duration) -> String {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some((503, body)) = http_get(self.http, "/readyz").await {
                if body.contains(reason) {
                    return body;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "readyz never said {reason:?}: {:?}",
                http_get(self.http, "/readyz").await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn admin(&self, verb: &str, body: serde_json::Value) -> serde_json::Value {
        let reply = self
            .client
            .request(
                format!("narralytica.admin.{verb}"),
                serde_json::to_vec(&body).unwrap().into(),
            )
            .await
            .unwrap_or_else(|e| panic!("no answer to {verb}: {e}"));
        serde_json::from_slice(&reply.payload).unwrap()
    }

    async fn start_workflow(&self, id: &str, input: serde_json::Value) -> serde_json::Value {
        self.admin(
            "start",
            serde_json::json!({"v": 1, "pipeline": "video", "id": id, "input": input}),
        )
        .await
    }

    async fn start_workflow_owned(&self, id: String) -> serde_json::Value {
        self.start_workflow(&id, serde_json::json!({"video_url": "s3://m/r.mp4"}))
            .await
    }

    async fn wait_completed(&self, id: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let d = self
                .admin("describe", serde_json::json!({"v": 1, "id": id}))
                .await;
            if d["status"] == "completed" {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} not completed within {within:?}: {d}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The value of one sample of `/metrics`, e.g.
    /// `narralytica_requests_refused_total{reason="start_rate"}`.
    async fn metric(&self, sample: &str) -> f64 {
        let (_, body) = http_get(self.http, "/metrics").await.expect("metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

/// `GET path` on the HTTP port: the status and the body, or `None` when
/// the port does not answer.
async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_starts_is_answered_in_full_and_every_accepted_start_completes() {
    // Few serving slots, so the flood is over the bound for certain; a
    // small message limit for the start-size check below.
    let s = Service::start(
        "[nats]\nadmin_in_flight_max = 8\nmessage_max_bytes = 65536\noutput_max_bytes = 4096\n\
         [events]\nbatch_max_bytes = 32768\n",
        None,
    )
    .await;
    let n = flood_size();
    let mut replies: FuturesUnordered<_> = (0..n)
        .map(|i| {
            let client = s.client.clone();
            async move {
                let body = serde_json::json!({
                    "v": 1, "pipeline": "video", "id": format!("flood-{i}"),
                    "input": {"video_url": format!("s3://media/flood-{i}.mp4")}
                });
                let r = client
                    .request(
                        "narralytica.admin.start",
                        serde_json::to_vec(&body).unwrap().into(),
                    )
                    .await;
                (
                    i,
                    r.map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap()),
                )
            }
        })
        .collect();
    let mut by_code: HashMap<String, usize> = HashMap::new();
    let mut accepted = Vec::new();
    while let Some((i, reply)) = replies.next().await {
        let reply = reply.unwrap_or_else(|e| panic!("start flood-{i} got no answer: {e}"));
        match reply["code"].as_str() {
            None => {
                assert_eq!(reply["status"], "running", "{reply}");
                accepted.push(format!("flood-{i}"));
                *by_code.entry("ok".into()).or_default() += 1;
            }
            Some(code) => {
                assert_eq!(code, "unavailable", "{reply}");
                assert!(
                    reply["error"].as_str().unwrap().contains("try again later"),
                    "{reply}"
                );
                *by_code.entry(code.into()).or_default() += 1;
            }
        }
    }
    let refused = by_code.get("unavailable").copied().unwrap_or(0);
    assert_eq!(accepted.len() + refused, n, "{by_code:?}");
    assert!(refused > 0, "a flood of {n} over 8 slots was never refused");
    assert!(!accepted.is_empty(), "nothing accepted: {by_code:?}");
    let counted = s
        .metric("narralytica_requests_refused_total{reason=\"admin_queue_full\"}")
        .await;
    assert_eq!(counted as usize, refused);
    // Every accepted start runs to the end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let done = s
            .metric("narralytica_workflows_completed_total{pipeline=\"video\"}")
            .await as usize;
        if done == accepted.len() {
            break;
        }
        if done > accepted.len() || tokio::time::Instant::now() >= deadline {
            let first = s
                .admin("describe", serde_json::json!({"v": 1, "id": accepted[0]}))
                .await;
            panic!(
                "{done} of {} accepted starts completed; {}: {first}\n{}",
                accepted.len(),
                accepted[0],
                s.log_tails()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in accepted.iter().take(20) {
        s.wait_completed(id, Duration::from_secs(10)).await;
    }

    // An input whose task message could never be sent is refused at the
    // door, naming the limit; one that fits runs.
    let big = "x".repeat(62_000);
    let reply = s
        .start_workflow("too-big", serde_json::json!({"video_url": big}))
        .await;
    assert_eq!(reply["code"], "bad_request", "{reply}");
    let error = reply["error"].as_str().unwrap();
    assert!(error.contains("nats.message_max_bytes (65536)"), "{error}");
    let d = s
        .admin("describe", serde_json::json!({"v": 1, "id": "too-big"}))
        .await;
    assert_eq!(d["code"], "unknown_workflow", "{d}");
    let fits = "x".repeat(20_000);
    let reply = s
        .start_workflow("fits", serde_json::json!({"video_url": fits}))
        .await;
    assert_eq!(reply["status"], "running", "{reply}");
    s.wait_completed("fits", Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_rate_bound_answers_unavailable_and_counts_it() {
    let s = Service::start("[nats]\nadmin_start_rate = 5\n", None).await;
    // Twenty at once: far more than five a second.
    let replies = futures_util::future::join_all(
        (0..20).map(|i| s.start_workflow_owned(format!("rate-{i}"))),
    )
    .await;
    let codes: Vec<String> = replies
        .iter()
        .map(|r| r["code"].as_str().unwrap_or("ok").to_string())
        .collect();
    let refused = codes.iter().filter(|c| *c == "unavailable").count();
    assert_eq!(
        refused + codes.iter().filter(|c| *c == "ok").count(),
        20,
        "{codes:?}"
    );
    assert!(
        refused > 0,
        "20 starts at once over 5/s were all taken: {codes:?}"
    );
    assert_eq!(
        s.metric("narralytica_requests_refused_total{reason=\"start_rate\"}")
            .await as usize,
        refused
    );
}

/// A tmpfs of `mib` MiB mounted on a fresh directory, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` where mounting is not permitted (not root); CI runs as root.
    fn mount(mib: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a filler file until the disk is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let p = self.path().join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        p
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_unavailable_and_heals_by_itself_once_space_is_back() {
    let Some(disk) = SmallDisk::mount(64) else {
        eprintln!("skipped: mounting a tmpfs needs root (CI runs as root)");
        return;
    };
    // A small write buffer, so RocksDB's preallocated log runs out soon
    // after the disk is full.
    let s = Service::start(
        "[storage]\nwrite_buffer_mib = 1\nblock_cache_mib = 8\n",
        Some(disk.path().join("data")),
    )
    .await;
    let reply = s
        .start_workflow("before", serde_json::json!({"video_url": "s3://m/b.mp4"}))
        .await;
    assert_eq!(reply["status"], "running", "{reply}");
    s.wait_completed("before", Duration::from_secs(60)).await;

    let filler = disk.fill();
    // Starts with large inputs until the journal can no longer write: each
    // is answered, and the failure is `unavailable`, never `bad_request`.
    let pad = "p".repeat(60_000);
    let mut failed = None;
    for i in 0..2_000 {
        let r = s
            .start_workflow(&format!("fill-{i}"), serde_json::json!({"video_url": pad}))
            .await;
        match r["code"].as_str() {
            None => continue,
            Some("unavailable") => {
                failed = Some(r);
                break;
            }
            Some(_) => panic!("a full disk answered {r}"),
        }
    }
    let failed = failed.expect("the journal never failed on a full disk");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{failed}"
    );
    let body = s
        .wait_not_ready("journal writes failing", Duration::from_secs(10))
        .await;
    assert!(body.contains("No space left on device"), "{body}");
    assert_eq!(s.metric("narralytica_journal_writes_failing").await, 1.0);
    // While writes fail, a start is refused at once.
    let r = s
        .start_workflow(
            "while-full",
            serde_json::json!({"video_url": "s3://m/w.mp4"}),
        )
        .await;
    assert_eq!(r["code"], "unavailable", "{r}");
    assert!(
        s.metric("narralytica_requests_refused_total{reason=\"journal_failing\"}")
            .await
            >= 1.0
    );

    // Space comes back: no restart, readiness and intake recover alone.
    std::fs::remove_file(filler).unwrap();
    s.wait_ready(Duration::from_secs(60)).await;
    assert_eq!(s.metric("narralytica_journal_writes_failing").await, 0.0);
    let r = s
        .start_workflow("after", serde_json::json!({"video_url": "s3://m/a.mp4"}))
        .await;
    assert_eq!(r["status"], "running", "{r}");
    s.wait_completed("after", Duration::from_secs(60)).await;
    // The same process throughout.
    let mut run = s.run;
    assert!(run.try_wait().unwrap().is_none(), "run exited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_streams_and_consumers_are_put_back_while_run_keeps_going() {
    let s = Service::start("[nats]\nstream_watch_interval = \"500ms\"\n", None).await;
    let js = async_nats::jetstream::new(s.client.clone());
    let recreated = "narralytica_nats_streams_recreated_total";
    let mut n = 0;
    for (i, stream) in [
        "NARRALYTICA_TASKS",
        "NARRALYTICA_RESULTS",
        "NARRALYTICA_EVENTS",
    ]
    .into_iter()
    .enumerate()
    {
        js.delete_stream(stream).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while js.get_stream(stream).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{stream} not put back"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        n += 1;
        s.wait_ready(Duration::from_secs(20)).await;
        let id = format!("after-delete-{i}");
        let r = s
            .start_workflow(&id, serde_json::json!({"video_url": "s3://m/d.mp4"}))
            .await;
        assert_eq!(r["status"], "running", "{r}");
        s.wait_completed(&id, Duration::from_secs(60)).await;
    }
    // The results consumer alone.
    let results = js.get_stream("NARRALYTICA_RESULTS").await.unwrap();
    results.delete_consumer("orchestrator").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while results.consumer_info("orchestrator").await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumer not put back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    n += 1;
    // Results through the stream (not only direct answers) reach the engine.
    let r = s
        .start_workflow(
            "after-consumer",
            serde_json::json!({"video_url": "s3://m/c.mp4"}),
        )
        .await;
    assert_eq!(r["status"], "running", "{r}");
    s.wait_completed("after-consumer", Duration::from_secs(60))
        .await;
    assert!(s.metric(recreated).await >= f64::from(n), "{}", s.log());

    // A stream that cannot be put back (another stream took its subjects)
    // keeps /readyz at 503 naming it, until the way is clear.
    let impostor = async_nats::jetstream::stream::Config {
        name: "IMPOSTOR".into(),
        subjects: vec!["narralytica.tasks.>".into()],
        ..Default::default()
    };
    loop {
        let _ = js.delete_stream("NARRALYTICA_TASKS").await;
        if js.create_stream(impostor.clone()).await.is_ok() {
            break;
        }
        // The watch put TASKS back first; go again.
    }
    let body = s
        .wait_not_ready("stream NARRALYTICA_TASKS missing", Duration::from_secs(20))
        .await;
    assert!(body.starts_with("not ready: "), "{body}");
    js.delete_stream("IMPOSTOR").await.unwrap();
    s.wait_ready(Duration::from_secs(20)).await;
    let r = s
        .start_workflow(
            "after-impostor",
            serde_json::json!({"video_url": "s3://m/i.mp4"}),
        )
        .await;
    assert_eq!(r["status"], "running", "{r}");
    s.wait_completed("after-impostor", Duration::from_secs(60))
        .await;
}
