//! The `/metrics` page: every family of the Prometheus exposition, read from
//! the engine's counters, the journal's histograms, the NATS client's state
//! and the events publisher at scrape time.

use std::sync::atomic::Ordering;
use std::sync::Weak;

use crate::engine::metrics::prom::Text;
use crate::engine::Metrics;

use super::HttpState;

/// The whole `/metrics` exposition.
pub fn render_metrics(state: &HttpState) -> String {
    let m = &state.metrics;
    let get = |c: &std::sync::atomic::AtomicU64| Metrics::get(c) as f64;
    let mut t = Text::default();

    let pipelines = m.by_pipeline.snapshot();
    type PipelineCounter = fn(&crate::engine::metrics::PipelineStats) -> u64;
    let per_pipeline: [(&str, &str, PipelineCounter); 4] = [
        (
            "narralytica_workflows_started_total",
            "Workflows started, by pipeline.",
            |p| Metrics::get(&p.started),
        ),
        (
            "narralytica_workflows_completed_total",
            "Workflows that reached completed, by pipeline.",
            |p| Metrics::get(&p.completed),
        ),
        (
            "narralytica_workflows_failed_total",
            "Workflows that reached failed (parked ones included), by pipeline.",
            |p| Metrics::get(&p.failed),
        ),
        (
            "narralytica_workflows_cancelled_total",
            "Workflows that reached cancelled (cancel or workflow timeout), by pipeline.",
            |p| Metrics::get(&p.cancelled),
        ),
    ];
    for (name, help, value) in per_pipeline {
        t.family(name, "counter", help);
        for (label, p) in &pipelines {
            t.sample(name, &[("pipeline", label)], value(p) as f64);
        }
    }
    t.family(
        "narralytica_workflow_latency_seconds",
        "histogram",
        "Workflow creation to terminal status, by pipeline.",
    );
    for (label, p) in &pipelines {
        t.histogram(
            "narralytica_workflow_latency_seconds",
            &[("pipeline", label)],
            &p.latency.snapshot(),
        );
    }
    t.family(
        "narralytica_workflows_reopened_total",
        "counter",
        "Terminal workflows reopened.",
    );
    t.sample(
        "narralytica_workflows_reopened_total",
        &[],
        get(&m.workflows_reopened),
    );
    for (name, help, v) in [
        (
            "narralytica_workflows_running",
            "Workflows in status running (kept by the engine from the status index at start-up).",
            m.workflows_running.load(Ordering::Relaxed),
        ),
        (
            "narralytica_workflows_paused",
            "Workflows in status paused.",
            m.workflows_paused.load(Ordering::Relaxed),
        ),
    ] {
        t.family(name, "gauge", help);
        t.sample(name, &[], v as f64);
    }

    let types = m.by_task_type.snapshot();
    type TypeCounter = fn(&crate::engine::metrics::TaskTypeStats) -> u64;
    let per_type: [(&str, &str, TypeCounter); 5] = [
        (
            "narralytica_task_attempts_total",
            "Attempts sent to workers (first attempts and retries; re-sends after a restart excluded), by task type.",
            |s| Metrics::get(&s.attempts),
        ),
        (
            "narralytica_task_retries_total",
            "Attempts after the first, by task type.",
            |s| Metrics::get(&s.retries),
        ),
        (
            "narralytica_task_timeouts_total",
            "Attempts that timed out (schedule-to-start, start-to-close or heartbeat), by task type.",
            |s| Metrics::get(&s.timeouts),
        ),
        (
            "narralytica_task_failures_total",
            "Attempts whose worker reported a failure, by task type.",
            |s| Metrics::get(&s.failures),
        ),
        (
            "narralytica_task_retries_deferred_total",
            "Retries put back by the retry budget (each deferral counted), by task type.",
            |s| Metrics::get(&s.retries_deferred),
        ),
    ];
    for (name, help, value) in per_type {
        t.family(name, "counter", help);
        for (label, s) in &types {
            t.sample(name, &[("task_type", label)], value(s) as f64);
        }
    }
    t.family(
        "narralytica_task_latency_seconds",
        "histogram",
        "Attempt dispatch (as journaled) to its accepted result, success or failure, by task type.",
    );
    for (label, s) in &types {
        t.histogram(
            "narralytica_task_latency_seconds",
            &[("task_type", label)],
            &s.latency.snapshot(),
        );
    }
    let backlog = m.task_backlog();
    t.family(
        "narralytica_task_backlog",
        "gauge",
        "Attempts sent to workers with no result or timeout yet (queued or running), by task type.",
    );
    for b in &backlog {
        t.sample(
            "narralytica_task_backlog",
            &[("task_type", &b.task_type)],
            b.outstanding as f64,
        );
    }
    t.family(
        "narralytica_task_oldest_age_seconds",
        "gauge",
        "Age of the oldest attempt counted in narralytica_task_backlog (0 when none), by task type.",
    );
    for b in &backlog {
        t.sample(
            "narralytica_task_oldest_age_seconds",
            &[("task_type", &b.task_type)],
            b.oldest_age_secs,
        );
    }
    t.family(
        "narralytica_tasks_resent_total",
        "counter",
        "Attempts sent again with the same task id after a restart.",
    );
    t.sample(
        "narralytica_tasks_resent_total",
        &[],
        get(&m.tasks_redispatched),
    );

    t.family(
        "narralytica_messages_ignored_total",
        "counter",
        "Results and timers recognised and ignored, by reason.",
    );
    for (reason, c) in [
        ("duplicate", &m.duplicates),
        ("stale_attempt", &m.stale_attempts),
        ("unknown_task", &m.unknown_tasks),
        ("workflow_terminal", &m.late_results),
        ("stale_timer", &m.stale_timers),
    ] {
        t.sample(
            "narralytica_messages_ignored_total",
            &[("reason", reason)],
            get(c),
        );
    }
    t.family(
        "narralytica_messages_rejected_total",
        "counter",
        "Worker and admin messages refused by the protocol decoder, by reason.",
    );
    for (reason, c) in [
        ("oversized", &m.messages_oversized),
        ("malformed", &m.messages_malformed),
        ("unsupported_version", &m.messages_unsupported_version),
        ("invalid", &m.messages_invalid),
        ("unauthenticated", &m.messages_unauthenticated),
        ("wrong_partition", &m.messages_wrong_partition),
    ] {
        t.sample(
            "narralytica_messages_rejected_total",
            &[("reason", reason)],
            get(c),
        );
    }
    t.family(
        "narralytica_inputs_rejected_total",
        "counter",
        "Inputs refused by a workflow (unknown pipeline, invalid command for its status).",
    );
    t.sample(
        "narralytica_inputs_rejected_total",
        &[],
        get(&m.rejected_inputs),
    );

    t.family(
        "narralytica_journal_commit_batch_entries",
        "histogram",
        "Storage ops per synced journal write batch.",
    );
    let commit = state.journal.commit.get();
    if let Some(c) = commit {
        t.histogram(
            "narralytica_journal_commit_batch_entries",
            &[],
            &c.batch_entries.snapshot(),
        );
    }
    t.family(
        "narralytica_journal_commit_latency_seconds",
        "histogram",
        "Duration of one synced journal write (the fsync included).",
    );
    if let Some(c) = commit {
        t.histogram(
            "narralytica_journal_commit_latency_seconds",
            &[],
            &c.latency_us.snapshot(),
        );
    }
    t.family(
        "narralytica_journal_commits_inline_total",
        "counter",
        "Journal write batches written on the caller's thread because the committer was idle (storage.commit_inline_when_idle).",
    );
    t.sample(
        "narralytica_journal_commits_inline_total",
        &[],
        commit.map_or(0.0, |c| {
            c.inline_batches.load(std::sync::atomic::Ordering::Relaxed) as f64
        }),
    );
    t.family(
        "narralytica_journal_wal_syncs_total",
        "counter",
        "Synced WAL writes of the storage engine (RocksDB's own counter).",
    );
    let storage = state.journal.storage.get().and_then(Weak::upgrade);
    let syncs = storage.as_ref().map_or(0, |s| s.wal_syncs());
    t.sample("narralytica_journal_wal_syncs_total", &[], syncs as f64);
    if let Some(lsm) = storage.as_ref().and_then(|s| s.lsm_stats()) {
        for (name, help, value) in [
            (
                "narralytica_rocksdb_l0_files",
                "RocksDB level-0 files; compacted at storage.l0_compaction_trigger, writes slow down at 3x and stop at 4x that many.",
                lsm.l0_files as f64,
            ),
            (
                "narralytica_rocksdb_pending_compaction_bytes",
                "RocksDB's estimate of the bytes its compactions still have to rewrite.",
                lsm.pending_compaction_bytes as f64,
            ),
            (
                "narralytica_rocksdb_writes_stopped",
                "1 while RocksDB stops writes until compactions catch up (every commit waits).",
                f64::from(u8::from(lsm.writes_stopped)),
            ),
        ] {
            t.family(name, "gauge", help);
            t.sample(name, &[], value);
        }
    }
    for (name, help, c) in [
        (
            "narralytica_journal_records_total",
            "Journal records (transitions) written.",
            &m.journal_records,
        ),
        (
            "narralytica_journal_events_total",
            "Journaled events.",
            &m.journal_events,
        ),
        (
            "narralytica_journal_inputs_folded_total",
            "Inputs journaled in one commit with an earlier input of the same workflow.",
            &m.inputs_folded,
        ),
        (
            "narralytica_journal_commit_errors_total",
            "Transitions whose journal write failed.",
            &m.commit_errors,
        ),
        (
            "narralytica_actor_restarts_total",
            "Workflow actors restarted after a crash.",
            &m.actor_restarts,
        ),
        (
            "narralytica_workflows_parked_total",
            "Workflows parked as failed after crashing their actor past the restart budget.",
            &m.workflows_parked,
        ),
        (
            "narralytica_workflows_purged_total",
            "Terminal workflows deleted by retention (journal, snapshot, index entry, timers).",
            &m.workflows_purged,
        ),
        (
            "narralytica_workflow_passivations_total",
            "Workflow actors stopped while idle (their state kept in storage and cache).",
            &m.passivations,
        ),
        (
            "narralytica_spans_exported_total",
            "Spans accepted by the OTLP collector.",
            &m.spans_exported,
        ),
        (
            "narralytica_spans_dropped_total",
            "Spans dropped because the export queue was full.",
            &m.spans_dropped,
        ),
        (
            "narralytica_spans_failed_total",
            "Spans not exported: every attempt failed, or the collector rejected them.",
            &m.spans_failed,
        ),
    ] {
        t.family(name, "counter", help);
        t.sample(name, &[], get(c));
    }
    let resident = Metrics::get(&m.resident);
    let active =
        m.workflows_running.load(Ordering::Relaxed) + m.workflows_paused.load(Ordering::Relaxed);
    let passivated = u64::try_from(active).unwrap_or(0).saturating_sub(resident);
    t.family(
        "narralytica_workflows_resident",
        "gauge",
        "Workflow actors alive in memory.",
    );
    t.sample("narralytica_workflows_resident", &[], resident as f64);
    t.family(
        "narralytica_workflows_passivated",
        "gauge",
        "Running or paused workflows without an actor in memory: running + paused - resident, at least 0 (a just-finished workflow's actor lowers it until passivated).",
    );
    t.sample("narralytica_workflows_passivated", &[], passivated as f64);
    if let Some(n) = &state.nats {
        t.family(
            "narralytica_nats_connected",
            "gauge",
            "1 while the NATS client is connected, else 0.",
        );
        t.sample(
            "narralytica_nats_connected",
            &[],
            if n.is_connected() { 1.0 } else { 0.0 },
        );
        t.family(
            "narralytica_nats_reconnects_total",
            "counter",
            "NATS connections after the first one.",
        );
        t.sample(
            "narralytica_nats_reconnects_total",
            &[],
            n.reconnects() as f64,
        );
        use std::sync::atomic::Ordering::Relaxed;
        t.family(
            "narralytica_tasks_sent_by_route_total",
            "counter",
            "Task sends by route: taken by a worker from a direct offer, or published to the TASKS stream.",
        );
        for (route, v) in [("direct", &n.tasks_direct), ("stream", &n.tasks_stream)] {
            t.sample(
                "narralytica_tasks_sent_by_route_total",
                &[("route", route)],
                v.load(Relaxed) as f64,
            );
        }
        t.family(
            "narralytica_results_in_offer_reply_total",
            "counter",
            "Results that came as the worker's answer to their task's direct offer (nats.tasks_direct_result_within).",
        );
        t.sample(
            "narralytica_results_in_offer_reply_total",
            &[],
            n.results_in_offer_reply.load(Relaxed) as f64,
        );
        t.family(
            "narralytica_task_offers_declined_total",
            "counter",
            "Direct task offers that went to the TASKS stream instead, by reason (no_worker, busy, timeout, error).",
        );
        for why in crate::transport::nats::OfferDeclined::ALL {
            t.sample(
                "narralytica_task_offers_declined_total",
                &[("reason", why.label())],
                n.offers_declined[why as usize].load(Relaxed) as f64,
            );
        }
    }
    if let Some(ev) = &state.events {
        use std::sync::atomic::Ordering::Relaxed;
        for (name, kind, help, v) in [
            (
                "narralytica_events_published_total",
                "counter",
                "Journal records whose lifecycle events JetStream acknowledged.",
                ev.published.load(Relaxed),
            ),
            (
                "narralytica_events_messages_total",
                "counter",
                "Lifecycle event messages acknowledged by JetStream (a batch carries several records).",
                ev.messages.load(Relaxed),
            ),
            (
                "narralytica_events_publish_failures_total",
                "counter",
                "Lifecycle event publishes that failed and were retried.",
                ev.failures.load(Relaxed),
            ),
            (
                "narralytica_events_queue_overflows_total",
                "counter",
                "Event messages that did not fit the publisher queue and were read back from the outbox.",
                ev.overflows.load(Relaxed),
            ),
            (
                "narralytica_events_backlog",
                "gauge",
                "Event messages the publisher holds in memory, waiting for their turn.",
                ev.backlog.load(Relaxed),
            ),
        ] {
            t.family(name, kind, help);
            t.sample(name, &[], v as f64);
        }
    }
    let ready = state.readiness.ready().is_ok();
    t.family(
        "narralytica_ready",
        "gauge",
        "1 when /readyz answers 200, else 0.",
    );
    t.sample("narralytica_ready", &[], if ready { 1.0 } else { 0.0 });
    t.finish()
}
