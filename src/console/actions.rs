//! What a signed-in operator can do from the console: retry a failed
//! workflow, rerun one from a step, do either to an inbox group, start a
//! batch job that retries every failed workflow of a pipeline, or send a
//! signal to a workflow's wait step ([`super::signal`]).
//!
//! Every action is a form post checked by [`super::auth`], and every post
//! without `confirm` only previews: it shows what would happen (for a
//! batch job, the batch machinery's own dry run) and a form that confirms.
//! Confirmed actions run through the admin verbs and are audited like
//! admin requests over NATS (account `console`).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;

use super::html::{badge, escape, url_value, Nav};
use super::inbox::{failed, Failed};
use super::routes::{see_other, Params};
use super::signal;
use super::Console;
use crate::admin::{AdminError, BatchCreateRequest, Filter, LocalAdmin, RerunRequest};
use crate::protocol::VERSION;

/// Workflows one group action changes at most (the group may be larger;
/// the preview says how many are left for a second round).
pub const GROUP_ACTION_MAX: usize = 1_000;
/// Members a preview lists.
const PREVIEW_SHOWN: usize = 20;
/// How the audit log names the console as a caller.
const AUDIT_CALLER: &str = r#"{"acc":"console","user":"operator"}"#;

/// Writes the audit line of one confirmed action.
pub(super) fn audit<T: Serialize>(
    verb: &str,
    request: serde_json::Value,
    result: &Result<T, AdminError>,
) {
    let reply = match result {
        Ok(_) => serde_json::json!({ "v": VERSION }),
        Err(e) => serde_json::json!({ "v": VERSION, "code": e.code }),
    };
    crate::audit::record(
        verb,
        Some(AUDIT_CALLER),
        request.to_string().as_bytes(),
        reply.to_string().as_bytes(),
    );
}

pub async fn post(State(c): State<Arc<Console>>, headers: HeaderMap, body: Body) -> Response {
    let Some(admin) = c.admin() else {
        return c.starting(&headers);
    };
    // A signal's payload makes the largest form: the limit follows the
    // configured payload limit, and a larger post gets a page that says so.
    let payload_max = admin.engine().ctx().config.signals.payload_bytes_max;
    let bytes_max = signal::form_bytes_max(payload_max);
    let Ok(body) = to_bytes(body, bytes_max).await else {
        return c.error(
            &headers,
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "the form is over {bytes_max} bytes (a signal payload may hold at most \
                 {payload_max} bytes of JSON, engine.signal_payload_bytes_max); nothing was done"
            ),
        );
    };
    let form = Params::parse(&body);
    let session = match c.auth.check_post(&headers, form.get("csrf")) {
        Ok(s) => s,
        Err(refusal) => {
            tracing::warn!(reason = refusal.message(), "console action refused");
            return c.error(&headers, StatusCode::FORBIDDEN, refusal.message());
        }
    };
    let confirm = form.get("confirm") == Some("1");
    let action = form.get("action").unwrap_or("");
    let result = match action {
        "retry" | "rerun" => one(admin, &form, action, confirm).await,
        "retry_group" | "rerun_group" => group(&c, admin, &form, action, confirm).await,
        "batch_retry" => batch(admin, &form, confirm).await,
        "signal" => signal::send(admin, &form, &session.csrf, confirm).await,
        other => Err(Outcome::Bad(format!("unknown action {other:?}"))),
    };
    match result {
        Ok(Done::Redirect(to)) => see_other(&to, None),
        Ok(Done::Page(title, mut html)) => {
            if !confirm {
                confirm_form(&mut html, &form, &session.csrf);
            }
            c.page(&headers, &title, Nav::Other, &html)
        }
        Err(Outcome::Bad(m)) => c.error(&headers, StatusCode::BAD_REQUEST, &m),
        Err(Outcome::Invalid(html)) => {
            let mut r = c.page(&headers, "Not sent", Nav::Other, &html);
            *r.status_mut() = StatusCode::BAD_REQUEST;
            r
        }
        Err(Outcome::Admin(e)) => c.error(&headers, StatusCode::CONFLICT, &e.message),
    }
}

pub(super) enum Done {
    Redirect(String),
    /// A page: the preview (a confirm form is added) or the result.
    Page(String, String),
}

pub(super) enum Outcome {
    Bad(String),
    /// A form that cannot be sent as it is: a page that says why and
    /// offers the form again.
    Invalid(String),
    Admin(AdminError),
}

impl From<AdminError> for Outcome {
    fn from(e: AdminError) -> Self {
        Outcome::Admin(e)
    }
}

/// The preview's confirm form: the same fields, plus `confirm=1`.
fn confirm_form(html: &mut String, form: &Params, csrf: &str) {
    html.push_str("<form method=\"post\" action=\"/console/action\" id=\"confirm-form\">");
    // A signal's confirm form repeats its `signal_id`, so a second click
    // on Confirm is a duplicate of the first.
    for key in [
        "action",
        "id",
        "step",
        "pipeline",
        "group_step",
        "kind",
        "name",
        "signal_id",
        "payload",
    ] {
        if let Some(v) = form.get(key) {
            let _ = write!(
                html,
                "<input type=\"hidden\" name=\"{key}\" value=\"{}\">",
                escape(v)
            );
        }
    }
    let _ = write!(
        html,
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"confirm\" value=\"1\">\
         <button type=\"submit\" id=\"confirm\">Confirm</button> <a href=\"javascript:history.back()\">Cancel</a></form>",
        escape(csrf)
    );
}

async fn one(
    admin: &LocalAdmin,
    form: &Params,
    action: &str,
    confirm: bool,
) -> Result<Done, Outcome> {
    let id = form
        .get("id")
        .ok_or_else(|| Outcome::Bad("which workflow? (id)".into()))?;
    let step = form.get("step");
    if action == "rerun" && step.is_none() {
        return Err(Outcome::Bad("rerun needs a step".into()));
    }
    if confirm {
        let (verb, request, result) = match step.filter(|_| action == "rerun") {
            Some(step) => {
                let r = RerunRequest {
                    v: VERSION,
                    id: id.to_string(),
                    from_step: step.to_string(),
                };
                let json = serde_json::to_value(&r).unwrap_or_default();
                ("rerun", json, admin.rerun(r).await)
            }
            None => (
                "retry",
                serde_json::json!({ "v": VERSION, "id": id }),
                admin.retry(id).await,
            ),
        };
        audit(verb, request, &result);
        result?;
        return Ok(Done::Redirect(format!(
            "/console/workflow?id={}",
            url_value(id)
        )));
    }
    let wf = admin.describe(id).await?;
    let mut h = String::new();
    let what = match step.filter(|_| action == "rerun") {
        Some(s) => format!(
            "Rerun from step <code>{}</code>: that step and every step after it run again in a new generation.",
            escape(s)
        ),
        None => "Retry: the failed steps run again in a new generation; succeeded steps keep their outputs.".into(),
    };
    let _ = write!(
        h,
        "<h1>Preview</h1><p>Workflow <a href=\"/console/workflow?id={}\"><code>{}</code></a> is {} (generation {}).</p><p>{what}</p>",
        escape(&url_value(id)),
        escape(id),
        badge(wf.status.as_deref().unwrap_or("?")),
        wf.generation.unwrap_or(0)
    );
    for s in wf.steps.iter().flatten().filter(|s| s.status == "failed") {
        let _ = write!(
            h,
            "<p>failed step <code>{}</code>: <span class=\"error\">{}</span></p>",
            escape(&s.name),
            escape(s.last_error.as_deref().unwrap_or(""))
        );
    }
    Ok(Done::Page("Preview".into(), h))
}

async fn group(
    c: &Console,
    admin: &LocalAdmin,
    form: &Params,
    action: &str,
    confirm: bool,
) -> Result<Done, Outcome> {
    let (Some(pipeline), Some(step), Some(kind)) = (
        form.get("pipeline"),
        form.get("group_step"),
        form.get("kind"),
    ) else {
        return Err(Outcome::Bad(
            "which group? (pipeline, group_step, kind)".into(),
        ));
    };
    let from_step = if action == "rerun_group" {
        Some(
            form.get("step")
                .ok_or_else(|| Outcome::Bad("rerun needs a step".into()))?,
        )
    } else {
        None
    };
    let (all, _) = failed(admin, c.opts.inbox_scan_max as usize).await?;
    let members: Vec<&Failed> = all
        .iter()
        .filter(|f| f.key.pipeline == pipeline && f.key.step == step && f.key.kind == kind)
        .collect();
    let chosen = &members[..members.len().min(GROUP_ACTION_MAX)];
    let verb = if from_step.is_some() {
        "rerun"
    } else {
        "retry"
    };
    let mut h = String::new();
    if !confirm {
        let _ = write!(
            h,
            "<h1>Preview</h1><p>{} {} failed workflows of <code>{}</code> (step <code>{}</code>, error kind <code>{}</code>){}.</p>",
            if verb == "rerun" { "Rerun" } else { "Retry" },
            chosen.len(),
            escape(pipeline),
            escape(step),
            escape(kind),
            from_step
                .map(|s| format!(" from step <code>{}</code>", escape(s)))
                .unwrap_or_default()
        );
        if members.len() > chosen.len() {
            let _ = write!(
                h,
                "<p class=\"muted\">{} more stay failed; repeat after this round.</p>",
                members.len() - chosen.len()
            );
        }
        h.push_str("<ul id=\"preview-members\">");
        for f in chosen.iter().take(PREVIEW_SHOWN) {
            let _ = write!(h, "<li><code>{}</code></li>", escape(&f.id));
        }
        if chosen.len() > PREVIEW_SHOWN {
            let _ = write!(h, "<li>and {} more</li>", chosen.len() - PREVIEW_SHOWN);
        }
        h.push_str("</ul>");
        return Ok(Done::Page("Preview".into(), h));
    }
    let (mut done, mut refused) = (0usize, Vec::new());
    for f in chosen {
        let (request, result) = match from_step {
            Some(s) => {
                let r = RerunRequest {
                    v: VERSION,
                    id: f.id.clone(),
                    from_step: s.to_string(),
                };
                (
                    serde_json::to_value(&r).unwrap_or_default(),
                    admin.rerun(r).await,
                )
            }
            None => (
                serde_json::json!({ "v": VERSION, "id": f.id }),
                admin.retry(&f.id).await,
            ),
        };
        audit(verb, request, &result);
        match result {
            Ok(_) => done += 1,
            Err(e) => refused.push((f.id.clone(), e.message)),
        }
    }
    let _ = write!(
        h,
        "<h1>Done</h1><p id=\"group-result\">{verb}: {done} reopened, {} refused.</p>",
        refused.len()
    );
    for (id, why) in refused.iter().take(PREVIEW_SHOWN) {
        let _ = write!(
            h,
            "<p><code>{}</code>: <span class=\"error\">{}</span></p>",
            escape(id),
            escape(why)
        );
    }
    h.push_str("<p><a href=\"/console/inbox\">Back to the failed inbox</a></p>");
    Ok(Done::Page("Done".into(), h))
}

async fn batch(admin: &LocalAdmin, form: &Params, confirm: bool) -> Result<Done, Outcome> {
    let pipeline = form
        .get("pipeline")
        .ok_or_else(|| Outcome::Bad("which pipeline?".into()))?;
    let request = BatchCreateRequest {
        v: VERSION,
        action: "retry".into(),
        filter: Filter {
            status: Some("failed".into()),
            pipeline: Some(pipeline.to_string()),
            ..Filter::default()
        },
        from_step: None,
        reason: None,
        rate: None,
        dry_run: !confirm,
    };
    let json = serde_json::to_value(&request).unwrap_or_default();
    let result = admin.batch_create(request).await;
    if confirm {
        audit("batch.create", json, &result);
    }
    let reply = result?;
    let mut h = String::new();
    if !confirm {
        let _ = write!(
            h,
            "<h1>Preview (dry run)</h1><p>A batch job would retry <b id=\"dry-run-count\">{}</b> failed workflows of <code>{}</code>, \
             paced by the batch runner, and survive restarts. Among them:</p><ul>",
            reply.count.unwrap_or(0),
            escape(pipeline)
        );
        for w in &reply.sample {
            let _ = write!(h, "<li><code>{}</code></li>", escape(&w.id));
        }
        h.push_str("</ul>");
        return Ok(Done::Page("Preview".into(), h));
    }
    match reply.job {
        Some(job) => {
            let _ = write!(
                h,
                "<h1>Batch job started</h1><p>Job <code id=\"job\">{}</code>: {} of {} workflows, {}. \
                 Follow it with <code>orchestrator batch status {}</code>.</p>",
                escape(&job.id),
                escape(&job.action),
                job.total,
                escape(&job.state),
                escape(&job.id)
            );
        }
        None => h.push_str("<h1>Batch job</h1><p>The runner answered without a job.</p>"),
    }
    Ok(Done::Page("Batch job".into(), h))
}
