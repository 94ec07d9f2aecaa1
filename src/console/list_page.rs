//! The workflow list: filters (status, pipeline and version, creation
//! range, last change, id prefix, error kind), counts per status, sorted
//! and paginated.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::html::{badge, escape, parse_datetime, time, url_value, Nav};
use super::routes::Params;
use super::Console;
use crate::admin::{AdminError, Filter, ListRequest, ListedWorkflow, LocalAdmin, LIST_PAGE_MAX};
use crate::protocol::VERSION;

/// Matching workflows the list collects at most to count and sort (like
/// `orchestrator list`, which sorts what it collected); past it the page
/// says the counts are lower bounds.
pub const COLLECT_MAX: usize = 20_000;
/// Candidates whose version is looked up at most when filtering by
/// pipeline version (one `describe` each).
pub const VERSION_SCAN_MAX: usize = 2_000;

const STATUSES: [&str; 5] = ["running", "paused", "completed", "failed", "cancelled"];
const WITHIN: [(&str, u64); 5] = [
    ("5m", 300_000),
    ("1h", 3_600_000),
    ("24h", 86_400_000),
    ("7d", 604_800_000),
    ("30d", 2_592_000_000),
];

/// Every workflow `filter` matches (any status when `filter.status` is
/// unset), up to `max`; `true` when there were more.
pub async fn collect(
    admin: &LocalAdmin,
    filter: Filter,
    max: usize,
) -> Result<(Vec<ListedWorkflow>, bool), AdminError> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let reply = admin
            .list(ListRequest {
                v: VERSION,
                filter: filter.clone(),
                limit: Some(LIST_PAGE_MAX),
                cursor,
                cell: false,
            })
            .await?;
        out.extend(reply.workflows);
        if out.len() >= max {
            out.truncate(max);
            return Ok((out, reply.cursor.is_some()));
        }
        match reply.cursor {
            Some(c) => cursor = Some(c),
            None => return Ok((out, false)),
        }
    }
}

/// What the filter form holds.
struct Query {
    status: Option<String>,
    pipeline: Option<String>,
    version: Option<u32>,
    created_from: Option<String>,
    created_to: Option<String>,
    changed_within: Option<String>,
    id_prefix: Option<String>,
    error_kind: Option<String>,
    sort: String,
    page: usize,
}

impl Query {
    fn from(p: &Params) -> Result<Query, String> {
        let status = p.get("status").map(str::to_string);
        if let Some(s) = &status {
            if !STATUSES.contains(&s.as_str()) {
                return Err(format!("unknown status {s:?}"));
            }
        }
        let version = match p.get("version") {
            None => None,
            Some(v) => Some(
                v.parse()
                    .map_err(|_| format!("version {v:?} is not a number"))?,
            ),
        };
        let sort = p.get("sort").unwrap_or("changed").to_string();
        if !["changed", "created", "id"].contains(&sort.as_str()) {
            return Err(format!("unknown sort {sort:?} (changed, created or id)"));
        }
        Ok(Query {
            status,
            pipeline: p.get("pipeline").map(str::to_string),
            version,
            created_from: p.get("created_from").map(str::to_string),
            created_to: p.get("created_to").map(str::to_string),
            changed_within: p.get("changed_within").map(str::to_string),
            id_prefix: p.get("id_prefix").map(str::to_string),
            error_kind: p.get("error_kind").map(str::to_string),
            sort,
            page: p
                .get("page")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1)
                .max(1),
        })
    }

    /// The admin filter, status left out (the counts cover every status).
    fn filter(&self) -> Result<Filter, String> {
        let at = |what: &str, v: &Option<String>| -> Result<Option<u64>, String> {
            v.as_deref()
                .map(|s| {
                    parse_datetime(s).ok_or_else(|| {
                        format!("{what} {s:?} is not a date and time (YYYY-MM-DDTHH:MM, UTC)")
                    })
                })
                .transpose()
        };
        let since_ms = match &self.changed_within {
            None => None,
            Some(w) => Some(
                WITHIN
                    .iter()
                    .find(|(n, _)| n == w)
                    .map(|(_, ms)| *ms)
                    .ok_or_else(|| format!("unknown time span {w:?}"))?,
            ),
        };
        Ok(Filter {
            status: None,
            pipeline: self.pipeline.clone(),
            since_ms,
            created_after_ms: at("created from", &self.created_from)?,
            created_before_ms: at("created to", &self.created_to)?,
            id_prefix: self.id_prefix.clone(),
            error_kind: self.error_kind.clone(),
        })
    }

    /// This query as a URL query string, with `status` and `page` replaced.
    fn link(&self, status: Option<&str>, page: usize) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        let mut put = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        };
        put("status", status);
        put("pipeline", self.pipeline.as_deref());
        put("version", self.version.map(|v| v.to_string()).as_deref());
        put("created_from", self.created_from.as_deref());
        put("created_to", self.created_to.as_deref());
        put("changed_within", self.changed_within.as_deref());
        put("id_prefix", self.id_prefix.as_deref());
        put("error_kind", self.error_kind.as_deref());
        put("sort", Some(&self.sort));
        put("page", (page > 1).then(|| page.to_string()).as_deref());
        format!("/console/workflows?{}", q.finish())
    }
}

pub async fn show(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let Some(admin) = c.admin() else {
        return c.starting(&headers);
    };
    let q = match Query::from(&Params::query(raw.as_deref())) {
        Ok(q) => q,
        Err(e) => return c.error(&headers, StatusCode::BAD_REQUEST, &e),
    };
    let filter = match q.filter() {
        Ok(f) => f,
        Err(e) => return c.error(&headers, StatusCode::BAD_REQUEST, &e),
    };
    let (mut all, more) = match collect(admin, filter, COLLECT_MAX).await {
        Ok(r) => r,
        Err(e) => return c.error(&headers, StatusCode::BAD_REQUEST, &e.message),
    };
    let mut version_capped = false;
    if let Some(v) = q.version {
        version_capped = all.len() > VERSION_SCAN_MAX;
        all.truncate(VERSION_SCAN_MAX);
        let mut kept = Vec::with_capacity(all.len());
        for w in all {
            if let Ok(d) = admin.describe(&w.id).await {
                if d.pipeline_version == Some(v) {
                    kept.push(w);
                }
            }
        }
        all = kept;
    }
    let mut counts: BTreeMap<&str, usize> = STATUSES.iter().map(|s| (*s, 0)).collect();
    for w in &all {
        if let Some(n) = counts.get_mut(w.status.as_str()) {
            *n += 1;
        }
    }
    let total = all.len();
    let mut shown: Vec<ListedWorkflow> = match &q.status {
        Some(s) => all.into_iter().filter(|w| w.status == *s).collect(),
        None => all,
    };
    match q.sort.as_str() {
        "created" => {
            shown.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then(a.id.cmp(&b.id)))
        }
        "id" => shown.sort_by(|a, b| a.id.cmp(&b.id)),
        _ => shown.sort_by(|a, b| b.updated_at_ms.cmp(&a.updated_at_ms).then(a.id.cmp(&b.id))),
    }
    let size = c.opts.page_size.max(1) as usize;
    let pages = shown.len().div_ceil(size).max(1);
    let page = q.page.min(pages);
    let at_least = if more || version_capped { "≥ " } else { "" };

    let mut b = String::new();
    b.push_str("<h1>Workflows</h1><div class=\"counts\">");
    let _ = write!(
        b,
        "<a href=\"{}\"{}>all <b>{at_least}{total}</b></a>",
        escape(&q.link(None, 1)),
        if q.status.is_none() {
            " class=\"on\""
        } else {
            ""
        }
    );
    for s in STATUSES {
        let _ = write!(
            b,
            "<a href=\"{}\"{} data-status=\"{s}\">{} <b>{at_least}{}</b></a>",
            escape(&q.link(Some(s), 1)),
            if q.status.as_deref() == Some(s) {
                " class=\"on\""
            } else {
                ""
            },
            badge(s),
            counts[s]
        );
    }
    b.push_str("</div>");
    filter_form(&mut b, &q);
    b.push_str(
        "<table id=\"workflows\"><thead><tr><th>id</th><th>status</th><th>pipeline</th>\
         <th>created (UTC)</th><th>last change (UTC)</th></tr></thead><tbody>",
    );
    for w in shown.iter().skip((page - 1) * size).take(size) {
        let _ = write!(
            b,
            "<tr><td><a href=\"/console/workflow?id={}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&url_value(&w.id)),
            escape(&w.id),
            badge(&w.status),
            escape(&w.pipeline),
            time(Some(w.created_at_ms)),
            time(Some(w.updated_at_ms)),
        );
    }
    if shown.is_empty() {
        b.push_str("<tr><td colspan=\"5\" class=\"muted\">no workflow matches</td></tr>");
    }
    b.push_str("</tbody></table><div class=\"pager\">");
    if page > 1 {
        let _ = write!(
            b,
            "<a href=\"{}\">← newer</a>",
            escape(&q.link(q.status.as_deref(), page - 1))
        );
    }
    let _ = write!(b, "<span class=\"muted\">page {page} of {pages}</span>");
    if page < pages {
        let _ = write!(
            b,
            "<a href=\"{}\">older →</a>",
            escape(&q.link(q.status.as_deref(), page + 1))
        );
    }
    b.push_str("</div>");
    if more || version_capped {
        let _ = write!(
            b,
            "<p class=\"muted\">Only the first {} matches were examined; narrow the filters to see the rest.</p>",
            if version_capped { VERSION_SCAN_MAX } else { COLLECT_MAX }
        );
    }
    c.page(&headers, "Workflows", Nav::Workflows, &b)
}

fn filter_form(b: &mut String, q: &Query) {
    let v = |o: &Option<String>| escape(o.as_deref().unwrap_or(""));
    b.push_str("<form class=\"filters\" method=\"get\" action=\"/console/workflows\">");
    b.push_str("<label>status<select name=\"status\"><option value=\"\">any</option>");
    for s in STATUSES {
        let sel = if q.status.as_deref() == Some(s) {
            " selected"
        } else {
            ""
        };
        let _ = write!(b, "<option{sel}>{s}</option>");
    }
    b.push_str("</select></label>");
    let _ = write!(
        b,
        "<label>pipeline<input name=\"pipeline\" value=\"{}\" size=\"10\"></label>\
         <label>version<input name=\"version\" value=\"{}\" size=\"3\"></label>\
         <label>created from (UTC)<input type=\"datetime-local\" name=\"created_from\" value=\"{}\"></label>\
         <label>created to (UTC)<input type=\"datetime-local\" name=\"created_to\" value=\"{}\"></label>",
        v(&q.pipeline),
        q.version.map(|x| x.to_string()).unwrap_or_default(),
        v(&q.created_from),
        v(&q.created_to),
    );
    b.push_str(
        "<label>changed within<select name=\"changed_within\"><option value=\"\">any time</option>",
    );
    for (n, _) in WITHIN {
        let sel = if q.changed_within.as_deref() == Some(n) {
            " selected"
        } else {
            ""
        };
        let _ = write!(b, "<option{sel}>{n}</option>");
    }
    b.push_str("</select></label>");
    let _ = write!(
        b,
        "<label>id prefix<input name=\"id_prefix\" value=\"{}\" size=\"12\"></label>\
         <label>error kind<input name=\"error_kind\" value=\"{}\" size=\"10\"></label>",
        v(&q.id_prefix),
        v(&q.error_kind),
    );
    b.push_str("<label>sort<select name=\"sort\">");
    for (k, label) in [
        ("changed", "last change"),
        ("created", "created"),
        ("id", "id"),
    ] {
        let sel = if q.sort == k { " selected" } else { "" };
        let _ = write!(b, "<option value=\"{k}\"{sel}>{label}</option>");
    }
    b.push_str("</select></label><button type=\"submit\">Filter</button></form>");
}
