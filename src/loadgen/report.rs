//! The run report: the JSON document `loadgen` writes and its text summary.

use std::time::Duration;

use serde_json::json;

use super::hist::{round2, Hist};
use super::track::{self, Class, Tracker};
use super::{Mode, Options};

fn class_json(c: &track::ClassFigures, lost: u64) -> serde_json::Value {
    let window_s = c
        .last_terminal_us
        .saturating_sub(c.first_intended_us.unwrap_or(0)) as f64
        / 1e6;
    json!({
        "started": c.started,
        "completed": c.completed,
        "failed": c.failed,
        "cancelled": c.cancelled,
        "lost": lost,
        "errors": c.output_mismatch + c.start_failed + lost,
        "workflows_per_s": if window_s > 0.0 { round2(c.completed as f64 / window_s) } else { 0.0 },
        "latency_ms": c.latency.summary_ms(),
    })
}

pub(super) fn build_report(
    opts: &Options,
    t: &Tracker,
    lost: [u64; 2],
    wall: Duration,
) -> serde_json::Value {
    let sum = |f: fn(&track::ClassFigures) -> u64| t.classes.iter().map(f).sum::<u64>();
    let completed = sum(|c| c.completed);
    let mismatch = sum(|c| c.output_mismatch);
    let start_failed = sum(|c| c.start_failed);
    let lost_all = lost[0] + lost[1];
    let first = t
        .classes
        .iter()
        .filter_map(|c| c.first_intended_us)
        .min()
        .unwrap_or(0);
    let last = t
        .classes
        .iter()
        .map(|c| c.last_terminal_us)
        .max()
        .unwrap_or(0)
        .max(t.last_task_us);
    let window_s = last.saturating_sub(first) as f64 / 1e6;
    let per_s = |n: u64| {
        if window_s > 0.0 {
            round2(n as f64 / window_s)
        } else {
            0.0
        }
    };
    let mut latency = Hist::default();
    for c in &t.classes {
        latency.merge(&c.latency);
    }
    let mut lat = latency.summary_ms();
    lat["mean"] = json!(round2(latency.mean() / 1000.0));
    let mode = match &opts.mode {
        Mode::Open { .. } => "open",
        Mode::Closed { .. } => "closed",
    };
    let mut report = json!({
        "v": 1,
        "run_id": opts.run_id,
        "mode": mode,
        "pipeline": opts.pipeline.name,
        "config": opts.config,
        "workflows": sum(|c| c.started),
        "completed": completed,
        "failed": sum(|c| c.failed),
        "cancelled": sum(|c| c.cancelled),
        "lost": lost_all,
        "errors": mismatch + start_failed + lost_all,
        "errors_detail": {
            "output_mismatch": mismatch,
            "lost": lost_all,
            "start_failed": start_failed,
        },
        "error_samples": t.mismatch_samples,
        "workflows_per_s": per_s(completed),
        "tasks": t.tasks,
        "tasks_per_s": per_s(t.tasks),
        "window_s": round2(window_s),
        "wall_s": round2(wall.as_secs_f64()),
        "latency_ms": lat,
        "stages": {
            "definition": "start: intended start -> start reply; task: task_dispatched.at -> the attempt's result event .at; \
                queue_wait: task_dispatched.at -> worker start; run: worker start -> result ready; \
                result: result ready -> task_succeeded.at (journaled); overhead: per completed workflow, end-to-end \
                minus the sum along its critical path (the step that finished last, back through the dependency that \
                finished last) of queue_wait + run (in-process workers) or of task (external workers). \
                queue_wait, run and result need --workers-in-process.",
            "start_ms": t.stages.start.summary_ms(),
            "task_ms": t.stages.task.summary_ms(),
            "queue_wait_ms": t.stages.queue_wait.summary_ms(),
            "run_ms": t.stages.run.summary_ms(),
            "result_ms": t.stages.result.summary_ms(),
            "overhead_ms": t.stages.overhead.summary_ms(),
        },
        "event_messages": {
            "applied": t.messages,
            "duplicate_events": t.duplicates,
            "refused": t.refused,
        },
    });
    if matches!(opts.mode, Mode::Open { burst: Some(_), .. }) {
        let mut per = serde_json::Map::new();
        for class in Class::ALL {
            per.insert(
                class.name().into(),
                class_json(&t.classes[class as usize], lost[class as usize]),
            );
        }
        report["per_class"] = serde_json::Value::Object(per);
    }
    report
}

/// The report as text: one `loadgen key=value ...` line, then detail lines.
pub(super) fn text_summary(r: &serde_json::Value) -> String {
    let l = &r["latency_ms"];
    let mut out = format!(
        "loadgen run={} mode={} pipeline={} workflows={} completed={} failed={} cancelled={} lost={} errors={} \
         wf_per_s={} tasks_per_s={} p50_ms={} p90_ms={} p99_ms={} max_ms={}\n",
        r["run_id"].as_str().unwrap_or(""),
        r["mode"].as_str().unwrap_or(""),
        r["pipeline"].as_str().unwrap_or(""),
        r["workflows"], r["completed"], r["failed"], r["cancelled"], r["lost"], r["errors"],
        r["workflows_per_s"], r["tasks_per_s"], l["p50"], l["p90"], l["p99"], l["max"],
    );
    for s in ["start", "task", "queue_wait", "run", "result", "overhead"] {
        let h = &r["stages"][format!("{s}_ms")];
        if h["count"].as_u64().unwrap_or(0) > 0 {
            out += &format!(
                "stage {s} count={} p50_ms={} p90_ms={} p99_ms={} max_ms={}\n",
                h["count"], h["p50"], h["p90"], h["p99"], h["max"]
            );
        }
    }
    if let Some(per) = r["per_class"].as_object() {
        for (name, c) in per {
            out += &format!(
                "class {name} started={} completed={} failed={} lost={} errors={} wf_per_s={} p50_ms={} p99_ms={} max_ms={}\n",
                c["started"], c["completed"], c["failed"], c["lost"], c["errors"],
                c["workflows_per_s"], c["latency_ms"]["p50"], c["latency_ms"]["p99"], c["latency_ms"]["max"],
            );
        }
    }
    let o = &r["orchestrator"];
    if o.is_object() {
        out += &format!(
            "orchestrator pid={} cpu_s={} cpu_share={} rss_mib_start={} rss_mib_end={} peak_rss_mib={}\n",
            o["pid"], o["cpu_s"], o["cpu_share"], o["rss_mib_start"], o["rss_mib_end"], o["peak_rss_mib"]
        );
    }
    let g = &r["loadgen"];
    out += &format!(
        "loadgen_cpu cpu_s={} core_cpu_s={} core_cpu_share={} workers_cpu_s={} peak_rss_mib={}\n",
        g["cpu_s"], g["core_cpu_s"], g["core_cpu_share"], g["workers_cpu_s"], g["peak_rss_mib"]
    );
    if let Some(samples) = r["error_samples"].as_array() {
        for s in samples {
            out += &format!("mismatch {}\n", s.as_str().unwrap_or(""));
        }
    }
    if let Some(samples) = r["lost_samples"].as_array() {
        for s in samples {
            out += &format!("lost {}\n", s.as_str().unwrap_or(""));
        }
    }
    out
}
