//! Where a partition's retention round stands, as a sans-IO state machine:
//! it asks for pages of the terminal status index and answers with the
//! workflows to purge; the shell reads the pages and writes the purge.
//!
//! # Retention
//!
//! A round walks the partition's completed, failed and cancelled index
//! entries, at most `retention.scan_max` entries and `retention.batch_max`
//! purges per tick, and deletes every workflow whose status is older than
//! `retention.after` (journal, snapshot, index entry, timers: one batch
//! through the group committer). It runs inside the partition, the only
//! place that routes messages to (and spawns) workflow actors, so nothing
//! can reach the workflow between the check and the commit: a workflow
//! with an entry in the partition (resident actor, queued or unfinished
//! messages, a stop in progress) is skipped and looked at next round, and
//! one not resident has no transition in flight. A reopen (`retry`,
//! `rerun`) arriving after the purge finds no state: `unknown workflow`.

use super::{PartitionCore, Routable};
use crate::engine::RetentionConfig;
use crate::workflow::Status;

/// The terminal statuses a retention round walks, in this order.
pub const TERMINAL: [Status; 3] = [Status::Completed, Status::Failed, Status::Cancelled];

/// Status-index entries read per storage scan during a retention round.
pub const SWEEP_PAGE: usize = 512;

/// What the sweep needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SweepPoll {
    /// Read up to `n` entries of status `code` after the id `after`
    /// (from the start when `None`), then [`Sweep::feed`] them.
    Scan {
        code: u8,
        after: Option<String>,
        n: usize,
    },
    /// This tick's share is done: purge these (id, status code) pairs.
    Done(Vec<(String, u8)>),
}

/// Progress of the current retention round.
#[derive(Debug, Default)]
pub struct Sweep {
    /// No new round before this (engine clock, unix ms).
    next_round_ms: u64,
    active: bool,
    /// Position in [`TERMINAL`].
    status: usize,
    /// Last id examined under that status.
    after: Option<String>,
    /// Earliest status time of the entries kept this round.
    oldest_kept_ms: Option<u64>,
    /// This tick's picks and how many entries it examined.
    doomed: Vec<(String, u8)>,
    examined: usize,
    /// Entries asked for by the last [`SweepPoll::Scan`].
    asked: usize,
}

impl Sweep {
    /// Starts this tick's share of a round; false when retention is off or
    /// no round is due.
    pub fn begin(&mut self, now: u64, cfg: &RetentionConfig) -> bool {
        if cfg.after_ms.is_none() {
            return false;
        }
        if !self.active {
            if now < self.next_round_ms {
                return false;
            }
            *self = Sweep {
                active: true,
                next_round_ms: self.next_round_ms,
                ..Sweep::default()
            };
        }
        self.doomed.clear();
        self.examined = 0;
        true
    }

    /// The next step of this tick's share.
    pub fn poll(&mut self, now: u64, cfg: &RetentionConfig) -> SweepPoll {
        let batch_max = cfg.batch_max.max(1);
        let scan_max = cfg.scan_max.max(1);
        if self.status < TERMINAL.len() {
            if self.doomed.len() >= batch_max || self.examined >= scan_max {
                return SweepPoll::Done(std::mem::take(&mut self.doomed));
            }
            self.asked = SWEEP_PAGE.min(scan_max - self.examined);
            return SweepPoll::Scan {
                code: TERMINAL[self.status].code(),
                after: self.after.clone(),
                n: self.asked,
            };
        }
        self.end_round(now, cfg);
        SweepPoll::Done(std::mem::take(&mut self.doomed))
    }

    /// A page read for the last [`SweepPoll::Scan`]: (id, status time).
    /// `live` says whether the partition has an entry for an id (such a
    /// workflow is kept this round).
    pub fn feed(
        &mut self,
        page: Vec<(String, u64)>,
        now: u64,
        cfg: &RetentionConfig,
        live: impl Fn(&str) -> bool,
    ) {
        let Some(after_ms) = cfg.after_ms else {
            return;
        };
        let cutoff = now.saturating_sub(after_ms);
        let batch_max = cfg.batch_max.max(1);
        let code = TERMINAL[self.status.min(TERMINAL.len() - 1)].code();
        let full = page.len() == self.asked;
        for (id, updated_at_ms) in page {
            self.examined += 1;
            self.after = Some(id.clone());
            if updated_at_ms <= cutoff && !live(&id) {
                self.doomed.push((id, code));
                if self.doomed.len() >= batch_max {
                    return;
                }
            } else {
                self.oldest_kept_ms = Some(
                    self.oldest_kept_ms
                        .map_or(updated_at_ms, |o| o.min(updated_at_ms)),
                );
            }
        }
        if !full {
            self.status += 1;
            self.after = None;
        }
    }

    /// The status index could not be read: the round is abandoned.
    pub fn failed(&mut self, now: u64, cfg: &RetentionConfig) {
        self.doomed.clear();
        self.end_round(now, cfg);
    }

    /// The next round starts after `sweep_every`, or later when nothing
    /// kept can be due before then.
    fn end_round(&mut self, now: u64, cfg: &RetentionConfig) {
        let after_ms = cfg.after_ms.unwrap_or(0);
        let earliest = self
            .oldest_kept_ms
            .map_or(0, |t| t.saturating_add(after_ms));
        self.active = false;
        self.status = 0;
        self.after = None;
        self.next_round_ms = now.saturating_add(cfg.sweep_every_ms.max(1)).max(earliest);
    }
}

/// The retention sweep as the partition core runs it: the core knows which
/// workflows have an entry (kept this round) and which are held.
impl<M: Routable, S, T> PartitionCore<M, S, T> {
    /// Starts this tick's share of a retention round.
    pub fn sweep_begin(&mut self, now: u64) -> bool {
        self.sweep.begin(now, &self.cfg.retention)
    }

    /// The next step of the retention sweep. `Done` lists the workflows to
    /// purge (held ones left out); report [`purged`](Self::purged) once
    /// their rows are deleted.
    pub fn sweep_poll(&mut self, now: u64) -> SweepPoll {
        match self.sweep.poll(now, &self.cfg.retention) {
            SweepPoll::Done(doomed) if !doomed.is_empty() => {
                let held = self.backlog.held_ids();
                SweepPoll::Done(
                    doomed
                        .into_iter()
                        .filter(|(id, _)| !held.contains(id.as_str()))
                        .collect(),
                )
            }
            other => other,
        }
    }

    /// A page for the last [`SweepPoll::Scan`]: (id, status time).
    pub fn sweep_feed(&mut self, page: Vec<(String, u64)>, now: u64) {
        let entries = &self.entries;
        self.sweep.feed(page, now, &self.cfg.retention, |id| {
            entries.contains_key(id)
        });
    }

    /// The status index could not be read: the round is abandoned.
    pub fn sweep_failed(&mut self, now: u64) {
        self.sweep.failed(now, &self.cfg.retention);
    }

    /// Purged workflows are forgotten here.
    pub fn purged(&mut self, ids: &[String]) {
        for id in ids {
            self.cache.remove(id);
            self.restarts.remove(id);
            self.backlog.forget(id);
            self.unstartable.remove(id);
        }
    }
}
