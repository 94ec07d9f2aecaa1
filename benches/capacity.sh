#!/usr/bin/env bash
# The admission gate under load, end to end: nats-server, `orchestrator
# run` with capacity limits and `orchestrator worker --simulate` as
# separate processes, `orchestrator backfill` for the bulk work and
# `orchestrator loadgen` for the work measured.
#
#   benches/capacity.sh [RUNS]           # default 3 runs per figure
#
# Pipeline `capb`: one step, task type `transcribe`, capped at 8 attempts
# in flight, keyed by `/tenant`, priority at `/priority`; the worker takes
# 50 ms per task. Two scenarios, each against the same measurement on an
# empty system:
#
#   tenants:  tenant A has a backfill of 2,000 workflows, at least 1,000
#             of them queued (the cap drains 160/s), when
#             tenant B's 20 arrive at once (loadgen, 20 in parallel); B's
#             p99 workflow latency, which is its queue wait plus 50 ms.
#   backfill: a backfill of 5,000 at low priority, and a stream of normal
#             starts at 20/s for 15 s (loadgen): the stream's p99.
#
# Prints one line per run and the medians. Needs a release build and
# `nats-server` on PATH. Reports are kept in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/orchestrator}
OUT=${OUT:-/tmp/narralytica-capacity}
PORT=${PORT:-14632}
URL=nats://127.0.0.1:$PORT
[ -x "$BIN" ] || { echo "no binary at $BIN: run cargo build --release" >&2; exit 2; }
command -v nats-server >/dev/null || { echo "nats-server not on PATH (bash .ci/setup.sh)" >&2; exit 2; }
rm -rf "$OUT"; mkdir -p "$OUT/pipelines"
pids=()
# SIGKILL: a worker whose orchestrator is already gone would wait out
# its shutdown grace for results it cannot hand over.
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

cat > "$OUT/pipelines/capb.toml" <<'TOML'
[pipeline]
name = "capb"
version = 1

[[steps]]
name = "transcribe"
TOML
cat > "$OUT/orchestrator.toml" <<'TOML'
[capacity]
priority = "/priority"
aging = "1m"

[task_types.transcribe]
max_in_flight = 8
key = "/tenant"
TOML
backlog() { # N PREFIX FILE
  python3 -c "import sys
n, p = int(sys.argv[1]), sys.argv[2]
print('\n'.join('{\"id\":\"%s-%d\",\"tenant\":\"A\"}' % (p, i) for i in range(n)))" "$1" "$2" > "$3"
}

# A fresh system: nats-server, run, one worker able to take 64 at once.
start() {
  cleanup; pids=()
  rm -rf "$OUT/js" "$OUT/data"
  printf 'port: %s\njetstream { store_dir: "%s/js" }\n' "$PORT" "$OUT" > "$OUT/nats.conf"
  nats-server -c "$OUT/nats.conf" > "$OUT/nats.log" 2>&1 & pids+=($!)
  sleep 0.5
  "$BIN" run --nats-url "$URL" --data-dir "$OUT/data" --http-addr off \
      --pipelines "$OUT/pipelines" --config "$OUT/orchestrator.toml" > "$OUT/run.log" 2>&1 & pids+=($!)
  "$BIN" worker --simulate --nats-url "$URL" --pipelines "$OUT/pipelines" \
      --latency-ms 50 --concurrency 64 > "$OUT/worker.log" 2>&1 & pids+=($!)
  sleep 1
}
loadgen() { # REPORT LOG ARGS...
  local report=$1 log=$2; shift 2
  "$BIN" loadgen --nats-url "$URL" --pipeline capb --pipelines "$OUT/pipelines" \
      "$@" --report "$report" > "$log" 2>&1 || true
  [ -s "$report" ] || { echo "loadgen wrote no report ($report); its log:" >&2; tail -20 "$log" >&2; exit 2; }
}
p99() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['latency_ms']['p99'], d['errors'])" "$1"; }
median() { python3 -c "import statistics,sys; print(round(statistics.median(float(x) for x in sys.argv[1:]),2))" "$@"; }
# Waits until at least N transcribe tasks wait in the gate.
queued_at_least() {
  for _ in $(seq 600); do
    q=$("$BIN" capacity --json --nats-url "$URL" 2>/dev/null \
        | python3 -c "import json,sys; d=json.load(sys.stdin); print(sum(t['queued'] for t in d.get('task_types',[])))" 2>/dev/null || echo 0)
    [ "${q:-0}" -ge "$1" ] && return 0
    sleep 0.1
  done
  echo "never $1 queued" >&2; exit 2
}
backfill() { # FILE PRIORITY
  "$BIN" backfill capb --input-file "$1" --id-field id --rate 10000/s --priority "$2" \
      --nats-url "$URL" > "$OUT/backfill.log" 2>&1 &
  pids+=($!)
}

declare -a empty_b loaded_b empty_s loaded_s
for r in $(seq "$RUNS"); do
  start
  loadgen "$OUT/warm-$r.json" "$OUT/warm-$r.log" --concurrency 8 --workflows 100
  loadgen "$OUT/b-empty-$r.json" "$OUT/b-empty-$r.log" --concurrency 20 --workflows 20
  read -r a e < <(p99 "$OUT/b-empty-$r.json")
  echo "tenants  run $r: B p99 empty system=${a}ms errors=$e"
  empty_b+=("$a")
  backlog 2000 "a$r" "$OUT/a.jsonl"
  backfill "$OUT/a.jsonl" normal
  queued_at_least 1000
  loadgen "$OUT/b-loaded-$r.json" "$OUT/b-loaded-$r.log" --concurrency 20 --workflows 20
  read -r a e < <(p99 "$OUT/b-loaded-$r.json")
  echo "tenants  run $r: B p99 behind A's 2,000=${a}ms errors=$e"
  loaded_b+=("$a")

  start
  loadgen "$OUT/s-empty-$r.json" "$OUT/s-empty-$r.log" --rate 20/s --duration 15s
  read -r a e < <(p99 "$OUT/s-empty-$r.json")
  echo "backfill run $r: stream p99 unloaded=${a}ms errors=$e"
  empty_s+=("$a")
  backlog 5000 "bf$r" "$OUT/bf.jsonl"
  backfill "$OUT/bf.jsonl" low
  queued_at_least 1000
  loadgen "$OUT/s-loaded-$r.json" "$OUT/s-loaded-$r.log" --rate 20/s --duration 15s
  read -r a e < <(p99 "$OUT/s-loaded-$r.json")
  echo "backfill run $r: stream p99 with a low backfill of 5,000=${a}ms errors=$e"
  loaded_s+=("$a")
done
EB=$(median "${empty_b[@]}"); LB=$(median "${loaded_b[@]}")
ES=$(median "${empty_s[@]}"); LS=$(median "${loaded_s[@]}")
echo "tenants  median B p99: empty=${EB}ms behind 2,000 of A=${LB}ms ratio=$(python3 -c "print(round($LB/$EB,2))")"
echo "backfill median stream p99: unloaded=${ES}ms with backfill=${LS}ms ratio=$(python3 -c "print(round($LS/$ES,2))")"
