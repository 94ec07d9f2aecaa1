//! Who may change things: the operator token, the sessions of operators
//! who signed in with it, and the CSRF check of every form post.
//!
//! The token is compared in constant time and never printed. Signing in
//! sets a random session id in an `HttpOnly`, `SameSite=Strict` cookie; the
//! session holds a second random value, the CSRF token, which every form
//! of the session carries in a hidden field and every post must send back
//! (a page of another site can make the browser send the cookie, but it
//! cannot read the CSRF token). A post whose `Origin` names another host is
//! refused as well.

use std::collections::VecDeque;

use axum::http::{header, HeaderMap};
use parking_lot::Mutex;

/// The cookie that holds the session id.
pub const COOKIE: &str = "nl_console";

/// One signed-in operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub csrf: String,
}

/// Why a post was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No operator token is configured: the console is read-only.
    ReadOnly,
    /// No valid session cookie.
    NotSignedIn,
    /// The form's CSRF token or the `Origin` does not match.
    Forged,
}

impl Refusal {
    pub fn message(&self) -> &'static str {
        match self {
            Refusal::ReadOnly => "the console is read-only: no operator token is configured",
            Refusal::NotSignedIn => "sign in with the operator token first",
            Refusal::Forged => "the form did not come from this console (CSRF check failed)",
        }
    }
}

pub struct Auth {
    token: Option<String>,
    sessions_max: usize,
    /// Oldest first.
    sessions: Mutex<VecDeque<Session>>,
}

impl Auth {
    /// `token`: the operator token, `None` (or empty) for a read-only console.
    pub fn new(token: Option<String>, sessions_max: usize) -> Auth {
        Auth {
            token: token.filter(|t| !t.is_empty()),
            sessions_max: sessions_max.max(1),
            sessions: Mutex::default(),
        }
    }

    /// Whether an operator can sign in at all.
    pub fn can_sign_in(&self) -> bool {
        self.token.is_some()
    }

    /// A new session when `offered` is the operator token.
    pub fn sign_in(&self, offered: &str) -> Option<Session> {
        let token = self.token.as_deref()?;
        if !same(token.as_bytes(), offered.trim().as_bytes()) {
            return None;
        }
        let session = Session {
            id: random_hex()?,
            csrf: random_hex()?,
        };
        let mut all = self.sessions.lock();
        all.push_back(session.clone());
        while all.len() > self.sessions_max {
            all.pop_front();
        }
        Some(session)
    }

    pub fn sign_out(&self, id: &str) {
        self.sessions.lock().retain(|s| s.id != id);
    }

    /// The session whose id the request's cookie holds.
    pub fn session(&self, headers: &HeaderMap) -> Option<Session> {
        self.token.as_ref()?;
        let id = cookie(headers, COOKIE)?;
        self.sessions
            .lock()
            .iter()
            .find(|s| same(s.id.as_bytes(), id.as_bytes()))
            .cloned()
    }

    /// The session of a form post that may change things: signed in, the
    /// form's `csrf` field matches, and the `Origin` (when sent) is this host.
    pub fn check_post(&self, headers: &HeaderMap, csrf: Option<&str>) -> Result<Session, Refusal> {
        if self.token.is_none() {
            return Err(Refusal::ReadOnly);
        }
        if !same_origin(headers) {
            return Err(Refusal::Forged);
        }
        let session = self.session(headers).ok_or(Refusal::NotSignedIn)?;
        match csrf {
            Some(c) if same(c.as_bytes(), session.csrf.as_bytes()) => Ok(session),
            _ => Err(Refusal::Forged),
        }
    }
}

/// `Set-Cookie` value of a new session.
pub fn set_cookie(session: &Session) -> String {
    format!(
        "{COOKIE}={}; Path=/console; HttpOnly; SameSite=Strict",
        session.id
    )
}

/// `Set-Cookie` value that drops the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Equality that takes the same time wherever the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// `Origin`, when the browser sends it, names the host the request went to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host)
}

/// 32 random bytes from the operating system, as hex; `None` if the OS
/// has no randomness to give (then nobody can sign in).
fn random_hex() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_cookie(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={id}")).unwrap(),
        );
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:9464"));
        h
    }

    #[test]
    fn only_the_operator_token_signs_in() {
        let auth = Auth::new(Some("s3cret".into()), 4);
        assert!(auth.sign_in("wrong").is_none());
        assert!(auth.sign_in("s3cre").is_none());
        let s = auth.sign_in("s3cret").unwrap();
        assert_eq!(auth.session(&with_cookie(&s.id)), Some(s.clone()));
        assert_eq!(auth.session(&with_cookie("forged")), None);
        auth.sign_out(&s.id);
        assert_eq!(auth.session(&with_cookie(&s.id)), None);
    }

    #[test]
    fn without_a_token_the_console_is_read_only() {
        let auth = Auth::new(None, 4);
        assert!(!auth.can_sign_in());
        assert!(auth.sign_in("").is_none());
        assert_eq!(
            auth.check_post(&with_cookie("x"), Some("y")),
            Err(Refusal::ReadOnly)
        );
        assert!(!Auth::new(Some(String::new()), 4).can_sign_in());
    }

    #[test]
    fn a_post_needs_the_sessions_csrf_token_and_this_origin() {
        let auth = Auth::new(Some("t".into()), 4);
        let s = auth.sign_in("t").unwrap();
        let h = with_cookie(&s.id);
        assert_eq!(auth.check_post(&h, Some(&s.csrf)), Ok(s.clone()));
        assert_eq!(auth.check_post(&h, None), Err(Refusal::Forged));
        assert_eq!(auth.check_post(&h, Some(&s.id)), Err(Refusal::Forged));
        assert_eq!(
            auth.check_post(&with_cookie("nope"), Some(&s.csrf)),
            Err(Refusal::NotSignedIn)
        );
        let mut cross = h.clone();
        cross.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert_eq!(auth.check_post(&cross, Some(&s.csrf)), Err(Refusal::Forged));
        let mut same = h;
        same.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:9464"),
        );
        assert_eq!(auth.check_post(&same, Some(&s.csrf)), Ok(s));
    }

    #[test]
    fn sessions_are_bounded_oldest_out() {
        let auth = Auth::new(Some("t".into()), 2);
        let a = auth.sign_in("t").unwrap();
        let b = auth.sign_in("t").unwrap();
        let c = auth.sign_in("t").unwrap();
        assert_eq!(auth.session(&with_cookie(&a.id)), None);
        assert!(auth.session(&with_cookie(&b.id)).is_some());
        assert!(auth.session(&with_cookie(&c.id)).is_some());
    }
}
