//! One workflow: its summary, DAG, steps (state, output, progress),
//! timeline of attempts, lineage across generations, the signals its wait
//! steps wait for ([`super::signal`]) and input; live updates over SSE
//! ([`super::live`]).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::html::{badge, escape, json_block, time, url_value, Nav};
use super::routes::Params;
use super::{dag, signal, timeline, Console};
use crate::admin::{code, HistoryEvent, HistoryRequest, LocalAdmin, WorkflowReply};
use crate::protocol::VERSION;

/// History pages (of `HISTORY_PAGE_MAX` events) read for one page at most.
pub const HISTORY_PAGES_MAX: usize = 20;

/// A workflow's whole history, up to [`HISTORY_PAGES_MAX`] pages; `true`
/// when it was cut there.
pub async fn full_history(
    admin: &LocalAdmin,
    id: &str,
) -> Result<(Vec<HistoryEvent>, bool), crate::admin::AdminError> {
    let mut events = Vec::new();
    let mut after_seq = 0;
    for _ in 0..HISTORY_PAGES_MAX {
        let page = admin
            .history(HistoryRequest {
                v: VERSION,
                id: id.to_string(),
                after_seq,
                limit: None,
            })
            .await?;
        events.extend(page.events);
        match page.next_after_seq {
            Some(s) => after_seq = s,
            None => return Ok((events, false)),
        }
    }
    Ok((events, true))
}

pub async fn show(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let Some(admin) = c.admin() else {
        return c.starting(&headers);
    };
    let params = Params::query(raw.as_deref());
    let Some(id) = params.get("id") else {
        return c.error(
            &headers,
            StatusCode::BAD_REQUEST,
            "which workflow? (?id=...)",
        );
    };
    let wf = match admin.describe(id).await {
        Ok(w) => w,
        Err(e) if e.code == code::UNKNOWN_WORKFLOW => {
            return c.error(&headers, StatusCode::NOT_FOUND, &e.message)
        }
        Err(e) => return c.error(&headers, StatusCode::SERVICE_UNAVAILABLE, &e.message),
    };
    let shape = admin.shape(id).await;
    let (events, cut) = match full_history(admin, id).await {
        Ok(h) => h,
        Err(e) => return c.error(&headers, StatusCode::SERVICE_UNAVAILABLE, &e.message),
    };
    let now = admin.engine().ctx().clock.now_ms();
    let csrf = c.session(&headers).map(|s| s.csrf);
    let steps = wf.steps.clone().unwrap_or_default();

    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>Workflow <code>{}</code></h1>\
         <div data-live=\"/console/live?id={}\"></div><div id=\"live-main\">",
        escape(id),
        escape(&url_value(id))
    );
    summary(&mut b, &wf);
    if let Some(csrf) = &csrf {
        actions(&mut b, id, &wf, csrf);
    }
    b.push_str("<h2>Steps</h2>");
    match &shape {
        Ok(s) => b.push_str(&dag::svg(&s.steps, &steps)),
        Err(e) => {
            let _ = write!(b, "<p class=\"error\">{}</p>", escape(&e.message));
        }
    }
    step_table(&mut b, &steps, shape.as_ref().ok());
    b.push_str("<h2>Timeline</h2>");
    b.push_str(&timeline::table(&timeline::attempts(&events, &steps), now));
    if cut {
        b.push_str("<p class=\"muted\">The history is longer than the console reads; `orchestrator history` pages through all of it.</p>");
    }
    b.push_str("<h2>Lineage</h2>");
    lineage(&mut b, &events);
    b.push_str("</div>");
    // Outside `#live-main`: a live update must not wipe a payload being
    // typed. A form that went stale (the step stopped waiting) is still
    // answered by the verb: the signal is kept as pending, or refused.
    signal::section(&mut b, id, &wf, csrf.as_deref(), || {
        uuid::Uuid::now_v7().to_string()
    });
    b.push_str("<h2>Input</h2>");
    match &shape {
        Ok(s) => match serde_json::from_str::<serde_json::Value>(&s.input) {
            Ok(v) => b.push_str(&json_block(&v)),
            Err(_) => {
                let _ = write!(b, "<pre class=\"json\">{}</pre>", escape(&s.input));
            }
        },
        Err(_) => b.push_str("<p class=\"muted\">-</p>"),
    }
    b.push_str("<h2>Live events</h2><div id=\"events-log\"><div class=\"muted\">events of this workflow appear here as they happen</div></div>");
    c.page(&headers, id, Nav::Other, &b)
}

fn summary(b: &mut String, wf: &WorkflowReply) {
    let _ = write!(
        b,
        "<div class=\"grid\" id=\"summary\">\
         <div class=\"card\">status <b id=\"status\">{}</b></div>\
         <div class=\"card\">pipeline <b>{} v{}</b></div>\
         <div class=\"card\">generation <b>{}</b></div>\
         <div class=\"card\">created <b>{}</b></div>\
         <div class=\"card\">last change <b>{}</b></div>\
         <div class=\"card\">finished <b>{}</b></div></div>",
        badge(wf.status.as_deref().unwrap_or("?")),
        escape(wf.pipeline.as_deref().unwrap_or("?")),
        wf.pipeline_version.unwrap_or(0),
        wf.generation.unwrap_or(0),
        time(wf.created_at_ms),
        time(wf.updated_at_ms),
        time(wf.finished_at_ms),
    );
    if let Some(r) = &wf.reason {
        let _ = write!(b, "<p class=\"error\" id=\"reason\">{}</p>", escape(r));
    }
}

fn actions(b: &mut String, id: &str, wf: &WorkflowReply, csrf: &str) {
    let status = wf.status.as_deref().unwrap_or("");
    let id = escape(id);
    let csrf = escape(csrf);
    b.push_str("<div class=\"notice\" id=\"actions\">");
    if status == "failed" || status == "cancelled" {
        let _ = write!(
            b,
            "<form method=\"post\" action=\"/console/action\" class=\"inline\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"action\" value=\"retry\">\
             <input type=\"hidden\" name=\"id\" value=\"{id}\">\
             <button type=\"submit\" id=\"retry\">Retry failed steps…</button></form> ",
        );
    }
    if matches!(status, "failed" | "cancelled" | "completed") {
        let _ = write!(
            b,
            "<form method=\"post\" action=\"/console/action\" class=\"inline\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"action\" value=\"rerun\">\
             <input type=\"hidden\" name=\"id\" value=\"{id}\">\
             <select name=\"step\">"
        );
        for s in wf.steps.iter().flatten() {
            let n = escape(&s.name);
            let _ = write!(b, "<option>{n}</option>");
        }
        b.push_str("</select> <button type=\"submit\" class=\"secondary\">Rerun from step…</button></form>");
    } else {
        b.push_str(
            "<span class=\"muted\">retry and rerun apply once the workflow has ended</span>",
        );
    }
    b.push_str("</div>");
}

fn step_table(
    b: &mut String,
    steps: &[crate::admin::StepReply],
    shape: Option<&crate::admin::WorkflowShape>,
) {
    b.push_str(
        "<table id=\"steps\"><thead><tr><th>step</th><th>task type</th><th>state</th><th class=\"num\">attempts</th>\
         <th>worker</th><th>last error</th><th>output</th><th>progress</th></tr></thead><tbody>",
    );
    for (i, s) in steps.iter().enumerate() {
        let task_type = shape
            .and_then(|sh| sh.steps.get(i))
            .map_or("-", |st| st.task_type.as_str());
        let _ = write!(
            b,
            "<tr data-step=\"{n}\"><td>{n}</td><td>{t}</td><td>{st}</td><td class=\"num\">{a}</td><td>{w}</td>\
             <td class=\"error\">{e}</td><td>{o}</td><td>{p}</td></tr>",
            n = escape(&s.name),
            t = escape(task_type),
            st = badge(&s.status),
            a = s.attempts,
            w = escape(s.worker.as_deref().unwrap_or("-")),
            e = escape(s.last_error.as_deref().unwrap_or("")),
            o = s.output.as_ref().map(json_block).unwrap_or_default(),
            p = s
                .progress
                .as_ref()
                .map(|p| format!("{} <span class=\"muted\">at {}</span>", json_block(p), time(s.progress_at_ms)))
                .unwrap_or_default(),
        );
    }
    b.push_str("</tbody></table>");
}

/// One row per generation: how it began (start, retry, rerun from a
/// step), when, and how it ended.
fn lineage(b: &mut String, events: &[HistoryEvent]) {
    b.push_str(
        "<table id=\"lineage\"><thead><tr><th>gen</th><th>began (UTC)</th><th>how</th>\
         <th>ended (UTC)</th><th>outcome</th></tr></thead><tbody>",
    );
    let mut rows: Vec<(u32, u64, String, Option<u64>, String)> = Vec::new();
    for e in events {
        match e.event.as_str() {
            "workflow_started" => {
                rows.push((e.generation, e.at, "started".into(), None, String::new()))
            }
            "workflow_reopened" => {
                let how = match &e.step {
                    Some(s) => format!("rerun from {s}"),
                    None => "retry of the failed steps".into(),
                };
                rows.push((e.generation, e.at, how, None, String::new()));
            }
            "workflow_completed" | "workflow_failed" | "workflow_cancelled" => {
                if let Some(r) = rows.iter_mut().rev().find(|r| r.0 == e.generation) {
                    r.3 = Some(e.at);
                    let what = e.event.trim_start_matches("workflow_");
                    r.4 = match &e.error {
                        Some(err) => format!("{} {}", badge(what), escape(err)),
                        None => badge(what),
                    };
                }
            }
            _ => {}
        }
    }
    for (g, at, how, end, outcome) in &rows {
        let _ = write!(
            b,
            "<tr><td>{g}</td><td>{}</td><td>{}</td><td>{}</td><td>{outcome}</td></tr>",
            time(Some(*at)),
            escape(how),
            time(*end)
        );
    }
    b.push_str("</tbody></table>");
}
