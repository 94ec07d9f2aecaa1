//! A partition that stops being served on this node (a cluster handover,
//! see `engine::serving`): first its intake stops, then the engine stops
//! its workflow actors (each finishes the message it handles, so a commit
//! in flight ends and its effects run) and the partition itself, whose
//! `post_stop` drops its timers, liveness deadlines and admission-gate
//! entries with it.

use super::PartitionState;

impl PartitionState {
    /// Takes no new input from here on: the tick stops (no timer fires, no
    /// deadline expires, no purge starts), and every message still queued
    /// for the partition is dropped unanswered. Its reply port, dropped
    /// with it, tells a waiting caller, which the router answers with
    /// "not served" (a worker's result is then not acknowledged and comes
    /// again). Nothing is lost: a timer is a stored row and an attempt is
    /// re-sent by the recovery of the partition's next start, here or on
    /// another node.
    pub(super) fn stop_intake(&mut self) {
        self.intake_stopped = true;
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
    }

    /// Whether the partition still takes input.
    pub(super) fn takes_input(&self) -> bool {
        !self.intake_stopped
    }
}
