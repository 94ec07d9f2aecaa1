#!/usr/bin/env bash
# Installs what `cargo` cannot: the system packages the RocksDB build needs.
# Idempotent and quiet when everything is already there.
set -euo pipefail

need_clang=1
if compgen -G "/usr/lib/llvm-*/lib/libclang*.so*" >/dev/null || compgen -G "/usr/lib/*/libclang*.so*" >/dev/null; then
  need_clang=0
fi

if [ "$need_clang" = 1 ]; then
  echo "setup: installing libclang-dev (bindgen needs it to build RocksDB)" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q libclang-dev >/dev/null 2>&1 || {
    $SUDO apt-get update -q >/dev/null
    $SUDO apt-get install -y -q libclang-dev >/dev/null
  }
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install the Rust toolchain (https://rustup.rs)" >&2
  exit 1
fi
