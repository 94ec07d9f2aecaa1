//! Tests of a step's `when`: what loads, what is refused at load (naming
//! the step and the expression), how `pipelines check` shows it, and that
//! conditions change neither the hash nor the stored form of a pipeline
//! without them.

use super::load::*;
use super::when::{DEFAULT_WHEN_LEN_MAX, DEFAULT_WHEN_VALUES_MAX};
use super::*;

const FILE: &str = "pipelines/when.toml";

fn parse_with(when: &str, limits: &PipelineLimits) -> Result<PipelineDef, PipelineError> {
    let text = format!(
        "[pipeline]\nname = \"p\"\nversion = 1\n\n[[steps]]\nname = \"detect\"\n\n[[steps]]\nname = \"other\"\n\n[[steps]]\nname = \"translate\"\nneeds = [\"detect\"]\nwhen = {when:?}\n"
    );
    parse_pipeline(&text, FILE, limits)
}

fn parse(when: &str) -> Result<PipelineDef, PipelineError> {
    parse_with(when, &PipelineLimits::default())
}

fn refused(when: &str, fragments: &[&str]) {
    let err = parse(when).expect_err("the condition should be refused");
    let message = err.to_string();
    assert_eq!(err.step.as_deref(), Some("translate"), "{message}");
    assert!(message.contains(&format!("when = {when:?}")), "{message}");
    for f in fragments {
        assert!(message.contains(f), "{message:?} lacks {f:?}");
    }
}

#[test]
fn a_condition_loads_with_its_limit_and_shows_in_check() {
    let def = parse("deps.detect.language != input.target && input.translate").unwrap();
    let w = def.when_of(2).expect("translate has a condition");
    assert_eq!(
        w.text,
        "deps.detect.language != input.target && input.translate"
    );
    assert_eq!(w.values_max, DEFAULT_WHEN_VALUES_MAX);
    assert!(def.when_of(0).is_none());
    assert_eq!(def.step_whens.len(), 3);
    let rendered = def.render_dag();
    assert!(rendered.contains("translate[?] <- detect"), "{rendered}");
    assert!(
        rendered.contains(
            "when deps.detect.language != input.target && input.translate: runs only if true"
        ),
        "{rendered}"
    );
    // Index syntax, macros, and type names load too.
    parse(r#"deps["detect"].n > 2 && input.tags.exists(t, t == "x")"#).unwrap();
    parse("type(input.n) == int").unwrap();
}

#[test]
fn a_pipeline_without_conditions_keeps_its_hash_and_stores_no_conditions() {
    let text = "[pipeline]\nname = \"p\"\nversion = 1\n\n[[steps]]\nname = \"a\"\n";
    let def = parse_pipeline(text, FILE, &PipelineLimits::default()).unwrap();
    assert!(def.step_whens.is_empty());
    let v1 = stored::PipelineDefV1 {
        name: def.name.clone(),
        version: def.version,
        steps: def.steps.clone(),
        workflow_timeout_ms: def.workflow_timeout_ms,
    };
    let with_when = parse("true").unwrap();
    assert_ne!(with_when.content_hash(), def.content_hash());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in postcard::to_allocvec(&v1).unwrap() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    assert_eq!(def.content_hash(), h);
}

#[test]
fn a_syntax_error_is_refused_at_load() {
    refused("deps.detect.language ==", &["step \"translate\""]);
    refused("input.(", &[]);
}

#[test]
fn a_dependency_the_step_does_not_need_is_refused() {
    refused(
        "deps.other.ok",
        &["reads deps.other, which is not a dependency of the step (needs: detect)"],
    );
    refused(r#"deps["nope"] == 1"#, &["reads deps.nope"]);
    refused(
        "deps[input.which] == 1",
        &["indexes deps with a computed key"],
    );
}

#[test]
fn an_unknown_variable_is_refused_but_a_macro_variable_is_not() {
    refused("language == 'en'", &["reads unknown variable `language`"]);
    parse("input.items.all(x, x > 1)").unwrap();
    refused(
        "input.items.all(x, x > 1) && x == 2",
        &["reads unknown variable `x`"],
    );
}

#[test]
fn the_limits_on_length_and_macros_are_enforced() {
    let long = format!("input.a == '{}'", "x".repeat(DEFAULT_WHEN_LEN_MAX));
    let err = parse(&long).unwrap_err().to_string();
    assert!(err.contains("bytes long, the limit is 4096"), "{err}");
    refused(
        "input.a.all(x, x > 0) && input.b.exists(y, y > 0) && input.c.filter(z, z > 0).size() > 0",
        &["uses 3 macros over lists", "the limit is 2"],
    );
    let limits = PipelineLimits {
        when_macros_max: 3,
        when_values_max: 7,
        ..PipelineLimits::default()
    };
    let def = parse_with(
        "input.a.all(x, x > 0) && input.b.exists(y, y > 0) && input.c.filter(z, z > 0).size() > 0",
        &limits,
    )
    .unwrap();
    assert_eq!(def.when_of(2).unwrap().values_max, 7);
}

#[test]
fn a_condition_that_is_not_text_is_refused() {
    let text = "[pipeline]\nname = \"p\"\nversion = 1\n\n[[steps]]\nname = \"a\"\nwhen = true\n";
    let err = parse_pipeline(text, FILE, &PipelineLimits::default()).unwrap_err();
    assert!(err.to_string().contains("when"), "{err}");
}
