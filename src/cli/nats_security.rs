//! The NATS credential and TLS flags every connecting command shares. Each
//! has an environment variable (preferred for secrets: a flag shows in
//! `ps`); `orchestrator run` also reads them from the `[nats]` section, which
//! a flag or variable overrides.

use std::path::PathBuf;

use clap::Args;

use crate::config::{Dur, NatsSection};
use crate::transport::nats::{NatsSecurity, Secret};

/// Credentials, TLS and the first-connection timeout of a NATS client.
#[derive(Debug, Clone, Default, Args)]
pub struct NatsSecurityArgs {
    /// NATS user (with --nats-password) [config: nats.user].
    #[arg(long, env = "NARRALYTICA_NATS_USER", value_name = "USER")]
    pub nats_user: Option<String>,
    /// NATS password; prefer the environment variable [config: nats.password].
    #[arg(
        long,
        env = "NARRALYTICA_NATS_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub nats_password: Option<String>,
    /// NATS token; prefer the environment variable [config: nats.token].
    #[arg(
        long,
        env = "NARRALYTICA_NATS_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub nats_token: Option<String>,
    /// File holding an nkey seed (SU...) [config: nats.nkey_seed_file].
    #[arg(long, env = "NARRALYTICA_NATS_NKEY_FILE", value_name = "FILE")]
    pub nats_nkey_file: Option<PathBuf>,
    /// `.creds` file (user JWT + nkey seed) [config: nats.creds_file].
    #[arg(long, env = "NARRALYTICA_NATS_CREDS", value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// PEM CA bundle that signs the server's certificate [config: nats.tls_ca_file].
    #[arg(long, env = "NARRALYTICA_NATS_TLS_CA", value_name = "FILE")]
    pub nats_tls_ca: Option<PathBuf>,
    /// PEM client certificate, for mTLS (with --nats-tls-key) [config: nats.tls_cert_file].
    #[arg(long, env = "NARRALYTICA_NATS_TLS_CERT", value_name = "FILE")]
    pub nats_tls_cert: Option<PathBuf>,
    /// PEM key of the client certificate [config: nats.tls_key_file].
    #[arg(long, env = "NARRALYTICA_NATS_TLS_KEY", value_name = "FILE")]
    pub nats_tls_key: Option<PathBuf>,
    /// Refuse a server that does not offer TLS [config: nats.tls_required].
    #[arg(
        long,
        env = "NARRALYTICA_NATS_TLS_REQUIRED",
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub nats_tls_required: Option<bool>,
    /// Prefix of this client's reply subjects, e.g. `_INBOX_worker-embed`
    /// for a user allowed only those [config: nats.inbox_prefix].
    #[arg(long, env = "NARRALYTICA_NATS_INBOX_PREFIX", value_name = "PREFIX")]
    pub nats_inbox_prefix: Option<String>,
    /// Give up on the first connection after this long (`run`: 30s, other
    /// commands: 5s) [config: nats.connect_timeout].
    #[arg(
        long,
        env = "NARRALYTICA_NATS_CONNECT_TIMEOUT",
        value_name = "DURATION"
    )]
    pub nats_connect_timeout: Option<Dur>,
}

impl NatsSecurityArgs {
    /// Overrides the `[nats]` section's settings with the ones given here.
    pub fn apply_to(&self, section: &mut NatsSection) {
        if let Some(v) = &self.nats_user {
            section.user = v.clone();
        }
        if let Some(v) = &self.nats_password {
            section.password = Secret::new(v.clone());
        }
        if let Some(v) = &self.nats_token {
            section.token = Secret::new(v.clone());
        }
        if let Some(v) = &self.nats_nkey_file {
            section.nkey_seed_file = v.clone();
        }
        if let Some(v) = &self.nats_creds {
            section.creds_file = v.clone();
        }
        if let Some(v) = &self.nats_tls_ca {
            section.tls_ca_file = v.clone();
        }
        if let Some(v) = &self.nats_tls_cert {
            section.tls_cert_file = v.clone();
        }
        if let Some(v) = &self.nats_tls_key {
            section.tls_key_file = v.clone();
        }
        if let Some(v) = self.nats_tls_required {
            section.tls_required = v;
        }
        if let Some(v) = &self.nats_inbox_prefix {
            section.inbox_prefix = v.clone();
        }
        if let Some(v) = self.nats_connect_timeout {
            section.connect_timeout = v;
        }
    }

    /// The security settings of a command that has no config file.
    pub fn security(&self) -> NatsSecurity {
        let mut section = NatsSection::default();
        self.apply_to(&mut section);
        section.security()
    }
}
