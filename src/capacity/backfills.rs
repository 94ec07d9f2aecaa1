//! The backfills an engine knows of: each `orchestrator backfill` with an
//! error-rate bound reports its state when it reads the engine's attempt
//! outcomes, and the engine keeps the latest report of each for
//! `orchestrator capacity` and the metrics. Pure: the caller passes the
//! time of every report and read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Backfills kept at most; a report of a new one past this is dropped
/// (counted as nothing) until an old one is forgotten.
pub const BACKFILLS_MAX: usize = 256;
/// A backfill not heard of for this long is forgotten (it ended or died);
/// backfills report at least once a second.
pub const FORGET_AFTER_MS: u64 = 10_000;
/// Longest name and reason kept, in bytes (cut at a character boundary).
pub const TEXT_MAX_BYTES: usize = 256;

/// What a backfill says of itself (`capacity` admin request, `backfill`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillReport {
    /// Names the backfill among others: `<input file>#<pid>`.
    pub name: String,
    pub pipeline: String,
    /// Lines in its input file.
    pub total: u64,
    /// Lines done (started, existing or failed).
    pub done: u64,
    /// Why new starts are held; `None` while they go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// Times it began holding so far.
    pub holds: u64,
}

/// A known backfill, as `orchestrator capacity` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillView {
    #[serde(flatten)]
    pub report: BackfillReport,
    /// When the engine first saw its current hold (its clock), if held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_since_ms: Option<u64>,
    /// Its latest report (the engine's clock).
    pub seen_ms: u64,
}

/// The latest report of each backfill (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct Backfills {
    by_name: BTreeMap<String, BackfillView>,
}

fn cut(mut s: String) -> String {
    if s.len() > TEXT_MAX_BYTES {
        let mut end = TEXT_MAX_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

impl Backfills {
    /// Takes a report received at `now_ms`; returns how many holds began
    /// since the backfill's previous report (for a counter of holds).
    pub fn report(&mut self, now_ms: u64, report: BackfillReport) -> u64 {
        self.forget(now_ms);
        let report = BackfillReport {
            name: cut(report.name),
            pipeline: cut(report.pipeline),
            held: report.held.map(cut),
            ..report
        };
        if !self.by_name.contains_key(&report.name) && self.by_name.len() >= BACKFILLS_MAX {
            return 0;
        }
        let prev = self.by_name.get(&report.name);
        let holds_before = prev.map_or(0, |p| p.report.holds);
        let held_since_ms = match (&report.held, prev.and_then(|p| p.held_since_ms)) {
            (None, _) => None,
            (Some(_), Some(since)) if report.holds == holds_before => Some(since),
            (Some(_), _) => Some(now_ms),
        };
        let began = report.holds.saturating_sub(holds_before);
        self.by_name.insert(
            report.name.clone(),
            BackfillView {
                report,
                held_since_ms,
                seen_ms: now_ms,
            },
        );
        began
    }

    /// Forgets the backfills not heard of within [`FORGET_AFTER_MS`].
    pub fn forget(&mut self, now_ms: u64) {
        self.by_name
            .retain(|_, b| now_ms.saturating_sub(b.seen_ms) <= FORGET_AFTER_MS);
    }

    /// Backfills holding their starts as of `now_ms`.
    pub fn held(&self, now_ms: u64) -> u64 {
        self.by_name
            .values()
            .filter(|b| {
                b.report.held.is_some() && now_ms.saturating_sub(b.seen_ms) <= FORGET_AFTER_MS
            })
            .count() as u64
    }

    /// Every backfill heard of within [`FORGET_AFTER_MS`] of `now_ms`, by name.
    pub fn view(&self, now_ms: u64) -> Vec<BackfillView> {
        self.by_name
            .values()
            .filter(|b| now_ms.saturating_sub(b.seen_ms) <= FORGET_AFTER_MS)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str, held: Option<&str>, holds: u64) -> BackfillReport {
        BackfillReport {
            name: name.into(),
            pipeline: "video".into(),
            total: 100,
            done: 10,
            held: held.map(str::to_string),
            holds,
        }
    }

    #[test]
    fn holds_are_counted_once_and_dated_from_when_they_were_first_seen() {
        let mut b = Backfills::default();
        assert_eq!(b.report(0, report("a#1", None, 0)), 0);
        assert_eq!(b.report(1_000, report("a#1", Some("errors"), 1)), 1);
        assert_eq!(b.report(2_000, report("a#1", Some("errors"), 1)), 0);
        assert_eq!(b.view(2_000)[0].held_since_ms, Some(1_000));
        assert_eq!(b.held(2_000), 1);
        assert_eq!(b.report(3_000, report("a#1", None, 1)), 0);
        assert_eq!(b.held(3_000), 0);
        // Released and held again between two reports: one hold more,
        // dated from this report.
        assert_eq!(b.report(4_000, report("a#1", Some("errors"), 3)), 2);
        assert_eq!(b.view(4_000)[0].held_since_ms, Some(4_000));
    }

    #[test]
    fn a_backfill_that_stops_reporting_is_forgotten_and_no_longer_held() {
        let mut b = Backfills::default();
        b.report(0, report("a#1", Some("errors"), 1));
        b.report(5_000, report("b#2", None, 0));
        assert_eq!(b.held(FORGET_AFTER_MS), 1);
        assert_eq!(b.held(FORGET_AFTER_MS + 1), 0);
        assert_eq!(b.view(FORGET_AFTER_MS + 1).len(), 1);
        b.forget(FORGET_AFTER_MS + 1);
        assert_eq!(b.by_name.len(), 1);
    }

    #[test]
    fn the_board_and_its_texts_are_bounded() {
        let mut b = Backfills::default();
        for i in 0..BACKFILLS_MAX + 10 {
            b.report(0, report(&format!("f#{i}"), None, 0));
        }
        assert_eq!(b.view(0).len(), BACKFILLS_MAX);
        let long = "é".repeat(TEXT_MAX_BYTES);
        b.report(0, report("f#0", Some(&long), 1));
        let held = b.view(0)[0].report.held.clone().unwrap();
        assert!(held.len() <= TEXT_MAX_BYTES && held.starts_with('é'));
    }
}
