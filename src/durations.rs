//! The one duration grammar and the one rate grammar of the orchestrator:
//! pipeline files, `orchestrator.toml` and command-line flags all read
//! durations and rates here (docs/operations.md, "Durations and rates").
//!
//! A duration is `0`, or one or more parts `<number><unit>` with the units
//! `d`, `h`, `m`, `s`, `ms`, `us` (or `µs`), largest unit first and each unit
//! at most once: `200ms`, `1m30s`, `1.5s`, `250us`, `7d`. A rate is a
//! positive number with an optional `/s`, `/m` or `/h` (`500/s`, `30/m`,
//! `20`: per second when the unit is left out).
//!
//! The module is a pure leaf: no IO, no clock, no imports from the crate.
//! Callers apply their own bounds (a pipeline timeout, a load generator
//! span), because what is sensible depends on what the value is for.

use std::fmt::{self, Write as _};
use std::time::Duration;

const NS_PER_US: u128 = 1_000;
const NS_PER_MS: u128 = 1_000_000;
const NS_PER_S: u128 = 1_000_000_000;
const NS_PER_M: u128 = 60 * NS_PER_S;
const NS_PER_H: u128 = 60 * NS_PER_M;
const NS_PER_D: u128 = 24 * NS_PER_H;

/// Units from largest to smallest. A compound duration must use them in this
/// order, each at most once, so `1m30s` is accepted and the ambiguous-looking
/// `30s1m` or `1m1m` are not. `µs` is an alias of `us`.
const UNITS: [(&str, u128); 6] = [
    ("d", NS_PER_D),
    ("h", NS_PER_H),
    ("m", NS_PER_M),
    ("s", NS_PER_S),
    ("ms", NS_PER_MS),
    ("us", NS_PER_US),
];

/// The unit names as an error message lists them.
const UNIT_LIST: &str = "d, h, m, s, ms or us";

/// Why a text is not a duration (or not one the caller can hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationError {
    Empty,
    Negative,
    /// A part starts with something other than a digit.
    ExpectedNumber(char),
    /// A number with no unit after it (`10`).
    MissingUnit(String),
    UnknownUnit(String),
    /// A unit out of order or repeated (`30s1m`, `1m1m`).
    UnitOrder,
    /// A character that belongs to no part (`1 s`, `1,5s`).
    Unexpected(char),
    /// A fraction with no digits after the point, or more than nine.
    BadFraction,
    TooLarge,
    /// The caller holds milliseconds and the text has a finer remainder.
    FinerThanMillisecond,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationError::Empty => f.write_str("empty duration"),
            DurationError::Negative => f.write_str("negative durations are not allowed"),
            DurationError::ExpectedNumber(c) => write!(f, "expected a number, found {c:?}"),
            DurationError::MissingUnit(n) => {
                write!(f, "missing unit after {n} (use {UNIT_LIST}, e.g. {n}s)")
            }
            DurationError::UnknownUnit(u) => write!(f, "unknown unit {u:?} (use {UNIT_LIST})"),
            DurationError::UnitOrder => {
                f.write_str("each unit may appear once, largest first (e.g. 1h30m)")
            }
            DurationError::Unexpected(c) => write!(f, "unexpected {c:?}"),
            DurationError::BadFraction => {
                f.write_str("a fraction needs 1 to 9 digits after the point (e.g. 1.5s)")
            }
            DurationError::TooLarge => f.write_str("duration is too large"),
            DurationError::FinerThanMillisecond => {
                f.write_str("durations here are whole milliseconds (e.g. 1500ms, not 1.5005s)")
            }
        }
    }
}

impl std::error::Error for DurationError {}

/// Parses a duration in the grammar of the module docs. Surrounding
/// whitespace is ignored; a fraction finer than a nanosecond is truncated.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let ns = parse_ns(text.trim())?;
    let secs = u64::try_from(ns / NS_PER_S).map_err(|_| DurationError::TooLarge)?;
    // The remainder is below one second, so it fits in u32.
    let nanos = (ns % NS_PER_S) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Parses a duration that the caller holds in whole milliseconds (pipeline
/// files, the service configuration): `1.5s` is 1,500, `1.5ms` is refused.
pub fn parse_ms(text: &str) -> Result<u64, DurationError> {
    let ns = parse_ns(text.trim())?;
    if ns % NS_PER_MS != 0 {
        return Err(DurationError::FinerThanMillisecond);
    }
    u64::try_from(ns / NS_PER_MS).map_err(|_| DurationError::TooLarge)
}

fn parse_ns(s: &str) -> Result<u128, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative);
    }
    // `0` alone needs no unit: zero is zero in every unit.
    if s == "0" {
        return Ok(0);
    }
    let mut rest = s;
    let mut total: u128 = 0;
    // Index into UNITS of the previous part's unit.
    let mut previous_unit: Option<usize> = None;
    while !rest.is_empty() {
        let (whole, fraction, after_number) = split_number(rest)?;
        let unit_len = after_number
            .find(|c: char| !(c.is_alphabetic()))
            .unwrap_or(after_number.len());
        let unit = &after_number[..unit_len];
        if unit.is_empty() {
            return Err(match after_number.chars().next() {
                None => DurationError::MissingUnit(rest.to_owned()),
                Some(c) => DurationError::Unexpected(c),
            });
        }
        let canonical = if unit == "µs" { "us" } else { unit };
        let Some(unit_index) = UNITS.iter().position(|(name, _)| *name == canonical) else {
            return Err(DurationError::UnknownUnit(unit.to_owned()));
        };
        if previous_unit.is_some_and(|prev| unit_index <= prev) {
            return Err(DurationError::UnitOrder);
        }
        previous_unit = Some(unit_index);
        total = total
            .checked_add(part_ns(whole, fraction, UNITS[unit_index].1)?)
            .ok_or(DurationError::TooLarge)?;
        rest = &after_number[unit_len..];
    }
    if total > Duration::MAX.as_nanos() {
        return Err(DurationError::TooLarge);
    }
    Ok(total)
}

/// Splits `<digits>[.<digits>]` off the front of `s`: the whole digits, the
/// fraction digits (possibly empty) and what follows.
fn split_number(s: &str) -> Result<(&str, &str, &str), DurationError> {
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits_end == 0 {
        return Err(match s.chars().next() {
            Some('-') => DurationError::Negative,
            Some(c) => DurationError::ExpectedNumber(c),
            None => DurationError::Empty,
        });
    }
    let (whole, after) = s.split_at(digits_end);
    let Some(after_point) = after.strip_prefix('.') else {
        return Ok((whole, "", after));
    };
    let fraction_end = after_point
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(after_point.len());
    if fraction_end == 0 || fraction_end > 9 {
        return Err(DurationError::BadFraction);
    }
    let (fraction, after) = after_point.split_at(fraction_end);
    Ok((whole, fraction, after))
}

/// Nanoseconds of one part: `whole.fraction` times the unit.
fn part_ns(whole: &str, fraction: &str, unit_ns: u128) -> Result<u128, DurationError> {
    // `whole` is non-empty ASCII digits, so parsing fails only on overflow.
    let whole: u128 = whole.parse().map_err(|_| DurationError::TooLarge)?;
    let mut ns = whole.checked_mul(unit_ns).ok_or(DurationError::TooLarge)?;
    if !fraction.is_empty() {
        // At most nine digits (checked by the caller), so these cannot overflow.
        let numerator: u128 = fraction.parse().map_err(|_| DurationError::BadFraction)?;
        let denominator = 10u128.pow(fraction.len() as u32);
        ns = ns
            .checked_add(numerator * unit_ns / denominator)
            .ok_or(DurationError::TooLarge)?;
    }
    Ok(ns)
}

/// Formats milliseconds in the grammar, using the fewest parts: `200ms`,
/// `10s`, `1h`, `1m30s`, `0ms`. Hours are the largest unit because timeouts
/// are commonly thought of in hours (`24h`, `48h`).
pub fn format_ms(ms: u64) -> String {
    format_ns(u128::from(ms) * NS_PER_MS)
}

/// Formats a duration in the grammar, like [`format_ms`], down to
/// microseconds (a finer remainder is dropped): `1ms500us`, `250us`.
pub fn format(d: Duration) -> String {
    format_ns(d.as_nanos() / NS_PER_US * NS_PER_US)
}

fn format_ns(ns: u128) -> String {
    if ns == 0 {
        return "0ms".to_owned();
    }
    let mut out = String::new();
    let mut rest = ns;
    // Skip days (UNITS[0]): see format_ms.
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

/// Why a text is not a rate the caller accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum RateError {
    NotANumber(String),
    UnknownUnit(String),
    /// Zero, negative or above the caller's maximum (per second).
    OutOfRange {
        max_per_second: f64,
    },
}

impl fmt::Display for RateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateError::NotANumber(t) => write!(f, "{t:?} is not a rate (e.g. 500/s, 30/m)"),
            RateError::UnknownUnit(u) => write!(f, "unknown rate unit {u:?} (use /s, /m or /h)"),
            RateError::OutOfRange { max_per_second } => {
                write!(f, "the rate must be above 0 and at most {max_per_second}/s")
            }
        }
    }
}

impl std::error::Error for RateError {}

/// Parses a rate (`500/s`, `30/m`, `2/h`, `0.5`, `20`: per second without a
/// unit) into events per second, in (0, `max_per_second`].
pub fn parse_rate(text: &str, max_per_second: f64) -> Result<f64, RateError> {
    let t = text.trim();
    let (number, seconds_per_unit) = match t.split_once('/') {
        Some((n, "s")) => (n, 1.0),
        Some((n, "m")) => (n, 60.0),
        Some((n, "h")) => (n, 3600.0),
        Some((_, unit)) => return Err(RateError::UnknownUnit(unit.to_owned())),
        None => (t, 1.0),
    };
    let count: f64 = number
        .trim()
        .parse()
        .map_err(|_| RateError::NotANumber(text.to_owned()))?;
    let per_second = count / seconds_per_unit;
    if !(per_second.is_finite() && per_second > 0.0 && per_second <= max_per_second) {
        return Err(RateError::OutOfRange { max_per_second });
    }
    Ok(per_second)
}

#[cfg(test)]
mod tests;
