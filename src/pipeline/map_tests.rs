//! Tests of the `map` table of a step: what loads, what is refused and how
//! `pipelines check` shows it.

use std::path::Path;

use super::load::*;
use super::map::{parse_percent_bp, DEFAULT_ELEMENTS_MAX, DEFAULT_MAX_PARALLEL};
use super::*;

const FILE: &str = "pipelines/map.toml";

fn parse(steps: &str) -> Result<PipelineDef, PipelineError> {
    let text = format!(
        "[pipeline]\nname = \"p\"\nversion = 1\n\n[[steps]]\nname = \"segment\"\n\n{steps}"
    );
    parse_pipeline(&text, FILE, &PipelineLimits::default())
}

fn refused(steps: &str, fragments: &[&str]) {
    let err = parse(steps).expect_err("the map should be refused");
    let message = err.to_string();
    assert_eq!(err.step.as_deref(), Some("enrich"), "{message}");
    for f in fragments {
        assert!(message.contains(f), "{message:?} lacks {f:?}");
    }
}

#[test]
fn a_map_loads_with_its_defaults_and_settings() {
    let def = parse("[[steps]]\nname = \"enrich\"\nneeds = [\"segment\"]\nmap = { over = \"segment/segments\" }\n").unwrap();
    let m = def.map_of(1).expect("enrich maps");
    assert_eq!(m.over_step, 0);
    assert_eq!(m.pointer, "/segments");
    assert_eq!(m.max_parallel, DEFAULT_MAX_PARALLEL);
    assert_eq!(m.elements_max, DEFAULT_ELEMENTS_MAX);
    assert_eq!(m.min_success_bp, 10_000);
    assert!(def.map_of(0).is_none());

    let def = parse("[[steps]]\nname = \"enrich\"\nneeds = [\"segment\"]\n[steps.map]\nover = \"segment\"\nmax_parallel = 3\nmin_success = \"95%\"\nmax_elements = 50\nmax_output_bytes = 1000\n").unwrap();
    let m = def.map_of(1).unwrap();
    assert_eq!(
        (m.pointer.as_str(), m.max_parallel, m.min_success_bp),
        ("", 3, 9_500)
    );
    assert_eq!((m.elements_max, m.output_bytes_max), (50, 1000));
    assert_eq!(m.required(10), 10, "95% of 10 rounds up");
    assert_eq!(m.required(100), 95);
    assert_eq!(m.required(0), 0);
}

#[test]
fn a_pipeline_without_maps_stores_no_map_entries() {
    let def = parse("[[steps]]\nname = \"enrich\"\nneeds = [\"segment\"]\n").unwrap();
    assert!(def.step_maps.is_empty());
}

#[test]
fn a_bad_map_is_refused_naming_the_step_and_the_problem() {
    refused(
        "[[steps]]\nname = \"enrich\"\nneeds = [\"segment\"]\nmap = { over = \"other/x\" }\n",
        &["must start with a step listed in needs, found \"other\""],
    );
    refused(
        "[[steps]]\nname = \"enrich\"\nmap = { over = \"segment/x\" }\n",
        &["must start with a step listed in needs"],
    );
    refused(
        "[[steps]]\nname = \"enrich\"\nneeds = [\"segment\"]\nmap = { max_parallel = 2 }\n",
        &["missing `over`"],
    );
    refused(
        "[[steps]]\nname = \"enrich\"\nneeds = [\"segment\"]\nmap = { over = \"segment/a~2\" }\n",
        &["`~` in a JSON pointer"],
    );
    refused(
        "[[steps]]\nname = \"enrich\"\nneeds = [\"segment\"]\nmap = { over = \"segment\", max_parallel = 0 }\n",
        &["`max_parallel` must be at least 1"],
    );
    refused(
        "[[steps]]\nname = \"enrich\"\nneeds = [\"segment\"]\nmap = { over = \"segment\", min_success = \"120%\" }\n",
        &["`min_success = \"120%\"`", "between 0% and 100%"],
    );
    refused(
        "[[steps]]\nname = \"enrich\"\nneeds = [\"segment\"]\nmap = { over = \"segment\", max_elements = 1000000 }\n",
        &["`max_elements` must be between 1 and 100000"],
    );
    refused(
        "[[steps]]\nname = \"enrich\"\nneeds = [\"segment\"]\nmap = { over = \"segment\", parallel = 2 }\n",
        &["unknown field `parallel`"],
    );
}

#[test]
fn percentages_parse_to_basis_points() {
    assert_eq!(parse_percent_bp("95%"), Some(9_500));
    assert_eq!(parse_percent_bp("99.5%"), Some(9_950));
    assert_eq!(parse_percent_bp("0%"), Some(0));
    assert_eq!(parse_percent_bp("100%"), Some(10_000));
    for bad in ["95", "100.01%", "-1%", "9.999%", "%", "x%", "1e2%"] {
        assert_eq!(parse_percent_bp(bad), None, "{bad}");
    }
}

#[test]
fn the_shipped_video_pipeline_maps_per_segment_and_check_shows_it() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pipelines/video.toml");
    let def =
        load_pipeline_file(&path, &PipelineLimits::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((def.name.as_str(), def.version), ("video", 2));
    let enrich = def.step_index("enrich").unwrap();
    let m = def.map_of(enrich).unwrap();
    assert_eq!(def.steps[usize::from(m.over_step)].name, "segment");
    let text = def.render_dag();
    assert!(text.contains("enrich[*] <- segment"), "{text}");
    assert!(text.contains("translate[?] <- transcribe"), "{text}");
    assert!(text.contains("segment <- transcribe, translate"), "{text}");
    assert!(
        text.contains(
            "map over segment/segments: one task per element, 32 at a time; must succeed: 99%"
        ),
        "{text}"
    );
}
