#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property and integration
# tests, all in the release profile so RocksDB compiles once for everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/narralytica/target}"
cargo fmt --check
cargo clippy --release --all-targets -- -D warnings
cargo test --release
