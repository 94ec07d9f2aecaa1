//! The workflow core must stay pure: no IO, clock, randomness or tokio. This
//! test reads the core's sources and fails on any import of those.

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "std::time",
    "SystemTime",
    "Instant",
    "tokio",
    "rand",
    "std::fs",
    "std::net",
    "std::io",
    "std::env",
    "std::thread",
    "std::process",
    "uuid",
    "rocksdb",
    "ractor",
    "async_nats",
    "crate::storage",
    "crate::engine",
    "crate::transport",
    "println!",
    "eprintln!",
];

fn words(line: &str) -> Vec<String> {
    line.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':' || c == '!'))
        .map(str::to_string)
        .collect()
}

#[test]
fn workflow_core_imports_no_io_clock_randomness_or_tokio() {
    let mut checked = 0;
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src/workflow")];
    let mut files = Vec::new();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/workflow exists") {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    for path in files {
        // The property tests may use a test-only RNG; the core itself may not.
        if path.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for w in words(code) {
                for bad in FORBIDDEN {
                    assert!(
                        !(w == *bad
                            || w.starts_with(&format!("{bad}::"))
                            || w.contains(&format!("::{bad}"))),
                        "{}:{}: the pure core must not use `{bad}`: {line}",
                        path.display(),
                        n + 1
                    );
                }
            }
        }
        checked += 1;
    }
    assert!(
        checked >= 12,
        "expected the core's files, decide/ included, found {checked}"
    );
}

#[test]
fn the_purity_check_catches_a_planted_import() {
    // Guard against a checker that can never fail.
    let hits: Vec<String> = words("use std::time::SystemTime; let x = tokio::spawn(f);");
    assert!(hits.iter().any(|w| w.starts_with("std::time")));
    assert!(hits.iter().any(|w| w.starts_with("tokio::")));
}
