use super::*;

fn bound() -> ErrorBound {
    ErrorBound {
        max_error_rate: 0.2,
        window_ms: 10_000,
        min_attempts: 10,
    }
}

fn outcomes(task_type: &str, succeeded: u64, failed: u64) -> TaskOutcomes {
    TaskOutcomes {
        task_type: task_type.into(),
        succeeded,
        failed,
        timed_out: 0,
    }
}

fn held(v: &Verdict) -> bool {
    matches!(v, Verdict::Hold { .. })
}

#[test]
fn holds_once_failures_in_the_window_pass_the_bound() {
    let mut t = ErrorThrottle::new(bound());
    assert_eq!(
        t.observe(0, &[outcomes("transcribe", 100, 0)]),
        Verdict::Release
    );
    // 10 more ended, 2 failed: 20 % is not over 20 %.
    assert_eq!(
        t.observe(1_000, &[outcomes("transcribe", 108, 2)]),
        Verdict::Release
    );
    // 20 ended since the baseline, 5 failed: 25 %.
    let v = t.observe(2_000, &[outcomes("transcribe", 115, 5)]);
    let Verdict::Hold { since_ms, cause } = v else {
        panic!("not held: {v:?}");
    };
    assert_eq!(since_ms, 2_000);
    assert_eq!(
        (
            cause.task_type.as_str(),
            cause.ended,
            cause.failed,
            cause.span_ms
        ),
        ("transcribe", 20, 5, 2_000)
    );
    assert_eq!(
        cause.to_string(),
        "task type transcribe failed 5 of 20 attempts (25%) in the last 2s"
    );
    assert_eq!(t.episodes(), 1);
}

#[test]
fn no_hold_under_the_bound_or_under_the_minimum_of_attempts() {
    let mut t = ErrorThrottle::new(bound());
    t.observe(0, &[outcomes("a", 0, 0), outcomes("b", 0, 0)]);
    // `a`: every attempt failed but only 9 ended; `b`: 19 % failed.
    for s in 1..=9u64 {
        let v = t.observe(
            s * 1_000,
            &[outcomes("a", 0, s), outcomes("b", s * 81, s * 19)],
        );
        assert_eq!(v, Verdict::Release, "second {s}");
    }
    assert_eq!(t.episodes(), 0);
    assert_eq!(t.held_ms(9_000), 0);
}

#[test]
fn timeouts_count_as_failures() {
    let mut t = ErrorThrottle::new(bound());
    t.observe(0, &[outcomes("a", 0, 0)]);
    let mut o = outcomes("a", 10, 0);
    o.timed_out = 10;
    assert!(held(&t.observe(1_000, &[o])));
}

#[test]
fn releases_once_the_failures_leave_the_window_and_resumes_counting() {
    let mut t = ErrorThrottle::new(bound());
    t.observe(0, &[outcomes("a", 0, 0)]);
    assert!(held(&t.observe(1_000, &[outcomes("a", 0, 30)])));
    // Nothing ends any more (the work is held): the failures stay in the
    // window until it has passed over them.
    for at in [2_000, 5_000, 10_000] {
        assert!(held(&t.observe(at, &[outcomes("a", 0, 30)])), "at {at}");
    }
    // 11 s: the baseline is the sample of 1 s, after the failures.
    assert_eq!(t.observe(11_000, &[outcomes("a", 0, 30)]), Verdict::Release);
    assert_eq!(t.held_ms(11_000), 10_000);
    assert_eq!(t.held_ms(20_000), 10_000);
    // Failing again is a second episode.
    assert!(held(&t.observe(12_000, &[outcomes("a", 0, 45)])));
    assert_eq!(t.episodes(), 2);
    assert_eq!(t.held_ms(13_000), 11_000);
}

#[test]
fn releases_when_successes_bring_the_rate_under_the_bound() {
    let mut t = ErrorThrottle::new(bound());
    t.observe(0, &[outcomes("a", 0, 0)]);
    assert!(held(&t.observe(1_000, &[outcomes("a", 0, 10)])));
    // Within the same window: 10 failed of 60 ended, 17 %.
    assert_eq!(t.observe(2_000, &[outcomes("a", 50, 10)]), Verdict::Release);
    assert_eq!(t.episodes(), 1);
}

#[test]
fn the_worst_task_type_is_the_cause() {
    let mut t = ErrorThrottle::new(bound());
    t.observe(0, &[outcomes("a", 0, 0), outcomes("b", 0, 0)]);
    let v = t.observe(1_000, &[outcomes("a", 70, 30), outcomes("b", 40, 60)]);
    let Verdict::Hold { cause, .. } = v else {
        panic!("not held: {v:?}");
    };
    assert_eq!(cause.task_type, "b");
}

#[test]
fn counts_from_before_the_first_sample_or_an_engine_restart_do_not_count() {
    let mut t = ErrorThrottle::new(bound());
    // A million failures before the throttle started: not this window's.
    assert_eq!(
        t.observe(0, &[outcomes("a", 0, 1_000_000)]),
        Verdict::Release
    );
    assert_eq!(
        t.observe(1_000, &[outcomes("a", 20, 1_000_000)]),
        Verdict::Release
    );
    // The engine restarted: its counts start from zero again.
    assert_eq!(t.observe(2_000, &[outcomes("a", 5, 0)]), Verdict::Release);
    assert!(held(&t.observe(3_000, &[outcomes("a", 5, 20)])));
}

#[test]
fn memory_is_bounded_however_often_it_is_fed() {
    let mut t = ErrorThrottle::new(ErrorBound {
        window_ms: WINDOW_MS_MAX,
        ..bound()
    });
    for at in 0..(SAMPLES_MAX as u64 + 100) {
        t.observe(at, &[outcomes("a", at, 0)]);
    }
    assert_eq!(t.samples.len(), SAMPLES_MAX);
}

#[test]
fn error_rates_parse_as_percent_fraction_or_off() {
    assert_eq!(parse_error_rate("5%"), Ok(Some(0.05)));
    assert_eq!(parse_error_rate("0.25"), Ok(Some(0.25)));
    assert_eq!(parse_error_rate("off"), Ok(None));
    assert!(parse_error_rate("150%").is_err());
    assert!(parse_error_rate("-1").is_err());
    assert!(parse_error_rate("five").is_err());
    assert!(bound().validate().is_ok());
    assert!(ErrorBound {
        min_attempts: 0,
        ..bound()
    }
    .validate()
    .is_err());
    assert!(ErrorBound {
        window_ms: 1,
        ..bound()
    }
    .validate()
    .is_err());
}
