//! `orchestrator verify [--data-dir DIR | --config FILE | --home DIR]`: by
//! default the data dir `orchestrator run` uses with the same options.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::Config;
use crate::storage::rocks::{RocksConfig, RocksStorage};
use crate::storage::store::WorkflowStore;
use crate::storage::Storage;
use crate::verify::system::{check_system, read_event_stream, read_records, SystemInputs};
use crate::verify::verify_store;
pub use crate::verify::VerifyArgs;

/// `verify`'s flags, with the credentials and TLS of its `--events-from`
/// connection (the same options as every command that connects to NATS).
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Example (the node stopped: verify needs the data dir's lock):\n  orchestrator verify --data-dir /var/lib/narralytica/orchestrator --details\n  # -> verify workflows=50 completed=50 ... violations=0 corrupt=0\n  orchestrator verify --config /etc/narralytica/orchestrator.toml   # the data dir `run --config` uses\n  orchestrator verify --data-dir ./data/dev   # after `orchestrator dev`\n  orchestrator verify --data-dir D --events-from nats://127.0.0.1:4222 --record w0.jsonl --expect-terminal\n  # -> check workflows=100 terminal=100 events_missing=0 ... violations=0 (exit 1 on any violation)"
)]
pub struct VerifyCommand {
    #[command(flatten)]
    pub verify: VerifyArgs,
    /// The config file of `orchestrator run`: without --data-dir, its
    /// `node.data_dir` is checked.
    #[arg(long, env = "NARRALYTICA_CONFIG")]
    pub config: Option<PathBuf>,
    /// As `orchestrator run --home`: base of the default data dir.
    #[arg(long, env = "NARRALYTICA_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    #[command(flatten)]
    pub events_security: super::nats_security::NatsSecurityArgs,
    /// Check the replicated journal of a cluster on this NATS instead of a
    /// data dir: every partition's hash chain, checksums and epochs.
    #[arg(long, value_name = "NATS_URL")]
    pub journal_from: Option<String>,
    /// The cluster's prefix, for --journal-from.
    #[arg(long, default_value = "narralytica", requires = "journal_from")]
    pub journal_prefix: String,
}

pub fn run(cmd: VerifyCommand) -> ExitCode {
    let VerifyCommand {
        verify: args,
        events_security,
        config,
        home,
        journal_from,
        journal_prefix,
    } = cmd;
    if let Some(url) = journal_from {
        return replicated_journal(url, journal_prefix, &events_security, args.details);
    }
    // The same resolution as `run`: the flag (or env), else the config
    // file's data dir, else the default under the home.
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => match Config::layered(config.as_deref(), home.as_deref()) {
            Ok(cfg) => cfg.node.data_dir,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    if !data_dir.join("CURRENT").exists() {
        eprintln!(
            "error: {} is not a data dir (no RocksDB CURRENT file)",
            data_dir.display()
        );
        return ExitCode::from(2);
    }
    let storage: Arc<dyn Storage> = match RocksStorage::open(&data_dir, &RocksConfig::default()) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("error: cannot open {}: {e}", data_dir.display());
            return ExitCode::from(2);
        }
    };
    let store = match WorkflowStore::open_existing(storage) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.system() {
        return system(&args, &events_security, &store);
    }
    match verify_store(&store) {
        Ok(report) => {
            if args.details || report.violations + report.corrupt > 0 {
                for d in &report.details {
                    eprintln!("{d}");
                }
            }
            println!("{report}");
            if report.violations + report.corrupt > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The checker's evidence besides the journals: worker records, the event
/// stream and the accepted ids, each only when asked for. A source that
/// cannot be read is a usage error (exit 2).
fn system_inputs(
    args: &VerifyArgs,
    events_security: &super::nats_security::NatsSecurityArgs,
) -> Result<SystemInputs, ExitCode> {
    let usage = |e: String| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    };
    let records = (!args.record.is_empty())
        .then(|| read_records(&args.record))
        .transpose()
        .map_err(usage)?;
    let events = match &args.events_from {
        None => None,
        Some(url) => {
            let nats = super::NatsArgs {
                nats_url: url.clone(),
                prefix: args.events_prefix.clone(),
                security: events_security.clone(),
            };
            Some(
                super::runtime()?
                    .block_on(read_event_stream(&nats.config()))
                    .map_err(usage)?,
            )
        }
    };
    let accepted = args
        .accepted
        .as_ref()
        .map(|p| {
            std::fs::read_to_string(p)
                .map(|t| {
                    t.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .map_err(|e| usage(format!("cannot read accepted ids {}: {e}", p.display())))
        })
        .transpose()?;
    Ok(SystemInputs {
        expect_terminal: args.expect_terminal,
        events,
        records,
        accepted,
        observed_until_ms: args.observed_until_ms,
        stuck_slack_ms: args.stuck_slack_ms,
        skew_ms: args.skew_ms,
    })
}

/// The system checker: journals, event stream and worker records.
fn system(
    args: &VerifyArgs,
    events_security: &super::nats_security::NatsSecurityArgs,
    store: &WorkflowStore,
) -> ExitCode {
    let inputs = match system_inputs(args, events_security) {
        Ok(i) => i,
        Err(code) => return code,
    };
    match check_system(store, &inputs) {
        Ok(report) => {
            let bad = report.violations() > 0;
            if args.details || bad {
                for d in &report.details {
                    eprintln!("{d}");
                }
            }
            println!("{report}");
            if bad {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `--journal-from`: reads and checks a cluster's replicated journal.
fn replicated_journal(
    url: String,
    prefix: String,
    security: &super::nats_security::NatsSecurityArgs,
    details: bool,
) -> ExitCode {
    let nats = super::NatsArgs {
        nats_url: url,
        prefix,
        security: security.clone(),
    };
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let cfg = nats.config();
    let report = rt.block_on(async {
        let (_client, js) = crate::transport::nats::connect(&cfg).await?;
        crate::transport::nats::check_journal(&js, &cfg.prefix).await
    });
    match report {
        Ok(report) => {
            let bad = !report.violations.is_empty();
            if details || bad {
                for v in &report.violations {
                    eprintln!("{v}");
                }
            }
            println!("{report}");
            if bad {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
