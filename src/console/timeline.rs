//! Every attempt of one workflow, from its history: when it was
//! dispatched, how it ended, on which worker, after how long, and with
//! which error; drawn as a Gantt chart (one bar per attempt on a shared
//! time axis).

use std::fmt::Write as _;

use super::html::{duration, escape, time};
use crate::admin::{HistoryEvent, StepReply};

/// One attempt of one step in one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub generation: u32,
    pub step: String,
    pub attempt: u32,
    pub dispatched_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    /// `running`, `succeeded`, `failed` or `timed_out`.
    pub outcome: &'static str,
    pub worker: Option<String>,
    pub error: Option<String>,
    /// Dispatch to the worker's start, when known (the current attempt of
    /// a step, whose start `describe` reports).
    pub queue_wait_ms: Option<u64>,
}

/// The attempts in `events` (a workflow's history, in order), with the
/// queue wait of the current attempts taken from `steps`.
pub fn attempts(events: &[HistoryEvent], steps: &[StepReply]) -> Vec<Attempt> {
    let mut out: Vec<Attempt> = Vec::new();
    for e in events {
        let (Some(step), Some(attempt)) = (&e.step, e.attempt) else {
            continue;
        };
        let find = |out: &mut Vec<Attempt>| {
            out.iter_mut().rposition(|a| {
                a.generation == e.generation && a.step == *step && a.attempt == attempt
            })
        };
        match e.event.as_str() {
            // A re-sent dispatch keeps the attempt's first time.
            "task_dispatched" if find(&mut out).is_none() => {
                out.push(Attempt {
                    generation: e.generation,
                    step: step.clone(),
                    attempt,
                    dispatched_at_ms: e.at,
                    ended_at_ms: None,
                    outcome: "running",
                    worker: None,
                    error: None,
                    queue_wait_ms: None,
                });
            }
            "task_succeeded" | "task_failed" | "task_timed_out" => {
                if let Some(i) = find(&mut out) {
                    let a = &mut out[i];
                    a.ended_at_ms = Some(e.at);
                    a.outcome = match e.event.as_str() {
                        "task_succeeded" => "succeeded",
                        "task_failed" => "failed",
                        _ => "timed_out",
                    };
                    a.worker = e.worker.clone().or(a.worker.take());
                    a.error = e.error.clone();
                }
            }
            _ => {}
        }
    }
    for s in steps {
        let (Some(d), Some(st)) = (s.dispatched_at_ms, s.started_at_ms) else {
            continue;
        };
        if let Some(a) = out
            .iter_mut()
            .rev()
            .find(|a| a.step == s.name && a.dispatched_at_ms == d)
        {
            a.queue_wait_ms = Some(st.saturating_sub(d));
            if a.worker.is_none() {
                a.worker = s.worker.clone();
            }
        }
    }
    out
}

/// The timeline table; `now_ms` ends the bars of running attempts.
pub fn table(attempts: &[Attempt], now_ms: u64) -> String {
    let start = attempts
        .iter()
        .map(|a| a.dispatched_at_ms)
        .min()
        .unwrap_or(now_ms);
    let end = attempts
        .iter()
        .map(|a| a.ended_at_ms.unwrap_or(now_ms))
        .max()
        .unwrap_or(now_ms)
        .max(start + 1);
    let span = (end - start) as f64;
    let mut s = String::from(
        "<table id=\"timeline\"><thead><tr><th>gen</th><th>step</th><th class=\"num\">attempt</th>\
         <th>outcome</th><th>worker</th><th class=\"num\">duration</th><th class=\"num\">queue wait</th>\
         <th>dispatched (UTC)</th><th>error</th><th class=\"bar-cell\">",
    );
    let _ = write!(
        s,
        "{} → {}</th></tr></thead><tbody>",
        time(Some(start)),
        time(Some(end))
    );
    for a in attempts {
        let stop = a.ended_at_ms.unwrap_or(now_ms).max(a.dispatched_at_ms);
        let left = (a.dispatched_at_ms - start) as f64 / span * 100.0;
        let width = ((stop - a.dispatched_at_ms) as f64 / span * 100.0).max(0.3);
        let _ = write!(
            s,
            "<tr class=\"attempt\" data-step=\"{step}\" data-attempt=\"{n}\" data-outcome=\"{o}\">\
             <td>{g}</td><td>{step}</td><td class=\"num\">#{n}{retry}</td><td><span class=\"badge s-{o}\">{o}</span></td>\
             <td>{w}</td><td class=\"num\">{d}</td><td class=\"num\">{q}</td><td>{at}</td><td class=\"error\">{err}</td>\
             <td class=\"bar-cell\"><div class=\"bar {o}\" style=\"left:{left:.2}%;width:{width:.2}%\"></div></td></tr>",
            step = escape(&a.step),
            n = a.attempt,
            retry = if a.attempt > 1 { " (retry)" } else { "" },
            o = a.outcome,
            g = a.generation,
            w = escape(a.worker.as_deref().unwrap_or("-")),
            d = duration(stop - a.dispatched_at_ms),
            q = a.queue_wait_ms.map_or_else(|| "-".to_string(), duration),
            at = time(Some(a.dispatched_at_ms)),
            err = escape(a.error.as_deref().unwrap_or("")),
        );
    }
    if attempts.is_empty() {
        s.push_str("<tr><td colspan=\"10\" class=\"muted\">no attempt yet</td></tr>");
    }
    s.push_str("</tbody></table>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, at: u64, event: &str, step: &str, attempt: u32) -> HistoryEvent {
        HistoryEvent {
            seq,
            at,
            event: event.into(),
            generation: 0,
            step: Some(step.into()),
            attempt: Some(attempt),
            worker: None,
            error: None,
            output: None,
            progress: None,
            signal: None,
            signal_id: None,
            due_at: None,
            child: None,
        }
    }

    #[test]
    fn a_retried_step_has_one_row_per_attempt_with_its_error() {
        let mut failed = ev(3, 150, "task_failed", "embed", 1);
        failed.worker = Some("w1".into());
        failed.error = Some("simulated: injected failure".into());
        let mut ok = ev(5, 400, "task_succeeded", "embed", 2);
        ok.worker = Some("w2".into());
        let events = [
            ev(1, 100, "task_dispatched", "embed", 1),
            failed,
            ev(4, 300, "task_dispatched", "embed", 2),
            ok,
        ];
        let steps = [StepReply {
            name: "embed".into(),
            dispatched_at_ms: Some(300),
            started_at_ms: Some(320),
            ..StepReply::default()
        }];
        let a = attempts(&events, &steps);
        assert_eq!(a.len(), 2);
        assert_eq!(
            (a[0].outcome, a[0].worker.as_deref(), a[0].error.as_deref()),
            ("failed", Some("w1"), Some("simulated: injected failure"))
        );
        assert_eq!(
            (a[1].attempt, a[1].outcome, a[1].queue_wait_ms),
            (2, "succeeded", Some(20))
        );
        let html = table(&a, 1_000);
        assert!(html.contains("#2 (retry)"), "{html}");
        assert!(html.contains("simulated: injected failure"), "{html}");
    }

    #[test]
    fn a_running_attempt_lasts_until_now() {
        let a = attempts(&[ev(1, 100, "task_dispatched", "x", 1)], &[]);
        assert_eq!(a[0].outcome, "running");
        assert!(table(&a, 2_100).contains("2.0s"));
    }
}
