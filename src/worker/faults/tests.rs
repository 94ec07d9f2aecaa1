use super::*;

#[test]
fn fail_for_parses_a_span_and_covers_only_it() {
    let o = parse_fail_for("flaky=30s@5s").unwrap();
    assert_eq!((o.after_ms, o.for_ms), (5_000, 30_000));
    assert!(!o.covers("flaky", Duration::from_millis(4_999)));
    assert!(o.covers("flaky", Duration::from_secs(5)));
    assert!(o.covers("flaky", Duration::from_millis(34_999)));
    assert!(!o.covers("flaky", Duration::from_secs(35)));
    assert!(!o.covers("other", Duration::from_secs(6)));
    assert_eq!(parse_fail_for("x=2s").unwrap().after_ms, 0);
    for bad in ["flaky", "flaky=soon", "fl aky=1s", "flaky=1s@later"] {
        let e = parse_fail_for(bad).unwrap_err();
        assert!(!e.is_empty() && !e.contains('\n'), "{bad}: {e}");
    }
}
