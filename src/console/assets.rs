//! The console's style sheet and script, served from the binary (no build
//! step, nothing fetched from elsewhere).

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

pub const STYLE: &str = r#"
:root { --bg:#f6f7f9; --fg:#1d2330; --muted:#667085; --line:#d9dde5; --card:#fff;
  --ok:#1f9d55; --bad:#d64545; --run:#2f6fde; --wait:#b7791f; --off:#8a94a6; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; background:var(--bg); color:var(--fg); }
header { display:flex; align-items:center; gap:24px; padding:10px 20px; background:#1d2330; color:#fff; }
header a { color:#c9d3e6; text-decoration:none; }
header a.on, header a:hover { color:#fff; }
header .brand { font-weight:700; color:#fff; }
header nav { display:flex; gap:18px; flex:1; }
header .who { color:#c9d3e6; }
header .who button { margin-left:6px; }
main { padding:18px 20px; max-width:1400px; }
h1 { font-size:20px; margin:4px 0 14px; }
h2 { font-size:16px; margin:22px 0 8px; }
table { border-collapse:collapse; width:100%; background:var(--card); border:1px solid var(--line); }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#eef1f5; font-weight:600; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
a { color:var(--run); }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; color:#fff; background:var(--off); }
.s-completed, .s-succeeded { background:var(--ok); }
.s-failed { background:var(--bad); }
.s-running, .s-dispatched { background:var(--run); }
.s-paused, .s-backoff { background:var(--wait); }
.s-cancelled, .s-pending { background:var(--off); }
.counts { display:flex; gap:10px; margin:0 0 12px; flex-wrap:wrap; }
.counts a { padding:4px 10px; border:1px solid var(--line); border-radius:6px; background:var(--card); text-decoration:none; color:var(--fg); }
.counts a.on { border-color:var(--run); }
form.filters { display:flex; flex-wrap:wrap; gap:8px 14px; align-items:end; margin-bottom:14px; background:var(--card); padding:10px; border:1px solid var(--line); }
form.filters label { display:flex; flex-direction:column; font-size:12px; color:var(--muted); }
input, select, button { font:inherit; padding:4px 6px; }
button { cursor:pointer; border:1px solid var(--run); background:var(--run); color:#fff; border-radius:4px; padding:4px 12px; }
button.secondary { background:#fff; color:var(--run); }
form.inline { display:inline; }
.error { color:var(--bad); }
.muted { color:var(--muted); }
.pager { margin:10px 0; display:flex; gap:14px; }
.grid { display:grid; grid-template-columns:repeat(auto-fit, minmax(220px, 1fr)); gap:10px; }
.card { background:var(--card); border:1px solid var(--line); padding:10px 12px; }
.card b { display:block; font-size:18px; }
pre.json { margin:0; max-height:240px; overflow:auto; background:#f2f4f7; padding:6px; font-size:12px; white-space:pre-wrap; word-break:break-all; }
svg.dag { background:var(--card); border:1px solid var(--line); }
svg.dag rect { stroke:#0002; }
svg.dag text { font-size:12px; fill:#fff; }
svg.dag line { stroke:#98a2b3; stroke-width:1.5; }
.bar-cell { position:relative; min-width:320px; }
#timeline td:not(.error) { white-space:nowrap; }
.bar { position:absolute; top:8px; height:12px; border-radius:3px; background:var(--run); min-width:2px; }
.bar.failed, .bar.timed_out { background:var(--bad); }
.bar.succeeded { background:var(--ok); }
.notice { background:#fff8e1; border:1px solid #f0d98c; padding:8px 12px; margin:8px 0; }
#events-log { font-family:ui-monospace, monospace; font-size:12px; max-height:160px; overflow:auto; background:var(--card); border:1px solid var(--line); padding:6px; }
.login { display:flex; gap:10px; align-items:end; }
form.signal textarea { font-family:ui-monospace, monospace; width:100%; max-width:640px; }
"#;

/// Live updates (SSE) on a workflow page and periodic refresh on the
/// health page: both swap the `#live-main` part of the page for a fresh copy.
pub const SCRIPT: &str = r#"
(function () {
  "use strict";
  function refresh() {
    return fetch(location.href, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (!text) { return; }
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.getElementById("live-main");
        var here = document.getElementById("live-main");
        if (fresh && here) { here.replaceWith(fresh); }
      })
      .catch(function () {});
  }
  var live = document.querySelector("[data-live]");
  if (live && window.EventSource) {
    var log = document.getElementById("events-log");
    var source = new EventSource(live.getAttribute("data-live"));
    source.addEventListener("update", function (e) {
      if (log) {
        var line = document.createElement("div");
        line.textContent = e.data;
        log.prepend(line);
      }
      refresh();
    });
    // Each (re)connection reloads the state once: nothing that happened
    // while the stream was down stays off the page.
    source.addEventListener("open", function () {
      live.setAttribute("data-connected", "1");
      refresh();
    });
  }
  var every = document.querySelector("[data-refresh]");
  if (every) {
    var ms = 1000 * Number(every.getAttribute("data-refresh"));
    if (ms > 0) { setInterval(refresh, ms); }
  }
})();
"#;

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}
