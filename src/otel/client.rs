//! The OTLP/HTTP transport: the collector's URL, the request headers (often
//! credentials), gzip, TLS trust, and one POST of an encoded batch, over
//! reqwest (hyper and rustls underneath).

use std::fmt;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
use reqwest::Url;

use super::encode::rejected_spans;

/// OTLP/HTTP's port, used when the endpoint names none.
const DEFAULT_PORT: u16 = 4318;

/// Longest collector answer read; a larger one fails the attempt.
const RESPONSE_BODY_MAX: usize = 1024 * 1024;

/// The traces URL of a collector: `http(s)://host[:port][/base]` plus
/// `/v1/traces`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint {
    pub url: Url,
}

impl OtlpEndpoint {
    /// Parses `http://host[:port][/base]` or `https://…` (port 4318,
    /// OTLP/HTTP's, when missing) and appends `/v1/traces` to the base path.
    /// Credentials in the URL are refused: they belong in the headers, which
    /// are never printed.
    pub fn parse(text: &str) -> Result<OtlpEndpoint, String> {
        let text = text.trim();
        let bad = |why: &str| format!("OTLP endpoint {text:?}: {why}");
        let mut url = Url::parse(text).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "OTLP endpoint {text:?} must start with http:// or https://"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "credentials in the URL are not supported; use trace.headers",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("queries and fragments are not supported"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("missing host"));
        }
        if url.port() == Some(0) {
            return Err(bad("bad port 0"));
        }
        // `Url` forgets a port equal to the scheme's default (80, 443), so a
        // missing port is told apart from an explicit one in the text.
        if url.port().is_none() && !names_port(text) {
            let _ = url.set_port(Some(DEFAULT_PORT));
        }
        let path = format!("{}/v1/traces", url.path().trim_end_matches('/'));
        url.set_path(&path);
        Ok(OtlpEndpoint { url })
    }
}

/// Whether the authority of `url` (known to parse) ends in `:<port>`.
fn names_port(url: &str) -> bool {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme.split('/').next().unwrap_or_default();
    match (authority.rfind(':'), authority.rfind(']')) {
        (Some(colon), Some(bracket)) => colon > bracket,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Extra request headers, usually credentials (`Authorization=Bearer …`,
/// `api-key=…`). Their values are marked sensitive and never printed: Debug
/// shows the names only, and errors name the header, not its value.
#[derive(Clone, Default, PartialEq)]
pub struct OtlpHeaders(Vec<(HeaderName, HeaderValue)>);

impl OtlpHeaders {
    /// Parses the `OTEL_EXPORTER_OTLP_HEADERS` form: `name=value` pairs
    /// separated by commas, values percent-decoded (`%20` for a space, `%2C`
    /// for a comma). An empty text is no headers.
    pub fn parse(text: &str) -> Result<OtlpHeaders, String> {
        let mut headers = Vec::new();
        for (index, entry) in text.split(',').enumerate() {
            if entry.trim().is_empty() {
                continue;
            }
            // The entry is not quoted in errors: it may hold a secret.
            let Some((name, value)) = entry.split_once('=') else {
                return Err(format!("OTLP header entry {} is not name=value", index + 1));
            };
            let name = name.trim();
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("OTLP header name {name:?} is not a valid header name"))?;
            let decoded = percent_encoding::percent_decode_str(value.trim()).decode_utf8();
            let mut value = decoded
                .ok()
                .and_then(|v| HeaderValue::from_str(&v).ok())
                .ok_or_else(|| format!("OTLP header {name:?}: the value is not valid"))?;
            value.set_sensitive(true);
            headers.push((header, value));
        }
        Ok(OtlpHeaders(headers))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The header names, for logs and diagnostics.
    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_str()).collect()
    }

    pub(super) fn to_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in &self.0 {
            map.append(name.clone(), value.clone());
        }
        map
    }
}

impl fmt::Debug for OtlpHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(name, _)| (name.as_str(), "***")))
            .finish()
    }
}

/// How request bodies are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" | "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            other => Err(format!(
                "OTLP compression {other:?} is not supported (none or gzip)"
            )),
        }
    }
}

/// Why one POST failed.
pub(super) enum PostError {
    /// Worth another attempt: connection trouble, 408, 429, 5xx, timeout.
    Retry(String),
    /// The collector refused the request for good (other 4xx).
    Refused(String),
}

/// One collector: its URL, headers and compression, and a pooled client.
pub(super) struct Collector {
    url: Url,
    compression: Compression,
    client: reqwest::Client,
}

impl Collector {
    /// Builds the client. With `ca_file`, https trusts that CA (PEM) and not
    /// the system's roots.
    pub(super) fn new(
        endpoint: OtlpEndpoint,
        headers: &OtlpHeaders,
        compression: Compression,
        ca_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<Collector, String> {
        let mut default_headers = headers.to_map();
        default_headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if compression == Compression::Gzip {
            default_headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!(
                "narralytica-orchestrator/",
                env!("CARGO_PKG_VERSION")
            ))
            .default_headers(default_headers)
            .connect_timeout(timeout)
            .timeout(timeout)
            // The collector is named by its URL alone: no proxy from the
            // environment, and no redirect (it would resend the credentials).
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = ca_file {
            let pem =
                std::fs::read(path).map_err(|e| format!("OTLP CA file {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("OTLP CA file {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "OTLP CA file {}: no PEM certificate in it",
                    path.display()
                ));
            }
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| format!("OTLP client: {e}"))?;
        Ok(Collector {
            url: endpoint.url,
            compression,
            client,
        })
    }

    /// Compresses an encoded batch as configured.
    pub(super) fn body(&self, json: Vec<u8>) -> Bytes {
        match self.compression {
            Compression::None => Bytes::from(json),
            Compression::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(
                    Vec::with_capacity(json.len() / 4),
                    flate2::Compression::fast(),
                );
                // Writing into a Vec cannot fail.
                let _ = gz.write_all(&json);
                Bytes::from(gz.finish().unwrap_or_default())
            }
        }
    }

    /// One POST of a body from [`Collector::body`]; returns the spans the
    /// collector rejected (OTLP partial success).
    pub(super) async fn post(&self, body: Bytes) -> Result<u64, PostError> {
        let mut response = self
            .client
            .post(self.url.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| PostError::Retry(describe(&e)))?;
        let status = response.status().as_u16();
        let mut answer = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if answer.len() + chunk.len() > RESPONSE_BODY_MAX {
                        return Err(PostError::Retry("response body too large".into()));
                    }
                    answer.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(PostError::Retry(describe(&e))),
            }
        }
        match status {
            200..=299 => Ok(rejected_spans(&answer)),
            408 | 429 | 500..=599 => Err(PostError::Retry(format!("HTTP {status}"))),
            s => Err(PostError::Refused(format!(
                "HTTP {s}: {}",
                String::from_utf8_lossy(&answer[..answer.len().min(200)])
            ))),
        }
    }
}

/// A request error with its causes: reqwest's own message is terse ("error
/// sending request for url …").
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
