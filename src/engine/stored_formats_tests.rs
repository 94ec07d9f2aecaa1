//! Definitions and snapshots stored by builds before map steps (or step
//! conditions) existed are still read: a workflow in flight across the
//! upgrade keeps its pinned definition and its state.

use std::sync::Arc;

use super::registry::PipelineRegistry;
use crate::pipeline::load::parse_pipeline;
use crate::pipeline::stored::{OlderPipelineDefs, PipelineDefV1, PipelineDefV2, PipelineDefV3};
use crate::pipeline::{PipelineDef, PipelineLimits};
use crate::storage::memory::MemoryStorage;
use crate::storage::store::WorkflowStore;
use crate::storage::Storage;
use crate::workflow::stored::{OlderWorkflowStates, WorkflowStateV1, WorkflowStateV2};
use crate::workflow::{decide_start, evolve, PipelineRef, WorkflowState};

/// Version 1 of the video pipeline: no maps, conditions or children, as
/// the oldest stored formats hold it.
const VIDEO: &str = include_str!("../../tests/fixtures/pipelines/video.toml");

fn video() -> PipelineDef {
    parse_pipeline(VIDEO, "video.toml", &PipelineLimits::default()).unwrap()
}

fn v1_of(def: &PipelineDef) -> PipelineDefV1 {
    PipelineDefV1 {
        name: def.name.clone(),
        version: def.version,
        steps: def.steps.clone(),
        workflow_timeout_ms: def.workflow_timeout_ms,
    }
}

#[test]
fn a_pipeline_without_maps_keeps_the_hash_of_its_old_encoding() {
    let def = video();
    let old_bytes = postcard::to_allocvec(&v1_of(&def)).unwrap();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in old_bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    assert_eq!(def.content_hash(), h);
}

#[test]
fn a_definition_stored_in_the_old_encoding_is_found_by_its_workflows() {
    let storage = Arc::new(MemoryStorage::new());
    let store = WorkflowStore::open(storage.clone(), 2).unwrap();
    let def = video();
    let r = PipelineRef {
        name: def.name.clone(),
        version: def.version,
        hash: def.content_hash(),
    };
    let op = store
        .pipeline_put(&r.name, r.version, r.hash, &v1_of(&def))
        .unwrap();
    storage.write(&[op], true).unwrap();
    // A registry that has not registered it (its file is gone) reads it back.
    let registry = PipelineRegistry::new(store.clone(), Vec::new());
    let back = registry.get(&r).unwrap();
    assert_eq!(*back, def);
    let listed = store
        .pipeline_definitions::<PipelineDef, OlderPipelineDefs>(&r.name, 10)
        .unwrap();
    assert_eq!(listed, vec![(r.version, r.hash, def)]);
}

#[test]
fn a_snapshot_in_the_old_encoding_loads_with_no_maps() {
    let storage = Arc::new(MemoryStorage::new());
    let store = WorkflowStore::open(storage.clone(), 2).unwrap();
    let def = video();
    let pref = PipelineRef {
        name: def.name.clone(),
        version: def.version,
        hash: def.content_hash(),
    };
    let d = decide_start("wf-old", pref, &def, r#"{"video_id":"v"}"#, 1_000);
    let mut state = crate::workflow::evolve::start(&d.events[0]).unwrap();
    for e in &d.events[1..] {
        evolve(&mut state, e);
    }
    let old = WorkflowStateV1 {
        id: state.id.clone(),
        pipeline: state.pipeline.clone(),
        input: state.input.clone(),
        status: state.status,
        generation: state.generation,
        steps: state.steps.clone(),
        created_at_ms: state.created_at_ms,
        updated_at_ms: state.updated_at_ms,
        finished_at_ms: state.finished_at_ms,
        deadline_ms: state.deadline_ms,
        reason: state.reason.clone(),
        next_seq: state.next_seq,
    };
    let op = store.snapshot_put(1, "wf-old", &old).unwrap();
    storage.write(&[op], true).unwrap();
    let back = store
        .load_snapshot_compat::<WorkflowState, OlderWorkflowStates>(1, "wf-old")
        .unwrap()
        .unwrap();
    assert_eq!(back, state);
    // As a build before wait steps wrote it: with maps, without signals.
    let v2 = WorkflowStateV2 {
        id: state.id.clone(),
        pipeline: state.pipeline.clone(),
        input: state.input.clone(),
        status: state.status,
        generation: state.generation,
        steps: state.steps.clone(),
        created_at_ms: state.created_at_ms,
        updated_at_ms: state.updated_at_ms,
        finished_at_ms: state.finished_at_ms,
        deadline_ms: state.deadline_ms,
        reason: state.reason.clone(),
        next_seq: state.next_seq,
        maps: state.maps.clone(),
    };
    let op = store.snapshot_put(1, "wf-v2", &v2).unwrap();
    storage.write(&[op], true).unwrap();
    let back = store
        .load_snapshot_compat::<WorkflowState, OlderWorkflowStates>(1, "wf-v2")
        .unwrap()
        .unwrap();
    assert_eq!(back, state);
    // And a snapshot in the current encoding reads as itself.
    let op = store.snapshot_put(1, "wf-new", &state).unwrap();
    storage.write(&[op], true).unwrap();
    let back = store
        .load_snapshot_compat::<WorkflowState, OlderWorkflowStates>(1, "wf-new")
        .unwrap()
        .unwrap();
    assert_eq!(back, state);
}

/// The shipped video pipeline (version 2): a map and a condition.
const VIDEO_MAP: &str = include_str!("../../config/pipelines/video.toml");

#[test]
fn a_map_definition_stored_before_conditions_keeps_its_hash_and_is_read() {
    let mut def = parse_pipeline(VIDEO_MAP, "video.toml", &PipelineLimits::default()).unwrap();
    assert!(def.step_maps.iter().any(Option::is_some));
    // As a build before conditions stored it: with maps, without `when`.
    def.step_whens = Vec::new();
    let v2 = PipelineDefV2 {
        name: def.name.clone(),
        version: def.version,
        steps: def.steps.clone(),
        workflow_timeout_ms: def.workflow_timeout_ms,
        step_maps: def.step_maps.clone(),
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in postcard::to_allocvec(&v2).unwrap() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    assert_eq!(def.content_hash(), h);

    let storage = Arc::new(MemoryStorage::new());
    let store = WorkflowStore::open(storage.clone(), 2).unwrap();
    let r = PipelineRef {
        name: def.name.clone(),
        version: def.version,
        hash: def.content_hash(),
    };
    let op = store.pipeline_put(&r.name, r.version, r.hash, &v2).unwrap();
    storage.write(&[op], true).unwrap();
    let back = store
        .load_pipeline_compat::<PipelineDef, OlderPipelineDefs>(&r.name, r.version, r.hash)
        .unwrap()
        .unwrap();
    assert_eq!(back, def);
}

#[test]
fn a_definition_stored_before_queue_timeouts_keeps_its_hash_and_is_read() {
    let def = parse_pipeline(VIDEO_MAP, "video.toml", &PipelineLimits::default()).unwrap();
    assert!(def.step_whens.iter().any(Option::is_some));
    assert!(def.step_queue_timeouts.is_empty());
    // As a build before queue timeouts stored it: with maps and `when`.
    let v3 = PipelineDefV3 {
        name: def.name.clone(),
        version: def.version,
        steps: def.steps.clone(),
        workflow_timeout_ms: def.workflow_timeout_ms,
        step_maps: def.step_maps.clone(),
        step_whens: def.step_whens.clone(),
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in postcard::to_allocvec(&v3).unwrap() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    assert_eq!(def.content_hash(), h);

    let storage = Arc::new(MemoryStorage::new());
    let store = WorkflowStore::open(storage.clone(), 2).unwrap();
    let r = PipelineRef {
        name: def.name.clone(),
        version: def.version,
        hash: def.content_hash(),
    };
    let op = store.pipeline_put(&r.name, r.version, r.hash, &v3).unwrap();
    storage.write(&[op], true).unwrap();
    let back = store
        .load_pipeline_compat::<PipelineDef, OlderPipelineDefs>(&r.name, r.version, r.hash)
        .unwrap()
        .unwrap();
    assert_eq!(back, def);

    // A definition with a queue timeout hashes (and stores) its own encoding.
    let mut timed = def.clone();
    timed.step_queue_timeouts = vec![Some(600_000); timed.steps.len()];
    assert_ne!(timed.content_hash(), def.content_hash());
    let r = PipelineRef {
        hash: timed.content_hash(),
        ..r
    };
    let op = store
        .pipeline_put(&r.name, r.version, r.hash, &timed)
        .unwrap();
    storage.write(&[op], true).unwrap();
    let back = store
        .load_pipeline_compat::<PipelineDef, OlderPipelineDefs>(&r.name, r.version, r.hash)
        .unwrap()
        .unwrap();
    assert_eq!(back, timed);
}
