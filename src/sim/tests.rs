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
        serde_json::from_str(&output_from(child_task, "v1~process~1", "segment").unwrap()).unwrap();
    assert_eq!(
        out,
        serde_json::json!({"video_id":"v1","step":"segment","n":4,"segments":[0,1],"language":"fr"})
    );
    // The child's own input wins over its parent's.
    let own = r#"{"workflow":{"segments":1,"workflow":{"segments":5}}}"#;
    let out: serde_json::Value =
        serde_json::from_str(&output_from(own, "c", "segment").unwrap()).unwrap();
    assert_eq!(out["segments"], serde_json::json!([0]));
    assert_eq!(out["video_id"], "c");
}
