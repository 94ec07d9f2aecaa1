//! Metrics declared with their name, help and labels next to the field
//! ([`metric_set!`]), and their Prometheus text exposition (format 0.0.4)
//! written by prometheus-client.
//!
//! A struct declared with [`metric_set!`] lists its exported fields as
//! [`Row`]s at scrape time; the rows of every source (the engine's counters,
//! the journal's histograms, figures read at scrape time by the HTTP
//! adapter) are grouped by family name and encoded once. Grouping at scrape
//! time is what lets sibling fields (`duplicates`, `stale_attempts`, ...)
//! share one family with a fixed label each, and a [`Family`] of sets
//! contribute one labelled sample to each of its families.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::family::Family;
use super::{Counter, Gauge, Histogram};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The prefix of every family name.
pub const PREFIX: &str = "narralytica";

/// One sample (or one histogram) of the exposition, before grouping.
#[derive(Debug)]
pub struct Row {
    /// Family name without the prefix; a counter's without `_total`.
    pub name: &'static str,
    pub help: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: Value,
}

impl Row {
    pub fn new(name: &'static str, help: &'static str, value: impl Into<Value>) -> Row {
        Row {
            name,
            help,
            labels: Vec::new(),
            value: value.into(),
        }
    }

    pub fn label(mut self, key: &'static str, value: impl Into<String>) -> Row {
        self.labels.push((key, value.into()));
        self
    }
}

/// What a row holds: a live metric (cloned handle, sharing its state) or a
/// value read at scrape time.
#[derive(Debug)]
pub enum Value {
    Counter(prometheus_client::metrics::counter::Counter),
    Gauge(prometheus_client::metrics::gauge::Gauge),
    Histogram(Histogram),
    /// A counter kept elsewhere (e.g. by RocksDB), read at scrape time.
    CounterValue(u64),
    /// A gauge computed at scrape time.
    GaugeValue(f64),
    /// No sample: the family is declared (HELP and TYPE) so scrapers and
    /// dashboards see it before its first label value exists.
    Empty(MetricType),
}

impl From<&Counter> for Value {
    fn from(c: &Counter) -> Value {
        Value::Counter(c.0.clone())
    }
}

impl From<&Gauge> for Value {
    fn from(g: &Gauge) -> Value {
        Value::Gauge(g.0.clone())
    }
}

impl From<&Histogram> for Value {
    fn from(h: &Histogram) -> Value {
        Value::Histogram(h.clone())
    }
}

impl EncodeMetric for Value {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Value::Counter(c) => c.encode(encoder),
            Value::Gauge(g) => g.encode(encoder),
            Value::Histogram(h) => h.encode(encoder),
            Value::CounterValue(v) => ConstCounter::new(*v).encode(encoder),
            Value::GaugeValue(v) => ConstGauge::new(*v).encode(encoder),
            Value::Empty(_) => Ok(()),
        }
    }

    fn metric_type(&self) -> MetricType {
        match self {
            Value::Counter(_) | Value::CounterValue(_) => MetricType::Counter,
            Value::Gauge(_) | Value::GaugeValue(_) => MetricType::Gauge,
            Value::Histogram(_) => MetricType::Histogram,
            Value::Empty(t) => *t,
        }
    }
}

/// A struct whose exported fields can list themselves as rows; implemented
/// by [`metric_set!`].
pub trait MetricSet {
    fn rows(&self, out: &mut Vec<Row>);
}

/// The rows of every entry of `family`, each labelled `key="<its value>"`;
/// sample-less rows that declare its families while it has no entry.
pub fn family_rows<E: MetricSet + Default>(
    family: &Family<E>,
    key: &'static str,
    out: &mut Vec<Row>,
) {
    let entries = family.snapshot();
    if entries.is_empty() {
        let from = out.len();
        E::default().rows(out);
        for row in &mut out[from..] {
            row.value = Value::Empty(row.value.metric_type());
        }
    }
    for (value, entry) in entries {
        let from = out.len();
        entry.rows(out);
        for row in &mut out[from..] {
            row.labels.insert(0, (key, value.to_string()));
        }
    }
}

/// Declares a struct of metrics. An exported field carries, right above
/// it, one of:
///
/// - `@metric("name", "Help.")`: a counter, gauge or histogram of its own;
/// - `@labelled("name", "Help.", "key" = "value")`: one label value of a
///   family whose other values are sibling fields with the same name;
/// - `@family("key")`: a [`Family`] of metric sets, one label value each.
///
/// Fields without one are kept but not exported.
macro_rules! metric_set {
    (
        $(#[$smeta:meta])*
        $svis:vis struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $(@$kind:ident($($arg:tt)*))?
                $fvis:vis $field:ident : $ty:ty
            ),* $(,)?
        }
    ) => {
        $(#[$smeta])*
        $svis struct $name {
            $( $(#[$fmeta])* $fvis $field: $ty, )*
        }

        impl $crate::telemetry::export::MetricSet for $name {
            fn rows(&self, out: &mut Vec<$crate::telemetry::export::Row>) {
                $( $( $crate::telemetry::export::export_field!(
                    $kind, &self.$field, out, $($arg)*
                ); )? )*
            }
        }
    };
}

/// One exported field's rows (see [`metric_set!`]).
macro_rules! export_field {
    (metric, $f:expr, $out:ident, $name:literal, $help:literal) => {
        $out.push($crate::telemetry::export::Row::new($name, $help, $f))
    };
    (labelled, $f:expr, $out:ident, $name:literal, $help:literal, $key:literal = $value:literal) => {
        $out.push($crate::telemetry::export::Row::new($name, $help, $f).label($key, $value))
    };
    (family, $f:expr, $out:ident, $key:literal) => {
        $crate::telemetry::export::family_rows($f, $key, $out)
    };
}

pub(crate) use export_field;
pub(crate) use metric_set;

/// The rows of one scrape, grouped by family for prometheus-client.
#[derive(Debug)]
struct Scrape(Vec<Row>);

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Families in the order their first row came; the rows of each
        // family together, in their own order.
        let mut order: Vec<&'static str> = Vec::new();
        for row in &self.0 {
            if !order.contains(&row.name) {
                order.push(row.name);
            }
        }
        for name in order {
            let mut rows = self.0.iter().filter(|r| r.name == name).peekable();
            let Some(first) = rows.peek() else { continue };
            let mut family =
                encoder.encode_descriptor(name, first.help, None, first.value.metric_type())?;
            for row in rows {
                if !matches!(row.value, Value::Empty(_)) {
                    row.value.encode(family.encode_family(&row.labels)?)?;
                }
            }
        }
        Ok(())
    }
}

/// The text exposition of `rows`.
pub fn encode(rows: Vec<Row>) -> String {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(Scrape(rows)));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

/// Rows of a metric set shared through an `Arc`.
impl<T: MetricSet> MetricSet for Arc<T> {
    fn rows(&self, out: &mut Vec<Row>) {
        self.as_ref().rows(out)
    }
}
