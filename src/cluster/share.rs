//! Each node's fair share of the partitions.

use super::NodeId;

/// The partitions `me` should hold when `nodes` (any order, duplicates
/// ignored) are alive: the count divided evenly, the remainder going one
/// each to the first nodes in id order, so the shares add up to
/// `partitions` and every node computes the same split from the same list.
/// A node missing from the list gets 0.
pub fn fair_share(nodes: &[NodeId], partitions: u16, me: &str) -> u16 {
    let mut sorted: Vec<&str> = nodes.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let Some(index) = sorted.iter().position(|n| *n == me) else {
        return 0;
    };
    let n = sorted.len() as u16;
    let base = partitions / n;
    let extra = partitions % n;
    base + u16::from((index as u16) < extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<NodeId> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        for n in 1..=7usize {
            let nodes: Vec<NodeId> = (0..n).map(|i| format!("n{i}")).collect();
            for partitions in [0u16, 1, 5, 8, 64] {
                let shares: Vec<u16> = nodes
                    .iter()
                    .map(|me| fair_share(&nodes, partitions, me))
                    .collect();
                assert_eq!(shares.iter().sum::<u16>(), partitions);
                let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
                assert!(hi - lo <= 1, "{shares:?}");
            }
        }
    }

    #[test]
    fn order_and_duplicates_of_the_list_do_not_matter() {
        let a = ids(&["c", "a", "b"]);
        let b = ids(&["b", "c", "a", "a"]);
        for me in ["a", "b", "c"] {
            assert_eq!(fair_share(&a, 8, me), fair_share(&b, 8, me));
        }
        assert_eq!(fair_share(&a, 8, "a"), 3);
        assert_eq!(fair_share(&a, 8, "c"), 2);
    }

    #[test]
    fn a_node_not_in_the_list_gets_nothing() {
        assert_eq!(fair_share(&ids(&["a"]), 8, "z"), 0);
        assert_eq!(fair_share(&ids(&[]), 8, "z"), 0);
    }
}
