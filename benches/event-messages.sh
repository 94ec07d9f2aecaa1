#!/usr/bin/env bash
# Lifecycle event messages per workflow and per journal record, under the
# closed-loop load of `orchestrator loadgen`: nats-server, `orchestrator
# run` (lifecycle events on) and `orchestrator worker --simulate` as
# separate processes, like benches/gates.sh.
#
#   BIN=path/to/orchestrator benches/event-messages.sh [WORKFLOWS]
#
# Prints one line: workflows, journal records published, messages that
# carried them, and messages per workflow. Run it with two builds to
# compare event subject schemes (batching shares a message only between
# records with the same subject).
# The workload is version 1 of the video pipeline (tests/fixtures/pipelines,
# nine static steps, the `segment` worker listing no segments), as for the
# figures in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKFLOWS=${1:-5000}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/orchestrator}
OUT=${OUT:-/tmp/narralytica-event-messages}
PORT=${PORT:-14632}
HTTP=${HTTP:-127.0.0.1:14633}
URL=nats://127.0.0.1:$PORT
PIPELINES=tests/fixtures/pipelines
[ -x "$BIN" ] || { echo "no binary at $BIN" >&2; exit 2; }
command -v nats-server >/dev/null || { echo "nats-server not on PATH (bash .ci/setup.sh)" >&2; exit 2; }
rm -rf "$OUT"; mkdir -p "$OUT"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
nats-server -p "$PORT" -js -sd "$OUT/js" > "$OUT/nats.log" 2>&1 & pids+=($!)
sleep 0.5
"$BIN" run --pipelines "$PIPELINES" --nats-url "$URL" --data-dir "$OUT/data" --http-addr "$HTTP" > "$OUT/run.log" 2>&1 & pids+=($!)
"$BIN" worker --simulate --pipelines "$PIPELINES" --default-segments 0 --nats-url "$URL" > "$OUT/worker.log" 2>&1 & pids+=($!)
sleep 1
"$BIN" loadgen --pipelines "$PIPELINES" --nats-url "$URL" --concurrency 128 --workflows "$WORKFLOWS" --report "$OUT/report.json" > "$OUT/loadgen.log" 2>&1 || true
# The publisher drains after the last completion: wait until it is idle.
prev=-1
for _ in $(seq 50); do
  now=$(curl -s "http://$HTTP/metrics" | awk '/^narralytica_events_published_total/ {print $2}')
  [ "$now" = "$prev" ] && break
  prev=$now; sleep 0.2
done
curl -s "http://$HTTP/metrics" | python3 -c "
import sys
m = {}
for line in sys.stdin:
    if line.startswith('narralytica_events_'):
        k, v = line.split()[:2]; m[k] = float(v)
rec, msg = m['narralytica_events_published_total'], m['narralytica_events_messages_total']
print(f'workflows=$WORKFLOWS records={rec:.0f} messages={msg:.0f} records_per_message={rec/msg:.2f} messages_per_workflow={msg/$WORKFLOWS:.2f}')
"
