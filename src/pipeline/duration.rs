//! Durations in pipeline files: `<integer><unit>` or a compound of such
//! parts, largest unit first (`200ms`, `1m30s`, `24h`), in milliseconds.

use std::fmt::Write as _;

pub(super) const MS_PER_SECOND: u64 = 1_000;
pub(super) const MS_PER_MINUTE: u64 = 60 * MS_PER_SECOND;
pub(super) const MS_PER_HOUR: u64 = 60 * MS_PER_MINUTE;
pub(super) const MS_PER_DAY: u64 = 24 * MS_PER_HOUR;

/// Units from largest to smallest; a compound duration must use them in this
/// order, each at most once, so `1m30s` is accepted and the ambiguous-looking
/// `30s1m` or `1m1m` are not.
const UNITS: [(&str, u64); 5] = [
    ("d", MS_PER_DAY),
    ("h", MS_PER_HOUR),
    ("m", MS_PER_MINUTE),
    ("s", MS_PER_SECOND),
    ("ms", 1),
];

/// Parses `<integer><unit>` (units `ms`, `s`, `m`, `h`, `d`) or a compound of
/// such parts, largest unit first (`1h30m`, `1m30s`, `2s500ms`), into
/// milliseconds. Zero is accepted; callers reject it where it makes no sense.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    if s.is_empty() {
        return Err("empty duration".to_owned());
    }
    if s.starts_with('-') {
        return Err("negative durations are not allowed".to_owned());
    }
    let bytes = s.as_bytes();
    let mut pos = 0;
    let mut total: u64 = 0;
    // Index into UNITS of the previous part's unit.
    let mut previous_unit: Option<usize> = None;
    while pos < bytes.len() {
        let digits_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        if pos == digits_start {
            // Only ASCII bytes were consumed, so `pos` is on a char boundary.
            let found = s[pos..].chars().next().unwrap_or_default();
            return Err(format!("expected a number, found {found:?}"));
        }
        let digits = &s[digits_start..pos];
        let unit_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_alphabetic() {
            pos += 1;
        }
        let unit = &s[unit_start..pos];
        if unit.is_empty() {
            return Err(match bytes.get(pos) {
                None => format!("missing unit after {digits} (use ms, s, m, h or d)"),
                Some(b'.') => {
                    "fractions are not supported; use a smaller unit (1500ms, not 1.5s)".to_owned()
                }
                Some(_) => {
                    let found = s[pos..].chars().next().unwrap_or_default();
                    format!("unexpected {found:?} after {digits}")
                }
            });
        }
        let Some(unit_index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(format!("unknown unit {unit:?} (use ms, s, m, h or d)"));
        };
        if previous_unit.is_some_and(|prev| unit_index <= prev) {
            return Err("each unit may appear once, largest first (e.g. 1h30m)".to_owned());
        }
        previous_unit = Some(unit_index);
        let overflow = || "duration is too large".to_owned();
        // `digits` is non-empty ASCII digits, so parsing can only fail on overflow.
        let value: u64 = digits.parse().map_err(|_| overflow())?;
        total = value
            .checked_mul(UNITS[unit_index].1)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(overflow)?;
    }
    Ok(total)
}

/// Formats milliseconds in the syntax [`parse_duration_ms`] reads, using the
/// fewest parts: `200ms`, `10s`, `1h`, `1m30s`, `0ms`. Hours are the largest
/// unit because timeouts are commonly thought of in hours (`24h`, `48h`).
pub fn format_duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "0ms".to_owned();
    }
    let mut out = String::new();
    let mut rest = ms;
    // Skip days (UNITS[0]): see the doc comment.
    for &(unit, factor) in &UNITS[1..] {
        let count = rest / factor;
        if count > 0 {
            // Writing to a String cannot fail.
            let _ = write!(out, "{count}{unit}");
            rest %= factor;
        }
    }
    out
}

pub(super) fn format_optional_ms(ms: Option<u64>) -> String {
    ms.map_or_else(|| "none".to_owned(), format_duration_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        let cases = [
            ("0ms", 0),
            ("200ms", 200),
            ("10s", 10_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("2d", 172_800_000),
            ("1m30s", 90_000),
            ("1h30m", 5_400_000),
            ("1d2h3m4s5ms", 93_784_005),
            ("007s", 7_000),
        ];
        for (text, ms) in cases {
            assert_eq!(parse_duration_ms(text), Ok(ms), "{text}");
        }
    }

    #[test]
    fn bad_durations_are_rejected_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("-5s", "negative"),
            ("10", "missing unit"),
            ("s", "expected a number"),
            ("10x", "unknown unit \"x\""),
            ("10sec", "unknown unit \"sec\""),
            ("1.5s", "fractions"),
            ("30s1m", "largest first"),
            ("1m1m", "largest first"),
            ("1 s", "unexpected ' '"),
            ("5s ", "expected a number"),
            ("none", "expected a number"),
            ("18446744073709551616ms", "too large"),
            ("18446744073709551615s", "too large"),
            ("213503982335d", "too large"),
        ];
        for (text, reason) in cases {
            let err = parse_duration_ms(text).expect_err(text);
            assert!(err.contains(reason), "{text:?}: {err:?} lacks {reason:?}");
        }
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
            assert_eq!(format_duration_ms(ms), text);
            assert_eq!(parse_duration_ms(text), Ok(ms));
        }
        let mut ms: u64 = 1;
        while ms < u64::MAX / 3 {
            for candidate in [ms, ms + 1, ms * 3 - 1, u64::MAX - ms] {
                assert_eq!(
                    parse_duration_ms(&format_duration_ms(candidate)),
                    Ok(candidate)
                );
            }
            ms *= 3;
        }
        assert_eq!(
            parse_duration_ms(&format_duration_ms(u64::MAX)),
            Ok(u64::MAX)
        );
        // Formatting is canonical: parse then format normalises.
        assert_eq!(
            format_duration_ms(parse_duration_ms("90s").unwrap()),
            "1m30s"
        );
        assert_eq!(format_duration_ms(parse_duration_ms("1d").unwrap()), "24h");
    }
}
