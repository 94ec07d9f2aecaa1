#!/usr/bin/env bash
# The main command: `orchestrator dev` with any extra flags, after set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/narralytica/target}"
exec cargo run --release --quiet --bin orchestrator -- dev "$@"
