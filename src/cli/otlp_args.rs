//! The OTLP exporter's transport flags shared by `run` and `dev`: request
//! headers (credentials), compression and the CA of an https collector.

use std::path::PathBuf;

use clap::Args;

use crate::config::TraceSection;
use crate::otel::{Compression, OtlpConfig, OtlpHeaders};
use crate::transport::nats::Secret;

#[derive(Debug, Clone, Args, Default)]
pub struct OtlpArgs {
    /// OTLP request headers, `name=value,...` with percent-encoded values,
    /// e.g. `Authorization=Bearer%20<token>`; never printed [config: trace.headers].
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_HEADERS",
        hide_env_values = true,
        value_name = "HEADERS"
    )]
    pub otlp_headers: Option<String>,
    /// Compression of OTLP request bodies: `none` or `gzip` [config: trace.compression].
    #[arg(long, env = "OTEL_EXPORTER_OTLP_COMPRESSION", value_name = "NAME", value_parser = parse_compression)]
    pub otlp_compression: Option<Compression>,
    /// PEM CA that an https OTLP endpoint must be signed by, instead of the
    /// system's roots [config: trace.ca_file].
    #[arg(long, env = "OTEL_EXPORTER_OTLP_CERTIFICATE", value_name = "FILE")]
    pub otlp_ca_file: Option<PathBuf>,
}

fn parse_compression(text: &str) -> Result<Compression, String> {
    text.parse()
}

impl OtlpArgs {
    /// Overrides the `[trace]` section's transport settings with the ones given here.
    pub fn apply_to(&self, section: &mut TraceSection) {
        if let Some(v) = &self.otlp_headers {
            section.headers = Secret::new(v.clone());
        }
        if let Some(v) = self.otlp_compression {
            section.compression = v;
        }
        if let Some(v) = &self.otlp_ca_file {
            section.ca_file = v.clone();
        }
    }

    /// The exporter settings of `dev`, which has no config file: `endpoint`
    /// with these flags and the other defaults.
    pub fn config(&self, endpoint: &str) -> Result<OtlpConfig, String> {
        let headers = match &self.otlp_headers {
            // The error names the entry or header, never the value.
            Some(text) => OtlpHeaders::parse(text).map_err(|e| format!("--otlp-headers: {e}"))?,
            None => OtlpHeaders::default(),
        };
        Ok(OtlpConfig {
            endpoint: endpoint.to_owned(),
            headers,
            compression: self.otlp_compression.unwrap_or_default(),
            ca_file: self.otlp_ca_file.clone(),
            ..Default::default()
        })
    }
}
