//! W3C trace context (`traceparent`, `tracestate`) for tasks and results.
//!
//! One trace per workflow, one span per task attempt. Both ids are derived
//! from the workflow and task ids (a hash, never all zero), so a re-sent task
//! after a restart carries the same `traceparent` and nothing about tracing
//! needs to be journaled. Pure: no clock, no randomness.

/// `traceparent` header name (W3C Trace Context).
pub const TRACEPARENT: &str = "traceparent";
/// `tracestate` header name; passed through untouched.
pub const TRACESTATE: &str = "tracestate";

fn mix(seed: u64, s: &str) -> u64 {
    let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The 32-hex-digit trace id of a workflow.
pub fn trace_id(workflow_id: &str) -> String {
    let (hi, lo) = (mix(1, workflow_id), mix(2, workflow_id));
    let lo = if hi == 0 && lo == 0 { 1 } else { lo };
    format!("{hi:016x}{lo:016x}")
}

/// The 16-hex-digit span id of `what` (a task id, or a task id plus a role).
pub fn span_id(what: &str) -> String {
    format!("{:016x}", mix(3, what).max(1))
}

/// The `traceparent` of a task attempt: the workflow's trace, the attempt's span, sampled.
pub fn task_traceparent(workflow_id: &str, task_id: &str) -> String {
    format!("00-{}-{}-01", trace_id(workflow_id), span_id(task_id))
}

/// A parsed `traceparent` (version 00).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    pub parent_id: String,
    pub flags: u8,
}

impl TraceParent {
    /// Parses `00-<32 hex>-<16 hex>-<2 hex>`; all-zero ids are invalid.
    pub fn parse(s: &str) -> Option<TraceParent> {
        let s = s.trim();
        let mut parts = s.split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let lower_hex = |x: &str, n: usize| {
            x.len() == n
                && x.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        // Future versions may append fields; version ff is forbidden.
        if !lower_hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some())
        {
            return None;
        }
        if !lower_hex(trace, 32) || !lower_hex(parent, 16) || !lower_hex(flags, 2) {
            return None;
        }
        if trace.bytes().all(|b| b == b'0') || parent.bytes().all(|b| b == b'0') {
            return None;
        }
        Some(TraceParent {
            trace_id: trace.to_owned(),
            parent_id: parent.to_owned(),
            flags: u8::from_str_radix(flags, 16).ok()?,
        })
    }

    /// A child of this context with span `span_id` (what a worker puts on its result).
    pub fn child(&self, span_id: &str) -> String {
        format!("00-{}-{span_id}-{:02x}", self.trace_id, self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_contexts_are_valid_stable_and_share_the_workflow_trace() {
        let a = task_traceparent("v-1", "v-1:ingest:0:1");
        let b = task_traceparent("v-1", "v-1:ingest:0:2");
        assert_eq!(a, task_traceparent("v-1", "v-1:ingest:0:1"));
        let (pa, pb) = (
            TraceParent::parse(&a).unwrap(),
            TraceParent::parse(&b).unwrap(),
        );
        assert_eq!(pa.trace_id, pb.trace_id);
        assert_ne!(pa.parent_id, pb.parent_id);
        assert_eq!(pa.flags, 1);
        assert_ne!(
            pa.trace_id,
            TraceParent::parse(&task_traceparent("v-2", "v-2:ingest:0:1"))
                .unwrap()
                .trace_id
        );
        let child = TraceParent::parse(&pa.child(&span_id("x"))).unwrap();
        assert_eq!(child.trace_id, pa.trace_id);
    }

    #[test]
    fn malformed_contexts_are_refused() {
        for bad in [
            "",
            "00",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad:?}");
        }
        assert!(
            TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").is_some()
        );
    }
}
