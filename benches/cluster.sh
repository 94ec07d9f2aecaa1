#!/usr/bin/env bash
# Cluster mode against single-node mode on this machine, in turns: for each
# round and each mode, a fresh nats-server, `orchestrator run` (single node,
# or `[cluster] enabled` with one node and journal_replicas = 1),
# `orchestrator worker --simulate`, a 500-workflow warm-up, then a closed
# loop (`loadgen --concurrency 128 --workflows $WORKFLOWS`). Cluster runs
# also print the journal's records per transition: the commit records on
# the JetStream journal (`verify --journal-from`: records - terms, the
# terms' open records left out) over the node's `narralytica_journal_records_total`.
#
#   benches/cluster.sh                        # 3 rounds, 20,000 workflows
#   ROUNDS=3 WORKFLOWS=40000 BIN=target/release/orchestrator benches/cluster.sh
#
# Reports stay in $OUT (default /tmp/narralytica-cluster).
# The workload is version 1 of the video pipeline (tests/fixtures/pipelines,
# nine static steps, the `segment` worker listing no segments), as for the
# figures in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
WORKFLOWS=${WORKFLOWS:-20000}
BIN=${BIN:-target/release/orchestrator}
OUT=${OUT:-/tmp/narralytica-cluster}
PORT=${PORT:-14654}
HTTP=${HTTP:-19474}
URL=nats://127.0.0.1:$PORT
PIPELINES=tests/fixtures/pipelines
command -v nats-server >/dev/null || { echo "nats-server not on PATH (bash .ci/setup.sh)" >&2; exit 2; }
[ -x "$BIN" ] || { echo "not an executable: $BIN (cargo build --release)" >&2; exit 2; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }
metric() { curl -s "127.0.0.1:$HTTP/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

mkdir -p "$OUT"
printf '[cluster]\nenabled = true\njournal_replicas = 1\n' > "$OUT/cluster.toml"
printf '[cluster]\n' > "$OUT/single.toml"
for round in $(seq "$ROUNDS"); do
  for mode in single cluster; do
    rm -rf "$OUT/run"; mkdir -p "$OUT/run"
    printf 'port: %s\njetstream { store_dir: "%s/run/js" }\n' "$PORT" "$OUT" > "$OUT/run/nats.conf"
    nats-server -c "$OUT/run/nats.conf" > "$OUT/run/nats.log" 2>&1 & NATS=$!; pids=("$NATS")
    sleep 0.5
    "$BIN" run --pipelines "$PIPELINES" --config "$OUT/$mode.toml" --nats-url "$URL" \
      --data-dir "$OUT/run/data" --http-addr "127.0.0.1:$HTTP" > "$OUT/run/run.log" 2>&1 & RUN=$!; pids+=("$RUN")
    "$BIN" worker --simulate --pipelines "$PIPELINES" --default-segments 0 --nats-url "$URL" > "$OUT/run/worker.log" 2>&1 & WRK=$!; pids+=("$WRK")
    for _ in $(seq 100); do grep -q "orchestrator running" "$OUT/run/run.log" && break; sleep 0.1; done
    "$BIN" loadgen --pipelines "$PIPELINES" --nats-url "$URL" --concurrency 32 --workflows 500 > /dev/null 2>&1
    rep="$OUT/$mode-r$round.json"
    "$BIN" loadgen --pipelines "$PIPELINES" --nats-url "$URL" --concurrency 128 --workflows "$WORKFLOWS" --report "$rep" > /dev/null 2>&1
    line="round $round $mode: wf/s=$(field "$rep" "d['workflows_per_s']") p50=$(field "$rep" "d['latency_ms']['p50']") errors=$(field "$rep" "d['errors']")"
    if [ "$mode" = cluster ]; then
      transitions=$(metric narralytica_journal_records_total)
      j=$("$BIN" verify --journal-from "$URL" | tail -1)
      records=$(echo "$j" | tr ' ' '\n' | sed -n 's/^records=//p')
      terms=$(echo "$j" | tr ' ' '\n' | sed -n 's/^terms=//p')
      violations=$(echo "$j" | tr ' ' '\n' | sed -n 's/^violations=//p')
      line="$line transitions=$transitions journal_commit_records=$((records - terms)) per_transition=$(python3 -c "print(round(($records - $terms) / $transitions, 4))") violations=$violations"
    fi
    echo "$line"
    kill "$WRK"; sleep 0.3; kill "$RUN"; wait "$RUN" 2>/dev/null || true; kill "$NATS"; wait 2>/dev/null || true
    pids=()
  done
done
