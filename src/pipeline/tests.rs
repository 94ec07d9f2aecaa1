//! Tests of loading and validating pipeline files and of the DAG views.

use std::path::Path;

const MS_PER_SECOND: u64 = 1_000;
const MS_PER_MINUTE: u64 = 60 * MS_PER_SECOND;
const MS_PER_HOUR: u64 = 60 * MS_PER_MINUTE;
use super::load::*;
use super::raw::{builtin_retry, builtin_timeouts};
use super::*;

const FILE: &str = "pipelines/test.toml";

fn limits() -> PipelineLimits {
    PipelineLimits::default()
}

fn parse(text: &str) -> Result<PipelineDef, PipelineError> {
    parse_pipeline(text, FILE, &limits())
}

/// The error for `text`, asserting that its message names the test file.
fn error(text: &str) -> PipelineError {
    let err = parse(text).expect_err("the pipeline should be rejected");
    assert_eq!(err.file, FILE);
    assert!(err.to_string().starts_with(&format!("{FILE}: ")), "{err}");
    err
}

/// Asserts the rendered message names the step (or no step) and contains
/// every fragment.
fn assert_message(err: &PipelineError, step: Option<&str>, fragments: &[&str]) {
    let message = err.to_string();
    assert_eq!(err.step.as_deref(), step, "{message}");
    if let Some(step) = step {
        assert!(message.contains(&format!("step \"{step}\": ")), "{message}");
    } else {
        assert!(!message.contains(": step \""), "{message}");
    }
    for fragment in fragments {
        assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
    }
}

const HEADER: &str = "[pipeline]\nname = \"p\"\nversion = 1\n";

/// A pipeline with the standard header and the given step tables.
fn with_steps(steps: &str) -> String {
    format!("{HEADER}\n{steps}")
}

fn video() -> PipelineDef {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pipelines/video.toml");
    load_pipeline_file(&path, &limits()).unwrap_or_else(|e| panic!("{e}"))
}

/// Version 1 of the video pipeline (a test fixture): nine static steps,
/// three of them in parallel.
fn video_v1() -> PipelineDef {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipelines/video.toml");
    load_pipeline_file(&path, &limits()).unwrap_or_else(|e| panic!("{e}"))
}

fn needs_names(def: &PipelineDef, step: &str) -> Vec<String> {
    let step = &def.steps[def.step_index(step).expect("step exists")];
    step.needs
        .iter()
        .map(|&d| def.steps[usize::from(d)].name.clone())
        .collect()
}

// --- the shipped pipeline ----------------------------------------------

#[test]
fn video_pipeline_parses_with_expected_shape_and_policies() {
    let def = video();
    assert_eq!(def.name, "video");
    assert_eq!(def.version, 2);
    assert_eq!(def.workflow_timeout_ms, Some(24 * MS_PER_HOUR));
    let names: Vec<&str> = def.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "ingest",
            "extract_audio",
            "transcribe",
            "segment",
            "enrich",
            "embed",
            "index",
            "translate"
        ]
    );
    for step in &def.steps {
        let task_type = if step.name == "enrich" {
            "enrich_segment"
        } else {
            &step.name
        };
        assert_eq!(step.task_type, task_type);
        assert_eq!(step.retry.max_attempts, 10, "{}", step.name);
        assert_eq!(step.retry.initial_backoff_ms, 200);
        assert_eq!(step.retry.backoff_coefficient, 2.0);
        assert_eq!(step.retry.max_backoff_ms, 10_000);
        assert_eq!(step.retry.jitter, 0.2);
        assert_eq!(step.retry.non_retryable, ["invalid_input"]);
        assert_eq!(step.timeouts.schedule_to_start_ms, Some(10 * MS_PER_MINUTE));
        assert_eq!(step.timeouts.heartbeat_ms, Some(60 * MS_PER_SECOND));
    }
    let start_to_close = |name: &str| {
        def.steps[def.step_index(name).unwrap()]
            .timeouts
            .start_to_close_ms
    };
    assert_eq!(start_to_close("ingest"), Some(2 * MS_PER_HOUR));
    assert_eq!(start_to_close("transcribe"), Some(4 * MS_PER_HOUR));
    assert_eq!(start_to_close("segment"), Some(MS_PER_HOUR));
    assert_eq!(start_to_close("enrich"), Some(5 * MS_PER_MINUTE));

    assert_eq!(needs_names(&def, "translate"), ["transcribe"]);
    assert_eq!(needs_names(&def, "segment"), ["transcribe", "translate"]);
    assert_eq!(needs_names(&def, "enrich"), ["segment"]);
    assert_eq!(needs_names(&def, "embed"), ["enrich"]);
    assert_eq!(needs_names(&def, "index"), ["embed"]);
    assert!(needs_names(&def, "ingest").is_empty());
    // Only `enrich` maps, only `translate` has a condition.
    let mapped: Vec<usize> = (0..def.steps.len())
        .filter(|&i| def.map_of(i).is_some())
        .collect();
    let conditional: Vec<usize> = (0..def.steps.len())
        .filter(|&i| def.when_of(i).is_some())
        .collect();
    assert_eq!(mapped, [def.step_index("enrich").unwrap()]);
    assert_eq!(conditional, [def.step_index("translate").unwrap()]);
}

/// Rendering of steps that run in parallel on one level, on version 1 of
/// the video pipeline (the shipped version has none; `map_tests` checks how
/// it renders).
#[test]
fn video_v1_render_dag_shows_seven_levels() {
    let rendered = video_v1().render_dag();
    let mut lines = rendered.lines();
    assert_eq!(
        lines.next(),
        Some("pipeline video v1 (9 steps, workflow timeout 24h)")
    );
    let levels: Vec<&str> = rendered
        .lines()
        .filter(|l| l.starts_with("  level "))
        .collect();
    assert_eq!(levels.len(), 7, "{rendered}");
    assert_eq!(levels[0], "  level 0: ingest");
    assert_eq!(levels[1], "  level 1: extract_audio <- ingest");
    assert_eq!(
            levels[4],
            "  level 4: enrich_topics <- segment | enrich_entities <- segment | enrich_sentiment <- segment"
        );
    assert_eq!(
        levels[5],
        "  level 5: embed <- enrich_topics, enrich_entities, enrich_sentiment"
    );
    assert_eq!(levels[6], "  level 6: index <- embed");
    // Policy lines, with the per-step override visible.
    assert!(rendered.contains(
            "transcribe        task transcribe; 10 attempts; backoff 200ms x2 up to 10s, jitter 0.2; non-retryable: invalid_input"
        ), "{rendered}");
    assert!(
        rendered.contains("timeouts: schedule_to_start 10m, start_to_close 4h, heartbeat 1m"),
        "{rendered}"
    );
}

#[test]
fn topo_order_puts_every_step_after_its_needs() {
    let text = with_steps(
        "[[steps]]\nname = \"c\"\nneeds = [\"b\", \"a\"]\n\
             [[steps]]\nname = \"b\"\nneeds = [\"a\"]\n\
             [[steps]]\nname = \"a\"\n",
    );
    let def = parse(&text).unwrap();
    // needs are sorted indices, whatever order the file lists them in.
    assert_eq!(def.steps[0].needs, [1, 2]);
    let order = def.topo_order();
    assert_eq!(order, [2, 1, 0]);
    let position = |i: usize| order.iter().position(|&o| o == i).unwrap();
    for (i, step) in def.steps.iter().enumerate() {
        for &d in &step.needs {
            assert!(position(usize::from(d)) < position(i));
        }
    }
    assert_eq!(def.levels(), [vec![2], vec![1], vec![0]]);
}

#[test]
fn graph_views_survive_hand_built_cycles() {
    let mut def = parse(&with_steps(
        "[[steps]]\nname = \"a\"\n[[steps]]\nname = \"b\"\n",
    ))
    .unwrap();
    def.steps[0].needs = vec![1];
    def.steps[1].needs = vec![0, 7];
    assert!(def.topo_order().is_empty());
    assert!(def
        .render_dag()
        .starts_with("pipeline p v1 (2 steps, no workflow timeout)"));
}

// --- defaults and overrides --------------------------------------------

#[test]
fn built_in_defaults_apply_without_a_defaults_table() {
    let def = parse(&with_steps("[[steps]]\nname = \"only\"\n")).unwrap();
    let step = &def.steps[0];
    assert_eq!(step.task_type, "only");
    assert_eq!(step.retry, builtin_retry());
    assert_eq!(step.retry.max_attempts, 3);
    assert_eq!(step.retry.initial_backoff_ms, 1_000);
    assert_eq!(step.retry.max_backoff_ms, 60_000);
    assert_eq!(step.timeouts, builtin_timeouts());
    assert_eq!(def.workflow_timeout_ms, None);
}

#[test]
fn step_overrides_merge_per_field() {
    let text = format!(
            "{HEADER}\
             [defaults.retry]\nmax_attempts = 7\ninitial_backoff = \"100ms\"\nmax_backoff = \"5s\"\n\
             non_retryable = [\"invalid_input\"]\n\
             [defaults.timeouts]\nschedule_to_start = \"5m\"\nstart_to_close = \"1h\"\n\
             [[steps]]\nname = \"plain\"\n\
             [[steps]]\nname = \"custom\"\ntask_type = \"CustomWorker\"\n\
             [steps.retry]\nmax_attempts = 2\njitter = 0.5\nnon_retryable = [\"b\", \"a\", \"b\"]\n\
             [steps.timeouts]\nstart_to_close = \"1m30s\"\nschedule_to_start = \"none\"\nheartbeat = \"20s\"\n"
        );
    let def = parse(&text).unwrap();
    let plain = &def.steps[0];
    assert_eq!(plain.retry.max_attempts, 7);
    assert_eq!(plain.retry.initial_backoff_ms, 100);
    assert_eq!(plain.retry.backoff_coefficient, 2.0); // built-in
    assert_eq!(plain.retry.jitter, 0.2); // built-in
    assert_eq!(plain.timeouts.schedule_to_start_ms, Some(5 * MS_PER_MINUTE));
    assert_eq!(plain.timeouts.heartbeat_ms, None);

    let custom = &def.steps[1];
    assert_eq!(custom.task_type, "CustomWorker");
    assert_eq!(custom.retry.max_attempts, 2); // overridden
    assert_eq!(custom.retry.jitter, 0.5); // overridden
    assert_eq!(custom.retry.initial_backoff_ms, 100); // from defaults
    assert_eq!(custom.retry.max_backoff_ms, 5_000); // from defaults
    assert_eq!(custom.retry.non_retryable, ["a", "b"]); // replaced, canonical
    assert_eq!(custom.timeouts.start_to_close_ms, Some(90_000));
    assert_eq!(custom.timeouts.schedule_to_start_ms, None); // disabled by "none"
    assert_eq!(custom.timeouts.heartbeat_ms, Some(20_000));
}

// --- one test per kind of mistake --------------------------------------

#[test]
fn queue_timeouts_merge_from_defaults_and_stay_out_of_definitions_without_them() {
    let def = parse(&format!(
        "{HEADER}[defaults.timeouts]\nqueue_timeout = \"10m\"\n\n\
         [[steps]]\nname = \"a\"\n\n\
         [[steps]]\nname = \"b\"\n[steps.timeouts]\nqueue_timeout = \"30s\"\n\n\
         [[steps]]\nname = \"c\"\n[steps.timeouts]\nqueue_timeout = \"none\"\n"
    ))
    .unwrap();
    assert_eq!(
        def.step_queue_timeouts,
        [Some(10 * MS_PER_MINUTE), Some(30 * MS_PER_SECOND), None]
    );
    assert_eq!(def.queue_timeout_of(1), Some(30_000));
    assert_eq!(def.queue_timeout_of(9), None);
    // Without any, the definition keeps its older shape (and hash).
    assert!(video().step_queue_timeouts.is_empty());
    let err = error(&with_steps(
        "[[steps]]\nname = \"a\"\n[steps.timeouts]\nqueue_timeout = \"0s\"\n",
    ));
    assert_message(
        &err,
        Some("a"),
        &["timeouts.queue_timeout", "greater than zero"],
    );
}

#[test]
fn a_pipeline_in_progress_limit_is_read_and_must_be_at_least_one() {
    let def = parse(
        "[pipeline]\nname = \"p\"\nversion = 1\nin_progress_max = 50\n\n[[steps]]\nname = \"a\"\n",
    )
    .unwrap();
    assert_eq!(def.in_progress_max, Some(50));
    assert_eq!(video().in_progress_max, None);
    let err = error(
        "[pipeline]\nname = \"p\"\nversion = 1\nin_progress_max = 0\n\n[[steps]]\nname = \"a\"\n",
    );
    assert_message(
        &err,
        None,
        &["[pipeline]", "in_progress_max must be at least 1"],
    );
}

#[test]
fn rejects_toml_syntax_error_with_line() {
    let err = error("[pipeline]\nname = \"p\"\nversion = = 1\n");
    assert!(
        matches!(*err.kind, PipelineErrorKind::Syntax { line: 3, .. }),
        "{err:?}"
    );
    assert_message(&err, None, &["TOML syntax error at line 3"]);
}

#[test]
fn rejects_unknown_fields_everywhere() {
    let err = error(&format!("{HEADER}nmae = \"x\"\n[[steps]]\nname = \"a\"\n"));
    assert!(
        matches!(*err.kind, PipelineErrorKind::UnknownField { .. }),
        "{err:?}"
    );
    assert_message(
        &err,
        None,
        &["unknown field in [pipeline] at line 4", "`nmae`"],
    );

    let err = error(&with_steps("[[step]]\nname = \"a\"\n"));
    assert_message(
        &err,
        None,
        &["unknown field in the top level at line 5", "`step`"],
    );

    let err = error(&format!(
        "{HEADER}[defaults.retry]\nmax_attempt = 3\n[[steps]]\nname = \"a\"\n"
    ));
    assert_message(
        &err,
        None,
        &["unknown field in [defaults] at line 5", "`max_attempt`"],
    );

    let err = error(&with_steps(
        "[[steps]]\nname = \"a\"\n[[steps]]\nname = \"b\"\nneed = [\"a\"]\n",
    ));
    assert!(
        matches!(*err.kind, PipelineErrorKind::UnknownField { .. }),
        "{err:?}"
    );
    assert_message(
        &err,
        Some("b"),
        &["unknown field in [[steps]] #2 at line 9", "`need`"],
    );

    let err = error(&with_steps(
        "[[steps]]\nname = \"a\"\n[steps.timeouts]\nheartbeet = \"1s\"\n",
    ));
    assert_message(&err, Some("a"), &["unknown field", "`heartbeet`"]);
}

#[test]
fn rejects_values_of_the_wrong_type() {
    let err = error(&with_steps(
        "[[steps]]\nname = \"a\"\n[steps.retry]\nmax_attempts = \"ten\"\n",
    ));
    assert!(
        matches!(*err.kind, PipelineErrorKind::InvalidValue { .. }),
        "{err:?}"
    );
    assert_message(
        &err,
        Some("a"),
        &["invalid value in [[steps]] #1 at line 8", "invalid type"],
    );

    let err = error("[pipeline]\nname = \"p\"\nversion = -1\n[[steps]]\nname = \"a\"\n");
    assert_message(&err, None, &["invalid value in [pipeline] at line 3"]);

    // Top-level keys must come before the first table header.
    let err = error(&format!(
        "{HEADER}[defaults]\nretry = 5\n[[steps]]\nname = \"a\"\n"
    ));
    assert_message(
        &err,
        None,
        &["invalid value in [defaults] at line 5", "expected a table"],
    );

    let err = error(&format!("steps = 3\n{HEADER}"));
    assert_message(&err, None, &["`steps` must be an array of tables"]);
}

#[test]
fn rejects_missing_pipeline_name() {
    let err = error("[pipeline]\nversion = 1\n[[steps]]\nname = \"a\"\n");
    assert_eq!(*err.kind, PipelineErrorKind::MissingName);
    assert_message(&err, None, &["missing pipeline name"]);

    // No [pipeline] table at all is the same mistake.
    let err = error("[[steps]]\nname = \"a\"\n");
    assert_eq!(*err.kind, PipelineErrorKind::MissingName);
}

#[test]
fn rejects_missing_pipeline_version() {
    let err = error("[pipeline]\nname = \"p\"\n[[steps]]\nname = \"a\"\n");
    assert_eq!(*err.kind, PipelineErrorKind::MissingVersion);
    assert_message(&err, None, &["missing pipeline version"]);
}

#[test]
fn rejects_missing_step_name() {
    let err = error(&with_steps(
        "[[steps]]\nname = \"a\"\n[[steps]]\nneeds = [\"a\"]\n",
    ));
    assert_eq!(
        *err.kind,
        PipelineErrorKind::MissingStepName { position: 2 }
    );
    assert_message(&err, None, &["step #2 has no name"]);
}

#[test]
fn rejects_invalid_names() {
    let err = error("[pipeline]\nname = \"Video\"\nversion = 1\n[[steps]]\nname = \"a\"\n");
    assert_message(
        &err,
        None,
        &["invalid pipeline name \"Video\"", "contains 'V'"],
    );

    let err = error("[pipeline]\nname = \"\"\nversion = 1\n[[steps]]\nname = \"a\"\n");
    assert_message(
        &err,
        None,
        &["invalid pipeline name \"\"", "must not be empty"],
    );

    let err = error(&with_steps("[[steps]]\nname = \"a.b\"\n"));
    assert!(matches!(
        *err.kind,
        PipelineErrorKind::InvalidName {
            what: "step name",
            ..
        }
    ));
    assert_message(&err, None, &["invalid step name \"a.b\"", "contains '.'"]);

    let long = "x".repeat(65);
    let err = error(&with_steps(&format!("[[steps]]\nname = \"{long}\"\n")));
    assert_message(&err, None, &["is 65 characters long, the limit is 64"]);
    let ok = "x".repeat(64);
    assert!(parse(&with_steps(&format!("[[steps]]\nname = \"{ok}\"\n"))).is_ok());

    // Task types may use upper case, but not subject separators.
    let err = error(&with_steps(
        "[[steps]]\nname = \"a\"\ntask_type = \"Gpu.Transcribe\"\n",
    ));
    assert_message(
        &err,
        Some("a"),
        &["invalid task type \"Gpu.Transcribe\"", "contains '.'"],
    );

    let err = error(&with_steps(
        "[[steps]]\nname = \"a\"\n[steps.retry]\nnon_retryable = [\"bad kind\"]\n",
    ));
    assert_message(
        &err,
        Some("a"),
        &["invalid error kind in non_retryable \"bad kind\""],
    );
}

#[test]
fn rejects_version_zero() {
    let err = error("[pipeline]\nname = \"p\"\nversion = 0\n[[steps]]\nname = \"a\"\n");
    assert_eq!(*err.kind, PipelineErrorKind::VersionZero);
    assert_message(&err, None, &["version must be at least 1, got 0"]);
}

#[test]
fn rejects_pipeline_without_steps() {
    let err = error(HEADER);
    assert_eq!(*err.kind, PipelineErrorKind::NoSteps);
    assert_message(&err, None, &["pipeline has no steps"]);

    let err = error(&format!("steps = []\n{HEADER}"));
    assert_eq!(*err.kind, PipelineErrorKind::NoSteps);
}

#[test]
fn rejects_duplicate_step_name() {
    let err = error(&with_steps(
        "[[steps]]\nname = \"a\"\n[[steps]]\nname = \"b\"\n[[steps]]\nname = \"a\"\n",
    ));
    assert_eq!(
        *err.kind,
        PipelineErrorKind::DuplicateStep {
            first: 1,
            second: 3
        }
    );
    assert_message(
        &err,
        Some("a"),
        &["duplicate step name (declared as step #1 and step #3)"],
    );
}

#[test]
fn rejects_unknown_dependency() {
    let err = error(&with_steps(
            "[[steps]]\nname = \"segment\"\n[[steps]]\nname = \"embed\"\nneeds = [\"segment\", \"enrich_topic\"]\n",
        ));
    assert_eq!(
        err.to_string(),
        format!("{FILE}: step \"embed\": needs unknown step \"enrich_topic\"")
    );
}

#[test]
fn rejects_self_dependency() {
    let err = error(&with_steps("[[steps]]\nname = \"a\"\nneeds = [\"a\"]\n"));
    assert_eq!(*err.kind, PipelineErrorKind::SelfDependency);
    assert_eq!(err.to_string(), format!("{FILE}: step \"a\": needs itself"));
}

#[test]
fn rejects_duplicate_dependency() {
    let err = error(&with_steps(
        "[[steps]]\nname = \"a\"\n[[steps]]\nname = \"b\"\nneeds = [\"a\", \"a\"]\n",
    ));
    assert_message(&err, Some("b"), &["needs \"a\" more than once"]);
}

#[test]
fn rejects_cycle_naming_its_steps() {
    // root <- a <- b <- c <- a: the cycle is a -> c -> b -> a ("needs" order),
    // and `root`, which is not on it, must not be named.
    let err = error(&with_steps(
        "[[steps]]\nname = \"root\"\n\
             [[steps]]\nname = \"a\"\nneeds = [\"root\", \"c\"]\n\
             [[steps]]\nname = \"b\"\nneeds = [\"a\"]\n\
             [[steps]]\nname = \"c\"\nneeds = [\"b\"]\n",
    ));
    let PipelineErrorKind::Cycle { path } = &*err.kind else {
        panic!("{err:?}")
    };
    assert_eq!(path, &["a", "c", "b", "a"]);
    assert_message(&err, None, &["dependency cycle a -> c -> b -> a"]);

    let err = error(&with_steps(
        "[[steps]]\nname = \"x\"\nneeds = [\"y\"]\n[[steps]]\nname = \"y\"\nneeds = [\"x\"]\n",
    ));
    assert_message(&err, None, &["cycle x -> y -> x"]);
}

#[test]
fn rejects_more_steps_than_the_limit() {
    let limits = PipelineLimits {
        steps_max: 2,
        ..PipelineLimits::default()
    };
    let text =
        with_steps("[[steps]]\nname = \"a\"\n[[steps]]\nname = \"b\"\n[[steps]]\nname = \"c\"\n");
    let err = parse_pipeline(&text, FILE, &limits).unwrap_err();
    assert_eq!(
        *err.kind,
        PipelineErrorKind::TooManySteps { count: 3, max: 2 }
    );
    assert_message(&err, None, &["too many steps: 3 declared, the limit is 2"]);
    assert!(parse_pipeline(
        &text,
        FILE,
        &PipelineLimits {
            steps_max: 3,
            ..limits
        }
    )
    .is_ok());
}

#[test]
fn rejects_more_needs_than_the_limit() {
    let limits = PipelineLimits {
        needs_max: 1,
        ..PipelineLimits::default()
    };
    let text = with_steps(
        "[[steps]]\nname = \"a\"\n[[steps]]\nname = \"b\"\n\
             [[steps]]\nname = \"c\"\nneeds = [\"a\", \"b\"]\n",
    );
    let err = parse_pipeline(&text, FILE, &limits).unwrap_err();
    assert_eq!(
        *err.kind,
        PipelineErrorKind::TooManyNeeds { count: 2, max: 1 }
    );
    assert_message(
        &err,
        Some("c"),
        &["too many dependencies: 2 listed in needs, the limit is 1"],
    );
}

#[test]
fn rejects_bad_durations_in_every_place() {
    let err = error(&with_steps(
        "[[steps]]\nname = \"a\"\n[steps.retry]\ninitial_backoff = \"5x\"\n",
    ));
    assert_message(
        &err,
        Some("a"),
        &[
            "invalid duration for retry.initial_backoff \"5x\"",
            "unknown unit",
        ],
    );

    let err = error(&with_steps(
        "[[steps]]\nname = \"a\"\n[steps.timeouts]\nheartbeat = \"0s\"\n",
    ));
    assert_message(
        &err,
        Some("a"),
        &["timeouts.heartbeat \"0s\"", "greater than zero"],
    );

    let err = error(&format!(
        "{HEADER}[defaults.timeouts]\nstart_to_close = \"-1h\"\n[[steps]]\nname = \"a\"\n"
    ));
    assert_message(
        &err,
        None,
        &["defaults.timeouts.start_to_close \"-1h\"", "negative"],
    );

    let err = error(&format!(
        "{HEADER}[defaults.retry]\nmax_backoff = \"none\"\n[[steps]]\nname = \"a\"\n"
    ));
    assert_message(
        &err,
        None,
        &["defaults.retry.max_backoff", "only allowed for timeouts"],
    );

    let err = error(
        "[pipeline]\nname = \"p\"\nversion = 1\nworkflow_timeout = \"\"\n[[steps]]\nname = \"a\"\n",
    );
    assert_message(&err, None, &["workflow_timeout \"\"", "empty duration"]);

    let err = error(&with_steps(
        "[[steps]]\nname = \"a\"\n[steps.timeouts]\nstart_to_close = \"99999999999999999999s\"\n",
    ));
    assert_message(&err, Some("a"), &["too large"]);

    // A zero backoff is meaningful (retry at once), a zero timeout is not.
    let def = parse(&format!(
        "{HEADER}[defaults.retry]\ninitial_backoff = \"0ms\"\n[[steps]]\nname = \"a\"\n"
    ))
    .unwrap();
    assert_eq!(def.steps[0].retry.initial_backoff_ms, 0);
}

#[test]
fn rejects_max_attempts_out_of_range() {
    let err = error(&format!(
        "{HEADER}[defaults.retry]\nmax_attempts = 0\n[[steps]]\nname = \"a\"\n"
    ));
    assert_message(
        &err,
        None,
        &["defaults.retry.max_attempts must be between 1 and 1000, got 0"],
    );

    let err = error(&with_steps(
        "[[steps]]\nname = \"a\"\n[steps.retry]\nmax_attempts = 1001\n",
    ));
    assert_eq!(
        *err.kind,
        PipelineErrorKind::MaxAttempts {
            field: "retry.max_attempts".to_owned(),
            value: 1001,
            max: 1000
        }
    );
    assert_message(
        &err,
        Some("a"),
        &["retry.max_attempts must be between 1 and 1000, got 1001"],
    );
}

#[test]
fn rejects_bad_backoff_coefficient() {
    let err = error(&with_steps(
        "[[steps]]\nname = \"a\"\n[steps.retry]\nbackoff_coefficient = 0.5\n",
    ));
    assert_message(
        &err,
        Some("a"),
        &["retry.backoff_coefficient must be a finite number >= 1.0, got 0.5"],
    );
    for value in ["nan", "inf", "-inf"] {
        let err = error(&format!(
            "{HEADER}[defaults.retry]\nbackoff_coefficient = {value}\n[[steps]]\nname = \"a\"\n"
        ));
        assert!(
            matches!(*err.kind, PipelineErrorKind::BadCoefficient { .. }),
            "{value}: {err}"
        );
    }
    // An integer is accepted for a float field.
    assert!(parse(&format!(
        "{HEADER}[defaults.retry]\nbackoff_coefficient = 1\n[[steps]]\nname = \"a\"\n"
    ))
    .is_ok());
}

#[test]
fn rejects_jitter_outside_unit_interval() {
    let err = error(&with_steps(
        "[[steps]]\nname = \"a\"\n[steps.retry]\njitter = 1.5\n",
    ));
    assert_message(
        &err,
        Some("a"),
        &["retry.jitter must be between 0.0 and 1.0, got 1.5"],
    );
    for value in ["-0.1", "nan"] {
        let err = error(&format!(
            "{HEADER}[defaults.retry]\njitter = {value}\n[[steps]]\nname = \"a\"\n"
        ));
        assert!(
            matches!(*err.kind, PipelineErrorKind::BadJitter { .. }),
            "{value}: {err}"
        );
    }
    for value in ["0", "1.0"] {
        assert!(parse(&format!(
            "{HEADER}[defaults.retry]\njitter = {value}\n[[steps]]\nname = \"a\"\n"
        ))
        .is_ok());
    }
}

#[test]
fn rejects_initial_backoff_above_max_backoff() {
    // The defaults are fine on their own; the step's override breaks the combination.
    let err = error(&format!(
        "{HEADER}[defaults.retry]\ninitial_backoff = \"1s\"\nmax_backoff = \"10s\"\n\
             [[steps]]\nname = \"a\"\n[steps.retry]\ninitial_backoff = \"20s\"\n"
    ));
    assert_message(
        &err,
        Some("a"),
        &["retry.initial_backoff (20s) is greater than retry.max_backoff (10s)"],
    );

    // Against the built-in cap of 60s.
    let err = error(&format!(
        "{HEADER}[defaults.retry]\ninitial_backoff = \"2m\"\n[[steps]]\nname = \"a\"\n"
    ));
    assert_message(
        &err,
        None,
        &["defaults.retry.initial_backoff (2m) is greater than defaults.retry.max_backoff (1m)"],
    );
}

// --- files and directories -------------------------------------------

#[test]
fn io_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.toml");
    let err = load_pipeline_file(&path, &limits()).unwrap_err();
    assert!(matches!(*err.kind, PipelineErrorKind::Io { .. }));
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot read: ", path.display())),
        "{err}"
    );

    let errors = load_pipeline_dir(&dir.path().join("nope"), &limits()).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].to_string().contains("nope: cannot read"),
        "{}",
        errors[0]
    );
}

#[test]
fn load_dir_sorts_files_and_collects_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    let pipeline = |name: &str, version: u32| {
        format!("[pipeline]\nname = \"{name}\"\nversion = {version}\n[[steps]]\nname = \"a\"\n")
    };
    write("b.toml", &pipeline("beta", 1));
    write("a.toml", &pipeline("alpha", 1));
    write("c.toml", &pipeline("alpha", 2));
    write("notes.txt", "not a pipeline");
    let defs = load_pipeline_dir(dir.path(), &limits()).unwrap();
    let loaded: Vec<(&str, u32)> = defs.iter().map(|d| (d.name.as_str(), d.version)).collect();
    assert_eq!(loaded, [("alpha", 1), ("beta", 1), ("alpha", 2)]);

    write("d.toml", "this is not toml");
    write("e.toml", &pipeline("beta", 1));
    write(
        "f.toml",
        &with_steps("[[steps]]\nname = \"a\"\nneeds = [\"zz\"]\n"),
    );
    let errors = load_pipeline_dir(dir.path(), &limits()).unwrap_err();
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 3, "{messages:#?}");
    assert!(
        messages[0].contains("d.toml: TOML syntax error"),
        "{}",
        messages[0]
    );
    assert!(
        messages[1].contains("e.toml: pipeline \"beta\" version 1 is already declared in"),
        "{}",
        messages[1]
    );
    assert!(messages[1].ends_with("b.toml"), "{}", messages[1]);
    assert!(
        messages[2].contains("f.toml: step \"a\": needs unknown step \"zz\""),
        "{}",
        messages[2]
    );
}

#[test]
fn shipped_pipeline_directory_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pipelines");
    let defs = load_pipeline_dir(&dir, &limits()).unwrap_or_else(|errors| {
        panic!(
            "{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert!(defs.iter().any(|d| d.name == "video" && d.version == 2));
}
