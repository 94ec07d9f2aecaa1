//! A log-linear histogram of µs values with fixed memory: exact below 64 µs,
//! then 64 buckets per power of two (≤ 1.6% relative error), so any number of
//! samples costs the same 30 KiB.

/// Sub-buckets per power of two: 2^SUB_BITS.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

#[derive(Clone)]
pub struct Hist {
    counts: Box<[u64]>,
    total: u64,
    max: u64,
    sum: u128,
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            max: 0,
            sum: 0,
        }
    }
}

impl std::fmt::Debug for Hist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hist")
            .field("count", &self.total)
            .field("max", &self.max)
            .finish()
    }
}

fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // >= SUB_BITS
    let shift = e - SUB_BITS;
    ((shift + 1) as u64 * SUB + ((v >> shift) - SUB)) as usize
}

/// The largest value that falls into bucket `i`.
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = (i / SUB - 1) as u32;
    let m = i % SUB + SUB;
    ((m + 1) << shift).wrapping_sub(1).max(m << shift)
}

impl Hist {
    pub fn record(&mut self, us: u64) {
        self.counts[index(us)] += 1;
        self.total += 1;
        self.max = self.max.max(us);
        self.sum += u128::from(us);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The value at quantile `q` (the upper bound of its bucket, at most the
    /// largest value seen); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((self.total as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(i).min(self.max);
            }
        }
        self.max
    }

    pub fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    pub fn clear(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.total = 0;
        self.max = 0;
        self.sum = 0;
    }

    /// `{"count","mean","p50","p90","p99","max"}` in milliseconds.
    pub fn summary_ms(&self) -> serde_json::Value {
        let ms = |us: u64| round2(us as f64 / 1000.0);
        serde_json::json!({
            "count": self.total,
            "mean": round2(self.mean() / 1000.0),
            "p50": ms(self.quantile(0.50)),
            "p90": ms(self.quantile(0.90)),
            "p99": ms(self.quantile(0.99)),
            "max": ms(self.max),
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
    fn buckets_are_contiguous_and_tight() {
        let mut last = 0;
        for v in (0..200_000u64).chain([u64::MAX / 3, u64::MAX]) {
            let i = index(v);
            assert!(i < BUCKETS);
            assert!(i >= last || v > 200_000, "monotone at {v}");
            last = i;
            assert!(upper(i) >= v, "{v} above its bucket's upper {}", upper(i));
            if v >= SUB {
                assert!(
                    (upper(i) - v) as f64 <= v as f64 / 60.0,
                    "{v}: {}",
                    upper(i)
                );
            } else {
                assert_eq!(upper(i), v);
            }
        }
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = Hist::default();
        for v in 1..=10_000u64 {
            h.record(v * 100);
        }
        let near = |got: u64, want: f64| (got as f64 - want).abs() <= want * 0.02;
        assert!(near(h.quantile(0.5), 500_000.0), "{}", h.quantile(0.5));
        assert!(near(h.quantile(0.99), 990_000.0), "{}", h.quantile(0.99));
        assert_eq!(h.quantile(1.0), 1_000_000);
        assert_eq!(h.max(), 1_000_000);
        let mut g = Hist::default();
        g.record(5);
        g.merge(&h);
        assert_eq!(g.count(), 10_001);
        assert_eq!(Hist::default().quantile(0.5), 0);
        g.clear();
        assert_eq!(g.count(), 0);
    }
}
