//! Telemetry primitives, a leaf of the crate (it imports no engine, storage
//! or adapter module): counters, gauges and histograms on prometheus-client,
//! the capped per-label [`Family`], the engine's [`Metrics`] and the text
//! exposition ([`export`]). Every layer counts through these; the HTTP
//! adapter adds the figures it reads at scrape time and serves the page.

pub mod export;
pub mod family;
pub mod metrics;
pub mod quantiles;
pub mod span;

use std::ops::Deref;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

pub use export::{MetricSet, Row, Value, CONTENT_TYPE};
pub use family::{Family, FAMILY_LABELS_MAX, OVERFLOW_LABEL};
pub use metrics::Metrics;

/// The histogram type of the exposition (cumulative `le` buckets).
pub type Histogram = prometheus_client::metrics::histogram::Histogram;

/// A monotonic counter. Clones share the count. Derefs to its atomic, so a
/// hot path may `fetch_add` a batch at once.
#[derive(Debug, Clone, Default)]
pub struct Counter(prometheus_client::metrics::counter::Counter);

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.0.inc();
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

impl Deref for Counter {
    type Target = AtomicU64;

    fn deref(&self) -> &AtomicU64 {
        self.0.inner()
    }
}

/// A gauge (a value that goes up and down). Clones share the value.
#[derive(Debug, Clone, Default)]
pub struct Gauge(prometheus_client::metrics::gauge::Gauge);

impl Gauge {
    #[inline]
    pub fn get(&self) -> i64 {
        self.0.get()
    }
}

impl Deref for Gauge {
    type Target = AtomicI64;

    fn deref(&self) -> &AtomicI64 {
        self.0.inner()
    }
}

/// Something that counts: read and bumped by [`Metrics::inc`] and
/// [`Metrics::get`].
pub trait Count {
    fn bump(&self);
    fn value(&self) -> u64;
}

impl Count for Counter {
    fn bump(&self) {
        self.inc();
    }
    fn value(&self) -> u64 {
        self.get()
    }
}

impl Count for Gauge {
    fn bump(&self) {
        self.fetch_add(1, Relaxed);
    }
    fn value(&self) -> u64 {
        u64::try_from(self.get()).unwrap_or(0)
    }
}

impl Count for AtomicU64 {
    fn bump(&self) {
        self.fetch_add(1, Relaxed);
    }
    fn value(&self) -> u64 {
        self.load(Relaxed)
    }
}

/// A histogram with fixed upper bounds, recorded in an integer base unit
/// (ms, µs, entries) and exposed in `unit`s of it (e.g. 1000 for ms →
/// seconds). Clones share the buckets.
#[derive(Debug, Clone)]
pub struct FixedHistogram {
    inner: Histogram,
    unit: f64,
}

impl FixedHistogram {
    /// `bounds` (in the base unit) must be strictly increasing (checked in
    /// tests of the constants).
    pub fn new(bounds: &[u64], unit: f64) -> Self {
        let unit = if unit > 0.0 { unit } else { 1.0 };
        FixedHistogram {
            inner: Histogram::new(bounds.iter().map(|b| *b as f64 / unit)),
            unit,
        }
    }

    #[inline]
    pub fn record(&self, value: u64) {
        self.inner.observe(value as f64 / self.unit);
    }
}

impl From<&FixedHistogram> for Value {
    fn from(h: &FixedHistogram) -> Value {
        Value::Histogram(h.inner.clone())
    }
}

/// A clock read in milliseconds (the engine's clock implements it).
pub trait NowMsSource: Send + Sync {
    fn now_ms(&self) -> u64;
}
