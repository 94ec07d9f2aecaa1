//! Poison and bad input: every decoder of outside bytes, fed arbitrary bytes
//! and mutated valid inputs. The property is the same everywhere: no panic,
//! and where the decoder explains a refusal, the explanation is non-empty and
//! one line (it ends up in a log line, a metric reason or an admin reply).
//!
//! Case counts are set per block (`CASES`) so the whole module runs in a few
//! seconds in release; see `docs/reliability.md` for the figures.

use proptest::collection::vec;
use proptest::prelude::*;

use crate::admin::{
    decode_request, AdminError, BackupRequest, BatchCreateRequest, BatchJobRequest, CancelRequest,
    DescribeRequest, HistoryRequest, ListRequest, RerunRequest, Selection, StartRequest, VERBS,
};
use crate::config::Config;
use crate::events::EventMessage;
use crate::pipeline::load::parse_pipeline;
use crate::pipeline::PipelineLimits;
use crate::protocol::trace::TraceParent;
use crate::protocol::{CancelMessage, HeartbeatMessage, Limits, ResultMessage, TaskMessage};
use crate::storage::codec;
use crate::storage::Error as StorageError;
use crate::workflow::{Event, EventKind, JournalRecord, PipelineRef, WorkflowState};

const CASES: u32 = 1024;

const VIDEO: &str = include_str!("../config/pipelines/video.toml");
const SHIPPED_CONFIG: &str = include_str!("../config/orchestrator.toml");

/// The refusal property: a message an operator can read on one line.
fn one_line(what: &str, msg: &str) -> Result<(), TestCaseError> {
    prop_assert!(!msg.trim().is_empty(), "{what}: empty error");
    prop_assert!(
        !msg.contains('\n') && !msg.contains('\r'),
        "{what}: error spans lines: {msg:?}"
    );
    Ok(())
}

/// Valid worker messages, the seeds of the mutation strategies.
const WORKER_SEEDS: [&str; 5] = [
    r#"{"v":1,"task_id":"w:a:0:1","workflow_id":"w","step":"a","attempt":1,"status":"succeeded","output":{"n":1},"worker":"gpu-3"}"#,
    r#"{"v":1,"task_id":"w:a:0:1","workflow_id":"w","step":"a","attempt":1,"status":"failed","error":{"kind":"x","message":"m","retryable":true}}"#,
    r#"{"v":1,"task_id":"w:a:0:1","workflow_id":"w","worker":"gpu-3","progress":{"percent":40}}"#,
    r#"{"v":1,"task_id":"w:a:0:1","idempotency_key":"w:a:0","workflow_id":"w","pipeline":"video","pipeline_version":1,"step":"a","task_type":"a","attempt":1,"max_attempts":3,"input":{"workflow":{},"deps":{}},"deadline_ms":5,"reply_to":"p.results.0","heartbeat_to":"p.heartbeats.0"}"#,
    r#"{"v":1,"task_id":"w:a:0:1","workflow_id":"w","reason":"cancelled by operator"}"#,
];

/// One edit of a byte string: overwrite, insert or remove at a position.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Remove),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit], truncate: Option<usize>) -> Vec<u8> {
    for e in edits {
        match *e {
            Edit::Set(i, b) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes[i] = b;
            }
            Edit::Insert(i, b) => {
                let i = i % (bytes.len() + 1);
                bytes.insert(i, b);
            }
            Edit::Remove(i) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes.remove(i);
            }
            _ => {}
        }
    }
    if let Some(t) = truncate {
        bytes.truncate(t % (bytes.len() + 1));
    }
    bytes
}

/// A seed with a few edits and maybe a truncation.
fn mutated(seeds: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    (
        0..seeds.len(),
        vec(edit(), 0..6),
        proptest::option::of(any::<usize>()),
    )
        .prop_map(move |(i, edits, cut)| apply(seeds[i].as_bytes().to_vec(), &edits, cut))
}

/// Short strings that like quotes, backslashes and line breaks.
fn nasty() -> impl Strategy<Value = String> {
    "[a-z0-9\"\\\\\n\r\t {}:,é\u{0}]{0,16}"
}

/// Well-formed JSON whose string fields (including enum tags) are nasty.
fn json_with_nasty_fields() -> impl Strategy<Value = Vec<u8>> {
    (nasty(), nasty(), nasty(), nasty(), any::<u32>()).prop_map(|(a, b, c, d, v)| {
        serde_json::to_vec(&serde_json::json!({
            "v": v % 3,
            "task_id": a,
            "workflow_id": b,
            "step": c,
            "attempt": 1,
            "status": d,
            "reason": a,
            "id": b,
            "pipeline": c,
            "job": d,
            "from_step": a,
            "input": {},
            "filter": {"status": d},
            "cursor": c,
            "error": {"kind": a, "message": b, "retryable": true},
            "output": {"x": c},
        }))
        .unwrap_or_default()
    })
}

fn poison_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..512),
        mutated(&WORKER_SEEDS),
        json_with_nasty_fields(),
    ]
}

fn worker_messages(bytes: &[u8]) -> Result<(), TestCaseError> {
    let limits = Limits {
        message_max_bytes: 400,
        output_max_bytes: 16,
    };
    if let Err(e) = TaskMessage::decode(bytes, &limits) {
        one_line("task", &e.to_string())?;
        prop_assert!(!e.reason().is_empty());
    }
    if let Err(e) = ResultMessage::decode(bytes, &limits) {
        one_line("result", &e.to_string())?;
    }
    if let Err(e) = HeartbeatMessage::decode(bytes, &limits) {
        one_line("heartbeat", &e.to_string())?;
    }
    // Workers decode cancels with plain serde_json (and ignore bad ones).
    if let Err(e) = serde_json::from_slice::<CancelMessage>(bytes) {
        one_line("cancel", &e.to_string())?;
    }
    Ok(())
}

fn check_admin<T: for<'a> serde::Deserialize<'a> + crate::admin::HasVersion>(
    verb: &str,
    bytes: &[u8],
) -> Result<(), TestCaseError> {
    let mut malformed = false;
    match decode_request::<T>(verb, bytes, || malformed = true) {
        Ok(_) => prop_assert!(!malformed),
        Err(AdminError { code, message }) => {
            prop_assert_eq!(code, crate::admin::code::BAD_REQUEST);
            one_line(verb, &message)?;
        }
    }
    Ok(())
}

/// Every verb through the request type `admin::handle` parses it as.
fn admin_requests(bytes: &[u8]) -> Result<(), TestCaseError> {
    for verb in VERBS {
        match verb {
            "start" => check_admin::<StartRequest>(verb, bytes)?,
            "describe" | "pause" | "resume" | "retry" => {
                check_admin::<DescribeRequest>(verb, bytes)?
            }
            "history" => check_admin::<HistoryRequest>(verb, bytes)?,
            "list" => {
                check_admin::<ListRequest>(verb, bytes)?;
                // `list` then validates the filter.
                if let Ok(r) = serde_json::from_slice::<ListRequest>(bytes) {
                    if let Err(e) = Selection::new(&r.filter, 0) {
                        one_line("list filter", &e.message)?;
                    }
                }
            }
            "cancel" => check_admin::<CancelRequest>(verb, bytes)?,
            "rerun" => check_admin::<RerunRequest>(verb, bytes)?,
            "backup" => check_admin::<BackupRequest>(verb, bytes)?,
            "pipelines.reload" => check_admin::<crate::admin::PipelinesReloadRequest>(verb, bytes)?,
            "capacity" => check_admin::<crate::admin::CapacityRequest>(verb, bytes)?,
            "signal" => check_admin::<crate::admin::SignalRequest>(verb, bytes)?,
            "batch.create" => check_admin::<BatchCreateRequest>(verb, bytes)?,
            "batch.list" => check_admin::<crate::admin::BatchListRequest>(verb, bytes)?,
            "batch.status" | "batch.pause" | "batch.resume" => {
                check_admin::<BatchJobRequest>(verb, bytes)?
            }
            other => prop_assert!(false, "admin verb {other} has no poison test"),
        }
    }
    Ok(())
}

fn sample_record() -> JournalRecord {
    JournalRecord {
        first_seq: 1,
        events: vec![
            Event {
                at_ms: 7,
                kind: EventKind::WorkflowStarted {
                    id: "w-1".into(),
                    pipeline: PipelineRef {
                        name: "video".into(),
                        version: 1,
                        hash: 0xfeed,
                    },
                    input: r#"{"video_id":"v"}"#.into(),
                    steps: 3,
                    deadline_ms: Some(99),
                },
            },
            Event {
                at_ms: 8,
                kind: EventKind::WorkflowCancelled {
                    reason: "operator".into(),
                },
            },
        ],
    }
}

fn sample_state() -> WorkflowState {
    crate::workflow::evolve::start(&sample_record().events[0]).expect("a started state")
}

fn storage_error(what: &str, e: StorageError) -> Result<(), TestCaseError> {
    prop_assert!(
        matches!(e, StorageError::Corrupt { .. }),
        "{what}: expected Corrupt, got {e:?}"
    );
    one_line(what, &e.to_string())
}

/// Pipeline and config text: arbitrary, or a valid file with edits.
fn text_from(seed: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z_=\\[\\]\"\n 0-9.{},#]{0,200}",
        (vec(edit(), 1..8), proptest::option::of(any::<usize>())).prop_map(move |(e, cut)| {
            String::from_utf8_lossy(&apply(seed.as_bytes().to_vec(), &e, cut)).into_owned()
        }),
        // Whole lines dropped or doubled: structure errors rather than syntax.
        (any::<usize>(), any::<bool>()).prop_map(move |(i, dup)| {
            let mut lines: Vec<&str> = seed.lines().collect();
            let i = i % lines.len();
            if dup {
                lines.insert(i, lines[i]);
            } else {
                lines.remove(i);
            }
            lines.join("\n")
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn worker_messages_refuse_poison_on_one_line(bytes in poison_bytes()) {
        worker_messages(&bytes)?;
    }

    #[test]
    fn admin_requests_refuse_poison_on_one_line(bytes in poison_bytes()) {
        admin_requests(&bytes)?;
    }

    #[test]
    fn lifecycle_messages_refuse_poison_on_one_line(bytes in poison_bytes()) {
        if let Err(e) = serde_json::from_slice::<EventMessage>(&bytes) {
            one_line("event message", &e.to_string())?;
        }
        if let Err(e) = crate::events::decode_message(&bytes) {
            one_line("event message", &e)?;
        }
    }

    #[test]
    fn traceparent_parses_only_valid_headers(
        s in prop_oneof![
            any::<String>(),
            "[0-9a-fA-F\\- ]{0,60}",
            ("[0-9a-f]{2}", "[0-9a-f]{32}", "[0-9a-f]{16}", "[0-9a-f]{2}")
                .prop_map(|(v, t, p, f)| format!("{v}-{t}-{p}-{f}")),
        ]
    ) {
        if let Some(tp) = TraceParent::parse(&s) {
            // Only a well-formed header parses, and it parses to what it says.
            // (A future version may append fields; version 00 may not.)
            let t = s.trim();
            prop_assert!(!t.starts_with("ff-"));
            prop_assert!(t.len() == 55 || !t.starts_with("00-"), "{t:?}");
            prop_assert_eq!(&t[3..35], tp.trace_id.as_str());
            prop_assert_eq!(&t[36..52], tp.parent_id.as_str());
        }
    }

    #[test]
    fn random_bytes_are_never_a_stored_record(bytes in vec(any::<u8>(), 0..256)) {
        if let Err(e) = codec::decode::<JournalRecord>(b"J\x00\x01w", &bytes) {
            storage_error("journal", e)?;
        }
        if let Err(e) = codec::decode::<WorkflowState>(b"S\x00\x01w", &bytes) {
            storage_error("snapshot", e)?;
        }
    }

    /// A correct envelope around garbage: the checksum passes, the payload
    /// must still be refused (or decode) without panicking.
    #[test]
    fn garbage_in_a_valid_envelope_is_refused(payload in vec(any::<u8>(), 0..256)) {
        let mut bytes = vec![codec::FORMAT_VERSION];
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        if let Err(e) = codec::decode::<JournalRecord>(b"J", &bytes) {
            storage_error("journal", e)?;
        }
        if let Err(e) = codec::decode::<WorkflowState>(b"S", &bytes) {
            storage_error("snapshot", e)?;
        }
    }

    #[test]
    fn damaged_records_are_detected(
        snapshot in any::<bool>(),
        at in any::<usize>(),
        xor in 1u8..=255,
        cut in proptest::option::of(any::<usize>()),
    ) {
        let good = if snapshot {
            codec::encode(&sample_state())
        } else {
            codec::encode(&sample_record())
        }.expect("encodes");
        let mut bad = good.clone();
        match cut {
            // A torn write: any strict prefix.
            Some(c) => bad.truncate(c % good.len()),
            None => bad[at % good.len()] ^= xor,
        }
        let r = if snapshot {
            codec::decode::<WorkflowState>(b"S", &bad).map(|_| ())
        } else {
            codec::decode::<JournalRecord>(b"J", &bad).map(|_| ())
        };
        match r {
            Ok(()) => prop_assert!(false, "damaged record decoded ({} of {} bytes)", bad.len(), good.len()),
            Err(e) => storage_error("damaged", e)?,
        }
    }

    #[test]
    fn pipeline_files_refuse_poison_on_one_line(text in text_from(VIDEO)) {
        if let Err(e) = parse_pipeline(&text, "poison.toml", &PipelineLimits::default()) {
            one_line("pipeline", &e.to_string())?;
        }
    }

    #[test]
    fn config_files_refuse_poison_on_one_line(text in text_from(SHIPPED_CONFIG)) {
        if let Err(e) = Config::parse(&text) {
            one_line("config", &e)?;
        }
    }
}

/// The seeds are valid, so the mutation tests start from accepted inputs.
#[test]
fn the_seeds_are_accepted() {
    let l = Limits::default();
    ResultMessage::decode(WORKER_SEEDS[0].as_bytes(), &l).unwrap();
    ResultMessage::decode(WORKER_SEEDS[1].as_bytes(), &l).unwrap();
    HeartbeatMessage::decode(WORKER_SEEDS[2].as_bytes(), &l).unwrap();
    TaskMessage::decode(WORKER_SEEDS[3].as_bytes(), &l).unwrap();
    serde_json::from_str::<CancelMessage>(WORKER_SEEDS[4]).unwrap();
    parse_pipeline(VIDEO, "video.toml", &PipelineLimits::default()).unwrap();
    Config::parse(SHIPPED_CONFIG).unwrap();
    let rec = codec::encode(&sample_record()).unwrap();
    assert_eq!(
        codec::decode::<JournalRecord>(b"J", &rec).unwrap(),
        sample_record()
    );
    let snap = codec::encode(&sample_state()).unwrap();
    codec::decode::<WorkflowState>(b"S", &snap).unwrap();
    assert!(
        TraceParent::parse(&crate::protocol::trace::task_traceparent("w", "w:a:0:1")).is_some()
    );
}
