use super::*;

#[test]
fn draws_are_uniform_enough_and_repeatable() {
    let fails = (0..10_000)
        .filter(|i| draw(7, &format!("t{i}")) < 0.2)
        .count();
    assert!((1_800..2_200).contains(&fails), "{fails}");
    assert_eq!(draw(7, "x"), draw(7, "x"));
    assert_ne!(draw(7, "x"), draw(8, "x"));
}

#[test]
fn latency_distributions_parse_print_and_sample() {
    for text in [
        "fixed:5ms",
        "uniform:1ms..10ms",
        "lognormal:p50=5ms,p99=50ms",
        "fixed:250us",
    ] {
        let d: LatencyDist = text.parse().unwrap();
        assert_eq!(d.to_string(), text);
    }
    for bad in [
        "fixed",
        "fixed:5",
        "fixed:-1ms",
        "uniform:10ms..1ms",
        "uniform:1ms",
        "lognormal:p50=5ms",
        "lognormal:p50=50ms,p99=5ms",
        "lognormal:p50=0ms,p99=5ms",
        "gamma:1ms",
        "fixed:2h",
        "fixed:99999s",
        "fixed:NaNms",
    ] {
        assert!(bad.parse::<LatencyDist>().is_err(), "{bad}");
    }
    let fixed: LatencyDist = "fixed:5ms".parse().unwrap();
    assert_eq!(fixed.sample(1, "t"), Duration::from_millis(5));
    let uni: LatencyDist = "uniform:1ms..10ms".parse().unwrap();
    let ln: LatencyDist = "lognormal:p50=5ms,p99=50ms".parse().unwrap();
    let mut us: Vec<Duration> = (0..20_000)
        .map(|i| uni.sample(3, &format!("t{i}")))
        .collect();
    assert!(us
        .iter()
        .all(|d| (Duration::from_millis(1)..=Duration::from_millis(10)).contains(d)));
    us.sort();
    let mid = us[us.len() / 2].as_secs_f64() * 1e3;
    assert!((5.0..6.0).contains(&mid), "{mid}");
    let mut ls: Vec<f64> = (0..20_000)
        .map(|i| ln.sample(3, &format!("t{i}")).as_secs_f64() * 1e3)
        .collect();
    ls.sort_by(f64::total_cmp);
    let (p50, p99) = (ls[ls.len() / 2], ls[ls.len() * 99 / 100]);
    assert!((4.7..5.3).contains(&p50), "p50 {p50}");
    assert!((44.0..56.0).contains(&p99), "p99 {p99}");
    // Repeatable per task id and seed, different across seeds.
    assert_eq!(ln.sample(3, "x"), ln.sample(3, "x"));
    assert_ne!(ln.sample(3, "x"), ln.sample(4, "x"));
    // --latency-ms keeps working as a fixed latency.
    let cfg = SimConfig {
        latency_ms: 7,
        ..SimConfig::default()
    };
    assert_eq!(cfg.latency_for("t"), Duration::from_millis(7));
}

#[test]
fn a_childs_tasks_read_the_parents_input_through_the_childs() {
    let child_task = r#"{"workflow":{"workflow":{"video_id":"v1","segments":2,"language":"fr"},"deps":{}},"deps":{"transcribe":{"n":3}}}"#;
    let out: serde_json::Value =
        serde_json::from_str(&output_from(child_task, "v1~process~1", "segment", None).unwrap())
            .unwrap();
    assert_eq!(
        out,
        serde_json::json!({"video_id":"v1","step":"segment","n":4,"segments":[0,1],"language":"fr"})
    );
    // The child's own input wins over its parent's.
    let own = r#"{"workflow":{"segments":1,"workflow":{"segments":5}}}"#;
    let out: serde_json::Value =
        serde_json::from_str(&output_from(own, "c", "segment", Some(8)).unwrap()).unwrap();
    assert_eq!(out["segments"], serde_json::json!([0]));
    assert_eq!(out["video_id"], "c");
}

#[test]
fn a_segment_task_lists_the_default_segments_unless_the_input_says() {
    let out = |input: &str, task_type: &str, default: u32| -> serde_json::Value {
        let unasked = unasked_segments(task_type, default);
        serde_json::from_str(&output_from(input, "v", task_type, unasked).unwrap()).unwrap()
    };
    let plain = r#"{"workflow":{"video_url":"s3://v.mp4"},"deps":{"transcribe":{"n":3}}}"#;
    let listed = out(plain, "segment", DEFAULT_SEGMENTS);
    assert_eq!(
        listed["segments"],
        serde_json::json!([0, 1, 2, 3, 4, 5, 6, 7])
    );
    assert_eq!(listed["n"], 4);
    // Only the segmenter lists segments unasked, and 0 lists none.
    assert!(out(plain, "transcribe", DEFAULT_SEGMENTS)
        .get("segments")
        .is_none());
    assert!(out(plain, "segment", 0).get("segments").is_none());
    // The input's count wins, for every task type (0 included: an empty list).
    let asked = r#"{"workflow":{"segments":2},"deps":{}}"#;
    assert_eq!(
        out(asked, "segment", 8)["segments"],
        serde_json::json!([0, 1])
    );
    assert_eq!(
        out(asked, "embed", 8)["segments"],
        serde_json::json!([0, 1])
    );
    let none = r#"{"workflow":{"segments":0},"deps":{}}"#;
    assert_eq!(out(none, "segment", 8)["segments"], serde_json::json!([]));
    // A map element lists none.
    let element = r#"{"workflow":{},"deps":{},"element":3}"#;
    assert!(out(element, "segment", 8).get("segments").is_none());
}

/// The shipped video pipeline, run by the simulated workers on an input
/// that says nothing about segments: the map gets the default segments and
/// every step's `n` checks out (`index`: 1 + the 8 enrichments + 1).
#[test]
fn the_shipped_video_pipeline_runs_on_the_default_segments() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pipelines/video.toml");
    let def = crate::pipeline::load::load_pipeline_file(&path, &Default::default()).unwrap();
    let mut outputs: Vec<Option<String>> = vec![None; def.steps.len()];
    let workflow = r#"{"video_id":"v","video_url":"s3://v.mp4"}"#;
    for i in def.topo_order() {
        let step = &def.steps[i];
        if def.when_of(i).is_some() {
            // `translate` needs a target language: skipped.
            continue;
        }
        let deps = |filter: &dyn Fn(usize) -> bool| -> String {
            let parts: Vec<String> = step
                .needs
                .iter()
                .map(|&d| usize::from(d))
                .filter(|&d| filter(d))
                .map(|d| {
                    let out = outputs[d].as_deref().unwrap_or("null");
                    format!(r#""{}":{out}"#, def.steps[d].name)
                })
                .collect();
            parts.join(",")
        };
        // What the simulated worker answers for this step's task `input`.
        let answer = |input: &str| {
            output_from(input, "v", &step.name, unasked_segments(&step.task_type, 8)).unwrap()
        };
        let output = match def.map_of(i) {
            None => answer(&format!(
                r#"{{"workflow":{workflow},"deps":{{{}}}}}"#,
                deps(&|_| true)
            )),
            Some(m) => {
                let over = usize::from(m.over_step);
                let items =
                    crate::workflow::map::array_at(outputs[over].as_deref().unwrap(), &m.pointer)
                        .unwrap();
                assert_eq!(items.len(), DEFAULT_SEGMENTS as usize);
                let elements: Vec<String> = items
                    .iter()
                    .map(|item| {
                        answer(&format!(
                            r#"{{"workflow":{workflow},"deps":{{{}}},"element":{item}}}"#,
                            deps(&|d| d != over)
                        ))
                    })
                    .collect();
                format!("[{}]", elements.join(","))
            }
        };
        outputs[i] = Some(output);
    }
    let refs: Vec<Option<&str>> = outputs.iter().map(Option::as_deref).collect();
    assert_eq!(check_outputs(&def, &refs), Vec::<String>::new());
    let index = def.steps.iter().position(|s| s.name == "index").unwrap();
    let index: serde_json::Value = serde_json::from_str(refs[index].unwrap()).unwrap();
    assert_eq!(index["n"], 10);
}
