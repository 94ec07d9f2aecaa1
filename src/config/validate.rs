//! Range checks of the whole configuration that serde's types cannot express.

use super::{Config, Dur, Keep};
use crate::otel::{OtlpEndpoint, OtlpHeaders};

impl Config {
    /// Range checks that serde's types cannot express.
    pub fn validate(&self) -> Result<(), String> {
        let mut errs = Vec::new();
        let mut need = |ok: bool, what: &str| {
            if !ok {
                errs.push(what.to_owned());
            }
        };
        need(
            (1..=1024).contains(&self.engine.partitions),
            "engine.partitions must be within 1..=1024",
        );
        need(
            self.engine.resident_max >= 1,
            "engine.resident_max must be at least 1",
        );
        need(
            self.engine.in_progress_max >= 1,
            "engine.in_progress_max must be at least 1",
        );
        need(
            self.engine.restart_budget >= 1,
            "engine.restart_budget must be at least 1",
        );
        need(
            self.engine.unstartable_max >= 1,
            "engine.unstartable_max must be at least 1",
        );
        need(
            self.engine.snapshot_every_events >= 1,
            "engine.snapshot_every_events must be at least 1",
        );
        need(self.engine.tick.0 >= 1, "engine.tick must be at least 1ms");
        need(
            self.engine.timer_batch_max >= 1,
            "engine.timer_batch_max must be at least 1",
        );
        need(
            self.engine.accept_chunk >= 1,
            "engine.accept_chunk must be at least 1",
        );
        need(
            self.engine.request_timeout.0 >= 1,
            "engine.request_timeout must be positive",
        );
        need(
            self.engine.signal_payload_bytes_max >= 2,
            "engine.signal_payload_bytes_max must be at least 2",
        );
        need(
            self.engine.signals_pending_max >= 1,
            "engine.signals_pending_max must be at least 1",
        );
        need(
            self.engine.signal_id_len_max >= 1,
            "engine.signal_id_len_max must be at least 1",
        );
        let rb = &self.retry_budget;
        need(
            rb.ratio.is_finite() && (0.0..=1000.0).contains(&rb.ratio),
            "retry_budget.ratio must be within 0..=1000",
        );
        need(
            rb.min_per_sec.is_finite() && rb.min_per_sec > 0.0 && rb.min_per_sec <= 1e9,
            "retry_budget.min_per_sec must be positive (retries must always make progress)",
        );
        need(
            (100..=3_600_000).contains(&rb.window.0),
            "retry_budget.window must be within 100ms..=1h",
        );
        need(
            (1..=3_600_000).contains(&rb.defer.0),
            "retry_budget.defer must be within 1ms..=1h",
        );
        need(
            self.storage.commit_batch_max >= 1,
            "storage.commit_batch_max must be at least 1",
        );
        need(
            (1..=16).contains(&self.storage.commit_threads),
            "storage.commit_threads must be within 1..=16",
        );
        need(
            (1.0..=1_000_000.0).contains(&self.storage.commit_inline_max_mean_batch),
            "storage.commit_inline_max_mean_batch must be within 1.0..=1000000",
        );
        need(
            self.storage.block_cache_mib >= 1 && self.storage.write_buffer_mib >= 1,
            "storage.block_cache_mib and storage.write_buffer_mib must be at least 1",
        );
        let l0_max = crate::storage::rocks::L0_COMPACTION_TRIGGER_MAX;
        need(
            (1..=l0_max).contains(&self.storage.l0_compaction_trigger),
            &format!("storage.l0_compaction_trigger must be within 1..={l0_max}"),
        );
        let rate_max = crate::storage::rocks::COMPACTION_RATE_MIB_S_MAX;
        need(
            self.storage.compaction_rate_mib_s <= rate_max,
            &format!("storage.compaction_rate_mib_s must be within 0..={rate_max} (0: unlimited)"),
        );
        need(
            self.http.addr == "off" || self.http.addr.parse::<std::net::SocketAddr>().is_ok(),
            "http.addr must be host:port (an IP address) or \"off\"",
        );
        need(
            tracing_subscriber::EnvFilter::try_new(&self.log.level).is_ok(),
            "log.level is not a valid filter (e.g. info, warn, orchestrator=debug)",
        );
        let t = &self.trace;
        if !t.otlp_endpoint.is_empty() {
            if let Err(e) = OtlpEndpoint::parse(&t.otlp_endpoint) {
                errs.push(format!("trace.otlp_endpoint: {e}"));
            }
        }
        // The error names the entry or header, never the value.
        if let Err(e) = OtlpHeaders::parse(t.headers.expose()) {
            errs.push(format!("trace.headers: {e}"));
        }
        let mut need = |ok: bool, what: &str| {
            if !ok {
                errs.push(what.to_owned());
            }
        };
        need(
            !t.service_name.trim().is_empty(),
            "trace.service_name must not be empty",
        );
        need(
            t.queue_max >= 1 && (1..=t.queue_max).contains(&t.batch_max),
            "trace.batch_max must be within 1..=trace.queue_max",
        );
        need(
            t.flush_every.0 >= 10,
            "trace.flush_every must be at least 10ms",
        );
        need(
            t.export_timeout.0 >= 100,
            "trace.export_timeout must be at least 100ms",
        );
        need(
            (1..=100).contains(&t.export_attempts),
            "trace.export_attempts must be within 1..=100",
        );
        need(
            self.cluster.claim_ttl.0 >= 1000,
            "cluster.claim_ttl must be at least 1s",
        );
        need(
            (1..=5).contains(&self.cluster.journal_replicas),
            "cluster.journal_replicas must be within 1..=5",
        );
        need(
            self.cluster.lease_ttl.0 >= 1000 && self.lease_config().validate().is_ok(),
            "cluster.lease_ttl must be at least 1s",
        );
        need(
            self.cluster.forward_timeout.0 >= 100,
            "cluster.forward_timeout must be at least 100ms",
        );
        need(
            self.cluster
                .node_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "cluster.node_id may hold only letters, digits, '-' and '_' (it is part of a KV key)",
        );
        need(
            self.shutdown.grace.0 >= 1000,
            "shutdown.grace must be at least 1s",
        );
        need(
            self.retention.after != Keep::For(Dur(0)),
            "retention.after must be positive, or \"off\" to keep terminal workflows forever",
        );
        need(
            self.retention.sweep_every.0 >= 1000,
            "retention.sweep_every must be at least 1s",
        );
        need(
            self.events.batch_max >= 1
                && self.events.batch_max_bytes >= 1024
                && self.events.batch_max_bytes <= self.nats.message_max_bytes,
            "events.batch_max must be at least 1 and events.batch_max_bytes within [1024, nats.message_max_bytes]",
        );
        need(
            self.retention.batch_max >= 1 && self.retention.scan_max >= 1,
            "retention.batch_max and retention.scan_max must be at least 1",
        );
        let c = &self.console;
        need(
            (1..=crate::admin::LIST_PAGE_MAX).contains(&c.page_size),
            "console.page_size must be within 1..=1000",
        );
        need(
            (1..=100_000).contains(&c.inbox_scan_max),
            "console.inbox_scan_max must be within 1..=100000",
        );
        need(
            (1..=10_000).contains(&c.sessions_max),
            "console.sessions_max must be within 1..=10000",
        );
        self.nats.check(&mut errs);
        if let Err(e) = self.capacity_limits() {
            errs.push(e);
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }
}
