//! Retry delays. Jitter is derived from the task id, not from a random
//! source, so the core stays deterministic and replays give the same delays.

use crate::pipeline::RetryPolicy;

/// Delay before the attempt after `failed_attempt` (1-based), for the attempt
/// whose task id was `task_id`.
pub fn retry_delay_ms(policy: &RetryPolicy, failed_attempt: u32, task_id: &str) -> u64 {
    let exp = failed_attempt.saturating_sub(1).min(64) as i32;
    let base = policy.initial_backoff_ms as f64 * policy.backoff_coefficient.powi(exp);
    let cap = policy.max_backoff_ms as f64;
    let base = if base.is_finite() { base.min(cap) } else { cap };
    let jitter = policy.jitter.clamp(0.0, 1.0);
    let factor = 1.0 - jitter + 2.0 * jitter * unit_from(task_id);
    let delay = (base * factor).min(cap).max(0.0);
    delay.round() as u64
}

/// A number in [0, 1) from the FNV-1a hash of `key`.
fn unit_from(key: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Mix the high bits down; 53 bits fill an f64 mantissa exactly.
    h ^= h >> 29;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            initial_backoff_ms: 200,
            backoff_coefficient: 2.0,
            max_backoff_ms: 10_000,
            jitter,
            non_retryable: vec![],
        }
    }

    #[test]
    fn exponential_and_capped_without_jitter() {
        let p = policy(0.0);
        let delays: Vec<u64> = (1..=8).map(|a| retry_delay_ms(&p, a, "t")).collect();
        assert_eq!(
            delays,
            vec![200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]
        );
    }

    #[test]
    fn jitter_stays_in_band_and_is_deterministic() {
        let p = policy(0.5);
        let mut distinct = std::collections::HashSet::new();
        for i in 0..200 {
            let id = format!("wf-{i}:ingest:0:1");
            let d = retry_delay_ms(&p, 1, &id);
            assert!((100..=300).contains(&d), "delay {d} out of band");
            assert_eq!(d, retry_delay_ms(&p, 1, &id));
            distinct.insert(d);
        }
        assert!(distinct.len() > 50, "jitter should spread delays");
    }
}
