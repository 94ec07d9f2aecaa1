//! `orchestrator`: the command-line entry point. All logic lives in the library.

fn main() -> std::process::ExitCode {
    orchestrator::cli::main()
}
