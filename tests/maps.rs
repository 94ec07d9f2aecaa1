//! Map steps through the whole engine: the shipped video pipeline (one
//! task per segment) completes with checked outputs despite failures, its
//! journal grows by about one record per element, and a crash in the middle
//! of a 1,000-element map loses nothing and accepts no element twice.

use std::sync::Arc;
use std::time::Duration;

use orchestrator::engine::Metrics;
use orchestrator::pipeline::load::load_pipeline_file;
use orchestrator::pipeline::{PipelineDef, PipelineLimits};
use orchestrator::sim::SimConfig;
use orchestrator::storage::memory::MemoryStorage;
use orchestrator::storage::Storage;
use orchestrator::verify::verify_store;
use orchestrator::workflow::{EventKind, JournalRecord, Status};

use crate::support::{Harness, Options};

fn video_v2() -> PipelineDef {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pipelines/video.toml");
    load_pipeline_file(&path, &PipelineLimits::default()).expect("the shipped pipeline is valid")
}

fn sim(latency_ms: u64, fail_rate: f64) -> Options {
    Options {
        sim: SimConfig {
            latency_ms,
            fail_rate,
            seed: 7,
            ..SimConfig::default()
        },
        pipelines: Some(vec![video_v2()]),
        ..Options::default()
    }
}

fn input(id: &str, segments: u32) -> String {
    format!(r#"{{"video_id":"{id}","segments":{segments}}}"#)
}

/// Journal records and events of workflow `id`.
fn journal_size(h: &Harness, id: &str) -> (usize, usize) {
    let records = h
        .store
        .load_journal::<JournalRecord>(h.store.partition_of(id), id, 1)
        .unwrap();
    let events = records.iter().map(|(_, r)| r.events.len()).sum();
    (records.len(), events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_workflows_complete_with_checked_outputs_despite_failures() {
    let h = Harness::start(Arc::new(MemoryStorage::new()), sim(0, 0.2)).await;
    for i in 0..20 {
        let id = format!("m-{i}");
        h.engine
            .start_workflow("video", &id, &input(&id, 40))
            .await
            .unwrap();
    }
    h.engine
        .start_workflow("video", "empty", &input("empty", 0))
        .await
        .unwrap();
    // An input that does not say: `segment` lists its default 8.
    h.engine
        .start_workflow("video", "plain", &crate::support::video_input("plain"))
        .await
        .unwrap();
    h.wait_terminal(22, Duration::from_secs(60)).await;
    assert_eq!(Metrics::get(&h.metrics.workflows_completed), 22);
    assert_eq!(Metrics::get(&h.metrics.output_errors), 0);
    let wf = h.engine.describe("m-3").await.unwrap().unwrap();
    let enrich = wf.steps[4].output.as_deref().unwrap();
    let items: Vec<serde_json::Value> = serde_json::from_str(enrich).unwrap();
    assert_eq!(items.len(), 40);
    assert_eq!(items[39]["n"], 1, "one output per element, in index order");
    let empty = h.engine.describe("empty").await.unwrap().unwrap();
    assert_eq!(empty.steps[4].output.as_deref(), Some("[]"));
    let plain = h.engine.describe("plain").await.unwrap().unwrap();
    let items: Vec<serde_json::Value> =
        serde_json::from_str(plain.steps[4].output.as_deref().unwrap()).unwrap();
    assert_eq!(items.len(), orchestrator::sim::DEFAULT_SEGMENTS as usize);
    let report = verify_store(&h.store).unwrap();
    assert_eq!(
        (report.completed, report.violations, report.corrupt),
        (22, 0, 0),
        "{:?}",
        report.details
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_video_pipeline_translates_only_when_the_detected_language_is_not_the_target() {
    use orchestrator::workflow::StepStatus;
    let h = Harness::start(Arc::new(MemoryStorage::new()), sim(0, 0.1)).await;
    let inputs = [
        (
            "fr",
            r#"{"video_id":"fr","segments":3,"language":"fr","target_language":"en"}"#,
        ),
        (
            "en",
            r#"{"video_id":"en","segments":3,"language":"en","target_language":"en"}"#,
        ),
        (
            "none",
            r#"{"video_id":"none","segments":3,"language":"fr"}"#,
        ),
    ];
    for (id, input) in inputs {
        h.engine.start_workflow("video", id, input).await.unwrap();
    }
    h.wait_terminal(3, Duration::from_secs(60)).await;
    assert_eq!(Metrics::get(&h.metrics.workflows_completed), 3);
    // The `n` rule holds with the skipped step counting 0.
    assert_eq!(Metrics::get(&h.metrics.output_errors), 0);
    let def = video_v2();
    let translate = def.step_index("translate").unwrap();
    let segment = def.step_index("segment").unwrap();
    for (id, runs) in [("fr", true), ("en", false), ("none", false)] {
        let wf = h.engine.describe(id).await.unwrap().unwrap();
        let status = wf.steps[translate].status;
        let want = if runs {
            StepStatus::Succeeded
        } else {
            StepStatus::Skipped
        };
        assert_eq!(status, want, "{id}");
        let seg: serde_json::Value =
            serde_json::from_str(wf.steps[segment].output.as_deref().unwrap()).unwrap();
        // segment: 1 + transcribe (3) + translate (4 when it ran, else 0).
        assert_eq!(seg["n"], if runs { 8 } else { 4 }, "{id}");
    }
    let report = verify_store(&h.store).unwrap();
    assert_eq!(
        (report.violations, report.corrupt),
        (0, 0),
        "{:?}",
        report.details
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_journals_about_one_record_per_element() {
    let h = Harness::start(Arc::new(MemoryStorage::new()), sim(0, 0.0)).await;
    h.engine
        .start_workflow("video", "small", &input("small", 10))
        .await
        .unwrap();
    h.engine
        .start_workflow("video", "big", &input("big", 1_000))
        .await
        .unwrap();
    h.wait_terminal(2, Duration::from_secs(60)).await;
    let (small_records, small_events) = journal_size(&h, "small");
    let (big_records, big_events) = journal_size(&h, "big");
    let per_element_records = (big_records - small_records) as f64 / 990.0;
    let per_element_events = (big_events - small_events) as f64 / 990.0;
    eprintln!(
        "journal per element: {per_element_records:.3} records, {per_element_events:.3} events \
         (10 elements: {small_records} records; 1000 elements: {big_records} records)"
    );
    // One result = one record (the element's success and the next element
    // it lets out); two events per element: dispatched and succeeded.
    assert!(per_element_records <= 1.01, "{per_element_records}");
    assert!(
        (per_element_events - 2.0).abs() < 0.01,
        "{per_element_events}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_the_middle_of_a_large_map_loses_nothing_and_accepts_no_element_twice() {
    let storage = Arc::new(MemoryStorage::new());
    let h = Harness::start(storage.clone(), sim(2, 0.05)).await;
    h.engine
        .start_workflow("video", "long", &input("long", 1_000))
        .await
        .unwrap();
    // Wait until the map is well under way.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let wf = h.engine.describe("long").await.unwrap().unwrap();
        let done = wf.maps.values().next().map_or(0, |run| {
            run.elements.iter().filter(|e| e.output.is_some()).count()
        });
        if done >= 200 {
            assert!(done < 1_000, "the crash must hit the map in progress");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "map did not progress: status {:?} steps {:?} maps {:?}",
            wf.status,
            wf.steps
                .iter()
                .map(|s| (s.status, s.attempt))
                .collect::<Vec<_>>(),
            wf.maps
                .values()
                .map(|r| (
                    r.elements.len(),
                    r.elements.iter().filter(|e| e.output.is_some()).count()
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.stop().await;
    storage.crash();
    let h = Harness::start(storage.clone() as Arc<dyn Storage>, sim(0, 0.0)).await;
    assert_eq!(Metrics::get(&h.metrics.workflows_resumed), 1);
    h.wait_terminal(1, Duration::from_secs(60)).await;
    let wf = h.engine.describe("long").await.unwrap().unwrap();
    assert_eq!(wf.status, Status::Completed, "{:?}", wf.reason);
    assert_eq!(Metrics::get(&h.metrics.output_errors), 0);
    // The checker (no element succeeded twice, nothing out of order) agrees.
    let report = verify_store(&h.store).unwrap();
    assert_eq!(
        (report.completed, report.violations, report.corrupt),
        (1, 0, 0),
        "{:?}",
        report.details
    );
    let records = h
        .store
        .load_journal::<JournalRecord>(h.store.partition_of("long"), "long", 1)
        .unwrap();
    let successes = records
        .iter()
        .flat_map(|(_, r)| r.events.iter())
        .filter(|e| matches!(e.kind, EventKind::ElementSucceeded { .. }))
        .count();
    assert_eq!(successes, 1_000);
    h.stop().await;
}

/// The upgrade the product ships: a data dir whose video workflows started
/// on version 1 (nine static steps) is opened with `config/pipelines`,
/// which declares only version 2. The workflow in flight finishes on the
/// definition it pinned, new ones start on version 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_workflows_started_on_version_1_finish_on_it_after_the_upgrade() {
    let storage = Arc::new(MemoryStorage::new());
    // Tasks that take an hour: `old` is still running when the node stops.
    let before = Options {
        pipelines: Some(crate::support::video_v1_pipelines()),
        ..sim(3_600_000, 0.0)
    };
    let h = Harness::start(storage.clone(), before).await;
    h.engine
        .start_workflow("video", "old", &crate::support::video_input("old"))
        .await
        .unwrap();
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    while Metrics::get(&h.metrics.tasks_dispatched) < 1 {
        assert!(std::time::Instant::now() < give_up, "ingest never sent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.stop().await;

    let after = Options {
        pipelines: Some(vec![video_v2()]),
        ..sim(0, 0.0)
    };
    let h = Harness::start(storage as Arc<dyn Storage>, after).await;
    h.engine
        .start_workflow("video", "new", &crate::support::video_input("new"))
        .await
        .unwrap();
    h.wait_terminal(2, Duration::from_secs(30)).await;
    assert_eq!(Metrics::get(&h.metrics.output_errors), 0);
    let index_n = |wf: &orchestrator::workflow::WorkflowState, def: &PipelineDef| {
        let out = wf.steps[def.step_index("index").unwrap()].output.as_deref();
        serde_json::from_str::<serde_json::Value>(out.unwrap()).unwrap()["n"].as_u64()
    };
    let v1 = crate::support::video_v1_pipelines().remove(0);
    let old = h.engine.describe("old").await.unwrap().unwrap();
    let new = h.engine.describe("new").await.unwrap().unwrap();
    assert_eq!(
        (old.status, new.status),
        (Status::Completed, Status::Completed)
    );
    assert_eq!((old.pipeline.version, new.pipeline.version), (1, 2));
    assert_eq!((old.steps.len(), new.steps.len()), (9, 8));
    // `index`: 17 on version 1; on version 2, 1 + 8 enrichments + 1.
    assert_eq!(
        (index_n(&old, &v1), index_n(&new, &video_v2())),
        (Some(17), Some(10))
    );
    let report = verify_store(&h.store).unwrap();
    assert_eq!(
        (report.completed, report.violations, report.corrupt),
        (2, 0, 0),
        "{:?}",
        report.details
    );
    h.stop().await;
}
