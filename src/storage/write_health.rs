//! [`WriteHealth`]: whether journal writes are failing right now.
//!
//! The group committer records the outcome of every batch it writes, so a
//! full disk or a failing device shows in `/readyz` as soon as one write
//! fails, and clears with the first write that succeeds. RocksDB resumes by
//! itself once space is back (its file manager polls free space every few
//! seconds); the service keeps a small probe write going while writes fail
//! ([`probe_op`]) so that recovery shows even when no traffic arrives.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use super::Op;

/// Shared (`Arc`) between the committer, which records, and readers
/// (readiness, the probe loop). Holding it does not keep the committer alive.
#[derive(Debug, Default)]
pub struct WriteHealth {
    /// The last batch written failed.
    failing: AtomicBool,
    /// That batch's error, for the readiness reason and the log.
    last_error: Mutex<Option<String>>,
}

impl WriteHealth {
    /// Records the outcome of one written batch.
    pub fn record(&self, outcome: Result<(), &str>) {
        match outcome {
            Ok(()) => {
                // Only the transition takes the lock: the hot path is one load.
                if self.failing.swap(false, Ordering::AcqRel) {
                    *self.last_error.lock() = None;
                    tracing::info!("journal writes succeed again");
                }
            }
            Err(e) => {
                *self.last_error.lock() = Some(e.to_string());
                if !self.failing.swap(true, Ordering::AcqRel) {
                    tracing::error!(error = %e, "journal writes failing; intake answers unavailable until they succeed");
                }
            }
        }
    }

    /// `Some(error)` while writes fail.
    pub fn failing(&self) -> Option<String> {
        if !self.failing.load(Ordering::Acquire) {
            return None;
        }
        Some(
            self.last_error
                .lock()
                .clone()
                .unwrap_or_else(|| "unknown error".into()),
        )
    }
}

/// The probe write: one small meta record, overwritten each time.
pub fn probe_op(now_ms: u64) -> Op {
    Op::Put(
        super::keys::meta("write_probe"),
        now_ms.to_be_bytes().to_vec(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_shows_until_the_next_success() {
        let h = WriteHealth::default();
        assert_eq!(h.failing(), None);
        h.record(Err("No space left on device"));
        assert_eq!(h.failing().as_deref(), Some("No space left on device"));
        h.record(Err("still full"));
        assert_eq!(h.failing().as_deref(), Some("still full"));
        h.record(Ok(()));
        assert_eq!(h.failing(), None);
    }
}
