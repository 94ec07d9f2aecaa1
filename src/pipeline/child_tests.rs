//! Tests of child steps (`pipeline = ...`): what loads, what is refused at
//! load (naming the file and the step), the directory checks (the child
//! pipeline and version exist, no cycle between pipelines), how `pipelines
//! check` shows them, and that a pipeline without child steps keeps its
//! hash and stored form.

use super::child::{check_children, DEFAULT_CHILD_DEPTH_MAX};
use super::load::*;
use super::*;

const FILE: &str = "pipelines/parent.toml";

fn parent(step: &str) -> String {
    format!(
        "[pipeline]\nname = \"parent\"\nversion = 1\n\n[[steps]]\nname = \"fetch\"\n\n[[steps]]\nname = \"enrich\"\nneeds = [\"fetch\"]\n{step}\n"
    )
}

fn parse(step: &str) -> Result<PipelineDef, PipelineError> {
    parse_pipeline(&parent(step), FILE, &PipelineLimits::default())
}

fn simple(name: &str, version: u32, child: Option<&str>) -> PipelineDef {
    let step = child.map_or(String::new(), |c| format!("pipeline = \"{c}\"\n"));
    let text = format!(
        "[pipeline]\nname = \"{name}\"\nversion = {version}\n\n[[steps]]\nname = \"a\"\n{step}"
    );
    parse_pipeline(&text, FILE, &PipelineLimits::default()).unwrap()
}

#[test]
fn a_child_step_loads_sends_no_task_and_shows_in_check() {
    let def = parse("pipeline = \"enrichment\"\npipeline_version = 2").unwrap();
    let c = def.child_of(1).expect("enrich starts a child");
    assert_eq!(c.pipeline, "enrichment");
    assert_eq!(c.version, Some(2));
    assert_eq!(c.depth_max, DEFAULT_CHILD_DEPTH_MAX);
    assert!(def.child_of(0).is_none());
    assert_eq!(task_types(std::slice::from_ref(&def)), vec!["fetch"]);
    let rendered = def.render_dag();
    assert!(rendered.contains("enrich[>] <- fetch"), "{rendered}");
    assert!(
        rendered.contains("child pipeline enrichment (version 2, pinned when the child starts)"),
        "{rendered}"
    );
    let current = parse("pipeline = \"enrichment\"").unwrap();
    assert_eq!(current.child_of(1).unwrap().version, None);
}

#[test]
fn task_fields_on_a_child_step_are_refused_naming_the_step() {
    for (extra, field) in [
        ("task_type = \"t\"", "`task_type`"),
        ("map = { over = \"fetch\" }", "`map`"),
        ("[steps.retry]\nmax_attempts = 2", "`retry`"),
        ("[steps.timeouts]\nheartbeat = \"1s\"", "`timeouts`"),
    ] {
        let err = parse(&format!("pipeline = \"enrichment\"\n{extra}")).unwrap_err();
        assert_eq!(err.step.as_deref(), Some("enrich"), "{err}");
        let message = err.to_string();
        assert!(message.contains(field), "{message}");
        assert!(message.contains("starts a child workflow"), "{message}");
    }
    let err = parse("pipeline_version = 2").unwrap_err();
    assert!(
        err.to_string().contains("`pipeline_version` needs"),
        "{err}"
    );
    let err = parse("pipeline = \"Bad Name\"").unwrap_err();
    assert!(err.to_string().contains("pipeline name"), "{err}");
    let err = parse("pipeline = \"e\"\npipeline_version = 0").unwrap_err();
    assert!(err.to_string().contains("at least 1"), "{err}");
}

#[test]
fn the_directory_must_declare_the_child_pipeline_and_version() {
    let defs = vec![
        simple("parent", 1, Some("enrichment")),
        simple("other", 1, None),
    ];
    let errs = check_children(&defs, |i| format!("f{i}.toml")).unwrap_err();
    assert_eq!(errs.len(), 1);
    let message = errs[0].to_string();
    assert!(message.starts_with("f0.toml"), "{message}");
    assert!(
        message.contains("child pipeline \"enrichment\" is not declared"),
        "{message}"
    );
    let mut pinned = parse("pipeline = \"enrichment\"\npipeline_version = 3").unwrap();
    pinned.name = "parent".into();
    let defs = vec![
        pinned,
        simple("enrichment", 1, None),
        simple("enrichment", 2, None),
    ];
    let errs = check_children(&defs, |i| format!("f{i}.toml")).unwrap_err();
    let message = errs[0].to_string();
    assert!(
        message.contains("\"enrichment\" version 3 is not declared")
            && message.contains("(declared versions: 1, 2)"),
        "{message}"
    );
    let defs = vec![
        simple("parent", 1, Some("enrichment")),
        simple("enrichment", 1, None),
    ];
    check_children(&defs, |i| format!("f{i}.toml")).unwrap();
}

#[test]
fn pipelines_that_start_each_other_in_a_cycle_are_refused() {
    let own = vec![simple("a", 1, Some("a"))];
    let errs = check_children(&own, |i| format!("f{i}.toml")).unwrap_err();
    assert!(
        errs[0].to_string().contains("child pipeline cycle a -> a"),
        "{}",
        errs[0]
    );
    // Indirect, and through an older version of a name.
    let defs = vec![
        simple("a", 1, Some("b")),
        simple("b", 1, None),
        simple("b", 2, Some("c")),
        simple("c", 1, Some("a")),
    ];
    let errs = check_children(&defs, |i| format!("f{i}.toml")).unwrap_err();
    assert_eq!(errs.len(), 1, "one cycle, reported once: {errs:?}");
    let message = errs[0].to_string();
    assert!(
        message.contains("child pipeline cycle a -> b -> c -> a"),
        "{message}"
    );
}

#[test]
fn load_dir_checks_children_across_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("parent.toml"),
        parent("pipeline = \"enrichment\""),
    )
    .unwrap();
    let errs = load_pipeline_dir(dir.path(), &PipelineLimits::default()).unwrap_err();
    assert!(errs[0].to_string().contains("parent.toml"), "{}", errs[0]);
    std::fs::write(
        dir.path().join("enrichment.toml"),
        "[pipeline]\nname = \"enrichment\"\nversion = 1\n\n[[steps]]\nname = \"tag\"\n",
    )
    .unwrap();
    let defs = load_pipeline_dir(dir.path(), &PipelineLimits::default()).unwrap();
    assert_eq!(defs.len(), 2);
}

#[test]
fn a_pipeline_without_child_steps_keeps_its_hash_and_stored_form() {
    let with_when = parse("when = \"input.x\"").unwrap();
    assert!(with_when.step_children.is_empty());
    let v3 = stored::PipelineDefV3 {
        name: with_when.name.clone(),
        version: with_when.version,
        steps: with_when.steps.clone(),
        workflow_timeout_ms: with_when.workflow_timeout_ms,
        step_maps: with_when.step_maps.clone(),
        step_whens: with_when.step_whens.clone(),
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in postcard::to_allocvec(&v3).unwrap() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    assert_eq!(with_when.content_hash(), h);
    // A stored V3 decodes as the current type with no child steps.
    let bytes = postcard::to_allocvec(&v3).unwrap();
    assert!(postcard::from_bytes::<PipelineDef>(&bytes).is_err());
    let back: PipelineDef = postcard::from_bytes::<stored::PipelineDefV3>(&bytes)
        .unwrap()
        .into();
    assert_eq!(back, with_when);
    let with_child = parse("pipeline = \"e\"").unwrap();
    assert_ne!(with_child.content_hash(), parse("").unwrap().content_hash());
}

#[test]
fn the_review_example_runs_video_as_a_child_then_waits_for_approval() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    let defs = load_pipeline_dir(&dir, &PipelineLimits::default()).unwrap();
    check_children(&defs, |i| defs[i].name.clone()).unwrap();
    let review = defs.iter().find(|d| d.name == "review").unwrap();
    let child = review.child_of(0).expect("process is a child step");
    assert_eq!((child.pipeline.as_str(), child.version), ("video", None));
    let wait = review.wait_of(1).expect("review is a wait step");
    assert_eq!(wait.signal, "approved");
    assert_eq!(wait.timeout_ms, 48 * 3_600_000);
    assert_eq!(review.steps[2].needs, [1]);
    assert!(defs.iter().any(|d| d.name == "video"));
}
