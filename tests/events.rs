//! The lifecycle event stream: every journaled transition, in journal order
//! per workflow, also across an orchestrator kill -9 (the outbox).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use orchestrator::events::EventMessage;
use orchestrator::protocol::subjects::{event_kind_position, Subjects, EVENT_KINDS};
use orchestrator::storage::rocks::{RocksConfig, RocksStorage};
use orchestrator::storage::store::WorkflowStore;
use orchestrator::storage::Storage;
use orchestrator::workflow::JournalRecord;

use crate::cli::Bench;

/// Every record of the event stream, with its message's subject, in stream
/// order (a batch message gives one entry per record).
async fn read_stream(url: &str) -> Vec<(String, EventMessage)> {
    read_filtered(url, "narralytica.events.>").await
}

/// The records of the event stream whose subject matches `filter`.
async fn read_filtered(url: &str, filter: &str) -> Vec<(String, EventMessage)> {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    let stream = js.get_stream("NARRALYTICA_EVENTS").await.unwrap();
    let c: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            filter_subject: filter.to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut msgs = c.messages().await.unwrap();
    let mut out = Vec::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(2), msgs.next()).await {
        let records = orchestrator::events::decode_message(&m.payload).expect("an event message");
        for body in records {
            out.push((m.subject.to_string(), body));
        }
    }
    out
}

/// The journal of every workflow: (seq, event name) in order.
fn journals(dir: &std::path::Path) -> HashMap<String, Vec<(u64, String)>> {
    let storage: Arc<dyn Storage> =
        Arc::new(RocksStorage::open(dir, &RocksConfig::default()).unwrap());
    let store = WorkflowStore::open_existing(storage).unwrap();
    let mut out: HashMap<String, Vec<(u64, String)>> = HashMap::new();
    store
        .scan_all_journals::<JournalRecord, _>(|k, rec| {
            let (k, rec) = (k.unwrap(), rec.unwrap());
            let list = out.entry(k.id).or_default();
            for (i, ev) in rec.events.iter().enumerate() {
                list.push((rec.first_seq + i as u64, ev.kind.name().to_string()));
            }
            true
        })
        .unwrap();
    out
}

#[test]
fn the_event_stream_has_every_transition_in_journal_order_across_a_kill_9() {
    let mut b = Bench::new(None);
    b.start_orchestrator();
    b.start_worker(&["--latency-ms", "100"]);
    let n = 15;
    for i in 0..n {
        let out = b.start("video", &format!("e-{i}"), false);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Kill -9 mid-run: some records are journaled but not yet published.
    std::thread::sleep(Duration::from_millis(600));
    let mut orch = b.orch.take().unwrap();
    orch.kill().unwrap();
    let _ = orch.wait();
    b.start_orchestrator();
    for i in 0..n {
        let out = b.start("video", &format!("e-{i}"), true);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("status=completed"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Graceful stop: the publisher has had time to drain (the last commit
    // happened before `start --wait` returned); what is left stays in the
    // outbox and is published by the next start, so give it a moment.
    std::thread::sleep(Duration::from_millis(500));
    b.stop();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut msgs = rt.block_on(read_stream(&b.url()));
    let mut journal = journals(b.dir.path());
    if msgs.iter().map(|(_, m)| m.events.len()).sum::<usize>()
        < journal.values().map(Vec::len).sum::<usize>()
    {
        // Events left in the outbox by the stop: a restart publishes them.
        b.start_orchestrator();
        std::thread::sleep(Duration::from_secs(2));
        b.stop();
        msgs = rt.block_on(read_stream(&b.url()));
        journal = journals(b.dir.path());
    }
    assert_eq!(journal.len(), n);
    let mut seen: HashMap<String, Vec<(u64, String)>> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for (subject, m) in &msgs {
        assert!(!m.events.is_empty(), "a message has events");
        let kinds = m.events.iter().fold(0u32, |mask, e| {
            mask | 1 << event_kind_position(&e.event).expect("a known kind")
        });
        assert_eq!(
            subject,
            &Subjects::new("narralytica")
                .unwrap()
                .events(&m.pipeline, kinds, &m.status),
            "the subject names the pipeline, every kind of event inside, and the status"
        );
        for e in &m.events {
            assert_eq!(e.id, format!("{}:{}", m.workflow_id, e.seq));
            // At least once: a re-sent message repeats ids; keep the first.
            if ids.insert(e.id.clone()) {
                seen.entry(m.workflow_id.clone())
                    .or_default()
                    .push((e.seq, e.event.clone()));
            }
        }
    }
    for (id, events) in &journal {
        assert_eq!(
            seen.get(id),
            Some(events),
            "workflow {id}: the stream must carry its journal, in order"
        );
    }
    // The completion message of each workflow carries the index output
    // (n = 1 + the 8 default segments' enrichments + 1).
    let completions = msgs
        .iter()
        .filter(|(s, _)| s.contains(".workflow_completed."))
        .filter(|(_, m)| {
            m.status == "completed"
                && m.events.iter().any(|e| {
                    e.step.as_deref() == Some("index")
                        && e.output
                            .as_ref()
                            .is_some_and(|o| o.get().contains("\"n\":10"))
                })
        })
        .map(|(_, m)| m.workflow_id.clone())
        .collect::<std::collections::HashSet<_>>();
    assert_eq!(completions.len(), n);
}

/// Runs an ops command against the bench; it must succeed.
fn ops(b: &Bench, args: &[&str]) -> String {
    let o = crate::cli::bin()
        .args(args)
        .args(["--nats-url", &b.url()])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Polls `describe` until the workflow has `status`.
fn wait_status(b: &Bench, id: &str, status: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = ops(b, &["describe", id]);
        if out.starts_with(&format!("workflow id={id} status={status} ")) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} not {status}: {out}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_consumer_of_one_event_kind_sees_every_event_of_that_kind() {
    let dir = tempfile::tempdir().unwrap();
    let video =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pipelines/video.toml");
    std::fs::copy(video, dir.path().join("video.toml")).unwrap();
    // No worker serves `hold` (it stays running until cancelled) or `late`
    // (its attempts time out, then the workflow fails).
    std::fs::write(
        dir.path().join("hold.toml"),
        "[pipeline]\nname = \"hold\"\nversion = 1\n[[steps]]\nname = \"hold\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("late.toml"),
        "[pipeline]\nname = \"late\"\nversion = 1\n[defaults.retry]\nmax_attempts = 2\n\
         initial_backoff = \"10ms\"\n[defaults.timeouts]\nschedule_to_start = \"300ms\"\n\
         [[steps]]\nname = \"late\"\n",
    )
    .unwrap();
    // `segs` maps over the segments `segment` lists; with the worker's
    // failure rate some element attempts fail and are retried. Nobody
    // serves `unserved`, so `lost`'s single element times out and its map
    // fails.
    std::fs::write(
        dir.path().join("segs.toml"),
        "[pipeline]\nname = \"segs\"\nversion = 1\n[defaults.retry]\nmax_attempts = 10\n\
         initial_backoff = \"10ms\"\n[[steps]]\nname = \"segment\"\n[[steps]]\n\
         name = \"each\"\ntask_type = \"enrich_segment\"\nneeds = [\"segment\"]\n\
         map = { over = \"segment/segments\", max_parallel = 4 }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("lost.toml"),
        "[pipeline]\nname = \"lost\"\nversion = 1\n[defaults.retry]\nmax_attempts = 10\n\
         initial_backoff = \"10ms\"\n[[steps]]\nname = \"segment\"\n[[steps]]\n\
         name = \"each\"\ntask_type = \"unserved\"\nneeds = [\"segment\"]\n\
         map = { over = \"segment/segments\" }\n[steps.retry]\nmax_attempts = 1\n\
         [steps.timeouts]\nschedule_to_start = \"300ms\"\n",
    )
    .unwrap();
    // `skip` skips its one step by its condition on the input, and
    // completes without a task.
    std::fs::write(
        dir.path().join("skip.toml"),
        "[pipeline]\nname = \"skip\"\nversion = 1\n[[steps]]\nname = \"gate\"\n\
         when = \"input.run == true\"\n",
    )
    .unwrap();
    // `gate` waits for the signal `ok`: `g-1` gets it, `g-2` times out.
    std::fs::write(
        dir.path().join("gate.toml"),
        "[pipeline]\nname = \"gate\"\nversion = 1\n[[steps]]\nname = \"gate\"\n\
         wait = { signal = \"ok\", timeout = \"5s\" }\n",
    )
    .unwrap();
    // `parent` runs `kid` as a child workflow and completes with it.
    std::fs::write(
        dir.path().join("kid.toml"),
        "[pipeline]\nname = \"kid\"\nversion = 1\n[[steps]]\nname = \"segment\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("parent.toml"),
        "[pipeline]\nname = \"parent\"\nversion = 1\n[[steps]]\nname = \"sub\"\n\
         pipeline = \"kid\"\n",
    )
    .unwrap();
    let mut b = Bench::new(Some(dir.path().to_path_buf()));
    b.start_orchestrator();
    b.start_worker(&[
        "--task-types",
        "ingest,extract_audio,transcribe,segment,enrich_segment,embed,index",
        "--fail-rate",
        "0.3",
    ]);
    for i in 0..2 {
        let out = b.start_with("segs", &format!("s-{i}"), r#"{"segments": 20}"#, true);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(b
        .start_with("lost", "m-1", r#"{"segments": 1}"#, false)
        .status
        .success());
    wait_status(&b, "m-1", "failed");
    for i in 0..4 {
        let out = b.start("video", &format!("v-{i}"), true);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(b.start("hold", "h-1", false).status.success());
    for verb in ["pause", "resume", "cancel"] {
        ops(&b, &[verb, "h-1"]);
    }
    assert!(b
        .start_with("skip", "k-1", r#"{"run":false}"#, true)
        .status
        .success());
    assert!(b.start("parent", "c-1", false).status.success());
    wait_status(&b, "c-1", "completed");
    assert!(b.start("gate", "g-1", false).status.success());
    ops(&b, &["signal", "g-1", "ok", "--id", "ok-1"]);
    wait_status(&b, "g-1", "completed");
    assert!(b.start("gate", "g-2", false).status.success());
    wait_status(&b, "g-2", "failed");
    assert!(b.start("late", "l-1", false).status.success());
    wait_status(&b, "l-1", "failed");
    ops(&b, &["retry", "l-1"]);
    wait_status(&b, "l-1", "failed");
    std::thread::sleep(Duration::from_millis(500));
    b.stop();

    let journal = journals(b.dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let subjects = Subjects::new("narralytica").unwrap();
    for kind in EVENT_KINDS {
        let expected: std::collections::BTreeSet<String> = journal
            .iter()
            .flat_map(|(id, evs)| {
                evs.iter()
                    .filter(|(_, name)| name == kind)
                    .map(move |(seq, _)| format!("{id}:{seq}"))
            })
            .collect();
        assert!(!expected.is_empty(), "the scenario journals {kind}");
        let filter = subjects.events_of_kind(None, kind).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for (subject, record) in rt.block_on(read_filtered(&b.url(), &filter)) {
            let of_kind: Vec<&str> = record
                .events
                .iter()
                .filter(|e| e.event == kind)
                .map(|e| e.id.as_str())
                .collect();
            assert!(
                !of_kind.is_empty(),
                "{filter} selected {subject} without a {kind}"
            );
            seen.extend(of_kind.into_iter().map(str::to_string));
        }
        assert_eq!(
            seen, expected,
            "{filter}: every {kind} event, and only those"
        );
    }
}
