//! The rules of `orchestrator worker-check`, run one after the other
//! against a worker under test through the [`Harness`].
//!
//! Tasks carry directives in their workflow input, which a worker under
//! test acts on to exercise a rule: `work_ms` (how long the task takes)
//! and `fail` (`{"<task type>": ["retryable" | "fatal"]}`, how attempt 1
//! fails). A worker that cannot act on them skips the rules that need
//! them (`--skip`).

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::harness::{Harness, Seen};
use super::{heartbeat_problems, longest_silence, result_problems, trace_id_of, Verdict, RULES};

/// Timing and input of a check run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The tasks' `heartbeat_timeout_ms`; rules that need a long task make
    /// it a few times this long.
    pub heartbeat_timeout: Duration,
    /// How long a result may take beyond the work itself.
    pub result_timeout: Duration,
    /// How long the worker may take to create its consumer.
    pub ready_timeout: Duration,
    /// How long the worker may take to exit after SIGTERM.
    pub drain_timeout: Duration,
    /// The workflow input of every task (an object); directives are added.
    pub input: Value,
    /// Rules not to run.
    pub skip: Vec<String>,
}

impl Settings {
    fn input(&self, directives: Value) -> Value {
        let mut input = self.input.clone();
        if let (Some(base), Some(extra)) = (input.as_object_mut(), directives.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        input
    }

    fn hb_ms(&self) -> u64 {
        self.heartbeat_timeout.as_millis() as u64
    }

    /// Work that takes `n` heartbeat timeouts.
    fn work(&self, n: u32) -> (Value, Duration) {
        let d = self.heartbeat_timeout * n;
        (json!({"work_ms": d.as_millis() as u64}), d)
    }
}

/// The worker under test as a child process of the kit (`--worker-cmd`),
/// in its own process group so that SIGTERM reaches the worker and not
/// only a shell around it.
pub struct WorkerProcess {
    child: Child,
}

impl WorkerProcess {
    pub fn spawn(
        command: &str,
        nats_url: &str,
        prefix: &str,
        log: Option<&std::path::Path>,
    ) -> Result<WorkerProcess, String> {
        use std::os::unix::process::CommandExt;
        let out = match log {
            Some(path) => std::process::Stdio::from(
                std::fs::File::create(path)
                    .map_err(|e| format!("worker log {}: {e}", path.display()))?,
            ),
            None => std::process::Stdio::null(),
        };
        let child = std::process::Command::new("sh")
            .args(["-c", command])
            .env("NARRALYTICA_NATS_URL", nats_url)
            .env("NARRALYTICA_PREFIX", prefix)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(out)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run the worker command: {e}"))?;
        Ok(WorkerProcess { child })
    }

    fn signal(&self, signal: &str) {
        let group = format!("-{}", self.child.id());
        let _ = std::process::Command::new("kill")
            .args([signal, "--", &group])
            .stderr(std::process::Stdio::null())
            .status();
    }

    async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal("-KILL");
        }
        let _ = self.child.wait();
    }
}

/// Runs every rule in order and calls `report` after each.
pub async fn run(
    h: &Harness,
    s: &Settings,
    mut worker: Option<&mut WorkerProcess>,
    report: &mut dyn FnMut(&str, &Verdict),
) -> Vec<(&'static str, Verdict)> {
    let mut out = Vec::new();
    let mut serving = true;
    let mut shape: Option<(Value, Seen)> = None;
    // A misbehaving worker may still be busy with an earlier rule's task:
    // each rule starts once the queue is quiet (or this long has passed).
    let quiet = s.heartbeat_timeout * 4 + s.result_timeout;
    for &rule in RULES {
        let verdict = if s.skip.iter().any(|r| r == rule) {
            Verdict::Skip("--skip".into())
        } else if !serving {
            Verdict::Skip("the worker has no consumer".into())
        } else {
            if rule != "consumer_settings" {
                h.settled(quiet).await;
            }
            match rule {
                "consumer_settings" => {
                    let v = consumer_settings(h, s).await;
                    serving = !matches!(v, Verdict::Fail(_));
                    v
                }
                "result_shape" => {
                    let (v, seen) = result_shape(h, s).await;
                    shape = seen;
                    v
                }
                "trace_propagated" => trace_propagated(shape.as_ref()),
                "task_acked" => task_acked(h, shape.is_some()).await,
                "heartbeats_on_time" => heartbeats_on_time(h, s).await,
                "cancel_honoured" => cancel_honoured(h, s).await,
                "retryable_vs_fatal" => retryable_vs_fatal(h, s).await,
                "idempotent_redelivery" => idempotent_redelivery(h, s).await,
                "other_version_refused" => other_version_refused(h, s).await,
                "drain_on_sigterm" => match worker.as_deref_mut() {
                    Some(w) => drain_on_sigterm(h, s, w).await,
                    None => {
                        Verdict::Skip("needs --worker-cmd (the kit must own the process)".into())
                    }
                },
                _ => Verdict::Skip("unknown rule".into()),
            }
        };
        report(rule, &verdict);
        out.push((rule, verdict));
    }
    out
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn id(task: &Value) -> &str {
    task["task_id"].as_str().unwrap_or_default()
}

async fn consumer_settings(h: &Harness, s: &Settings) -> Verdict {
    let info = match h.wait_consumer(s.ready_timeout).await {
        Ok(i) => i,
        Err(e) => {
            return Verdict::Fail(format!(
                "no consumer after {}: {e} (a worker creates worker-{} on start)",
                secs(s.ready_timeout),
                h.task_type
            ))
        }
    };
    let c = &info.config;
    let subject = format!("tasks.{}", h.task_type);
    let mut problems = Vec::new();
    if c.durable_name.as_deref() != Some(info.name.as_str()) {
        problems.push("not durable".to_string());
    }
    if c.ack_policy != async_nats::jetstream::consumer::AckPolicy::Explicit {
        problems.push(format!("ack policy {:?}, not explicit", c.ack_policy));
    }
    let filters: Vec<&String> = std::iter::once(&c.filter_subject)
        .chain(c.filter_subjects.iter())
        .filter(|f| !f.is_empty())
        .collect();
    if filters.len() != 1 || !filters[0].ends_with(&subject) {
        problems.push(format!("filter {filters:?}, not only <prefix>.{subject}"));
    }
    if c.deliver_subject.is_some() {
        problems.push("a push consumer, not a pull consumer".into());
    }
    if c.max_deliver == 1 {
        problems.push("max_deliver 1: a crashed worker's task would never come again".into());
    }
    if problems.is_empty() {
        Verdict::Pass(format!(
            "{}, ack_wait {}, max_deliver {}, max_ack_pending {}",
            info.name,
            secs(c.ack_wait),
            c.max_deliver,
            c.max_ack_pending
        ))
    } else {
        Verdict::Fail(problems.join("; "))
    }
}

/// Publishes `task` and waits for its first result.
async fn round_trip(
    h: &Harness,
    task: &Value,
    within: Duration,
) -> Result<(Instant, Seen), Verdict> {
    let sent = h.publish(task, id(task)).await.map_err(Verdict::Fail)?;
    match h.wait_result(id(task), within).await {
        Some(r) => Ok((sent, r)),
        None => Err(Verdict::Fail(format!(
            "no result within {} for {}",
            secs(within),
            id(task)
        ))),
    }
}

async fn result_shape(h: &Harness, s: &Settings) -> (Verdict, Option<(Value, Seen)>) {
    let task = h.task("shape", s.input(json!({})), s.hb_ms());
    let r = match round_trip(h, &task, s.result_timeout).await {
        Ok((_, r)) => r,
        Err(v) => return (v, None),
    };
    let mut problems = result_problems(&task, &r.body, &r.raw);
    if r.body["status"] != "succeeded" {
        problems.push(format!(
            "a plain task failed ({}); give an input it can run with --input",
            r.body["error"]
        ));
    }
    let v = if problems.is_empty() {
        Verdict::Pass(format!("via {:?}", r.via).to_lowercase())
    } else {
        Verdict::Fail(problems.join("; "))
    };
    (v, Some((task, r)))
}

fn trace_propagated(shape: Option<&(Value, Seen)>) -> Verdict {
    let Some((task, r)) = shape else {
        return Verdict::Skip("no result to look at".into());
    };
    let want = crate::protocol::trace::trace_id(task["workflow_id"].as_str().unwrap_or_default());
    match r.traceparent.as_deref().map(|t| (t, trace_id_of(t))) {
        None => Verdict::Fail("the result has no traceparent header".into()),
        Some((t, None)) => Verdict::Fail(format!("malformed traceparent {t:?}")),
        Some((_, Some(got))) if got != want => {
            Verdict::Fail(format!("trace id {got} is not the task's {want}"))
        }
        Some(_) => Verdict::Pass(String::new()),
    }
}

async fn task_acked(h: &Harness, answered: bool) -> Verdict {
    if !answered {
        return Verdict::Skip("no result to look at".into());
    }
    if h.settled(Duration::from_secs(5)).await {
        Verdict::Pass(String::new())
    } else {
        Verdict::Fail("the task is unacknowledged 5 s after its result was acknowledged".into())
    }
}

async fn heartbeats_on_time(h: &Harness, s: &Settings) -> Verdict {
    let (directives, work) = s.work(3);
    let task = h.task("beats", s.input(directives), s.hb_ms());
    let (sent, r) = match round_trip(h, &task, work + s.result_timeout).await {
        Ok(x) => x,
        Err(v) => return v,
    };
    let beats = h.beats(id(&task));
    if let Some(p) = beats
        .iter()
        .flat_map(|b| heartbeat_problems(&task, &b.body, &b.raw))
        .next()
    {
        return Verdict::Fail(p);
    }
    let times: Vec<Instant> = beats.iter().map(|b| b.at).collect();
    let silence = longest_silence(sent, &times, r.at);
    let allowed = s.heartbeat_timeout;
    match times.first() {
        Some(first) if first.saturating_duration_since(sent) > allowed => Verdict::Fail(format!(
            "first heartbeat {} after the task (heartbeat_timeout_ms {})",
            secs(first.saturating_duration_since(sent)),
            s.hb_ms()
        )),
        _ if silence > allowed => Verdict::Fail(format!(
            "{} without a heartbeat (heartbeat_timeout_ms {})",
            secs(silence),
            s.hb_ms()
        )),
        _ => Verdict::Pass(format!(
            "{} heartbeats over {}, longest silence {}",
            beats.len(),
            secs(r.at.saturating_duration_since(sent)),
            secs(silence)
        )),
    }
}

async fn cancel_honoured(h: &Harness, s: &Settings) -> Verdict {
    let (directives, _) = s.work(4);
    let task = h.task("cancel", s.input(directives), s.hb_ms());
    if let Err(e) = h.publish(&task, id(&task)).await {
        return Verdict::Fail(e);
    }
    // Cancel once the worker has it (its first heartbeat), or after a
    // heartbeat timeout without one.
    h.wait_beat(id(&task), s.heartbeat_timeout).await;
    if let Err(e) = h.cancel(&task, "worker-check: cancel rule").await {
        return Verdict::Fail(e);
    }
    let cancelled = Instant::now();
    let within = Duration::from_secs(3);
    if !h.settled(within).await {
        return Verdict::Fail(format!(
            "the task is unacknowledged {} after its cancel",
            secs(within)
        ));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    if !h.results(id(&task)).is_empty() {
        return Verdict::Fail("a result was sent for a cancelled task".into());
    }
    let grace = Duration::from_secs(1);
    if h.beats(id(&task)).iter().any(|b| b.at > cancelled + grace) {
        return Verdict::Fail("heartbeats went on after the cancel".into());
    }
    Verdict::Pass(String::new())
}

async fn retryable_vs_fatal(h: &Harness, s: &Settings) -> Verdict {
    let mut problems = Vec::new();
    for (kind, retryable) in [("retryable", true), ("fatal", false)] {
        let mut plan = serde_json::Map::new();
        plan.insert(h.task_type.clone(), json!([kind]));
        let fail = json!({ "fail": plan });
        let task = h.task(kind, s.input(fail), s.hb_ms());
        match round_trip(h, &task, s.result_timeout).await {
            Err(Verdict::Fail(e)) => problems.push(format!("{kind}: {e}")),
            Err(_) => {}
            Ok((_, r)) => {
                problems.extend(result_problems(&task, &r.body, &r.raw));
                let b = &r.body;
                if b["status"] != "failed" {
                    problems.push(format!("a {kind} failure was reported as {}", b["status"]));
                } else if b["error"]["retryable"] != json!(retryable) {
                    problems.push(format!(
                        "a {kind} failure was reported with retryable {}",
                        b["error"]["retryable"]
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        Verdict::Pass(String::new())
    } else {
        Verdict::Fail(problems.join("; "))
    }
}

async fn idempotent_redelivery(h: &Harness, s: &Settings) -> Verdict {
    let first = h.task("idem", s.input(json!({})), s.hb_ms());
    let mut second = first.clone();
    let key = first["idempotency_key"].as_str().unwrap_or_default();
    second["attempt"] = json!(2);
    second["task_id"] = json!(format!("{key}:2"));
    let mut outputs = Vec::new();
    for task in [&first, &second] {
        match round_trip(h, task, s.result_timeout).await {
            Ok((_, r)) => {
                let p = result_problems(task, &r.body, &r.raw);
                if let Some(p) = p.into_iter().next() {
                    return Verdict::Fail(p);
                }
                outputs.push(r.body["output"].clone());
            }
            Err(v) => return v,
        }
    }
    // The same attempt again, as JetStream redelivers it after a crash
    // (another message id, so the stream does not drop it as a duplicate).
    if let Err(e) = h.publish(&first, &format!("{}:again", id(&first))).await {
        return Verdict::Fail(e);
    }
    let until = Instant::now() + s.result_timeout;
    while h.results(id(&first)).len() < 2 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match h.results(id(&first)).get(1) {
        Some(r) => outputs.push(r.body["output"].clone()),
        None => {
            return Verdict::Fail(format!(
                "no result for the redelivered task within {}",
                secs(s.result_timeout)
            ))
        }
    }
    if outputs.iter().all(|o| *o == outputs[0]) && outputs[0].is_object() {
        Verdict::Pass(String::new())
    } else {
        Verdict::Fail(format!(
            "outputs differ for one idempotency_key: {}",
            Value::Array(outputs)
        ))
    }
}

async fn other_version_refused(h: &Harness, s: &Settings) -> Verdict {
    let mut task = h.task("v2", s.input(json!({})), s.hb_ms());
    task["v"] = json!(2);
    if let Err(e) = h.publish(&task, id(&task)).await {
        return Verdict::Fail(e);
    }
    let within = Duration::from_secs(3);
    if !h.settled(within).await {
        return Verdict::Fail(format!(
            "a task with v=2 is unacknowledged after {}: terminate it (+TERM)",
            secs(within)
        ));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    if !h.results(id(&task)).is_empty() || !h.beats(id(&task)).is_empty() {
        return Verdict::Fail("a task with v=2 was run".into());
    }
    Verdict::Pass(String::new())
}

async fn drain_on_sigterm(h: &Harness, s: &Settings, w: &mut WorkerProcess) -> Verdict {
    let (directives, work) = s.work(2);
    let task = h.task("drain", s.input(directives), s.hb_ms());
    if let Err(e) = h.publish(&task, id(&task)).await {
        return Verdict::Fail(e);
    }
    h.wait_beat(id(&task), s.heartbeat_timeout).await;
    w.signal("-TERM");
    let Some(r) = h.wait_result(id(&task), work + s.result_timeout).await else {
        return Verdict::Fail(
            "no result after SIGTERM: a running task must finish and hand its result over".into(),
        );
    };
    if let Some(p) = result_problems(&task, &r.body, &r.raw).into_iter().next() {
        return Verdict::Fail(p);
    }
    if !h.settled(Duration::from_secs(5)).await {
        return Verdict::Fail("the task is unacknowledged after the drain".into());
    }
    match w.wait_exit(s.drain_timeout).await {
        None => Verdict::Fail(format!(
            "still running {} after SIGTERM",
            secs(s.drain_timeout)
        )),
        Some(status) if !status.success() => Verdict::Fail(format!("exited with {status}")),
        Some(_) => Verdict::Pass(String::new()),
    }
}
