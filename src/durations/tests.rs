use super::*;

#[test]
fn durations_parse_to_milliseconds() {
    let cases = [
        ("0", 0),
        ("0ms", 0),
        ("0s", 0),
        ("200ms", 200),
        ("10s", 10_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("2d", 172_800_000),
        ("1m30s", 90_000),
        ("1h30m", 5_400_000),
        ("1d2h3m4s5ms", 93_784_005),
        ("007s", 7_000),
        ("1.5s", 1_500),
        ("0.25m", 15_000),
        ("2000us", 2),
        (" 5s ", 5_000),
    ];
    for (text, ms) in cases {
        assert_eq!(parse_ms(text), Ok(ms), "{text}");
        assert_eq!(parse(text), Ok(Duration::from_millis(ms)), "{text}");
    }
}

#[test]
fn durations_finer_than_a_millisecond_parse_as_durations_only() {
    let cases = [
        ("250us", Duration::from_micros(250)),
        ("250µs", Duration::from_micros(250)),
        ("1.5ms", Duration::from_micros(1_500)),
        ("1ms500us", Duration::from_micros(1_500)),
        ("0.000000001s", Duration::from_nanos(1)),
    ];
    for (text, duration) in cases {
        assert_eq!(parse(text), Ok(duration), "{text}");
        assert_eq!(
            parse_ms(text),
            Err(DurationError::FinerThanMillisecond),
            "{text}"
        );
    }
}

#[test]
fn bad_durations_are_rejected_with_a_reason() {
    let cases = [
        ("", "empty"),
        ("  ", "empty"),
        ("-5s", "negative"),
        ("10", "missing unit after 10"),
        ("1m30", "missing unit after 30"),
        ("1.5", "missing unit"),
        ("s", "expected a number"),
        ("10x", "unknown unit \"x\""),
        ("10sec", "unknown unit \"sec\""),
        ("10S", "unknown unit \"S\""),
        ("1.s", "fraction"),
        (".5s", "expected a number"),
        ("1.0000000001s", "fraction"),
        ("30s1m", "largest first"),
        ("1m1m", "largest first"),
        ("1us1ms", "largest first"),
        ("1 s", "unexpected ' '"),
        ("1,5s", "unexpected ','"),
        ("5s-1s", "negative"),
        ("none", "expected a number"),
        ("18446744073709551616s", "too large"),
        ("340282366920938463463374607431768211456s", "too large"),
    ];
    for (text, reason) in cases {
        let err = parse(text).expect_err(text).to_string();
        assert!(err.contains(reason), "{text:?}: {err:?} lacks {reason:?}");
    }
    // Beyond what milliseconds in a u64 hold, though a Duration holds it.
    assert_eq!(
        parse_ms("18446744073709551615s"),
        Err(DurationError::TooLarge)
    );
    assert_eq!(parse_ms("213503982335d"), Err(DurationError::TooLarge));
}

#[test]
fn durations_format_and_round_trip() {
    let cases = [
        (0, "0ms"),
        (200, "200ms"),
        (10_000, "10s"),
        (60_000, "1m"),
        (90_000, "1m30s"),
        (3_600_000, "1h"),
        (86_400_000, "24h"),
        (3_723_004, "1h2m3s4ms"),
    ];
    for (ms, text) in cases {
        assert_eq!(format_ms(ms), text);
        assert_eq!(parse_ms(text), Ok(ms));
    }
    let mut ms: u64 = 1;
    while ms < u64::MAX / 3 {
        for candidate in [ms, ms + 1, ms * 3 - 1, u64::MAX - ms] {
            assert_eq!(parse_ms(&format_ms(candidate)), Ok(candidate));
        }
        ms *= 3;
    }
    assert_eq!(parse_ms(&format_ms(u64::MAX)), Ok(u64::MAX));
    // Formatting is canonical: parse then format normalises.
    assert_eq!(format_ms(parse_ms("90s").unwrap()), "1m30s");
    assert_eq!(format_ms(parse_ms("1d").unwrap()), "24h");
    assert_eq!(format(Duration::from_micros(1_500)), "1ms500us");
    assert_eq!(format(Duration::from_micros(250)), "250us");
    assert_eq!(
        parse(&format(Duration::from_micros(90_000_250))),
        Ok(Duration::from_micros(90_000_250))
    );
}

#[test]
fn rates_parse_per_second() {
    let cases = [
        ("500/s", 500.0),
        ("60/m", 1.0),
        ("7200/h", 2.0),
        ("20", 20.0),
        ("0.5", 0.5),
        ("0.5/s", 0.5),
        (" 20/s ", 20.0),
    ];
    for (text, per_second) in cases {
        assert_eq!(parse_rate(text, 1e6), Ok(per_second), "{text}");
    }
}

#[test]
fn bad_rates_are_rejected_with_a_reason() {
    let cases = [
        ("0/s", "above 0"),
        ("-5/s", "above 0"),
        ("1e9/s", "at most 1000000/s"),
        ("nan", "above 0"),
        ("inf/s", "above 0"),
        ("fast", "not a rate"),
        ("", "not a rate"),
        ("5/d", "unknown rate unit \"d\""),
        ("5/sec", "unknown rate unit \"sec\""),
    ];
    for (text, reason) in cases {
        let err = parse_rate(text, 1e6).expect_err(text).to_string();
        assert!(err.contains(reason), "{text:?}: {err:?} lacks {reason:?}");
    }
}
