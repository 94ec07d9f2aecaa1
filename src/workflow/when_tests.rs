//! Tests of conditional steps (`when`) in the pure core: run or skip, the
//! `null` a skipped step gives its dependents, a condition that cannot be
//! evaluated failing the workflow with a reason, retry and rerun, maps, and
//! replay. Random conditions run in the property test of `map_tests`.

use super::tests::{pref, step, World};
use super::*;
use crate::pipeline::{PipelineDef, WhenDef};
use crate::verify::check_journal;

fn when(text: &str) -> Option<WhenDef> {
    Some(WhenDef {
        text: text.to_string(),
        values_max: 1_000,
    })
}

/// `detect` → `translate` (only when the language is not the target) →
/// `embed`, which reads both.
fn translate_pipeline(condition: &str) -> PipelineDef {
    PipelineDef {
        name: "video".into(),
        version: 3,
        steps: vec![
            step("detect", &[], 2),
            step("translate", &[0], 2),
            step("embed", &[0, 1], 2),
        ],
        workflow_timeout_ms: None,
        step_maps: Vec::new(),
        step_whens: vec![None, when(condition), None],
        step_waits: Vec::new(),
        step_queue_timeouts: Vec::new(),
        in_progress_max: None,
        step_children: Vec::new(),
    }
}

const DIFFERS: &str = "deps.detect.language != input.target";

fn detected(input: &str, language: &str) -> World {
    let mut w = World::start(translate_pipeline(DIFFERS), input);
    let t = w.current("detect").unwrap();
    w.succeed(&t, &format!(r#"{{"language":"{language}"}}"#));
    w
}

#[test]
fn a_true_condition_runs_the_step() {
    let mut w = detected(r#"{"target":"en"}"#, "fr");
    let t = w.current("translate").expect("translate dispatched");
    assert_eq!(
        t.input,
        r#"{"workflow":{"target":"en"},"deps":{"detect":{"language":"fr"}}}"#
    );
    w.succeed(&t, r#"{"text":"hello"}"#);
    let embed = w.current("embed").unwrap();
    assert!(embed.input.contains(r#""translate":{"text":"hello"}"#));
    w.succeed(&embed, "{}");
    assert_eq!(w.state.status, Status::Completed);
    assert!(!w
        .journal
        .iter()
        .any(|(_, e)| e.kind.name() == "step_skipped"));
}

#[test]
fn a_false_condition_skips_the_step_and_its_dependents_read_null() {
    let mut w = detected(r#"{"target":"en"}"#, "en");
    assert_eq!(w.state.steps[1].status, StepStatus::Skipped);
    assert!(w.state.steps[1].output.is_none());
    assert!(
        w.tasks.iter().all(|t| t.step != "translate"),
        "a skipped step dispatches nothing"
    );
    let (_, skipped) = w
        .journal
        .iter()
        .find(|(_, e)| e.kind.name() == "step_skipped")
        .expect("the skip is journaled");
    assert_eq!(skipped.kind, EventKind::StepSkipped { step: 1 });
    // The dependent goes ahead in the same decision, with `null`.
    let embed = w.current("embed").expect("embed dispatched");
    assert_eq!(
        embed.input,
        r#"{"workflow":{"target":"en"},"deps":{"detect":{"language":"en"},"translate":null}}"#
    );
    w.succeed(&embed, "{}");
    assert_eq!(w.state.status, Status::Completed);
    let replayed = replay(w.journal.iter().map(|(_, e)| e)).unwrap();
    assert_eq!(replayed, w.state);
}

#[test]
fn a_condition_on_the_input_alone_decides_a_root_step_at_start() {
    let mut p = translate_pipeline(DIFFERS);
    p.step_whens[0] = when("input.detect");
    let mut w = World::start(p, r#"{"detect":false,"target":"en"}"#);
    assert_eq!(w.state.steps[0].status, StepStatus::Skipped);
    // `translate` reads `deps.detect.language` of a `null`: no such field.
    assert_eq!(w.state.status, Status::Failed);
    assert!(w.out_tasks().is_empty());
    let reason = w.state.reason.clone().unwrap();
    assert!(reason.starts_with("step translate: when"), "{reason}");
    // Guarding the field read makes the chain go through.
    let mut p = translate_pipeline("deps.detect != null && deps.detect.language != input.target");
    p.step_whens[0] = when("input.detect");
    w = World::start(p, r#"{"detect":false,"target":"en"}"#);
    assert_eq!(w.state.steps[1].status, StepStatus::Skipped);
    let embed = w.current("embed").unwrap();
    w.succeed(&embed, "{}");
    assert_eq!(w.state.status, Status::Completed);
}

#[test]
fn a_condition_that_is_not_a_bool_fails_the_workflow_naming_step_and_expression() {
    let mut w = World::start(translate_pipeline("deps.detect.language"), "{}");
    let t = w.current("detect").unwrap();
    w.succeed(&t, r#"{"language":"fr"}"#);
    assert_eq!(w.state.status, Status::Failed);
    let reason = w.state.reason.clone().unwrap();
    assert!(
        reason.starts_with(r#"step translate: when "deps.detect.language": evaluated to"#),
        "{reason}"
    );
    assert!(reason.contains("not a bool"), "{reason}");
    let failed = w.journal.last().unwrap();
    assert!(matches!(
        &failed.1.kind,
        EventKind::WorkflowFailed { step: Some(1), .. }
    ));
    assert!(w.tasks.iter().all(|t| t.step != "translate"));
}

#[test]
fn a_missing_field_or_a_type_error_fails_the_workflow_with_the_error() {
    for (condition, output) in [
        ("deps.detect.lang == 'en'", r#"{"language":"fr"}"#),
        ("deps.detect.language > 3", r#"{"language":"fr"}"#),
    ] {
        let mut w = World::start(translate_pipeline(condition), "{}");
        let t = w.current("detect").unwrap();
        w.succeed(&t, output);
        assert_eq!(w.state.status, Status::Failed, "{condition}");
        let reason = w.state.reason.clone().unwrap();
        assert!(
            reason.starts_with(&format!("step translate: when {condition:?}: ")),
            "{reason}"
        );
        assert!(reason.len() > format!("step translate: when {condition:?}: ").len());
    }
}

#[test]
fn too_much_data_for_a_condition_fails_the_workflow_with_the_limit() {
    let mut p = translate_pipeline(DIFFERS);
    p.step_whens[1] = Some(WhenDef {
        text: DIFFERS.into(),
        values_max: 5,
    });
    let mut w = World::start(p, r#"{"target":"en"}"#);
    let t = w.current("detect").unwrap();
    w.succeed(&t, r#"{"language":"fr","words":[1,2,3,4,5]}"#);
    assert_eq!(w.state.status, Status::Failed);
    let reason = w.state.reason.clone().unwrap();
    assert!(reason.contains("more than 5 JSON values"), "{reason}");
}

#[test]
fn a_retry_keeps_a_skip_and_a_rerun_decides_again() {
    // `embed` fails for good; `translate` was skipped.
    let mut w = detected(r#"{"target":"en"}"#, "en");
    let embed = w.current("embed").unwrap();
    w.fail(&embed, "fatal", false);
    assert_eq!(w.state.status, Status::Failed);
    let skipped_before = w
        .journal
        .iter()
        .filter(|(_, e)| e.kind.name() == "step_skipped")
        .count();
    assert_eq!(
        w.apply(Input::Reopen(ReopenMode::RetryFailed)),
        Outcome::Applied
    );
    let reopened = w
        .journal
        .iter()
        .rev()
        .find_map(|(_, e)| match &e.kind {
            EventKind::WorkflowReopened { reset, .. } => Some(reset.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        reopened,
        vec![2],
        "the skipped step is kept like a succeeded one"
    );
    assert_eq!(w.state.steps[1].status, StepStatus::Skipped);
    let embed = w.current("embed").unwrap();
    assert!(embed.input.ends_with(r#""translate":null}}"#));
    w.succeed(&embed, "{}");
    assert_eq!(w.state.status, Status::Completed);
    let skipped_after = w
        .journal
        .iter()
        .filter(|(_, e)| e.kind.name() == "step_skipped")
        .count();
    assert_eq!(skipped_before, skipped_after, "not evaluated again");

    // A rerun from `detect` runs it again; a new language now runs `translate`.
    w.apply(Input::Reopen(ReopenMode::RerunFrom("detect".into())));
    assert_eq!(w.state.steps[1].status, StepStatus::Pending);
    let t = w.current("detect").unwrap();
    w.succeed(&t, r#"{"language":"de"}"#);
    assert!(w.current("translate").is_some());
}

#[test]
fn a_skipped_map_step_never_expands() {
    // segment -> enrich (a map over segment/segments) -> embed.
    let mut p = super::map_tests::fan_out(4, 10_000);
    p.step_whens = vec![None, when("size(deps.segment.segments) > 2"), None];
    let mut w = World::start(p.clone(), "{}");
    let t = w.current("segment").unwrap();
    w.succeed(&t, r#"{"segments":["a","b"]}"#);
    assert_eq!(w.state.steps[1].status, StepStatus::Skipped);
    assert!(w.state.maps.is_empty());
    assert!(!w
        .journal
        .iter()
        .any(|(_, e)| e.kind.name() == "map_expanded"));
    let embed = w.current("embed").unwrap();
    assert!(embed.input.ends_with(r#""deps":{"enrich":null}}"#));

    let mut w = World::start(p, "{}");
    let t = w.current("segment").unwrap();
    w.succeed(&t, r#"{"segments":["a","b","c"]}"#);
    assert_eq!(w.out_tasks().len(), 3, "a true condition fans out");
}

#[test]
fn the_checker_flags_a_skip_of_a_step_without_condition_or_before_its_dependencies() {
    let p = translate_pipeline(DIFFERS);
    let d = decide_start("wf-1", pref(&p), &p, "{}", 1);
    let mut journal: Vec<(u64, Event)> = d
        .events
        .iter()
        .cloned()
        .enumerate()
        .map(|(k, e)| (k as u64 + 1, e))
        .collect();
    let next = journal.len() as u64 + 1;
    journal.push((
        next,
        Event {
            at_ms: 2,
            kind: EventKind::StepSkipped { step: 1 },
        },
    ));
    journal.push((
        next + 1,
        Event {
            at_ms: 2,
            kind: EventKind::StepSkipped { step: 2 },
        },
    ));
    let checked = check_journal("wf-1", &p, &journal);
    let messages: Vec<&str> = checked
        .violations
        .iter()
        .map(|v| v.message.as_str())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("step translate skipped before its dependency detect")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("step embed skipped but has no condition")),
        "{messages:?}"
    );
}
