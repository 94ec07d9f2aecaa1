//! The `[nats]` section: where NATS is, how to authenticate and protect the
//! connection, and the stream and publishing limits. Paths left empty are
//! unset; the password and token print as `***` (`--print-config`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Dur;
use crate::protocol::Limits;
use crate::transport::nats::{NatsConfig, NatsSecurity, Secret};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSection {
    pub url: String,
    pub prefix: String,
    /// The first connection gives up after this long.
    pub connect_timeout: Dur,
    pub user: String,
    pub password: Secret,
    pub token: Secret,
    pub nkey_seed_file: PathBuf,
    pub creds_file: PathBuf,
    pub tls_ca_file: PathBuf,
    pub tls_cert_file: PathBuf,
    pub tls_key_file: PathBuf,
    pub tls_required: bool,
    pub inbox_prefix: String,
    pub stream_max_age: Dur,
    pub duplicate_window: Dur,
    pub results_ack_wait: Dur,
    pub results_max_ack_pending: i64,
    pub results_direct: bool,
    pub results_direct_in_flight_max: usize,
    pub tasks_direct: bool,
    pub tasks_direct_timeout: Dur,
    pub tasks_direct_result_within: Dur,
    pub tasks_direct_result_apply_for: Dur,
    pub tasks_direct_in_flight_max: usize,
    pub publish_queue_max: usize,
    pub publish_attempts: u32,
    pub publish_window: usize,
    pub message_max_bytes: usize,
    pub output_max_bytes: usize,
    /// Admin requests served at once; beyond, answered `unavailable`.
    pub admin_in_flight_max: usize,
    /// `start` requests taken per second; 0: no bound.
    pub admin_start_rate: u32,
    /// `start` answers `unavailable` while more journal writes wait.
    pub admin_journal_backlog_max: usize,
    /// How often the streams and the results consumer are checked.
    pub stream_watch_interval: Dur,
}

fn ms(d: std::time::Duration) -> Dur {
    Dur(d.as_millis() as u64)
}

/// An empty path is "not set".
fn path(p: &std::path::Path) -> Option<PathBuf> {
    (!p.as_os_str().is_empty()).then(|| p.to_path_buf())
}

fn unset(p: Option<PathBuf>) -> PathBuf {
    p.unwrap_or_default()
}

impl Default for NatsSection {
    fn default() -> Self {
        let nats = NatsConfig::default();
        let intake = crate::admin::IntakeLimits::default();
        let security = nats.security;
        NatsSection {
            url: nats.url,
            prefix: nats.prefix,
            connect_timeout: ms(nats.connect_timeout),
            user: security.user,
            password: security.password,
            token: security.token,
            nkey_seed_file: unset(security.nkey_seed_file),
            creds_file: unset(security.creds_file),
            tls_ca_file: unset(security.tls_ca_file),
            tls_cert_file: unset(security.tls_cert_file),
            tls_key_file: unset(security.tls_key_file),
            tls_required: security.tls_required,
            inbox_prefix: security.inbox_prefix,
            stream_max_age: ms(nats.stream_max_age),
            duplicate_window: ms(nats.duplicate_window),
            results_ack_wait: ms(nats.results_ack_wait),
            results_max_ack_pending: nats.results_max_ack_pending,
            results_direct: nats.results_direct,
            results_direct_in_flight_max: nats.results_direct_in_flight_max,
            tasks_direct: nats.tasks_direct,
            tasks_direct_timeout: ms(nats.tasks_direct_timeout),
            tasks_direct_result_within: ms(nats.tasks_direct_result_within),
            tasks_direct_result_apply_for: ms(nats.tasks_direct_result_apply_for),
            tasks_direct_in_flight_max: nats.tasks_direct_in_flight_max,
            publish_queue_max: nats.publish_queue_max,
            publish_attempts: nats.publish_attempts,
            publish_window: nats.publish_window,
            message_max_bytes: nats.limits.message_max_bytes,
            output_max_bytes: nats.limits.output_max_bytes,
            admin_in_flight_max: intake.in_flight_max,
            admin_start_rate: intake.start_rate,
            admin_journal_backlog_max: intake.journal_backlog_max,
            stream_watch_interval: ms(nats.stream_watch_interval),
        }
    }
}

impl NatsSection {
    pub fn security(&self) -> NatsSecurity {
        NatsSecurity {
            user: self.user.clone(),
            password: self.password.clone(),
            token: self.token.clone(),
            nkey_seed_file: path(&self.nkey_seed_file),
            creds_file: path(&self.creds_file),
            tls_ca_file: path(&self.tls_ca_file),
            tls_cert_file: path(&self.tls_cert_file),
            tls_key_file: path(&self.tls_key_file),
            tls_required: self.tls_required,
            inbox_prefix: self.inbox_prefix.clone(),
        }
    }

    /// The bounds of admin intake.
    pub fn intake_limits(&self) -> crate::admin::IntakeLimits {
        crate::admin::IntakeLimits {
            in_flight_max: self.admin_in_flight_max,
            start_rate: self.admin_start_rate,
            journal_backlog_max: self.admin_journal_backlog_max,
            limits: Limits {
                message_max_bytes: self.message_max_bytes,
                output_max_bytes: self.output_max_bytes,
            },
        }
    }

    pub fn nats_config(&self) -> NatsConfig {
        let n = self;
        NatsConfig {
            url: n.url.clone(),
            prefix: n.prefix.clone(),
            security: self.security(),
            connect_timeout: n.connect_timeout.as_duration(),
            client_name: NatsConfig::default().client_name,
            // `run` loads the data directory's key in its place.
            attempt_key: crate::transport::attempt_key::AttemptKey::random(),
            stream_max_age: n.stream_max_age.as_duration(),
            stream_replicas: 1,
            duplicate_window: n.duplicate_window.as_duration(),
            results_ack_wait: n.results_ack_wait.as_duration(),
            results_max_ack_pending: n.results_max_ack_pending,
            results_direct: n.results_direct,
            results_direct_in_flight_max: n.results_direct_in_flight_max,
            tasks_direct: n.tasks_direct,
            tasks_direct_timeout: n.tasks_direct_timeout.as_duration(),
            tasks_direct_result_within: n.tasks_direct_result_within.as_duration(),
            tasks_direct_result_apply_for: n.tasks_direct_result_apply_for.as_duration(),
            tasks_direct_in_flight_max: n.tasks_direct_in_flight_max,
            publish_queue_max: n.publish_queue_max,
            publish_attempts: n.publish_attempts,
            publish_window: n.publish_window,
            stream_watch_interval: n.stream_watch_interval.as_duration(),
            limits: Limits {
                message_max_bytes: n.message_max_bytes,
                output_max_bytes: n.output_max_bytes,
            },
        }
    }

    /// The section's range checks, appended to `errs` with the key's name.
    pub(super) fn check(&self, errs: &mut Vec<String>) {
        let mut need = |ok: bool, what: &str| {
            if !ok {
                errs.push(what.to_owned());
            }
        };
        need(
            self.connect_timeout.0 >= 100,
            "nats.connect_timeout must be at least 100ms",
        );
        need(
            self.message_max_bytes >= 1024,
            "nats.message_max_bytes must be at least 1024",
        );
        need(
            self.output_max_bytes >= 1 && self.output_max_bytes < self.message_max_bytes,
            "nats.output_max_bytes must be positive and below nats.message_max_bytes",
        );
        need(
            self.results_max_ack_pending >= 1 && self.results_direct_in_flight_max >= 1,
            "nats.results_max_ack_pending and nats.results_direct_in_flight_max must be at least 1",
        );
        need(
            self.tasks_direct_timeout.0 >= 1,
            "nats.tasks_direct_timeout must be at least 1ms",
        );
        need(
            self.tasks_direct_result_within.0.saturating_mul(2) <= self.tasks_direct_timeout.0,
            "nats.tasks_direct_result_within must be at most half of nats.tasks_direct_timeout \
             (an answer that comes later is taken for a timeout and the task sent again)",
        );
        need(
            self.admin_in_flight_max >= 1 && self.admin_journal_backlog_max >= 1,
            "nats.admin_in_flight_max and nats.admin_journal_backlog_max must be at least 1",
        );
        need(
            self.stream_watch_interval.0 >= 100,
            "nats.stream_watch_interval must be at least 100ms",
        );
        need(
            self.tasks_direct_in_flight_max >= 1,
            "nats.tasks_direct_in_flight_max must be at least 1",
        );
        need(
            self.publish_queue_max >= 1 && self.publish_attempts >= 1 && self.publish_window >= 1,
            "nats.publish_queue_max, nats.publish_attempts and nats.publish_window must be at least 1",
        );
        need(
            self.results_ack_wait.0 >= 1000,
            "nats.results_ack_wait must be at least 1s",
        );
        need(
            self.duplicate_window.0 >= 1000 && self.duplicate_window.0 <= self.stream_max_age.0,
            "nats.duplicate_window must be at least 1s and at most nats.stream_max_age",
        );
        need(
            crate::protocol::subjects::Subjects::new(&self.prefix).is_ok(),
            "nats.prefix must be dot-separated tokens of [A-Za-z0-9_-]",
        );
        if let Err(e) = self.security().validate() {
            errs.push(e);
        }
    }
}
