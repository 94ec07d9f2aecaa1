#!/usr/bin/env bash
# What capacity limits that never bind cost: closed-loop throughput of
# the speed-gate workload (benches/gates.sh: version 1 of the video
# pipeline, tests/fixtures/pipelines) without limits and with a cap
# of 1,000,000 on every task type of the video pipeline, a key per video
# and a priority pointer, so every task passes through the admission gate
# and none waits.
#
#   benches/caps_overhead.sh [PAIRS]      # default 5 pairs
#
# The two configurations alternate (none, caps, none, caps, ...), each run
# on a fresh nats-server and data directory, so drift of the machine
# (page cache, other load, thermal) falls on both alike; one-after-the-other
# sittings of gates.sh overstated the cost by that drift. Besides
# workflows/s it reports the CPU time each process spent per 1,000
# workflows (orchestrator, worker, nats-server), which other load on the
# machine disturbs far less than throughput.
#
# Prints one line per run, the medians, each pair's throughput ratio and
# the cost of the caps (one minus the median of the pairs' ratios: each
# pair runs back to back, so drift between pairs does not move it), and
# exits 1 when that cost is 5% or more, 2 when it could not measure.
# Needs a release build and `nats-server` on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${1:-5}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/orchestrator}
OUT=${OUT:-/tmp/narralytica-caps-overhead}
PORT=${PORT:-14623}
WORKFLOWS=${WORKFLOWS:-20000}
CONCURRENCY=${CONCURRENCY:-128}
PIPELINES=${PIPELINES:-tests/fixtures/pipelines}
URL=nats://127.0.0.1:$PORT
[ -x "$BIN" ] || { echo "no binary at $BIN: run cargo build --release" >&2; exit 2; }
command -v nats-server >/dev/null || { echo "nats-server not on PATH (bash .ci/setup.sh)" >&2; exit 2; }
rm -rf "$OUT"; mkdir -p "$OUT"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

python3 benches/caps_not_binding.py "$PIPELINES/video.toml" "$OUT/caps.toml"

# CPU seconds (user + system) a process has used so far.
cpu() { python3 -c "import os,sys; f=open(f'/proc/{sys.argv[1]}/stat').read().rsplit(')',1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK'))" "$1"; }

# One run: prints "wf/s orchestrator-cpu worker-cpu nats-cpu" (CPU seconds
# per 1,000 workflows of the closed loop).
one() {
  local mode=$1 dir=$2
  mkdir -p "$dir"
  printf 'port: %s\njetstream { store_dir: "%s/js" }\n' "$PORT" "$dir" > "$dir/nats.conf"
  nats-server -c "$dir/nats.conf" > "$dir/nats.log" 2>&1 & local nats=$!; pids+=("$nats")
  sleep 0.5
  local args=(--pipelines "$PIPELINES")
  [ "$mode" = caps ] && args+=(--config "$OUT/caps.toml")
  "$BIN" run --nats-url "$URL" --data-dir "$dir/data" --http-addr off "${args[@]}" > "$dir/run.log" 2>&1 & local run=$!; pids+=("$run")
  "$BIN" worker --simulate --nats-url "$URL" --pipelines "$PIPELINES" --default-segments 0 > "$dir/worker.log" 2>&1 & local worker=$!; pids+=("$worker")
  sleep 1
  "$BIN" loadgen --nats-url "$URL" --pipelines "$PIPELINES" --concurrency 32 --workflows 500 --report "$dir/warmup.json" > "$dir/warmup.log" 2>&1 || true
  local r0 w0 n0 r1 w1 n1
  r0=$(cpu "$run"); w0=$(cpu "$worker"); n0=$(cpu "$nats")
  "$BIN" loadgen --nats-url "$URL" --pipelines "$PIPELINES" --concurrency "$CONCURRENCY" --workflows "$WORKFLOWS" \
      --report "$dir/closed.json" > "$dir/closed.log" 2>&1 || true
  r1=$(cpu "$run"); w1=$(cpu "$worker"); n1=$(cpu "$nats")
  [ -s "$dir/closed.json" ] || { echo "loadgen wrote no report; its log:" >&2; tail -20 "$dir/closed.log" >&2; exit 2; }
  kill -9 "$run" "$worker" "$nats" 2>/dev/null || true
  wait "$run" "$worker" "$nats" 2>/dev/null || true
  python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
if d['errors']: sys.exit('errors in ' + sys.argv[1])
k = 1000 / float(sys.argv[8])
print(d['workflows_per_s'], *(round((float(b) - float(a)) * k, 3) for a, b in zip(sys.argv[2:8:2], sys.argv[3:8:2])))
" "$dir/closed.json" "$r0" "$r1" "$w0" "$w1" "$n0" "$n1" "$WORKFLOWS"
}

declare -a none_lines caps_lines
for p in $(seq "$PAIRS"); do
  for mode in none caps; do
    line=$(one "$mode" "$OUT/$mode-$p")
    echo "$mode run $p: wf/s cpu-s/1000wf (orchestrator worker nats) = $line"
    if [ "$mode" = none ]; then none_lines+=("$line"); else caps_lines+=("$line"); fi
  done
done

python3 - "${#none_lines[@]}" "${none_lines[@]}" "${caps_lines[@]}" <<'PY'
import statistics, sys
n = int(sys.argv[1])
rows = [list(map(float, l.split())) for l in sys.argv[2:]]
none, caps = rows[:n], rows[n:]
med = lambda rs, i: statistics.median(r[i] for r in rs)
names = ["workflows/s", "orchestrator cpu-s/1000wf", "worker cpu-s/1000wf", "nats cpu-s/1000wf"]
for i, name in enumerate(names):
    a, b = med(none, i), med(caps, i)
    print(f"median {name:28s} none={a:<9g} caps={b:<9g} change={100 * (b - a) / a:+.1f}%")
# Each pair ran back to back: the median of the pairs' ratios is the
# estimate that drift between pairs does not move.
ratios = sorted(c[0] / n[0] for n, c in zip(none, caps))
print("pair ratios caps/none (workflows/s):", " ".join(f"{r:.3f}" for r in ratios))
cost = 100 * (1 - statistics.median(ratios))
ok = cost < 5
print(f"gate caps-not-binding throughput cost (median of pairs) {cost:.1f}% < 5%: {'met' if ok else 'MISSED'}")
sys.exit(0 if ok else 1)
PY
