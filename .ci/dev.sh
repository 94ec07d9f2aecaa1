#!/usr/bin/env bash
# The main command: `orchestrator dev` with any extra flags, after set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/narralytica/target}"
# A first build compiles RocksDB's C++ (many minutes on 2 cores); cargo's own
# progress lines show it is moving, and this note says why it takes so long.
if [ ! -e "$CARGO_TARGET_DIR/release/orchestrator" ]; then
  echo "dev: first build: compiling RocksDB's C++ takes about 12 minutes on 2 cores; cargo shows its progress below" >&2
fi
cargo build --release --bin orchestrator
exec "$CARGO_TARGET_DIR/release/orchestrator" dev "$@"
