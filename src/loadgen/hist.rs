//! Quantiles of µs values on an HDR histogram (hdrhistogram): three
//! significant digits (≤ 0.1% relative error) over any range, in memory that
//! depends on the range of values seen, not on how many there are.

use hdrhistogram::Histogram;

#[derive(Clone)]
pub struct Hist {
    inner: Histogram<u64>,
}

/// Significant decimal digits kept per value.
const SIGNIFICANT_DIGITS: u8 = 3;

impl Default for Hist {
    fn default() -> Self {
        Hist {
            // Three digits is within hdrhistogram's supported 0..=5, and an
            // auto-resizing histogram takes any u64.
            inner: Histogram::new(SIGNIFICANT_DIGITS).expect("3 significant digits are supported"),
        }
    }
}

impl std::fmt::Debug for Hist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hist")
            .field("count", &self.count())
            .field("max", &self.max())
            .finish()
    }
}

impl Hist {
    pub fn record(&mut self, us: u64) {
        // `record` grows the histogram to fit; only a value beyond what any
        // histogram can track is clamped to the largest trackable one.
        if self.inner.record(us).is_err() {
            self.inner.saturating_record(us);
        }
    }

    pub fn count(&self) -> u64 {
        self.inner.len()
    }

    pub fn max(&self) -> u64 {
        self.inner.max()
    }

    pub fn mean(&self) -> f64 {
        if self.inner.is_empty() {
            0.0
        } else {
            self.inner.mean()
        }
    }

    /// The value at quantile `q` (within 0.1%, at most the largest value
    /// seen); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.inner.is_empty() {
            return 0;
        }
        self.inner
            .value_at_quantile(q.clamp(0.0, 1.0))
            .min(self.max())
    }

    pub fn merge(&mut self, other: &Hist) {
        // Auto-resizing histograms of the same precision always merge.
        let _ = self.inner.add(&other.inner);
    }

    pub fn clear(&mut self) {
        self.inner.reset();
    }

    /// `{"count","mean","p50","p90","p99","max"}` in milliseconds.
    pub fn summary_ms(&self) -> serde_json::Value {
        let ms = |us: u64| round2(us as f64 / 1000.0);
        serde_json::json!({
            "count": self.count(),
            "mean": round2(self.mean() / 1000.0),
            "p50": ms(self.quantile(0.50)),
            "p90": ms(self.quantile(0.90)),
            "p99": ms(self.quantile(0.99)),
            "max": ms(self.max()),
        })
    }
}

pub fn round2(x: f64) -> f64 {
    if x.is_finite() {
        (x * 100.0).round() / 100.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = Hist::default();
        for v in 1..=10_000u64 {
            h.record(v * 100);
        }
        let near = |got: u64, want: f64| (got as f64 - want).abs() <= want * 0.002;
        assert!(near(h.quantile(0.5), 500_000.0), "{}", h.quantile(0.5));
        assert!(near(h.quantile(0.99), 990_000.0), "{}", h.quantile(0.99));
        assert!(near(h.quantile(1.0), 1_000_000.0), "{}", h.quantile(1.0));
        assert!(near(h.max() as f64 as u64, 1_000_000.0));
        let mut g = Hist::default();
        g.record(5);
        g.merge(&h);
        assert_eq!(g.count(), 10_001);
        assert_eq!(Hist::default().quantile(0.5), 0);
        g.clear();
        assert_eq!(g.count(), 0);
        let mut huge = Hist::default();
        huge.record(u64::MAX);
        assert_eq!(huge.count(), 1, "any u64 is recorded");
    }
}
