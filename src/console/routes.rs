//! The console's router and what its handlers share: query and form
//! parsing, the viewer, and the responses (pages, errors, redirects).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::auth::{self, Session};
use super::html::{self, escape, Nav, Viewer};
use super::{actions, assets, health, inbox, list_page, live, workflow_page, Console};

/// Most bytes of a form post (a form holds a few short fields).
pub const FORM_MAX_BYTES: usize = 16 * 1024;

/// The console's routes, all under `/console`, to merge into the HTTP
/// server's router.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/workflows", get(list_page::show))
        .route("/console/workflow", get(workflow_page::show))
        .route("/console/live", get(live::stream))
        .route("/console/inbox", get(inbox::show))
        .route("/console/health", get(health::show))
        .route("/console/login", get(login_form).post(login))
        .route("/console/logout", post(logout))
        .route("/console/action", post(actions::post))
        .route("/console/assets/console.css", get(assets::style))
        .route("/console/assets/console.js", get(assets::script))
        .layer(DefaultBodyLimit::max(FORM_MAX_BYTES))
        .with_state(console)
}

/// Query or form fields, in order; empty values count as absent.
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(raw: &[u8]) -> Params {
        Params(form_urlencoded::parse(raw).into_owned().collect())
    }

    pub fn query(headers_uri_query: Option<&str>) -> Params {
        Params::parse(headers_uri_query.unwrap_or("").as_bytes())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == key && !v.trim().is_empty())
            .map(|(_, v)| v.trim())
    }
}

impl Console {
    pub(super) fn session(&self, headers: &HeaderMap) -> Option<Session> {
        self.auth.session(headers)
    }

    /// A whole page for the viewer of `headers`.
    pub(super) fn page(&self, headers: &HeaderMap, title: &str, nav: Nav, body: &str) -> Response {
        let session = self.session(headers);
        let viewer = Viewer {
            csrf: session.as_ref().map(|s| s.csrf.as_str()),
            can_sign_in: self.auth.can_sign_in(),
        };
        html_response(StatusCode::OK, html::page(title, nav, &viewer, body))
    }

    /// An error page with `status`.
    pub(super) fn error(&self, headers: &HeaderMap, status: StatusCode, message: &str) -> Response {
        let body = format!(
            "<h1>{}</h1><p class=\"error\">{}</p>",
            status.as_u16(),
            escape(message)
        );
        let mut r = self.page(headers, "Error", Nav::Other, &body);
        *r.status_mut() = status;
        r
    }

    /// The answer while the engine is still starting.
    pub(super) fn starting(&self, headers: &HeaderMap) -> Response {
        self.error(
            headers,
            StatusCode::SERVICE_UNAVAILABLE,
            "the orchestrator is starting (recovery in progress); reload in a moment",
        )
    }
}

/// An HTML answer that browsers neither cache nor frame, whose scripts
/// come only from the console itself.
pub fn html_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(h);
    r
}

pub fn secure_headers(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

/// `303 See Other` to `to` (after a post), with optional `Set-Cookie`.
pub fn see_other(to: &str, cookie: Option<String>) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    secure_headers(r.headers_mut());
    r
}

async fn index() -> Response {
    see_other("/console/workflows", None)
}

async fn login_form(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if !c.auth.can_sign_in() {
        return c.error(
            &headers,
            StatusCode::NOT_FOUND,
            "no operator token is configured: the console is read-only",
        );
    }
    let body = "<h1>Sign in</h1><form method=\"post\" action=\"/console/login\" class=\"login\">\
        <label>Operator token <input type=\"password\" name=\"token\" autocomplete=\"off\" autofocus></label>\
        <button type=\"submit\">Sign in</button></form>";
    c.page(&headers, "Sign in", Nav::Other, body)
}

async fn login(State(c): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = Params::parse(&body);
    match c.auth.sign_in(form.get("token").unwrap_or("")) {
        Some(session) => {
            tracing::info!(target: "narralytica::audit", "console operator signed in");
            see_other("/console/inbox", Some(auth::set_cookie(&session)))
        }
        None => {
            tracing::warn!("console sign-in refused: wrong operator token");
            c.error(&headers, StatusCode::FORBIDDEN, "wrong operator token")
        }
    }
}

async fn logout(State(c): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = Params::parse(&body);
    match c.auth.check_post(&headers, form.get("csrf")) {
        Ok(session) => {
            c.auth.sign_out(&session.id);
            see_other("/console/workflows", Some(auth::clear_cookie()))
        }
        Err(refusal) => c.error(&headers, StatusCode::FORBIDDEN, refusal.message()),
    }
}
