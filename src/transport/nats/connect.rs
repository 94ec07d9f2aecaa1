//! Connecting to NATS: credentials (user/password, token, nkey, `.creds`),
//! TLS with a private CA and client certificates, and a first connection
//! that gives up after `connect_timeout` with one line naming the URL
//! (credentials hidden) and the server's reason. Once connected, the client
//! reconnects forever: a later outage is ridden out, not fatal.
//!
//! Secrets never leave this module in clear: [`Secret`] prints as `***`,
//! [`redact_url`] hides the credentials of a URL, and an error's text is
//! scrubbed of every configured secret before it is returned.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{NatsConfig, NatsStats};

/// A password or token: `***` in `Debug`, `Display` and serialized
/// configuration (empty stays empty, so "not set" is still visible).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The clear text, for the one place that hands it to the client.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn shown(&self) -> &'static str {
        if self.0.is_empty() {
            ""
        } else {
            "***"
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.shown())
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.shown())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.shown())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// How a client proves who it is and protects the connection. At most one
/// of the four credentials (user/password, token, nkey seed, `.creds`) is
/// set; credentials in the URL (`nats://user:pass@host`) work as well.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NatsSecurity {
    pub user: String,
    pub password: Secret,
    pub token: Secret,
    /// A file holding an nkey seed (`SU...`), alone or in `nsc`'s layout.
    pub nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (user JWT and nkey seed) of an operator-mode server.
    pub creds_file: Option<PathBuf>,
    /// PEM CA bundle that signs the server's certificate (a private CA).
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for servers that verify clients (mTLS).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Refuse to talk to a server that does not offer TLS.
    pub tls_required: bool,
    /// Prefix of this client's reply subjects (empty: `_INBOX`). A user
    /// whose permissions allow only `_INBOX_<user>.>` cannot listen to
    /// other clients' replies, tasks pulled from JetStream included.
    pub inbox_prefix: String,
}

impl NatsSecurity {
    /// Combinations that cannot work, named; files are checked at connect.
    pub fn validate(&self) -> Result<(), String> {
        let methods = [
            !self.user.is_empty() || !self.password.is_empty(),
            !self.token.is_empty(),
            self.nkey_seed_file.is_some(),
            self.creds_file.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            return Err(
                "nats: set at most one of user/password, token, nkey_seed_file and creds_file"
                    .into(),
            );
        }
        if self.user.is_empty() != self.password.is_empty() {
            return Err("nats: user and password go together".into());
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err("nats: tls_cert_file and tls_key_file go together".into());
        }
        if !self.inbox_prefix.is_empty()
            && !self
                .inbox_prefix
                .split('.')
                .all(crate::protocol::subjects::valid_token)
        {
            return Err("nats: inbox_prefix must be dot-separated tokens of [A-Za-z0-9_-]".into());
        }
        Ok(())
    }

    /// Whether any TLS setting asks for TLS.
    fn wants_tls(&self) -> bool {
        self.tls_required || self.tls_ca_file.is_some() || self.tls_cert_file.is_some()
    }

    /// The secrets an error text must never contain.
    fn secrets(&self) -> Vec<&str> {
        [self.password.expose(), self.token.expose()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// `options` with the credentials and TLS settings applied.
    fn apply(
        &self,
        mut options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, String> {
        if !self.user.is_empty() {
            options =
                options.user_and_password(self.user.clone(), self.password.expose().to_owned());
        }
        if !self.token.is_empty() {
            options = options.token(self.token.expose().to_owned());
        }
        if let Some(path) = &self.nkey_seed_file {
            options = options.nkey(read_nkey_seed(path)?);
        }
        if let Some(path) = &self.creds_file {
            let text = read_secret_file(path, "nats creds file")?;
            // The parser's error never quotes the file, only what is wrong.
            options = options
                .credentials(&text)
                .map_err(|e| format!("nats creds file {}: {e}", path.display()))?;
        }
        if let Some(path) = &self.tls_ca_file {
            must_exist(path, "nats tls_ca_file")?;
            options = options.add_root_certificates(path.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_key_file) {
            must_exist(cert, "nats tls_cert_file")?;
            must_exist(key, "nats tls_key_file")?;
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.wants_tls() {
            options = options.require_tls(true);
        }
        if !self.inbox_prefix.is_empty() {
            options = options.custom_inbox_prefix(&self.inbox_prefix);
        }
        Ok(options)
    }
}

fn must_exist(path: &Path, what: &str) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(format!("{what} {} is not a file", path.display())),
        Err(e) => Err(format!("{what} {}: {e}", path.display())),
    }
}

fn read_secret_file(path: &Path, what: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// The seed in an nkey file: the first word that looks like a user seed
/// (`SU...`), so both a bare seed and `nsc`'s framed layout are read.
fn read_nkey_seed(path: &Path) -> Result<String, String> {
    let text = read_secret_file(path, "nats nkey seed file")?;
    text.split_whitespace()
        .find(|w| w.starts_with("SU") && w.len() > 50)
        .map(str::to_owned)
        .ok_or_else(|| {
            format!(
                "nats nkey seed file {}: no user seed (SU...) in it",
                path.display()
            )
        })
}

/// `url` (one or several, comma-separated) with any `user:password@` or
/// `token@` replaced by `***@`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let (scheme, rest) = match one.find("://") {
                Some(i) => one.split_at(i + 3),
                None => ("", one),
            };
            let host_end = rest.find('/').unwrap_or(rest.len());
            match rest[..host_end].rfind('@') {
                Some(at) => format!("{scheme}***{}", &rest[at..]),
                None => one.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The user and password or token written in `url`, to scrub from errors.
fn url_secrets(url: &str) -> Vec<String> {
    url.split(',')
        .filter_map(|one| {
            let rest = one.split_once("://").map_or(one, |(_, r)| r);
            let host_end = rest.find('/').unwrap_or(rest.len());
            let at = rest[..host_end].rfind('@')?;
            Some(rest[..at].to_owned())
        })
        .flat_map(|creds| {
            let mut parts: Vec<String> = creds.split(':').map(str::to_owned).collect();
            parts.push(creds);
            parts
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// The server's reason for refusing a connection, in the words operators
/// search for, with every secret in `secrets` replaced by `***`.
fn reason(error: &async_nats::ConnectError, secrets: &[String]) -> String {
    let mut text = error.to_string();
    for s in secrets {
        text = text.replace(s.as_str(), "***");
    }
    text
}

/// Whether another try cannot help: the server refused the credentials, the
/// TLS handshake failed (certificate not trusted, TLS required), or the URL
/// is wrong. Anything else (refused, unreachable, timed out) may be a server
/// that is still starting.
fn is_final(kind: async_nats::ConnectErrorKind) -> bool {
    use async_nats::ConnectErrorKind as K;
    matches!(
        kind,
        K::AuthorizationViolation | K::Authentication | K::Tls | K::ServerParse
    )
}

/// Connects with unlimited reconnects once connected. The first connection
/// is tried until `connect_timeout`; a refusal that another try cannot fix
/// (credentials, TLS) ends it at once. The error is one line naming the
/// URL without its credentials and the server's reason.
pub async fn connect(cfg: &NatsConfig) -> Result<(async_nats::Client, jetstream::Context), String> {
    connect_with_stats(cfg, None).await
}

/// [`connect`], keeping `stats` up to date from the client's connection events.
pub async fn connect_with_stats(
    cfg: &NatsConfig,
    stats: Option<Arc<NatsStats>>,
) -> Result<(async_nats::Client, jetstream::Context), String> {
    connect_tuned(cfg, stats, |o| o).await
}

/// [`connect_with_stats`] with `tune` applied to the client's options (a
/// larger subscription buffer, say).
pub async fn connect_tuned(
    cfg: &NatsConfig,
    stats: Option<Arc<NatsStats>>,
    tune: impl Fn(async_nats::ConnectOptions) -> async_nats::ConnectOptions,
) -> Result<(async_nats::Client, jetstream::Context), String> {
    cfg.security.validate()?;
    let shown = redact_url(&cfg.url);
    let mut secrets: Vec<String> = cfg
        .security
        .secrets()
        .into_iter()
        .map(str::to_owned)
        .collect();
    secrets.extend(url_secrets(&cfg.url));
    // Longest first, so a `user:pass` pair is replaced before its parts.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    // One URL or several, comma-separated (the servers of a cluster).
    let servers = cfg
        .url
        .split(',')
        .map(|u| u.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            let why = secrets
                .iter()
                .fold(e.to_string(), |m, s| m.replace(s.as_str(), "***"));
            format!("invalid NATS URL {shown}: {why}")
        })?;
    let give_up = tokio::time::Instant::now() + cfg.connect_timeout;
    let mut pause = Duration::from_millis(100);
    loop {
        let left = give_up.saturating_duration_since(tokio::time::Instant::now());
        let options = cfg.security.apply(tune(
            async_nats::ConnectOptions::new()
                .name(&cfg.client_name)
                .max_reconnects(None)
                .connection_timeout(left.clamp(Duration::from_millis(100), Duration::from_secs(5))),
        ))?;
        let options = match stats.clone() {
            Some(stats) => options.event_callback(move |event| {
                match event {
                    async_nats::Event::Connected => stats.note_connected(),
                    async_nats::Event::Disconnected => stats.note_disconnected(),
                    _ => {}
                }
                std::future::ready(())
            }),
            None => options,
        };
        let error = match tokio::time::timeout(left, options.connect(servers.as_slice())).await {
            Ok(Ok(client)) => {
                let js = jetstream::new(client.clone());
                return Ok((client, js));
            }
            Ok(Err(e)) => e,
            Err(_) => {
                return Err(format!(
                    "cannot connect to NATS at {shown}: no connection within {} ms",
                    cfg.connect_timeout.as_millis()
                ))
            }
        };
        let why = reason(&error, &secrets);
        if is_final(error.kind()) || tokio::time::Instant::now() + pause >= give_up {
            return Err(format!("cannot connect to NATS at {shown}: {why}"));
        }
        tracing::info!(url = %shown, error = %why, "nats not reachable yet; trying again");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_loses_its_credentials_and_keeps_the_rest() {
        assert_eq!(
            redact_url("nats://alice:s3cret@10.0.0.5:4222"),
            "nats://***@10.0.0.5:4222"
        );
        assert_eq!(
            redact_url("tls://tok@h:1,nats://h2:2"),
            "tls://***@h:1,nats://h2:2"
        );
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(
            url_secrets("nats://alice:s3cret@h:1"),
            vec!["alice", "s3cret", "alice:s3cret"]
        );
    }

    #[test]
    fn secrets_print_as_stars_and_empty_stays_empty() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** \"***\"");
        assert_eq!(Secret::default().to_string(), "");
    }

    #[test]
    fn contradictory_settings_are_refused_by_name() {
        let both = NatsSecurity {
            token: Secret::new("t"),
            creds_file: Some("/x.creds".into()),
            ..Default::default()
        };
        assert!(both.validate().unwrap_err().contains("at most one"));
        let half = NatsSecurity {
            tls_cert_file: Some("/c.pem".into()),
            ..Default::default()
        };
        assert!(half.validate().unwrap_err().contains("tls_key_file"));
    }
}
