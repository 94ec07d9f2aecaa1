//! A cluster's limits split among its nodes by partition share: a node
//! that owns `owned` of the `total` partitions applies that share of every
//! cap and rate to the tasks it sends, so the cluster as a whole stays
//! near the configured figure without the nodes talking to each other.
//!
//! Caps round up, and every node with a partition gets at least 1, so no
//! node is starved by rounding: with `n` nodes the cluster may have up to
//! `cap + n - 1` attempts of a type out at once in steady state (each
//! node's ceiling adds less than one). During a handover the node that
//! lost partitions keeps the attempts it sent until they end, while the
//! node that gained them may fill its raised cap at once: the cluster is
//! then over by at most the moved share of the cap (rounded up) plus the
//! attempts of the moved partitions that were still out, for as long as
//! those attempts run (bounded by their start-to-close timeout). Rates
//! are split exactly (no rounding), so the cluster's rate is the
//! configured one whenever the shares add up to the whole.

use super::limits::Limits;

/// `cap` × `owned` / `total`, rounded up, at least 1. A node that owns
/// every partition (or a cap for a process outside any cluster, `total`
/// 0) keeps the whole cap.
pub fn split_cap(cap: u32, owned: u16, total: u16) -> u32 {
    if total == 0 || owned >= total {
        return cap;
    }
    let share = u64::from(cap) * u64::from(owned);
    let node = share.div_ceil(u64::from(total));
    u32::try_from(node).unwrap_or(cap).clamp(1, cap.max(1))
}

/// `rate` × `owned` / `total`, at least one task per hour so that a node
/// with a sliver of the partitions still sends.
pub fn split_rate(rate: f64, owned: u16, total: u16) -> f64 {
    if total == 0 || owned >= total {
        return rate;
    }
    let min: f64 = 1.0 / 3600.0;
    (rate * f64::from(owned) / f64::from(total)).max(min.min(rate))
}

/// The limits a node applies when it owns `owned` of `total` partitions:
/// every cap (task type, key, pool) and rate split by that share. Owning
/// all of them (the single-node case) changes nothing.
pub fn node_limits(limits: &Limits, owned: u16, total: u16) -> Limits {
    if total == 0 || owned >= total {
        return limits.clone();
    }
    let mut out = limits.clone();
    for t in out.task_types.values_mut() {
        t.max_in_flight = t.max_in_flight.map(|c| split_cap(c, owned, total));
        t.rate_per_sec = t.rate_per_sec.map(|r| split_rate(r, owned, total));
        t.key_default = t.key_default.map(|c| split_cap(c, owned, total));
        for c in t.key_caps.values_mut() {
            *c = split_cap(*c, owned, total);
        }
    }
    for p in out.pools.values_mut() {
        p.max_in_flight = split_cap(p.max_in_flight, owned, total);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::limits::{PoolLimits, TypeLimits};

    #[test]
    fn a_cap_splits_by_partition_share_rounding_up_and_never_below_one() {
        assert_eq!(split_cap(8, 16, 16), 8, "one node owns everything");
        assert_eq!(split_cap(8, 8, 16), 4);
        assert_eq!(split_cap(8, 5, 16), 3, "2.5 rounds up");
        assert_eq!(split_cap(8, 1, 16), 1, "0.5 rounds up");
        assert_eq!(split_cap(1, 1, 256), 1, "never below one");
        assert_eq!(split_cap(u32::MAX, 255, 256), 4_278_190_080);
        assert_eq!(split_cap(8, 3, 0), 8, "no cluster: the whole cap");
    }

    /// Whatever the split of the partitions among the nodes, the node caps
    /// add up to at least the cap (nobody starves) and to less than the
    /// cap plus the node count (the documented bound).
    #[test]
    fn node_caps_add_up_to_the_cap_within_the_node_count() {
        let total = 64u16;
        for cap in [1u32, 2, 3, 7, 8, 100, 1_000] {
            for nodes in 1u16..=9 {
                // Uneven shares: node i owns about i+1 parts of the whole.
                let weights: Vec<u32> = (1..=u32::from(nodes)).collect();
                let sum: u32 = weights.iter().sum();
                let mut owned: Vec<u16> = weights
                    .iter()
                    .map(|w| (u32::from(total) * w / sum) as u16)
                    .collect();
                let given: u16 = owned.iter().sum();
                owned[0] += total - given;
                let caps: u32 = owned.iter().map(|o| split_cap(cap, *o, total)).sum();
                assert!(caps >= cap, "cap {cap} nodes {nodes}: {caps}");
                assert!(
                    caps < cap + u32::from(nodes),
                    "cap {cap} nodes {nodes} {owned:?}: {caps}"
                );
            }
        }
    }

    #[test]
    fn every_limit_of_a_node_is_its_share_and_rates_split_exactly() {
        let mut l = Limits::default();
        l.task_types.insert(
            "transcribe".into(),
            TypeLimits {
                max_in_flight: Some(8),
                rate_per_sec: Some(20.0),
                key: Some("/tenant".into()),
                key_default: Some(4),
                key_caps: [("a".to_string(), 16)].into_iter().collect(),
            },
        );
        l.pools.insert(
            "gpu".into(),
            PoolLimits {
                max_in_flight: 12,
                task_types: vec!["transcribe".into()],
            },
        );
        assert_eq!(node_limits(&l, 4, 4), l);
        let n = node_limits(&l, 1, 4);
        let t = &n.task_types["transcribe"];
        assert_eq!(t.max_in_flight, Some(2));
        assert_eq!(t.rate_per_sec, Some(5.0));
        assert_eq!(t.key_default, Some(1));
        assert_eq!(t.key_caps["a"], 4);
        assert_eq!(n.pools["gpu"].max_in_flight, 3);
        assert!(n.validate().is_ok(), "a share stays a valid config");
        let tiny = node_limits(&l, 1, u16::MAX);
        assert!(tiny.task_types["transcribe"].rate_per_sec.unwrap() > 0.0);
        assert!(tiny.validate().is_ok());
    }
}
