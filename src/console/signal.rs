//! Signals from the console: on a workflow page, a form per wait step
//! that waits now; posted through [`super::actions`] (session, CSRF,
//! preview, confirmation, audit) to the admin verb `signal`, the same code
//! `orchestrator signal` reaches over NATS.
//!
//! Each rendered form carries a fresh signal id, the verb's idempotency
//! key, and the preview's confirm form repeats it: a double click on
//! Confirm, or the same form sent again, is answered `duplicate` and
//! changes nothing.

use std::fmt::Write as _;

use super::actions::{Done, Outcome};
use super::html::{escape, json_block, time, url_value};
use super::routes::{Params, FORM_MAX_BYTES};
use crate::admin::{LocalAdmin, SignalReply, SignalRequest, WorkflowReply};
use crate::protocol::VERSION;

/// The payload a form starts with, and the one sent when it is left empty.
const PAYLOAD_DEFAULT: &str = "{}";

/// One step that waits for a signal now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting<'a> {
    pub step: &'a str,
    pub signal: &'a str,
    /// When the wait times out, unix ms.
    pub due_ms: Option<u64>,
}

/// The steps of `wf` that wait for a signal now, in pipeline order.
pub fn waiting(wf: &WorkflowReply) -> Vec<Waiting<'_>> {
    wf.steps
        .iter()
        .flatten()
        .filter_map(|s| {
            s.waiting_for.as_deref().map(|signal| Waiting {
                step: &s.name,
                signal,
                due_ms: s.wait_due_ms,
            })
        })
        .collect()
}

/// Most bytes of an action post: room for a payload of `payload_bytes_max`
/// bytes of compact JSON percent-encoded (at most 3 bytes per byte) with as
/// much again for the whitespace a typed payload carries (a line break
/// travels as `%0D%0A`), besides the other fields.
pub fn form_bytes_max(payload_bytes_max: usize) -> usize {
    FORM_MAX_BYTES.saturating_add(payload_bytes_max.saturating_mul(6))
}

/// The payload an operator typed, checked as the admin verb will check it:
/// JSON, at most `bytes_max` bytes once written compactly. Empty: `{}`.
pub fn parse_payload(text: Option<&str>, bytes_max: usize) -> Result<serde_json::Value, String> {
    let text = text.unwrap_or(PAYLOAD_DEFAULT);
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("the payload is not valid JSON ({e}); nothing was sent"))?;
    let len = value.to_string().len();
    if len > bytes_max {
        return Err(format!(
            "the payload is {len} bytes of JSON, over the limit of {bytes_max} \
             (engine.signal_payload_bytes_max); nothing was sent"
        ));
    }
    Ok(value)
}

/// What became of a sent signal, by the verb's answer: the `data-result`
/// of the result page and a sentence for the operator.
pub fn answer(reply: &SignalReply) -> (&'static str, String) {
    let name = reply.name.as_deref().unwrap_or("?");
    match (reply.result.as_deref(), reply.consumed_by.as_deref()) {
        (Some("duplicate"), _) => (
            "duplicate",
            format!(
                "Already received: signal {name:?} with this id reached the workflow before \
                 (the form was sent twice); nothing changed."
            ),
        ),
        (_, Some(step)) => (
            "delivered",
            format!("Delivered: wait step {step:?} took signal {name:?} and completed with its payload."),
        ),
        _ => (
            "pending",
            format!(
                "Stored as pending: no step waits for signal {name:?} right now; \
                 the next wait step for it takes it when it starts waiting."
            ),
        ),
    }
}

/// The section of a workflow page about signals: what each waiting step
/// waits for, the signals received that no step took yet, and for a
/// signed-in operator (`csrf`) a form per waiting step. `signal_id` makes
/// each form's idempotency key.
pub fn section(
    b: &mut String,
    id: &str,
    wf: &WorkflowReply,
    csrf: Option<&str>,
    mut signal_id: impl FnMut() -> String,
) {
    let waits = waiting(wf);
    let pending = wf.signals.as_deref().unwrap_or_default();
    if waits.is_empty() && pending.is_empty() {
        return;
    }
    b.push_str("<h2>Signals</h2><div id=\"signals\">");
    for w in &waits {
        let _ = write!(
            b,
            "<div class=\"notice\" data-waiting-step=\"{}\"><p>Step <code>{}</code> waits for signal <code>{}</code> \
             (times out {} UTC).</p>",
            escape(w.step),
            escape(w.step),
            escape(w.signal),
            time(w.due_ms)
        );
        match csrf {
            Some(csrf) => signal_form(b, id, w.signal, &signal_id(), PAYLOAD_DEFAULT, csrf),
            None => b.push_str("<p class=\"muted\">Sign in to send it.</p>"),
        }
        b.push_str("</div>");
    }
    if !pending.is_empty() {
        b.push_str("<p>Received, not taken by a step yet:</p><ul id=\"pending-signals\">");
        for p in pending {
            let _ = write!(
                b,
                "<li><code>{}</code> id <code>{}</code> at {} UTC</li>",
                escape(&p.name),
                escape(&p.id),
                time(Some(p.received_at_ms))
            );
        }
        b.push_str("</ul>");
    }
    b.push_str("</div>");
}

/// The form that previews a signal: name and id fixed, payload editable.
fn signal_form(b: &mut String, id: &str, name: &str, signal_id: &str, payload: &str, csrf: &str) {
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/console/action\" class=\"signal\" data-signal=\"{name}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <input type=\"hidden\" name=\"action\" value=\"signal\">\
         <input type=\"hidden\" name=\"id\" value=\"{id}\">\
         <input type=\"hidden\" name=\"signal_id\" value=\"{signal_id}\">\
         <label>signal <input type=\"text\" name=\"name\" value=\"{name}\" readonly></label>\
         <label>payload (JSON)<br><textarea name=\"payload\" rows=\"4\" cols=\"60\" spellcheck=\"false\">{payload}</textarea></label>\
         <br><button type=\"submit\" class=\"send-signal\">Send signal…</button></form>",
        name = escape(name),
        csrf = escape(csrf),
        id = escape(id),
        signal_id = escape(signal_id),
        payload = escape(payload),
    );
}

/// The `signal` action: a preview that checks the payload and changes
/// nothing, or (confirmed) the verb itself, audited.
pub async fn send(
    admin: &LocalAdmin,
    form: &Params,
    csrf: &str,
    confirm: bool,
) -> Result<Done, Outcome> {
    let (Some(id), Some(name), Some(signal_id)) =
        (form.get("id"), form.get("name"), form.get("signal_id"))
    else {
        return Err(Outcome::Bad("which signal? (id, name, signal_id)".into()));
    };
    let bytes_max = admin.engine().ctx().config.signals.payload_bytes_max;
    let text = form.get("payload");
    let payload = match parse_payload(text, bytes_max) {
        Ok(v) => v,
        Err(why) => {
            let mut h = String::new();
            let _ = write!(
                h,
                "<h1>Signal not sent</h1><p class=\"error\" id=\"signal-error\">{}</p>\
                 <p>Correct the payload for workflow <a href=\"/console/workflow?id={}\"><code>{}</code></a>:</p>",
                escape(&why),
                escape(&url_value(id)),
                escape(id)
            );
            signal_form(&mut h, id, name, signal_id, text.unwrap_or(""), csrf);
            return Err(Outcome::Invalid(h));
        }
    };
    let back = format!(
        "<p><a href=\"/console/workflow?id={}\" id=\"back\">Back to the workflow</a></p>",
        escape(&url_value(id))
    );
    if !confirm {
        let wf = admin.describe(id).await?;
        let takers: Vec<String> = waiting(&wf)
            .iter()
            .filter(|w| w.signal == name)
            .map(|w| format!("<code>{}</code>", escape(w.step)))
            .collect();
        let who = if takers.is_empty() {
            "No step waits for it right now: the workflow keeps it for the next wait step for it."
                .to_string()
        } else {
            format!("Waiting for it: step {}.", takers.join(", "))
        };
        let mut h = String::new();
        let _ = write!(
            h,
            "<h1>Preview</h1><p>Send signal <code>{}</code> to workflow <a href=\"/console/workflow?id={}\"><code>{}</code></a> \
             (signal id <code>{}</code>). {who}</p><p>Payload:</p>{}",
            escape(name),
            escape(&url_value(id)),
            escape(id),
            escape(signal_id),
            json_block(&payload)
        );
        return Ok(Done::Page("Preview".into(), h));
    }
    let request = SignalRequest {
        v: VERSION,
        id: id.to_string(),
        name: name.to_string(),
        signal_id: signal_id.to_string(),
        payload: Some(payload),
    };
    let json = serde_json::to_value(&request).unwrap_or_default();
    let result = admin.signal(request).await;
    super::actions::audit("signal", json, &result);
    let reply = result?;
    let (kind, sentence) = answer(&reply);
    let mut h = String::new();
    let _ = write!(
        h,
        "<h1>Signal sent</h1><p id=\"signal-result\" data-result=\"{kind}\">{}</p>\
         <p>Workflow status: <b>{}</b>.</p>{back}",
        escape(&sentence),
        escape(reply.status.as_deref().unwrap_or("?"))
    );
    Ok(Done::Page("Signal sent".into(), h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::StepReply;

    fn step(name: &str, waiting_for: Option<&str>) -> StepReply {
        StepReply {
            name: name.into(),
            status: if waiting_for.is_some() {
                "waiting"
            } else {
                "pending"
            }
            .into(),
            waiting_for: waiting_for.map(str::to_string),
            wait_due_ms: waiting_for.map(|_| 1_000),
            ..StepReply::default()
        }
    }

    #[test]
    fn only_steps_that_wait_now_get_a_form() {
        let wf = WorkflowReply {
            steps: Some(vec![
                step("draft", None),
                step("approve", Some("approved")),
                step("recheck", Some("b")),
            ]),
            ..WorkflowReply::default()
        };
        assert_eq!(
            waiting(&wf),
            vec![
                Waiting {
                    step: "approve",
                    signal: "approved",
                    due_ms: Some(1_000)
                },
                Waiting {
                    step: "recheck",
                    signal: "b",
                    due_ms: Some(1_000)
                },
            ]
        );
        let mut ids = ["id-1", "id-2"].into_iter();
        let mut html = String::new();
        section(&mut html, "wf<1>", &wf, Some("tok"), || {
            ids.next().unwrap().into()
        });
        assert_eq!(html.matches("<form ").count(), 2);
        assert!(html.contains("name=\"signal_id\" value=\"id-1\""), "{html}");
        assert!(html.contains("name=\"signal_id\" value=\"id-2\""), "{html}");
        assert!(html.contains("name=\"id\" value=\"wf&lt;1&gt;\""), "{html}");
        assert!(html.contains(">{}</textarea>"), "{html}");

        let mut read_only = String::new();
        section(&mut read_only, "wf", &wf, None, || {
            unreachable!("no form, no id")
        });
        assert!(!read_only.contains("<form"), "{read_only}");
        assert!(read_only.contains("Sign in to send it"), "{read_only}");

        let mut none = String::new();
        section(
            &mut none,
            "wf",
            &WorkflowReply::default(),
            Some("tok"),
            String::new,
        );
        assert!(none.is_empty());
    }

    #[test]
    fn a_payload_must_be_json_within_the_limit() {
        assert_eq!(parse_payload(None, 64), Ok(serde_json::json!({})));
        assert_eq!(
            parse_payload(Some("{ \"ok\" :\r\n true }"), 64),
            Ok(serde_json::json!({"ok": true}))
        );
        let e = parse_payload(Some("{\"ok\": tru"), 64).unwrap_err();
        assert!(e.starts_with("the payload is not valid JSON ("), "{e}");
        assert!(e.contains("line 1 column"), "{e}");
        // The limit counts the compact JSON, as the admin verb does.
        assert!(parse_payload(Some("[1,   2,   3]"), 7).is_ok());
        let e = parse_payload(Some("[1,2,3,4]"), 7).unwrap_err();
        assert!(e.contains("9 bytes of JSON, over the limit of 7"), "{e}");
    }

    #[test]
    fn a_form_post_has_room_for_a_payload_at_its_limit() {
        // Two-byte characters percent-encode to six bytes each: the worst
        // case for compact JSON.
        let max = 65_536;
        let payload = format!("\"{}\"", "é".repeat((max - 2) / 2));
        assert_eq!(payload.len(), max);
        let body = format!(
            "csrf={0}&action=signal&id={0}&signal_id={0}&name={0}&payload={1}",
            "x".repeat(128),
            url_value(&payload)
        );
        assert!(body.len() <= form_bytes_max(max), "{}", body.len());
        assert_eq!(form_bytes_max(usize::MAX), usize::MAX);
    }

    #[test]
    fn each_answer_reads_as_what_happened() {
        let reply = |result: &str, consumed_by: Option<&str>| SignalReply {
            name: Some("approved".into()),
            result: Some(result.into()),
            consumed_by: consumed_by.map(str::to_string),
            ..SignalReply::default()
        };
        let (kind, text) = answer(&reply("accepted", Some("approve")));
        assert_eq!(kind, "delivered");
        assert!(text.contains("\"approve\""), "{text}");
        let (kind, text) = answer(&reply("accepted", None));
        assert_eq!(kind, "pending");
        assert!(text.contains("no step waits"), "{text}");
        let (kind, text) = answer(&reply("duplicate", Some("approve")));
        assert_eq!(kind, "duplicate");
        assert!(text.contains("nothing changed"), "{text}");
    }
}
