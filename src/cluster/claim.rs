//! The prefix claim of a single node, and the partition count a cluster
//! was created with: the two checks that refuse a misconfigured start.
//!
//! A single-node orchestrator is the only one serving its NATS prefix. At
//! start it reads the prefix's claim; when another node holds it, the start
//! is refused. A claim holds the node's id, which is kept in its data
//! directory: the data directory is locked by the running process, so a
//! claim with one's own id was left by a previous run of this same data
//! directory that is gone (killed), and is taken over at once instead of
//! waiting for it to expire.

/// What a node does with the claim it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimStep {
    /// No claim: create it.
    Create,
    /// A previous run of this data directory left its claim: replace it by
    /// CAS on its revision.
    TakeOver { revision: u64 },
    /// Another node serves the prefix.
    Refuse { holder: String },
}

/// The step for a node with id `me` that found `existing` (its holder's id
/// and revision) under the prefix's claim key.
pub fn claim_step(me: &str, existing: Option<(&str, u64)>) -> ClaimStep {
    match existing {
        None => ClaimStep::Create,
        Some((holder, revision)) if holder == me => ClaimStep::TakeOver { revision },
        Some((holder, _)) => ClaimStep::Refuse {
            holder: holder.to_string(),
        },
    }
}

/// Whether a node configured with `mine` partitions may join a cluster that
/// stored `stored` (none: the node is the first, and stores its own).
pub fn check_partition_count(stored: Option<u16>, mine: u16) -> Result<(), String> {
    match stored {
        Some(s) if s != mine => Err(format!(
            "this node is configured with {mine} partitions but the cluster was created with {s}; \
             the partition count is fixed when a cluster is created"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_prefix_is_claimed() {
        assert_eq!(claim_step("a", None), ClaimStep::Create);
    }

    #[test]
    fn a_claim_left_by_the_same_data_directory_is_taken_over() {
        assert_eq!(
            claim_step("a", Some(("a", 17))),
            ClaimStep::TakeOver { revision: 17 }
        );
    }

    #[test]
    fn another_nodes_claim_refuses_the_start() {
        assert_eq!(
            claim_step("a", Some(("b", 17))),
            ClaimStep::Refuse { holder: "b".into() }
        );
    }

    #[test]
    fn another_partition_count_is_refused_with_both_counts() {
        assert!(check_partition_count(None, 8).is_ok());
        assert!(check_partition_count(Some(8), 8).is_ok());
        let e = check_partition_count(Some(8), 16).unwrap_err();
        assert!(e.contains("16") && e.contains("created with 8"), "{e}");
    }
}
