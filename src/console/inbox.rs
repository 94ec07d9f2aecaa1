//! The failed inbox: failed workflows grouped by pipeline, failed step and
//! error kind, with counts, first and last occurrence and the latest
//! error; signed-in operators get the retry and rerun forms.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::html::{escape, time, url_value, Nav};
use super::list_page::collect;
use super::Console;
use crate::admin::{AdminError, Filter, LocalAdmin};

/// Members listed under each group (the count covers all of them).
pub const MEMBERS_SHOWN: usize = 10;

/// Which group a failed workflow belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKey {
    pub pipeline: String,
    /// The failed step, `-` when the workflow failed with no failed step
    /// (a workflow timeout).
    pub step: String,
    /// The part of the error before its first `:` (`simulated`,
    /// `timeout`, ...), or the whole reason when it has none.
    pub kind: String,
}

/// One failed workflow as the inbox sees it.
#[derive(Debug, Clone)]
pub struct Failed {
    pub id: String,
    pub key: GroupKey,
    pub error: String,
    pub failed_at_ms: u64,
}

/// The kind of an error as `describe` prints it (`kind: message`).
pub fn error_kind(error: &str) -> &str {
    error.split_once(':').map_or(error, |(k, _)| k).trim()
}

/// The failed workflows (newest first, at most `max`) with their group;
/// `true` when there were more.
pub async fn failed(admin: &LocalAdmin, max: usize) -> Result<(Vec<Failed>, bool), AdminError> {
    let filter = Filter {
        status: Some("failed".into()),
        ..Filter::default()
    };
    let (mut listed, more) = collect(admin, filter, max).await?;
    listed.sort_by_key(|w| std::cmp::Reverse(w.updated_at_ms));
    let mut out = Vec::with_capacity(listed.len());
    for w in listed {
        // Retried or purged since the scan: no longer in the inbox.
        let Ok(d) = admin.describe(&w.id).await else {
            continue;
        };
        if d.status.as_deref() != Some("failed") {
            continue;
        }
        let failed_step = d
            .steps
            .iter()
            .flatten()
            .find(|s| s.status == "failed" && s.last_error.is_some());
        let (step, error) = match failed_step {
            Some(s) => (s.name.clone(), s.last_error.clone().unwrap_or_default()),
            None => ("-".to_string(), d.reason.clone().unwrap_or_default()),
        };
        out.push(Failed {
            key: GroupKey {
                pipeline: w.pipeline.clone(),
                kind: error_kind(&error).to_string(),
                step,
            },
            id: w.id,
            error,
            failed_at_ms: w.updated_at_ms,
        });
    }
    Ok((out, more))
}

pub async fn show(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let Some(admin) = c.admin() else {
        return c.starting(&headers);
    };
    let (all, more) = match failed(admin, c.opts.inbox_scan_max as usize).await {
        Ok(r) => r,
        Err(e) => return c.error(&headers, StatusCode::SERVICE_UNAVAILABLE, &e.message),
    };
    let csrf = c.session(&headers).map(|s| s.csrf);
    let mut groups: BTreeMap<GroupKey, Vec<&Failed>> = BTreeMap::new();
    for f in &all {
        groups.entry(f.key.clone()).or_default().push(f);
    }
    // Largest group first, then the most recent.
    let mut groups: Vec<(GroupKey, Vec<&Failed>)> = groups.into_iter().collect();
    groups.sort_by(|a, b| {
        b.1.len()
            .cmp(&a.1.len())
            .then(b.1[0].failed_at_ms.cmp(&a.1[0].failed_at_ms))
    });
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>Failed inbox</h1><p class=\"muted\">{}{} failed workflow(s) in {} group(s), by pipeline, failed step and error kind.</p>",
        if more { "≥ " } else { "" },
        all.len(),
        groups.len()
    );
    if groups.is_empty() {
        b.push_str("<p id=\"inbox-empty\">No failed workflow.</p>");
    }
    for (key, members) in &groups {
        let first = members.iter().map(|f| f.failed_at_ms).min().unwrap_or(0);
        let last = members.iter().map(|f| f.failed_at_ms).max().unwrap_or(0);
        let _ = write!(
            b,
            "<section class=\"group\" data-step=\"{s}\" data-kind=\"{k}\"><h2>{p} · step <code>{s}</code> · <span class=\"error\">{k}</span> \
             <span class=\"badge s-failed\">{n}</span></h2>\
             <p class=\"muted\">first {first} · last {last} (UTC) · latest error: <span class=\"error\">{e}</span></p>",
            p = escape(&key.pipeline),
            s = escape(&key.step),
            k = escape(&key.kind),
            n = members.len(),
            first = time(Some(first)),
            last = time(Some(last)),
            e = escape(&members[0].error),
        );
        if let Some(csrf) = &csrf {
            let hidden = format!(
                "<input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <input type=\"hidden\" name=\"pipeline\" value=\"{}\">\
                 <input type=\"hidden\" name=\"group_step\" value=\"{}\">\
                 <input type=\"hidden\" name=\"kind\" value=\"{}\">",
                escape(csrf),
                escape(&key.pipeline),
                escape(&key.step),
                escape(&key.kind)
            );
            let _ = write!(
                b,
                "<div class=\"notice\"><form method=\"post\" action=\"/console/action\" class=\"inline\">{hidden}\
                 <input type=\"hidden\" name=\"action\" value=\"retry_group\">\
                 <button type=\"submit\">Retry these {n}…</button></form> ",
                n = members.len()
            );
            if key.step != "-" {
                let _ = write!(
                    b,
                    "<form method=\"post\" action=\"/console/action\" class=\"inline\">{hidden}\
                     <input type=\"hidden\" name=\"action\" value=\"rerun_group\">\
                     <input type=\"hidden\" name=\"step\" value=\"{s}\">\
                     <button type=\"submit\" class=\"secondary\">Rerun these from {s}…</button></form> ",
                    s = escape(&key.step)
                );
            }
            let _ = write!(
                b,
                "<form method=\"post\" action=\"/console/action\" class=\"inline\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <input type=\"hidden\" name=\"pipeline\" value=\"{}\">\
                 <input type=\"hidden\" name=\"action\" value=\"batch_retry\">\
                 <button type=\"submit\" class=\"secondary\">Batch job: retry every failed {}…</button></form></div>",
                escape(csrf),
                escape(&key.pipeline),
                escape(&key.pipeline)
            );
        }
        b.push_str("<table class=\"members\"><thead><tr><th>workflow</th><th>failed (UTC)</th><th>error</th>");
        if csrf.is_some() {
            b.push_str("<th></th>");
        }
        b.push_str("</tr></thead><tbody>");
        for f in members.iter().take(MEMBERS_SHOWN) {
            let _ = write!(
                b,
                "<tr data-id=\"{id}\"><td><a href=\"/console/workflow?id={href}\">{id}</a></td><td>{at}</td><td class=\"error\">{e}</td>",
                id = escape(&f.id),
                href = escape(&url_value(&f.id)),
                at = time(Some(f.failed_at_ms)),
                e = escape(&f.error),
            );
            if let Some(csrf) = &csrf {
                let _ = write!(
                    b,
                    "<td><form method=\"post\" action=\"/console/action\" class=\"inline\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                     <input type=\"hidden\" name=\"action\" value=\"retry\">\
                     <input type=\"hidden\" name=\"id\" value=\"{}\">\
                     <button type=\"submit\" class=\"retry-one\">Retry…</button></form></td>",
                    escape(csrf),
                    escape(&f.id)
                );
            }
            b.push_str("</tr>");
        }
        if members.len() > MEMBERS_SHOWN {
            let _ = write!(
                b,
                "<tr><td colspan=\"4\" class=\"muted\">and {} more</td></tr>",
                members.len() - MEMBERS_SHOWN
            );
        }
        b.push_str("</tbody></table></section>");
    }
    c.page(&headers, "Failed inbox", Nav::Inbox, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_kind_is_what_comes_before_the_first_colon() {
        assert_eq!(error_kind("simulated: injected failure"), "simulated");
        assert_eq!(error_kind("timeout: start_to_close"), "timeout");
        assert_eq!(error_kind("workflow timeout"), "workflow timeout");
        assert_eq!(error_kind("a: b: c"), "a");
    }
}
