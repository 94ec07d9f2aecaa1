//! Tests of map steps in the pure core: fan-out, limits, failures
//! tolerated or not, retries of elements, reopen, and property tests over
//! random DAGs with random maps (empty arrays included) and random
//! conditions (`when`, true or false at random), with the independent
//! journal checker as oracle.

use proptest::prelude::*;

use super::tests::{step, World};
use super::*;
use crate::pipeline::{MapDef, PipelineDef, WhenDef};
use crate::verify::check_journal;

fn map_def(over_step: u16, pointer: &str, max_parallel: u32, min_success_bp: u32) -> MapDef {
    MapDef {
        over_step,
        pointer: pointer.to_string(),
        max_parallel,
        min_success_bp,
        elements_max: 100,
        output_bytes_max: 10_000,
    }
}

/// `segment` → `enrich` (map over `segment/segments`) → `embed`.
pub(super) fn fan_out(max_parallel: u32, min_success_bp: u32) -> PipelineDef {
    PipelineDef {
        name: "video".into(),
        version: 2,
        steps: vec![
            step("segment", &[], 3),
            step("enrich", &[0], 2),
            step("embed", &[1], 3),
        ],
        workflow_timeout_ms: None,
        step_maps: vec![
            None,
            Some(map_def(0, "/segments", max_parallel, min_success_bp)),
            None,
        ],
        step_whens: Vec::new(),
        step_waits: Vec::new(),
        step_queue_timeouts: Vec::new(),
        in_progress_max: None,
        step_children: Vec::new(),
    }
}

/// Starts `fan_out` and answers `segment` with `segments`.
fn expanded(max_parallel: u32, min_success_bp: u32, segments: &str) -> World {
    let mut w = World::start(fan_out(max_parallel, min_success_bp), r#"{"v":1}"#);
    let seg = w.current("segment").unwrap();
    w.succeed(&seg, &format!(r#"{{"segments":{segments}}}"#));
    w
}

fn element_tasks(w: &World) -> Vec<TaskSpec> {
    w.out_tasks()
        .into_iter()
        .filter(|t| t.step == "enrich")
        .collect()
}

#[test]
fn each_element_is_a_task_and_the_outputs_go_downstream_in_index_order() {
    let mut w = expanded(2, 10_000, r#"["a","b",{"c":3}]"#);
    let out = element_tasks(&w);
    assert_eq!(out.len(), 2, "max_parallel bounds the elements out");
    assert_eq!(out[0].task_id, "wf-1:enrich[0]:0:1");
    assert_eq!(out[0].idempotency_key, "wf-1:enrich[0]:0");
    assert_eq!(out[1].task_id, "wf-1:enrich[1]:0:1");
    assert_eq!(
        out[1].input,
        r#"{"workflow":{"v":1},"deps":{},"element":"b","index":1}"#
    );
    // Answered out of order; the third element goes out when one returns.
    w.succeed(&out[1], r#"{"n":1}"#);
    let third = element_tasks(&w)
        .into_iter()
        .find(|t| t.task_id.starts_with("wf-1:enrich[2]"))
        .expect("third element dispatched");
    assert!(third.input.ends_with(r#","element":{"c":3},"index":2}"#));
    w.succeed(&third, r#"{"n":2}"#);
    assert!(
        w.current("embed").is_none(),
        "embed waits for every element"
    );
    w.succeed(&out[0], r#"{"n":0}"#);
    let embed = w.current("embed").unwrap();
    assert!(embed
        .input
        .contains(r#""deps":{"enrich":[{"n":0},{"n":1},{"n":2}]}"#));
    w.succeed(&embed, "{}");
    assert_eq!(w.state.status, Status::Completed);
    assert_eq!(replay(w.journal.iter().map(|(_, e)| e)).unwrap(), w.state);
}

#[test]
fn an_empty_array_succeeds_at_once_with_an_empty_array() {
    let w = expanded(4, 10_000, "[]");
    assert_eq!(w.state.steps[1].status, StepStatus::Succeeded);
    assert_eq!(w.state.steps[1].output.as_deref(), Some("[]"));
    let embed = w.current("embed").unwrap();
    assert!(embed.input.contains(r#""deps":{"enrich":[]}"#));
}

#[test]
fn an_array_that_is_missing_too_long_or_not_an_array_fails_the_workflow_with_the_reason() {
    for (segments, expected) in [
        (r#""text""#, "expected an array, found a string"),
        ("null", "expected an array, found null"),
    ] {
        let w = expanded(4, 10_000, segments);
        assert_eq!(w.state.status, Status::Failed);
        let reason = w.state.reason.clone().unwrap();
        assert!(
            reason.contains("step enrich: map over \"segment/segments\""),
            "{reason}"
        );
        assert!(reason.contains(expected), "{reason}");
        assert_eq!(w.state.steps[1].status, StepStatus::Failed);
    }
    let mut w = World::start(fan_out(4, 10_000), "{}");
    let seg = w.current("segment").unwrap();
    w.succeed(&seg, r#"{"other":1}"#);
    assert!(w
        .state
        .reason
        .clone()
        .unwrap()
        .contains("nothing at that pointer"));

    let long = format!("[{}]", vec!["1"; 101].join(","));
    let w = expanded(4, 10_000, &long);
    let reason = w.state.reason.clone().unwrap();
    assert!(
        reason.contains("101 elements, the limit (max_elements) is 100"),
        "{reason}"
    );
    assert!(w.tasks.iter().all(|t| t.step != "enrich"));
}

#[test]
fn an_assembled_output_over_the_byte_limit_fails_the_step() {
    let mut w = expanded(4, 10_000, "[1,2]");
    let big = format!(r#""{}""#, "x".repeat(6_000));
    for t in element_tasks(&w) {
        w.succeed(&t, &big);
    }
    assert_eq!(w.state.status, Status::Failed);
    let reason = w.state.reason.clone().unwrap();
    assert!(
        reason.contains("the limit (max_output_bytes) is 10000"),
        "{reason}"
    );
}

#[test]
fn min_success_tolerates_failed_elements_and_lists_them() {
    // 75% of 4 is 3: one element may fail.
    let mut w = expanded(8, 7_500, "[0,1,2,3]");
    let out = element_tasks(&w);
    w.fail(&out[2], "fatal", false);
    assert_eq!(w.state.status, Status::Running);
    for t in [&out[0], &out[1], &out[3]] {
        w.succeed(t, "1");
    }
    assert_eq!(w.state.steps[1].output.as_deref(), Some("[1,1,null,1]"));
    assert!(w.journal.iter().any(|(_, e)| matches!(
        &e.kind,
        EventKind::MapSucceeded { failed, .. } if failed == &vec![2]
    )));
}

#[test]
fn too_many_failed_elements_fail_the_step_and_cancel_the_rest() {
    let mut w = expanded(8, 10_000, "[0,1,2]");
    let out = element_tasks(&w);
    w.succeed(&out[0], "1");
    let d = decide(
        &w.state,
        &w.pipeline,
        &Input::TaskResult(TaskResult {
            task_id: out[1].task_id.clone(),
            step: "enrich".into(),
            attempt: 1,
            outcome: TaskOutcome::Failed(TaskError {
                kind: "fatal".into(),
                message: "bad segment".into(),
                retryable: false,
            }),
            worker: None,
            started_at_ms: None,
        }),
        w.now,
    );
    let cancelled: Vec<&str> = d
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::CancelTask { task_id, .. } => Some(task_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(cancelled, vec![out[2].task_id.as_str()]);
    w.record(d, false);
    assert_eq!(w.state.status, Status::Failed);
    let reason = w.state.reason.clone().unwrap();
    assert!(
        reason.contains("1 of 3 elements failed (indices 1), min_success needs 3"),
        "{reason}"
    );
}

#[test]
fn a_failed_element_retries_after_backoff_and_late_answers_are_stale() {
    let mut w = expanded(8, 10_000, "[0,1]");
    let out = element_tasks(&w);
    w.fail(&out[0], "flaky", true);
    let (due, timer) = w.timers.pop().unwrap();
    assert!(matches!(
        timer,
        TimerKind::ElementRetry {
            step: 1,
            index: 0,
            generation: 0,
            attempt: 2
        }
    ));
    w.now = due;
    assert_eq!(w.apply(Input::TimerFired(timer.clone())), Outcome::Applied);
    assert_eq!(
        w.apply(Input::TimerFired(timer)),
        Outcome::Ignored(IgnoreReason::StaleTimer)
    );
    let second = element_tasks(&w)
        .into_iter()
        .find(|t| t.task_id == "wf-1:enrich[0]:0:2")
        .expect("second attempt out");
    assert_eq!(
        w.succeed(&out[0], "1"),
        Outcome::Ignored(IgnoreReason::StaleAttempt)
    );
    assert_eq!(w.succeed(&second, "1"), Outcome::Applied);
    assert_eq!(
        w.succeed(&second, "1"),
        Outcome::Ignored(IgnoreReason::Duplicate)
    );
    let timed_out = w.apply(Input::TaskTimedOut {
        task_id: out[1].task_id.clone(),
        timeout: TimeoutKind::StartToClose,
    });
    assert_eq!(timed_out, Outcome::Applied);
    assert_eq!(
        w.succeed(&out[1], "1"),
        Outcome::Ignored(IgnoreReason::StaleAttempt)
    );
    let mut bogus = second.clone();
    bogus.task_id = "wf-1:enrich[9]:0:1".into();
    assert_eq!(
        w.succeed(&bogus, "1"),
        Outcome::Ignored(IgnoreReason::UnknownTask)
    );
}

#[test]
fn retry_runs_only_the_failed_elements_and_rerun_runs_them_all() {
    let mut w = expanded(8, 10_000, "[0,1,2]");
    let out = element_tasks(&w);
    w.succeed(&out[0], "10");
    w.succeed(&out[2], "12");
    w.fail(&out[1], "fatal", false);
    assert_eq!(w.state.status, Status::Failed);
    w.apply(Input::Reopen(ReopenMode::RetryFailed));
    let again = element_tasks(&w);
    assert_eq!(
        again.iter().map(|t| t.task_id.as_str()).collect::<Vec<_>>(),
        vec!["wf-1:enrich[1]:1:1"]
    );
    w.succeed(&again[0], "11");
    assert_eq!(w.state.steps[1].output.as_deref(), Some("[10,11,12]"));
    let embed = w.current("embed").unwrap();
    w.succeed(&embed, "{}");
    assert_eq!(w.state.status, Status::Completed);

    w.apply(Input::Reopen(ReopenMode::RerunFrom("enrich".into())));
    let all = element_tasks(&w);
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|t| t.task_id.ends_with(":2:1")));
    assert_eq!(replay(w.journal.iter().map(|(_, e)| e)).unwrap(), w.state);
}

#[test]
fn redispatch_all_rebuilds_the_element_tasks_out() {
    let mut w = expanded(2, 10_000, "[0,1,2]");
    let out = element_tasks(&w);
    w.succeed(&out[0], "1");
    let mut before = element_tasks(&w);
    let mut again = redispatch_all(&w.state, &w.pipeline, w.now + 5);
    before.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    again.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    assert_eq!(
        again
            .iter()
            .map(|t| (&t.task_id, &t.input))
            .collect::<Vec<_>>(),
        before
            .iter()
            .map(|t| (&t.task_id, &t.input))
            .collect::<Vec<_>>()
    );
}

#[test]
fn pause_holds_elements_back_and_resume_sends_them() {
    let mut w = expanded(1, 10_000, "[0,1]");
    let first = element_tasks(&w);
    w.apply(Input::Pause);
    w.succeed(&first[0], "1");
    assert!(
        element_tasks(&w).is_empty(),
        "nothing new goes out while paused"
    );
    w.apply(Input::Resume);
    assert_eq!(element_tasks(&w)[0].task_id, "wf-1:enrich[1]:0:1");
}

#[test]
fn the_checker_flags_illegal_map_journals() {
    let mut w = expanded(8, 10_000, "[0,1]");
    let out = element_tasks(&w);
    w.succeed(&out[0], "1");
    let legal = w.journal.clone();
    assert!(check_journal("wf-1", &w.pipeline, &legal)
        .violations
        .is_empty());
    let find =
        |pred: &dyn Fn(&EventKind) -> bool| legal.iter().position(|(_, e)| pred(&e.kind)).unwrap();
    let renumber = |mut j: Vec<(u64, Event)>| {
        for (k, (seq, _)) in j.iter_mut().enumerate() {
            *seq = k as u64 + 1;
        }
        j
    };
    // An element succeeding twice.
    let s = find(&|k| matches!(k, EventKind::ElementSucceeded { .. }));
    let mut twice = legal.clone();
    twice.push(legal[s].clone());
    let checked = check_journal("wf-1", &w.pipeline, &renumber(twice));
    assert!(
        checked
            .violations
            .iter()
            .any(|v| v.message.contains("succeeded twice")),
        "{:?}",
        checked.violations
    );
    // An element dispatched before the step expanded.
    let x = find(&|k| matches!(k, EventKind::MapExpanded { .. }));
    let mut early = legal.clone();
    early.remove(x);
    let checked = check_journal("wf-1", &w.pipeline, &renumber(early));
    assert!(checked
        .violations
        .iter()
        .any(|v| v.message.contains("before it expanded")));
    // The step succeeding with an element still out, and with a wrong list.
    let mut early_end = legal.clone();
    early_end.push((
        0,
        Event {
            at_ms: w.now,
            kind: EventKind::MapSucceeded {
                step: 1,
                failed: vec![1],
            },
        },
    ));
    let checked = check_journal("wf-1", &w.pipeline, &renumber(early_end));
    let messages: Vec<&str> = checked
        .violations
        .iter()
        .map(|v| v.message.as_str())
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("1 elements not ended")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("lists failed elements [1]")),
        "{messages:?}"
    );
}

// ---------------------------------------------------------------------------
// Property tests: random DAGs with random maps.

#[derive(Debug, Clone)]
pub(super) enum Action {
    Succeed(usize, u8),
    Fail(usize, bool),
    Timeout(usize),
    Redeliver(usize),
    FireTimer(usize),
    Cancel,
    Pause,
    Resume,
    Retry,
    Rerun(usize),
}

pub(super) fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        8 => (any::<usize>(), 0u8..4).prop_map(|(k, n)| Action::Succeed(k, n)),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(k, r)| Action::Fail(k, r)),
        1 => any::<usize>().prop_map(Action::Timeout),
        2 => any::<usize>().prop_map(Action::Redeliver),
        3 => any::<usize>().prop_map(Action::FireTimer),
        1 => Just(Action::Cancel),
        1 => Just(Action::Pause),
        2 => Just(Action::Resume),
        1 => Just(Action::Retry),
        1 => any::<usize>().prop_map(Action::Rerun),
    ]
}

/// A random condition of step `i` over the workflow input (`flags`, random
/// per run) and its dependencies' outputs (arrays of 0 to 3 items, `null`
/// when skipped): true or false depending on the run. `kind` 0 and 1 mean
/// no condition.
fn condition(i: usize, kind: u8, needs: &[u16], maps: &[Option<MapDef>], k: u8) -> Option<String> {
    let dep = needs.first().map(|&d| {
        let items = if maps[usize::from(d)].is_some() {
            format!("deps.s{d}")
        } else {
            format!("deps.s{d}.items")
        };
        format!("(deps.s{d} == null || size({items}) >= {})", k % 4)
    });
    match (kind % 4, dep) {
        (2, _) | (3, None) => Some(format!("input.flags[{i}]")),
        (3, Some(dep)) => Some(format!("input.flags[{i}] || {dep}")),
        _ => None,
    }
}

/// Up to 6 steps; a step with dependencies maps over its first plain one with a
/// probability of one half, with random `max_parallel` and `min_success`;
/// about half the steps have a random condition. A map step runs only when
/// the step it maps over was not skipped (a `null` is no array).
pub(super) fn dag_with_maps() -> impl Strategy<Value = PipelineDef> {
    (
        1usize..7,
        proptest::collection::vec(
            (any::<u8>(), 1u32..4, any::<bool>(), 1u32..4, any::<bool>()),
            7,
        ),
        proptest::collection::vec((any::<u8>(), any::<u8>()), 7),
    )
        .prop_map(|(n, raw, conditions)| {
            let mut steps = Vec::new();
            let mut maps: Vec<Option<MapDef>> = Vec::new();
            let mut whens: Vec<Option<WhenDef>> = Vec::new();
            for (i, &(mask, attempts, is_map, parallel, tolerant)) in raw.iter().take(n).enumerate()
            {
                let needs: Vec<u16> = (0..i)
                    .filter(|j| mask & (1 << (j % 8)) != 0)
                    .map(|j| j as u16)
                    .collect();
                // Map over a plain step: a map step's output is an array,
                // with no `items` in it.
                let plain = needs.iter().find(|&&d| maps[usize::from(d)].is_none());
                maps.push(match plain {
                    Some(&d) if is_map => Some(map_def(
                        d,
                        "/items",
                        parallel,
                        if tolerant { 5_000 } else { 10_000 },
                    )),
                    _ => None,
                });
                let (kind, k) = conditions[i];
                let mut when = condition(i, kind, &needs, &maps, k);
                if let Some(m) = &maps[i] {
                    let over = format!("deps.s{} != null", m.over_step);
                    when = Some(match when {
                        Some(w) => format!("{over} && ({w})"),
                        None => over,
                    });
                }
                whens.push(when.map(|text| WhenDef {
                    text,
                    values_max: 1_000,
                }));
                steps.push(step(&format!("s{i}"), &needs, attempts));
            }
            PipelineDef {
                name: "random".into(),
                version: 1,
                steps,
                workflow_timeout_ms: None,
                step_maps: maps,
                step_whens: whens,
                step_waits: Vec::new(),
                step_queue_timeouts: Vec::new(),
                in_progress_max: None,
                step_children: Vec::new(),
            }
        })
}

/// Every output carries an array (of 0 to 3 elements) for maps to read.
pub(super) fn output(n: u8) -> String {
    let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    format!(r#"{{"items":[{}]}}"#, items.join(","))
}

/// Applies one random action to the world.
pub(super) fn act(w: &mut World, a: Action) {
    match a {
        Action::Succeed(..) | Action::Fail(..) | Action::Timeout(..) if w.tasks.is_empty() => {}
        Action::Succeed(k, n) => {
            let t = w.tasks[k % w.tasks.len()].clone();
            w.succeed(&t, &output(n));
        }
        Action::Fail(k, retryable) => {
            let t = w.tasks[k % w.tasks.len()].clone();
            w.fail(&t, "flaky", retryable);
        }
        Action::Timeout(k) => {
            let t = w.tasks[k % w.tasks.len()].clone();
            w.apply(Input::TaskTimedOut {
                task_id: t.task_id,
                timeout: TimeoutKind::Heartbeat,
            });
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
        Action::Cancel => {
            w.apply(Input::Cancel {
                reason: "prop".into(),
            });
        }
        Action::Pause => {
            w.apply(Input::Pause);
        }
        Action::Resume => {
            w.apply(Input::Resume);
        }
        Action::Retry => {
            w.apply(Input::Reopen(ReopenMode::RetryFailed));
        }
        Action::Rerun(k) => {
            let name = w.pipeline.steps[k % w.pipeline.steps.len()].name.clone();
            w.apply(Input::Reopen(ReopenMode::RerunFrom(name)));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn map_invariants_hold_under_random_interleavings(
        p in dag_with_maps(),
        flags in proptest::collection::vec(any::<bool>(), 7),
        actions in proptest::collection::vec(action(), 0..120),
    ) {
        let input = format!(r#"{{"flags":{}}}"#, serde_json::to_string(&flags).unwrap());
        let mut w = World::start(p, &input);
        w.drain_output = output(2);
        for a in actions {
            act(&mut w, a);
            // No more elements out than max_parallel allows (the checker
            // also checks it from the journal alone).
            for (&step, run) in &w.state.maps {
                let def = w.pipeline.map_of(usize::from(step)).unwrap();
                prop_assert!(run.active() <= def.max_parallel as usize);
            }
            // A skipped step has nothing out, no fan-out and no output.
            for (i, s) in w.state.steps.iter().enumerate() {
                if s.status == StepStatus::Skipped {
                    prop_assert!(s.output.is_none());
                    prop_assert!(!w.state.maps.contains_key(&(i as u16)));
                    let name = &w.pipeline.steps[i].name;
                    prop_assert!(w.out_tasks().iter().all(|t| &t.step != name));
                }
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
