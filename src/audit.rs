//! The audit trail of admin verbs that change something: one log line per
//! request (target `narralytica::audit`) with the verb, the caller as NATS
//! knows it, what was asked and how it ended.
//!
//! The caller comes from the `Nats-Request-Info` header, which nats-server
//! adds to a request that reaches the orchestrator's account through a
//! service import with `share: true` (the layout of `deploy/nats/`, where
//! operators live in their own account): `acc` and `user` of the connection
//! that sent it. Without that header the caller is `unknown`.

/// Verbs that change workflows, what may be started, or touch the host
/// (`batch.create` carries batch cancels, retries, reruns and backfills);
/// read-only verbs (`describe`, `history`, `list`, `batch.status`) are not
/// audited.
pub const MUTATING: [&str; 12] = [
    "start",
    "cancel",
    "pause",
    "resume",
    "retry",
    "rerun",
    "batch.create",
    "batch.pause",
    "batch.resume",
    "backup",
    "pipelines.reload",
    "signal",
];

/// The header nats-server fills with the requester's identity.
pub const REQUEST_INFO: &str = "Nats-Request-Info";

/// Longest request body quoted in an audit line.
const REQUEST_QUOTE_MAX: usize = 512;

/// Who sent a request, as far as the server says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub account: String,
    pub user: String,
}

impl Caller {
    /// Reads `Nats-Request-Info` (`{"acc": .., "user": .., "name": ..}`);
    /// `unknown` for what is missing.
    pub fn from_request_info(info: Option<&str>) -> Caller {
        let v: serde_json::Value = info
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        let field = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .filter(|s| !s.is_empty())
                .unwrap_or("unknown")
                .to_owned()
        };
        let user = match v.get("user").and_then(|x| x.as_str()) {
            Some(u) if !u.is_empty() => u.to_owned(),
            _ => field("name"),
        };
        Caller {
            account: field("acc"),
            user,
        }
    }
}

/// Whether `verb` is audited.
pub fn is_mutating(verb: &str) -> bool {
    MUTATING.contains(&verb)
}

/// Writes the audit line of one request: `reply` is the encoded answer,
/// whose `code` (if any) is the outcome.
pub fn record(verb: &str, request_info: Option<&str>, request: &[u8], reply: &[u8]) {
    if !is_mutating(verb) {
        return;
    }
    let caller = Caller::from_request_info(request_info);
    let outcome = serde_json::from_slice::<serde_json::Value>(reply)
        .ok()
        .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "ok".to_owned());
    let quoted = String::from_utf8_lossy(&request[..request.len().min(REQUEST_QUOTE_MAX)]);
    tracing::info!(
        target: "narralytica::audit",
        verb,
        account = %caller.account,
        user = %caller.user,
        outcome = %outcome,
        request = %crate::protocol::one_line(quoted.into_owned()),
        "admin request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caller_is_read_from_the_servers_header() {
        let c = Caller::from_request_info(Some(
            r#"{"acc":"OPS","rtt":"1ms","user":"alice","name":"cli","host":"10.0.0.9"}"#,
        ));
        assert_eq!(
            c,
            Caller {
                account: "OPS".into(),
                user: "alice".into()
            }
        );
        let none = Caller::from_request_info(None);
        assert_eq!(
            (none.account.as_str(), none.user.as_str()),
            ("unknown", "unknown")
        );
        assert!(is_mutating("batch.create") && is_mutating("backup"));
        assert!(!is_mutating("describe") && !is_mutating("batch.status"));
    }
}
