//! Pure-core throughput: one whole video workflow (start + 9 results) through
//! `decide` and `evolve`, and a single result transition. The workflow is
//! version 1 of the video pipeline (tests/fixtures/pipelines: nine static
//! steps), on which the figures were measured.
//!
//! Run: `cargo bench --release --bench core` (figures in docs/benchmarks.md).

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use orchestrator::pipeline::load::load_pipeline_file;
use orchestrator::pipeline::{PipelineDef, PipelineLimits};
use orchestrator::workflow::{
    decide, decide_start, evolve, replay, Command, Input, PipelineRef, TaskOutcome, TaskResult,
    WorkflowState,
};

fn video() -> (PipelineRef, PipelineDef) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipelines/video.toml");
    let def = load_pipeline_file(&path, &PipelineLimits::default()).expect("video.toml");
    let r = PipelineRef {
        name: def.name.clone(),
        version: def.version,
        hash: def.content_hash(),
    };
    (r, def)
}

/// Runs one workflow to completion; returns the number of events.
fn whole_workflow(r: &PipelineRef, def: &PipelineDef, id: &str) -> usize {
    let d = decide_start(id, r.clone(), def, r#"{"video_id":"v"}"#, 1_000);
    let mut state: WorkflowState = replay(d.events.iter()).expect("started");
    let mut events = d.events.len();
    let mut out: Vec<Command> = d.commands;
    let mut now = 1_000;
    while let Some(c) = out.pop() {
        let Command::Dispatch(spec) = c else { continue };
        now += 1;
        let input = Input::TaskResult(TaskResult {
            task_id: spec.task_id.clone(),
            step: spec.step.clone(),
            attempt: spec.attempt,
            outcome: TaskOutcome::Succeeded(r#"{"n":1}"#.to_string()),
            worker: None,
            started_at_ms: None,
        });
        let d = decide(&state, def, &input, now);
        for e in &d.events {
            evolve(&mut state, e);
        }
        events += d.events.len();
        out.extend(d.commands);
    }
    assert!(state.status.is_terminal());
    events
}

fn bench(c: &mut Criterion) {
    let (r, def) = video();
    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(1));
    g.bench_function("video_workflow_decide_evolve", |b| {
        b.iter(|| black_box(whole_workflow(&r, &def, black_box("video-123"))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
