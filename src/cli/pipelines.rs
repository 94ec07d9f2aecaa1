//! `orchestrator pipelines check [DIR]`.

use std::path::Path;
use std::process::ExitCode;

use crate::pipeline::load::load_pipeline_dir;
use crate::pipeline::PipelineLimits;

pub fn check(dir: &Path) -> ExitCode {
    match load_pipeline_dir(dir, &PipelineLimits::default()) {
        Ok(defs) if defs.is_empty() => {
            eprintln!("error: no pipeline files (*.toml) in {}", dir.display());
            ExitCode::FAILURE
        }
        Ok(defs) => {
            for def in &defs {
                println!("{}", def.render_dag());
            }
            println!("ok: {} pipeline(s) valid in {}", defs.len(), dir.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!("{} error(s) in {}", errors.len(), dir.display());
            ExitCode::FAILURE
        }
    }
}
