//! `orchestrator`: the command-line entry point. All logic lives in the library.

/// The engine allocates many small, short-lived values (events, task specs,
/// messages) across threads; mimalloc handles that far better than glibc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    orchestrator::cli::main()
}
