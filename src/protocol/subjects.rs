//! NATS subject names. The prefix is configurable (default `narralytica`);
//! every token below it is validated so a task type or pipeline name can
//! never inject a wildcard or an extra token.

/// The lifecycle event kinds, in the order of their tokens in an event
/// subject ([`Subjects::events`]). New kinds are appended, never inserted,
/// so a filter written for a kind keeps selecting it.
pub const EVENT_KINDS: [&str; 25] = [
    "workflow_started",
    "task_dispatched",
    "task_succeeded",
    "task_failed",
    "task_timed_out",
    "workflow_paused",
    "workflow_resumed",
    "workflow_completed",
    "workflow_failed",
    "workflow_cancelled",
    "workflow_reopened",
    "map_expanded",
    "element_dispatched",
    "element_succeeded",
    "element_failed",
    "element_timed_out",
    "map_succeeded",
    "map_failed",
    "step_skipped",
    "signal_received",
    "wait_started",
    "wait_succeeded",
    "wait_timed_out",
    "child_started",
    "child_finished",
];

/// Where `kind` sits in [`EVENT_KINDS`] (its bit in an event subject's mask).
pub fn event_kind_position(kind: &str) -> Option<usize> {
    EVENT_KINDS.iter().position(|k| *k == kind)
}

/// Subject builder for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

/// True for a token safe inside a subject: no dots, spaces or wildcards.
pub fn valid_token(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Subjects {
    /// `prefix` may itself have dots (`acme.narralytica`); each part must be a valid token.
    pub fn new(prefix: &str) -> Result<Subjects, String> {
        if prefix.split('.').all(valid_token) {
            Ok(Subjects {
                prefix: prefix.to_string(),
            })
        } else {
            Err(format!("invalid NATS subject prefix {prefix:?}"))
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn tasks(&self, task_type: &str) -> String {
        format!("{}.tasks.{task_type}", self.prefix)
    }

    /// Task offers by request-reply to an idle worker (core NATS, outside
    /// the TASKS stream); a declined or unanswered offer goes to `tasks`.
    pub fn tasks_direct(&self, task_type: &str) -> String {
        format!("{}.tdirect.{task_type}", self.prefix)
    }

    pub fn tasks_all(&self) -> String {
        format!("{}.tasks.>", self.prefix)
    }

    pub fn results(&self, partition: u16) -> String {
        format!("{}.results.{partition}", self.prefix)
    }

    pub fn results_all(&self) -> String {
        format!("{}.results.>", self.prefix)
    }

    /// Results by request-reply (core NATS; outside the RESULTS stream).
    pub fn results_direct(&self, partition: u16) -> String {
        format!("{}.rdirect.{partition}", self.prefix)
    }

    pub fn results_direct_all(&self) -> String {
        format!("{}.rdirect.>", self.prefix)
    }

    pub fn heartbeats(&self, partition: u16) -> String {
        format!("{}.heartbeats.{partition}", self.prefix)
    }

    pub fn heartbeats_all(&self) -> String {
        format!("{}.heartbeats.>", self.prefix)
    }

    pub fn cancel(&self, task_type: &str) -> String {
        format!("{}.cancel.{task_type}", self.prefix)
    }

    /// The subject of one lifecycle record: `<prefix>.events.<pipeline>.`,
    /// then one token per entry of [`EVENT_KINDS`] (the kind's name when
    /// the record holds an event of that kind, `_` otherwise), then the
    /// workflow's status after the record. `kinds` has bit `i` set for
    /// `EVENT_KINDS[i]`.
    pub fn events(&self, pipeline: &str, kinds: u32, status: &str) -> String {
        let mut s = format!("{}.events.{pipeline}", self.prefix);
        for (i, name) in EVENT_KINDS.iter().enumerate() {
            s.push('.');
            s.push_str(if kinds & (1 << i) != 0 { name } else { "_" });
        }
        s.push('.');
        s.push_str(status);
        s
    }

    /// The subject filter that selects every record holding an event of
    /// `kind` (of one pipeline, or of all with `None`); `None` for a kind
    /// that is not in [`EVENT_KINDS`].
    pub fn events_of_kind(&self, pipeline: Option<&str>, kind: &str) -> Option<String> {
        let at = event_kind_position(kind)?;
        let mut s = format!("{}.events.{}", self.prefix, pipeline.unwrap_or("*"));
        for _ in 0..at {
            s.push_str(".*");
        }
        s.push('.');
        s.push_str(kind);
        // The status token always follows, so `>` matches at least it, and
        // kinds added later (at the end of the list) keep this filter valid.
        s.push_str(".>");
        Some(s)
    }

    /// Every lifecycle record (of every pipeline).
    pub fn events_all(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    pub fn admin(&self, verb: &str) -> String {
        format!("{}.admin.{verb}", self.prefix)
    }

    /// A request about a workflow of `partition`, forwarded by a cluster
    /// node that does not serve it to the node that does.
    pub fn admin_partition(&self, partition: u16, verb: &str) -> String {
        format!("{}.admin.part.{partition}.{verb}", self.prefix)
    }

    /// Every verb forwarded to `partition`'s node.
    pub fn admin_partition_all(&self, partition: u16) -> String {
        format!("{}.admin.part.{partition}.*", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_tokens() {
        let s = Subjects::new("narralytica").unwrap();
        assert_eq!(s.tasks("transcribe"), "narralytica.tasks.transcribe");
        assert_eq!(s.results(3), "narralytica.results.3");
        assert_eq!(s.tasks_direct("embed"), "narralytica.tdirect.embed");
        assert!(Subjects::new("acme.narralytica").is_ok());
        assert!(Subjects::new("bad prefix").is_err());
        assert!(Subjects::new("a.*").is_err());
        assert!(!valid_token("a.b") && !valid_token(">") && !valid_token(""));
    }

    /// Whether a NATS subject filter matches a subject (`*` one token, `>`
    /// one or more trailing tokens), as the server decides it.
    fn matches(filter: &str, subject: &str) -> bool {
        let (f, s): (Vec<&str>, Vec<&str>) =
            (filter.split('.').collect(), subject.split('.').collect());
        for (i, t) in f.iter().enumerate() {
            match *t {
                ">" => return s.len() > i,
                "*" if i < s.len() => {}
                t if s.get(i) == Some(&t) => {}
                _ => return false,
            }
        }
        f.len() == s.len()
    }

    #[test]
    fn every_kind_of_a_record_is_selected_by_its_filter_and_no_other_kind() {
        let s = Subjects::new("narralytica").unwrap();
        let done = s.events("video", 0b1000_0100, "completed");
        assert_eq!(
            done,
            "narralytica.events.video._._.task_succeeded._._._._.workflow_completed._._._._._._._._._._._._._._._._._.completed"
        );
        for (i, kind) in EVENT_KINDS.iter().enumerate() {
            let all = s.events_of_kind(None, kind).unwrap();
            let video = s.events_of_kind(Some("video"), kind).unwrap();
            let other = s.events_of_kind(Some("audio"), kind).unwrap();
            let held = i == 2 || i == 7;
            assert_eq!(matches(&all, &done), held, "{all}");
            assert_eq!(matches(&video, &done), held, "{video}");
            assert!(!matches(&other, &done), "{other}");
            // A record of that kind alone, in every status.
            for status in ["running", "failed"] {
                assert!(matches(&all, &s.events("video", 1 << i, status)));
            }
        }
        assert!(matches(&s.events_all(), &done));
        assert!(matches("narralytica.events.video.>", &done));
        assert_eq!(s.events_of_kind(None, "task_exploded"), None);
    }
}
