//! Latency quantiles for the run summaries of `dev` and `loadgen`, on an HDR
//! histogram: three significant digits over any range, shared between the
//! partitions behind one lock (recorded once per terminal transition).

use hdrhistogram::Histogram;
use parking_lot::Mutex;

/// Millisecond latencies with quantiles within 0.1%.
#[derive(Debug)]
pub struct LatencyQuantiles {
    inner: Mutex<Histogram<u64>>,
}

impl Default for LatencyQuantiles {
    fn default() -> Self {
        LatencyQuantiles {
            // 3 significant digits is within hdrhistogram's 0..=5; an
            // auto-resizing histogram takes any u64.
            inner: Mutex::new(Histogram::new(3).expect("3 significant digits are supported")),
        }
    }
}

impl LatencyQuantiles {
    pub fn record(&self, ms: u64) {
        let mut h = self.inner.lock();
        // `record` grows the histogram to fit; only a value beyond what any
        // histogram can track is clamped to the largest trackable one.
        if h.record(ms).is_err() {
            h.saturating_record(ms);
        }
    }

    pub fn count(&self) -> u64 {
        self.inner.lock().len()
    }

    /// The value at quantile `q` in [0, 1], 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let h = self.inner.lock();
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(q.clamp(0.0, 1.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_thousandth() {
        let h = LatencyQuantiles::default();
        for ms in 1..=1000 {
            h.record(ms);
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(h.quantile(0.5), 500);
        assert_eq!(h.quantile(0.99), 990);
        assert_eq!(LatencyQuantiles::default().quantile(0.5), 0);
    }
}
