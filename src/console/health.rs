//! Capacity and health: per task type what is outstanding and how fast
//! attempts are dispatched and fail, the workers seen from heartbeats,
//! and the state of the journal, NATS and the event publisher. Every
//! figure comes from the `/metrics` exposition (read in-process), so the
//! page and Prometheus never disagree.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use parking_lot::Mutex;

use super::html::{escape, time, Nav};
use super::Console;

/// How often the rates are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Samples kept: the rates are over the last minute.
pub const SAMPLES_KEPT: usize = 7;

const PREFIX: &str = "narralytica_";

/// One sample of the exposition: `name` (without the prefix), labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: String,
    pub value: f64,
}

/// The samples of a Prometheus text exposition (comments skipped).
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        out.push(Sample {
            name: name.strip_prefix(PREFIX).unwrap_or(name).to_string(),
            labels: labels.to_string(),
            value,
        });
    }
    out
}

/// The value of label `key` in `labels` (`a="x",b="y"`).
pub fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split("\",").find_map(|kv| {
        let (k, v) = kv.split_once("=\"")?;
        (k.trim() == key).then(|| v.trim_end_matches('"'))
    })
}

/// Per task type counters of one sample, by counter name.
type Counters = BTreeMap<String, BTreeMap<&'static str, f64>>;

/// The counters behind the rates.
const RATED: [(&str, &str); 2] = [
    ("task_attempts_total", "attempts"),
    ("task_failures_total", "failures"),
];

fn counters(samples: &[Sample]) -> Counters {
    let mut c: Counters = BTreeMap::new();
    for s in samples {
        for (name, key) in RATED {
            if s.name == name {
                if let Some(t) = label(&s.labels, "task_type") {
                    c.entry(t.to_string()).or_default().insert(key, s.value);
                }
            }
        }
    }
    c
}

/// The last minute of samples, for rates.
#[derive(Default)]
pub struct Rates {
    samples: Mutex<VecDeque<(u64, Counters)>>,
}

impl Rates {
    pub fn push(&self, at_ms: u64, c: Counters) {
        let mut s = self.samples.lock();
        s.push_back((at_ms, c));
        while s.len() > SAMPLES_KEPT {
            s.pop_front();
        }
    }

    /// Per minute over the samples kept, by task type and counter; `None`
    /// before there are two samples.
    pub fn per_minute(&self) -> Option<BTreeMap<String, BTreeMap<&'static str, f64>>> {
        let s = self.samples.lock();
        let (t0, first) = s.front()?;
        let (t1, last) = s.back()?;
        if t1 <= t0 {
            return None;
        }
        let minutes = (t1 - t0) as f64 / 60_000.0;
        let mut out = BTreeMap::new();
        for (task_type, now) in last {
            let mut r = BTreeMap::new();
            for (key, v) in now {
                let before = first
                    .get(task_type)
                    .and_then(|m| m.get(key))
                    .copied()
                    .unwrap_or(0.0);
                r.insert(*key, (v - before).max(0.0) / minutes);
            }
            out.insert(task_type.clone(), r);
        }
        Some(out)
    }
}

pub async fn sample(c: Arc<Console>) {
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    loop {
        every.tick().await;
        let text = crate::http::render_metrics(&c.http);
        let at = c
            .admin()
            .map(|a| a.engine().ctx().clock.now_ms())
            .unwrap_or_default();
        c.rates.push(at, counters(&parse_exposition(&text)));
    }
}

pub async fn show(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let samples = parse_exposition(&crate::http::render_metrics(&c.http));
    let value = |name: &str| samples.iter().find(|s| s.name == name).map(|s| s.value);
    let mut b = String::from(
        "<h1>Capacity &amp; health</h1><div data-refresh=\"10\"></div><div id=\"live-main\">",
    );
    let ready = c.http.readiness.ready();
    let _ = write!(
        b,
        "<div class=\"grid\" id=\"health-cards\">\
         <div class=\"card\">ready <b id=\"ready\">{}</b></div>\
         <div class=\"card\">NATS <b id=\"nats\">{}</b></div>\
         <div class=\"card\">workflows running <b>{}</b></div>\
         <div class=\"card\">workflows paused <b>{}</b></div></div>",
        match &ready {
            Ok(()) => "yes".to_string(),
            Err(why) => format!("no: {}", escape(why)),
        },
        match value("nats_connected") {
            Some(v) if v >= 1.0 => "connected",
            Some(_) => "disconnected",
            None => "-",
        },
        fmt_num(value("workflows_running")),
        fmt_num(value("workflows_paused")),
    );
    task_types(&mut b, &samples, c.rates.per_minute());
    b.push_str("<h2>Workers seen (heartbeats)</h2><table id=\"workers\"><thead><tr><th>worker</th><th>last heartbeat (UTC)</th><th class=\"num\">heartbeats</th></tr></thead><tbody>");
    let workers = c.live.workers();
    for w in &workers {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
            escape(&w.name),
            time(Some(w.last_seen_ms)),
            w.heartbeats
        );
    }
    if workers.is_empty() {
        b.push_str("<tr><td colspan=\"3\" class=\"muted\">no heartbeat since this process started (workers heartbeat only while a task runs)</td></tr>");
    }
    b.push_str("</tbody></table>");
    for (title, id, prefixes) in [
        (
            "Journal",
            "journal",
            &["journal_", "rocksdb_", "commit_"][..],
        ),
        (
            "NATS",
            "nats-figures",
            &["nats_", "tasks_sent", "task_offers", "results_in"][..],
        ),
        ("Lifecycle events", "events", &["events_"][..]),
    ] {
        let _ = write!(
            b,
            "<h2>{title}</h2><table id=\"{id}\"><thead><tr><th>figure</th><th class=\"num\">value</th></tr></thead><tbody>"
        );
        let mut any = false;
        for s in samples.iter().filter(|s| {
            prefixes.iter().any(|p| s.name.starts_with(p))
                && !s.name.ends_with("_bucket")
                && !s.name.ends_with("_created")
        }) {
            any = true;
            let _ = write!(
                b,
                "<tr><td>{}{}</td><td class=\"num\">{}</td></tr>",
                escape(&s.name),
                if s.labels.is_empty() {
                    String::new()
                } else {
                    format!(" <span class=\"muted\">{}</span>", escape(&s.labels))
                },
                fmt_num(Some(s.value))
            );
        }
        if !any {
            b.push_str("<tr><td colspan=\"2\" class=\"muted\">none reported</td></tr>");
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("</div>");
    c.page(&headers, "Capacity & health", Nav::Health, &b)
}

fn task_types(
    b: &mut String,
    samples: &[Sample],
    rates: Option<BTreeMap<String, BTreeMap<&'static str, f64>>>,
) {
    let mut by_type: BTreeMap<String, BTreeMap<&str, f64>> = BTreeMap::new();
    for s in samples {
        let key = match s.name.as_str() {
            "task_backlog" => "outstanding",
            "task_oldest_age_seconds" => "oldest",
            "task_attempts_total" => "attempts",
            "task_retries_total" => "retries",
            "task_failures_total" => "failures",
            "task_timeouts_total" => "timeouts",
            _ => continue,
        };
        if let Some(t) = label(&s.labels, "task_type") {
            by_type
                .entry(t.to_string())
                .or_default()
                .insert(key, s.value);
        }
    }
    b.push_str(
        "<h2>Task types</h2><table id=\"task-types\"><thead><tr><th>task type</th>\
         <th class=\"num\">outstanding (queued or running)</th><th class=\"num\">oldest outstanding</th>\
         <th class=\"num\">dispatched /min</th><th class=\"num\">failed /min</th>\
         <th class=\"num\">attempts</th><th class=\"num\">retries</th><th class=\"num\">failures</th>\
         <th class=\"num\">timeouts</th></tr></thead><tbody>",
    );
    for (t, v) in &by_type {
        let get = |k: &str| v.get(k).copied();
        let rate = |k: &str| {
            rates
                .as_ref()
                .and_then(|r| r.get(t))
                .and_then(|r| r.get(k))
                .map_or_else(|| "measuring".to_string(), |x| format!("{x:.1}"))
        };
        let _ = write!(
            b,
            "<tr data-task-type=\"{t}\"><td>{t}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            fmt_num(get("outstanding")),
            get("oldest").map_or_else(|| "-".into(), |s| format!("{s:.1}s")),
            rate("attempts"),
            rate("failures"),
            fmt_num(get("attempts")),
            fmt_num(get("retries")),
            fmt_num(get("failures")),
            fmt_num(get("timeouts")),
            t = escape(t),
        );
    }
    if by_type.is_empty() {
        b.push_str("<tr><td colspan=\"9\" class=\"muted\">no task dispatched yet</td></tr>");
    }
    b.push_str("</tbody></table>");
}

fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{}", x as i64),
        Some(x) => format!("{x:.3}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP narralytica_task_attempts Attempts.\n\
        # TYPE narralytica_task_attempts counter\n\
        narralytica_task_attempts_total{task_type=\"embed\"} 12\n\
        narralytica_task_failures_total{task_type=\"embed\"} 3\n\
        narralytica_task_backlog{task_type=\"embed\"} 2\n\
        narralytica_nats_connected 1\n";

    #[test]
    fn the_exposition_parses_into_named_samples_with_labels() {
        let s = parse_exposition(TEXT);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "task_attempts_total");
        assert_eq!(label(&s[0].labels, "task_type"), Some("embed"));
        assert_eq!(s[0].value, 12.0);
        assert_eq!(
            (s[3].name.as_str(), s[3].labels.as_str()),
            ("nats_connected", "")
        );
        assert_eq!(label("a=\"x\",b=\"y\"", "b"), Some("y"));
    }

    #[test]
    fn rates_are_per_minute_over_the_samples_kept() {
        let r = Rates::default();
        assert!(r.per_minute().is_none());
        r.push(0, counters(&parse_exposition(TEXT)));
        let later = TEXT.replace("} 12", "} 42").replace("} 3\n", "} 9\n");
        r.push(30_000, counters(&parse_exposition(&later)));
        let m = r.per_minute().unwrap();
        assert_eq!(m["embed"]["attempts"], 60.0);
        assert_eq!(m["embed"]["failures"], 12.0);
    }
}
