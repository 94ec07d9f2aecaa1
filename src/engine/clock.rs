//! The one clock abstraction. The core never reads time; the shell passes
//! `now_ms` in from here, so tests can drive time by hand.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, as seen by the engine.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// The backlog gauges measure ages with the engine's clock.
impl crate::telemetry::NowMsSource for dyn Clock {
    fn now_ms(&self) -> u64 {
        Clock::now_ms(self)
    }
}

/// Wall-clock time: journal timestamps must survive restarts, so this is
/// `SystemTime`, not a monotonic instant.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to; for deterministic tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    pub fn new(start_ms: u64) -> Self {
        ManualClock {
            now: AtomicU64::new(start_ms),
        }
    }

    pub fn advance(&self, ms: u64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }

    pub fn set(&self, ms: u64) {
        self.now.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}
