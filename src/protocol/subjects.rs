//! NATS subject names. The prefix is configurable (default `narralytica`);
//! every token below it is validated so a task type or pipeline name can
//! never inject a wildcard or an extra token.

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

    pub fn events(&self, pipeline: &str, event: &str) -> String {
        format!("{}.events.{pipeline}.{event}", self.prefix)
    }

    pub fn admin(&self, verb: &str) -> String {
        format!("{}.admin.{verb}", self.prefix)
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
}
