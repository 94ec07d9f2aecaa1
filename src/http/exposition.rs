//! The `/metrics` page: the engine's metric sets, the journal's histograms,
//! and the figures this adapter reads at scrape time (task backlog, RocksDB,
//! NATS, the events publisher, readiness), encoded by
//! [`crate::telemetry::export`].

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Weak;

use prometheus_client::metrics::MetricType;

use crate::telemetry::export::{self, MetricSet, Row, Value};

use super::HttpState;

/// The whole `/metrics` exposition.
pub fn render_metrics(state: &HttpState) -> String {
    let m = &state.metrics;
    let mut rows = Vec::new();
    m.rows(&mut rows);
    backlog_rows(state, &mut rows);
    capacity_rows(state, &mut rows);
    journal_rows(state, &mut rows);
    nats_rows(state, &mut rows);
    events_rows(state, &mut rows);
    let ready = state.readiness.ready().is_ok();
    rows.push(Row::new(
        "ready",
        "1 when /readyz answers 200, else 0.",
        Value::GaugeValue(if ready { 1.0 } else { 0.0 }),
    ));
    export::encode(rows)
}

/// Name and help of the backlog gauges, read from the partitions' liveness
/// deadlines at scrape time.
const BACKLOG: (&str, &str) = (
    "task_backlog",
    "Attempts sent to workers with no result or timeout yet (queued or running), by task type.",
);
const OLDEST: (&str, &str) = (
    "task_oldest_age_seconds",
    "Age of the oldest attempt counted in narralytica_task_backlog (0 when none), by task type.",
);

fn backlog_rows(state: &HttpState, rows: &mut Vec<Row>) {
    let m = &state.metrics;
    let backlog = m.task_backlog();
    if backlog.is_empty() {
        // Declared before the first task type shows up.
        rows.push(Row::new(
            BACKLOG.0,
            BACKLOG.1,
            Value::Empty(MetricType::Gauge),
        ));
        rows.push(Row::new(
            OLDEST.0,
            OLDEST.1,
            Value::Empty(MetricType::Gauge),
        ));
    }
    for b in &backlog {
        rows.push(
            Row::new(
                BACKLOG.0,
                BACKLOG.1,
                Value::GaugeValue(b.outstanding as f64),
            )
            .label("task_type", b.task_type.as_str()),
        );
    }
    for b in &backlog {
        rows.push(
            Row::new(OLDEST.0, OLDEST.1, Value::GaugeValue(b.oldest_age_secs))
                .label("task_type", b.task_type.as_str()),
        );
    }
    let resident = m.resident.get();
    let active = m.workflows_running.get() + m.workflows_paused.get();
    rows.push(Row::new(
        "workflows_passivated",
        "Running or paused workflows without an actor in memory: running + paused - resident, at least 0 (a just-finished workflow's actor lowers it until passivated).",
        Value::GaugeValue(active.saturating_sub(resident).max(0) as f64),
    ));
}

/// The admission gate's usage, per limited task type, per key of each
/// (at most [`FAMILY_LABELS_MAX`](crate::telemetry::FAMILY_LABELS_MAX)
/// keys per type; the rest summed under `_other`) and per pool.
fn capacity_rows(state: &HttpState, rows: &mut Vec<Row>) {
    use crate::telemetry::{FAMILY_LABELS_MAX, OVERFLOW_LABEL};
    let view = state.metrics.capacity_view();
    let gauge = |v: f64| Value::GaugeValue(v);
    rows.push(Row::new(
        "backfills_held",
        "Backfills holding their new starts because the error rate of their task types is over their --max-error-rate.",
        gauge(state.metrics.backfills_held() as f64),
    ));
    for t in &view.task_types {
        let tt = t.task_type.as_str();
        rows.push(
            Row::new(
                "capacity_in_flight",
                "Attempts of a limited task type out with workers (holding a slot of the admission gate), by task type.",
                gauge(f64::from(t.in_flight)),
            )
            .label("task_type", tt),
        );
        rows.push(
            Row::new(
                "capacity_queued",
                "Tasks of a limited task type waiting in the admission gate (not sent yet), by task type.",
                gauge(t.queued as f64),
            )
            .label("task_type", tt),
        );
        if let Some(cap) = t.cap {
            rows.push(
                Row::new(
                    "capacity_limit",
                    "max_in_flight of a task type ([task_types.<name>]), by task type.",
                    gauge(f64::from(cap)),
                )
                .label("task_type", tt),
            );
        }
        let mut other: Option<(u64, u64)> = None;
        for (i, k) in t.keys.iter().filter(|k| !k.key.is_empty()).enumerate() {
            if i + 1 >= FAMILY_LABELS_MAX {
                let o = other.get_or_insert((0, 0));
                o.0 += u64::from(k.in_flight);
                o.1 += k.queued as u64;
                continue;
            }
            key_rows(rows, tt, &k.key, u64::from(k.in_flight), k.queued as u64);
        }
        if let Some((in_flight, queued)) = other {
            key_rows(rows, tt, OVERFLOW_LABEL, in_flight, queued);
        }
    }
    for p in &view.pools {
        rows.push(
            Row::new(
                "capacity_pool_in_flight",
                "Attempts of a pool's task types out with workers, by pool.",
                gauge(f64::from(p.in_flight)),
            )
            .label("pool", p.pool.as_str()),
        );
        rows.push(
            Row::new(
                "capacity_pool_limit",
                "max_in_flight of a pool ([pools.<name>]), by pool.",
                gauge(f64::from(p.cap)),
            )
            .label("pool", p.pool.as_str()),
        );
    }
}

fn key_rows(rows: &mut Vec<Row>, task_type: &str, key: &str, in_flight: u64, queued: u64) {
    rows.push(
        Row::new(
            "capacity_key_in_flight",
            "Attempts of one key of a limited task type out with workers, by task type and key.",
            Value::GaugeValue(in_flight as f64),
        )
        .label("task_type", task_type)
        .label("key", key),
    );
    rows.push(
        Row::new(
            "capacity_key_queued",
            "Tasks of one key of a limited task type waiting in the admission gate, by task type and key.",
            Value::GaugeValue(queued as f64),
        )
        .label("task_type", task_type)
        .label("key", key),
    );
}

fn journal_rows(state: &HttpState, rows: &mut Vec<Row>) {
    if let Some(c) = state.journal.commit.get() {
        c.rows(rows);
    }
    let failing = state.readiness.writes.get().and_then(|w| w.failing());
    rows.push(Row::new(
        "journal_writes_failing",
        "1 while journal writes fail (full disk, I/O error): /readyz answers 503 and intake answers unavailable.",
        Value::GaugeValue(f64::from(u8::from(failing.is_some()))),
    ));
    let storage = state.journal.storage.get().and_then(Weak::upgrade);
    rows.push(Row::new(
        "journal_wal_syncs",
        "Synced WAL writes of the storage engine (RocksDB's own counter).",
        Value::CounterValue(storage.as_ref().map_or(0, |s| s.wal_syncs())),
    ));
    if let Some(lsm) = storage.as_ref().and_then(|s| s.lsm_stats()) {
        for (name, help, value) in [
            (
                "rocksdb_l0_files",
                "RocksDB level-0 files; compacted at storage.l0_compaction_trigger, writes slow down at 3x and stop at 4x that many.",
                lsm.l0_files as f64,
            ),
            (
                "rocksdb_pending_compaction_bytes",
                "RocksDB's estimate of the bytes its compactions still have to rewrite.",
                lsm.pending_compaction_bytes as f64,
            ),
            (
                "rocksdb_writes_stopped",
                "1 while RocksDB stops writes until compactions catch up (every commit waits).",
                f64::from(u8::from(lsm.writes_stopped)),
            ),
        ] {
            rows.push(Row::new(name, help, Value::GaugeValue(value)));
        }
    }
}

fn nats_rows(state: &HttpState, rows: &mut Vec<Row>) {
    let Some(n) = &state.nats else { return };
    rows.push(Row::new(
        "nats_connected",
        "1 while the NATS client is connected, else 0.",
        Value::GaugeValue(if n.is_connected() { 1.0 } else { 0.0 }),
    ));
    rows.push(Row::new(
        "nats_reconnects",
        "NATS connections after the first one.",
        Value::CounterValue(n.reconnects()),
    ));
    for (route, v) in [("direct", &n.tasks_direct), ("stream", &n.tasks_stream)] {
        rows.push(
            Row::new(
                "tasks_sent_by_route",
                "Task sends by route: taken by a worker from a direct offer, or published to the TASKS stream.",
                Value::CounterValue(v.load(Relaxed)),
            )
            .label("route", route),
        );
    }
    rows.push(Row::new(
        "tasks_too_large",
        "Tasks failed without a retry because their message exceeds the NATS server's max_payload.",
        Value::CounterValue(n.tasks_too_large.load(Relaxed)),
    ));
    rows.push(Row::new(
        "nats_streams_recreated",
        "Streams and consumers the stream watch found deleted or altered and put back with their configured settings.",
        Value::CounterValue(n.streams_recreated.load(Relaxed)),
    ));
    rows.push(Row::new(
        "results_in_offer_reply",
        "Results that came as the worker's answer to their task's direct offer (nats.tasks_direct_result_within).",
        Value::CounterValue(n.results_in_offer_reply.load(Relaxed)),
    ));
    for why in crate::transport::nats::OfferDeclined::ALL {
        rows.push(
            Row::new(
                "task_offers_declined",
                "Direct task offers that went to the TASKS stream instead, by reason (no_worker, busy, timeout, error).",
                Value::CounterValue(n.offers_declined[why as usize].load(Relaxed)),
            )
            .label("reason", why.label()),
        );
    }
}

fn events_rows(state: &HttpState, rows: &mut Vec<Row>) {
    let Some(ev) = &state.events else { return };
    for (name, help, v) in [
        (
            "events_published",
            "Journal records whose lifecycle events JetStream acknowledged.",
            &ev.published,
        ),
        (
            "events_messages",
            "Lifecycle event messages acknowledged by JetStream (a batch carries several records).",
            &ev.messages,
        ),
        (
            "events_publish_failures",
            "Lifecycle event publishes that failed and were retried.",
            &ev.failures,
        ),
        (
            "events_queue_overflows",
            "Event messages that did not fit the publisher queue and were read back from the outbox.",
            &ev.overflows,
        ),
    ] {
        rows.push(Row::new(name, help, Value::CounterValue(v.load(Relaxed))));
    }
    rows.push(Row::new(
        "events_backlog",
        "Event messages the publisher holds in memory, waiting for their turn.",
        Value::GaugeValue(ev.backlog.load(Relaxed) as f64),
    ));
}
