//! Tests of child steps in the pure core: the child started once per
//! generation under its derived id, its outcome taken once, cancel, pause
//! and resume passed on, retry and rerun starting a new child, the nesting
//! limit, and a property test over random DAGs with child steps, random
//! child outcomes and random timing.

use proptest::prelude::*;

use super::lineage::{child_id, child_output, depth, parent_of, ParentLink};
use super::tests::{step, World};
use super::*;
use crate::pipeline::{ChildDef, PipelineDef, WhenDef};

fn child(pipeline: &str) -> Option<ChildDef> {
    Some(ChildDef {
        pipeline: pipeline.to_string(),
        version: None,
        depth_max: 8,
    })
}

/// `fetch` → `enrich` (a child of pipeline `enrichment`) → `index`.
fn parent_pipeline() -> PipelineDef {
    PipelineDef {
        name: "video".into(),
        version: 4,
        steps: vec![
            step("fetch", &[], 2),
            step("enrich", &[0], 2),
            step("index", &[1], 2),
        ],
        workflow_timeout_ms: None,
        step_maps: Vec::new(),
        step_whens: Vec::new(),
        step_waits: Vec::new(),
        step_queue_timeouts: Vec::new(),
        in_progress_max: None,
        step_children: vec![None, child("enrichment"), None],
    }
}

fn fetched() -> World {
    let mut w = World::start(parent_pipeline(), r#"{"v":1}"#);
    let t = w.current("fetch").unwrap();
    w.succeed(&t, r#"{"url":"u"}"#);
    w
}

fn finished(child: &str, outcome: ChildOutcome) -> Input {
    Input::ChildFinished {
        child_id: child.to_string(),
        outcome,
    }
}

#[test]
fn child_ids_derive_from_parent_step_and_generation_and_parse_back() {
    let id = child_id("wf-1", "enrich", 3);
    assert_eq!(id, "wf-1~enrich~3");
    assert_eq!(
        parent_of(&id),
        Some(ParentLink {
            parent: "wf-1",
            step: "enrich",
            generation: 3
        })
    );
    let grandchild = child_id(&id, "deep", 0);
    assert_eq!(parent_of(&grandchild).unwrap().parent, id);
    assert_eq!(depth("wf-1"), 1);
    assert_eq!(depth(&id), 2);
    assert_eq!(depth(&grandchild), 3);
    for plain in ["wf-1", "a~b", "a~B~1", "~s~1", "a~s~x", "a~s~"] {
        assert_eq!(parent_of(plain), None, "{plain}");
    }
}

#[test]
fn a_child_step_starts_one_child_with_the_task_input_and_takes_its_output() {
    let mut w = fetched();
    assert_eq!(w.children.len(), 1, "one child start asked for");
    let spec = w.children[0].clone();
    assert_eq!(spec.child_id, "wf-1~enrich~0");
    assert_eq!(spec.parent_id, "wf-1");
    assert_eq!(spec.step, "enrich");
    assert_eq!(spec.pipeline, "enrichment");
    assert_eq!(spec.version, None);
    assert_eq!(
        spec.input,
        r#"{"workflow":{"v":1},"deps":{"fetch":{"url":"u"}}}"#
    );
    assert!(
        w.tasks.iter().all(|t| t.step != "enrich"),
        "workers see no task"
    );
    assert_eq!(w.state.steps[1].status, StepStatus::Dispatched);
    let output = r#"{"tags":["a"]}"#.to_string();
    let o = w.apply(finished(&spec.child_id, ChildOutcome::Succeeded { output }));
    assert_eq!(o, Outcome::Applied);
    assert_eq!(w.state.steps[1].status, StepStatus::Succeeded);
    let index = w.current("index").expect("index dispatched");
    assert!(
        index.input.contains(r#""enrich":{"tags":["a"]}"#),
        "{}",
        index.input
    );
    // The same report again changes nothing.
    let again = finished(
        &spec.child_id,
        ChildOutcome::Failed {
            reason: "late".into(),
        },
    );
    assert_eq!(w.apply(again), Outcome::Ignored(IgnoreReason::Duplicate));
    w.succeed(&index, "{}");
    assert_eq!(w.state.status, Status::Completed);
    assert_eq!(replay(w.journal.iter().map(|(_, e)| e)).unwrap(), w.state);
}

#[test]
fn a_failed_or_cancelled_child_fails_the_step_and_the_workflow() {
    for outcome in [
        ChildOutcome::Failed {
            reason: "step x failed".into(),
        },
        ChildOutcome::Cancelled {
            reason: "operator".into(),
        },
    ] {
        let mut w = fetched();
        let id = w.children[0].child_id.clone();
        assert_eq!(w.apply(finished(&id, outcome.clone())), Outcome::Applied);
        assert_eq!(w.state.status, Status::Failed);
        assert_eq!(w.state.steps[1].status, StepStatus::Failed);
        let reason = w.state.reason.clone().unwrap();
        assert!(
            reason.starts_with("step enrich failed: child workflow wf-1~enrich~0"),
            "{reason}"
        );
        let error = w.state.steps[1].last_error.clone().unwrap();
        assert_eq!(error.kind, format!("child_{}", outcome.as_str()));
    }
}

#[test]
fn cancel_pause_and_resume_pass_on_to_the_running_child() {
    let mut w = fetched();
    let id = w.children[0].child_id.clone();
    w.apply(Input::Pause);
    w.apply(Input::Resume);
    w.apply(Input::Cancel {
        reason: "stop".into(),
    });
    let kinds: Vec<(&str, &str)> = w
        .signals
        .iter()
        .map(|(c, s)| {
            (
                c.as_str(),
                match s {
                    ChildSignal::Pause => "pause",
                    ChildSignal::Resume => "resume",
                    ChildSignal::Cancel { .. } => "cancel",
                },
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (id.as_str(), "pause"),
            (id.as_str(), "resume"),
            (id.as_str(), "cancel")
        ]
    );
    assert_eq!(w.state.steps[1].status, StepStatus::Cancelled);
    // The cancelled child's report reaches a terminal parent: ignored.
    let late = finished(
        &id,
        ChildOutcome::Cancelled {
            reason: "parent".into(),
        },
    );
    assert_eq!(
        w.apply(late),
        Outcome::Ignored(IgnoreReason::WorkflowTerminal)
    );
}

#[test]
fn a_retry_starts_a_new_child_and_the_old_ones_report_is_stale() {
    let mut w = fetched();
    let old = w.children[0].child_id.clone();
    w.apply(finished(
        &old,
        ChildOutcome::Failed {
            reason: "boom".into(),
        },
    ));
    assert_eq!(
        w.apply(Input::Reopen(ReopenMode::RetryFailed)),
        Outcome::Applied
    );
    assert_eq!(w.children.len(), 2);
    assert_eq!(w.children[1].child_id, "wf-1~enrich~1");
    let stale = finished(
        &old,
        ChildOutcome::Succeeded {
            output: "{}".into(),
        },
    );
    assert_eq!(w.apply(stale), Outcome::Ignored(IgnoreReason::StaleAttempt));
    let foreign = finished(
        "other~enrich~0",
        ChildOutcome::Succeeded {
            output: "{}".into(),
        },
    );
    assert_eq!(
        w.apply(foreign),
        Outcome::Ignored(IgnoreReason::UnknownTask)
    );
    w.drain();
    assert_eq!(w.state.status, Status::Completed);
}

#[test]
fn restart_children_recreates_the_starts_of_running_children_only() {
    let mut w = fetched();
    assert_eq!(restart_children(&w.state, &w.pipeline), w.children);
    let id = w.children[0].child_id.clone();
    w.apply(finished(
        &id,
        ChildOutcome::Succeeded {
            output: "{}".into(),
        },
    ));
    assert!(restart_children(&w.state, &w.pipeline).is_empty());
    // A child step is no task: nothing to re-send to workers.
    let w = fetched();
    assert!(redispatch(&w.state, &w.pipeline, 1, w.now).is_none());
}

#[test]
fn a_child_deeper_than_the_limit_fails_the_step_instead_of_starting() {
    let mut p = parent_pipeline();
    p.step_children[1] = Some(ChildDef {
        pipeline: "enrichment".into(),
        version: Some(2),
        depth_max: 2,
    });
    // "wf-1" is at depth 1, its child at depth 2: allowed.
    let mut w = World::start(p.clone(), "{}");
    let t = w.current("fetch").unwrap();
    w.succeed(&t, "{}");
    assert_eq!(w.children[0].version, Some(2));
    // A workflow that is itself at depth 2 may not start a third level.
    let id = "top~enrich~0";
    let d = decide_start(id, super::tests::pref(&p), &p, "{}", 1_000);
    let mut state = super::evolve::start(&d.events[0]).unwrap();
    for e in &d.events[1..] {
        evolve(&mut state, e);
    }
    let fetch = match &d.commands[0] {
        Command::Dispatch(spec) => spec.clone(),
        other => panic!("{other:?}"),
    };
    let result = Input::TaskResult(TaskResult {
        task_id: fetch.task_id.clone(),
        step: "fetch".into(),
        attempt: 1,
        outcome: TaskOutcome::Succeeded("{}".into()),
        worker: None,
        started_at_ms: None,
    });
    let d = decide(&state, &p, &result, 2_000);
    assert!(d
        .commands
        .iter()
        .all(|c| !matches!(c, Command::StartChild(_))));
    for e in &d.events {
        evolve(&mut state, e);
    }
    assert_eq!(state.status, Status::Failed);
    let reason = state.reason.unwrap();
    assert!(reason.contains("would nest deeper than 2"), "{reason}");
}

#[test]
fn a_childs_output_is_its_final_steps_outputs_by_name() {
    let p = parent_pipeline();
    let mut w = fetched();
    let id = w.children[0].child_id.clone();
    w.apply(finished(
        &id,
        ChildOutcome::Succeeded {
            output: r#"{"x":1}"#.into(),
        },
    ));
    let t = w.current("index").unwrap();
    w.succeed(&t, r#"{"done":true}"#);
    assert_eq!(child_output(&w.state, &p), r#"{"index":{"done":true}}"#);
}

#[derive(Debug, Clone)]
enum Action {
    Succeed(usize),
    Fail(usize, bool),
    ChildEnds(usize, u8),
    Redeliver(usize),
    FireTimer(usize),
    Cancel,
    Pause,
    Resume,
    Retry,
    Rerun(usize),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => any::<usize>().prop_map(Action::Succeed),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(k, r)| Action::Fail(k, r)),
        5 => (any::<usize>(), 0u8..4).prop_map(|(k, o)| Action::ChildEnds(k, o)),
        3 => any::<usize>().prop_map(Action::Redeliver),
        2 => any::<usize>().prop_map(Action::FireTimer),
        1 => Just(Action::Cancel),
        1 => Just(Action::Pause),
        2 => Just(Action::Resume),
        1 => Just(Action::Retry),
        1 => any::<usize>().prop_map(Action::Rerun),
    ]
}

/// Up to 6 steps with random dependencies; about half are child steps and
/// about a third have a condition on the input.
fn dag_with_children() -> impl Strategy<Value = PipelineDef> {
    (
        1usize..7,
        proptest::collection::vec((any::<u8>(), 1u32..4, any::<u8>()), 7),
    )
        .prop_map(|(n, raw)| {
            let mut steps = Vec::new();
            let mut children = Vec::new();
            let mut whens = Vec::new();
            for (i, &(mask, attempts, kind)) in raw.iter().take(n).enumerate() {
                let needs: Vec<u16> = (0..i)
                    .filter(|j| mask & (1 << (j % 8)) != 0)
                    .map(|j| j as u16)
                    .collect();
                steps.push(step(&format!("s{i}"), &needs, attempts));
                children.push((kind % 2 == 0).then(|| ChildDef {
                    pipeline: format!("c{}", kind % 3),
                    version: None,
                    depth_max: 8,
                }));
                whens.push((kind % 3 == 1).then(|| WhenDef {
                    text: format!("input.flags[{i}]"),
                    values_max: 1_000,
                }));
            }
            PipelineDef {
                name: "random".into(),
                version: 1,
                steps,
                workflow_timeout_ms: None,
                step_maps: Vec::new(),
                step_whens: whens,
                step_waits: Vec::new(),
                step_queue_timeouts: Vec::new(),
                in_progress_max: None,
                step_children: children,
            }
        })
}

fn child_outcome(o: u8) -> ChildOutcome {
    match o {
        0 | 1 => ChildOutcome::Succeeded {
            output: format!(r#"{{"n":{o}}}"#),
        },
        2 => ChildOutcome::Failed {
            reason: "child failed".into(),
        },
        _ => ChildOutcome::Cancelled {
            reason: "child cancelled".into(),
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// After every input the checker finds no violation (nothing started
    /// before its dependencies, one child per step and generation, a step
    /// done only once its child completed) and every running child was
    /// asked for under its derived id; replay equals the live state; and
    /// the workflow drains to completion (after a retry when it failed).
    #[test]
    fn child_invariants_hold_under_random_interleavings(
        p in dag_with_children(),
        flags in proptest::collection::vec(any::<bool>(), 7),
        actions in proptest::collection::vec(action(), 0..100),
    ) {
        let input = format!(r#"{{"flags":{}}}"#, serde_json::to_string(&flags).unwrap());
        let mut w = World::start(p, &input);
        for a in actions {
            match a {
                Action::Succeed(..) | Action::Fail(..) if w.tasks.is_empty() => {}
                Action::Succeed(k) => {
                    let t = w.tasks[k % w.tasks.len()].clone();
                    w.succeed(&t, "{}");
                }
                Action::Fail(k, retryable) => {
                    let t = w.tasks[k % w.tasks.len()].clone();
                    w.fail(&t, "flaky", retryable);
                }
                Action::ChildEnds(..) if w.children.is_empty() => {}
                Action::ChildEnds(k, o) => {
                    // Any child ever asked for, current or of an older
                    // generation, ends in a random way.
                    let c = w.children[k % w.children.len()].child_id.clone();
                    w.apply(finished(&c, child_outcome(o)));
                }
                Action::Redeliver(k) => {
                    if !w.delivered.is_empty() {
                        let input = w.delivered[k % w.delivered.len()].clone();
                        w.apply(input);
                    }
                }
                Action::FireTimer(k) => {
                    if !w.timers.is_empty() {
                        let (due, timer) = w.timers[k % w.timers.len()].clone();
                        w.now = w.now.max(due);
                        w.apply(Input::TimerFired(timer));
                    }
                }
                Action::Cancel => { w.apply(Input::Cancel { reason: "prop".into() }); }
                Action::Pause => { w.apply(Input::Pause); }
                Action::Resume => { w.apply(Input::Resume); }
                Action::Retry => { w.apply(Input::Reopen(ReopenMode::RetryFailed)); }
                Action::Rerun(k) => {
                    let name = w.pipeline.steps[k % w.pipeline.steps.len()].name.clone();
                    w.apply(Input::Reopen(ReopenMode::RerunFrom(name)));
                }
            }
            // Every running child was asked for, under the id its step and
            // generation give; no two starts asked for the same id.
            for id in w.open_children() {
                prop_assert!(w.children.iter().any(|c| c.child_id == id));
                let link = parent_of(&id).unwrap();
                prop_assert_eq!(link.parent, "wf-1");
                prop_assert_eq!(link.generation, w.state.generation);
            }
            let mut ids: Vec<&str> = w.children.iter().map(|c| c.child_id.as_str()).collect();
            ids.sort_unstable();
            let n = ids.len();
            ids.dedup();
            prop_assert_eq!(ids.len(), n, "a child id was started twice");
            // A terminal workflow has no child running.
            if w.state.status.is_terminal() {
                prop_assert!(w.open_children().is_empty());
            }
        }
        let replayed = replay(w.journal.iter().map(|(_, e)| e)).unwrap();
        prop_assert_eq!(&replayed, &w.state);
        if !w.state.status.is_terminal() {
            w.drain();
        }
        if w.state.status != Status::Completed {
            prop_assert_eq!(w.apply(Input::Reopen(ReopenMode::RetryFailed)), Outcome::Applied);
            w.drain();
        }
        prop_assert_eq!(w.state.status, Status::Completed);
        let replayed = replay(w.journal.iter().map(|(_, e)| e)).unwrap();
        prop_assert_eq!(replayed, w.state);
    }
}
