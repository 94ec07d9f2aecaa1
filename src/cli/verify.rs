//! `orchestrator verify --data-dir DIR`.

use std::process::ExitCode;
use std::sync::Arc;

use crate::storage::rocks::{RocksConfig, RocksStorage};
use crate::storage::store::WorkflowStore;
use crate::storage::Storage;
use crate::verify::verify_store;
pub use crate::verify::VerifyArgs;

pub fn run(args: VerifyArgs) -> ExitCode {
    if !args.data_dir.join("CURRENT").exists() {
        eprintln!(
            "error: {} is not a data dir (no RocksDB CURRENT file)",
            args.data_dir.display()
        );
        return ExitCode::from(2);
    }
    let storage: Arc<dyn Storage> =
        match RocksStorage::open(&args.data_dir, &RocksConfig::default()) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                eprintln!("error: cannot open {}: {e}", args.data_dir.display());
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
