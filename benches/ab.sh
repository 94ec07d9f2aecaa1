#!/usr/bin/env bash
# Interleaved A/B of orchestrator builds on this machine: for each round and
# each binary, a fresh nats-server, `orchestrator run` and `orchestrator
# worker --simulate`, a 500-workflow warm-up, then the chosen runs. Run-to-run
# noise on a shared 2-core box is larger than most changes, so binaries take
# turns instead of running one set after the other.
#
#   benches/ab.sh A=/path/to/old B=/path/to/new            # 2 rounds of "u o1000"
#   ROUNDS=3 TESTS="u u o850" benches/ab.sh A=... B=...
#
# TESTS: `u` = unloaded (`loadgen --concurrency 1 --workflows 300`),
# `oN` = open loop at N workflows/s for ${DURATION:-20} s; each open-loop
# line also gives CPU ms per workflow of nats-server, the orchestrator and
# the worker (from /proc/<pid>/stat) and NATS messages in/out per workflow
# (nats-server's /varz). Reports stay in $OUT (default /tmp/narralytica-ab).
# The workload is version 1 of the video pipeline (tests/fixtures/pipelines,
# nine static steps, the `segment` worker listing no segments), as for the
# figures in docs/benchmarks.md; a build whose worker lists segments unasked
# gets `--default-segments 0`, so both sides run the same workload.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '2,19p' "$0" >&2; exit 2; }
ROUNDS=${ROUNDS:-2}
TESTS=${TESTS:-u o1000}
DURATION=${DURATION:-20}
OUT=${OUT:-/tmp/narralytica-ab}
PORT=${PORT:-14644}
MON=${MON:-18244}
URL=nats://127.0.0.1:$PORT
PIPELINES=tests/fixtures/pipelines
command -v nats-server >/dev/null || { echo "nats-server not on PATH (bash .ci/setup.sh)" >&2; exit 2; }
for v in "$@"; do
  [ -x "${v#*=}" ] || { echo "not an executable: ${v#*=}" >&2; exit 2; }
done
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
varz() { curl -s "127.0.0.1:$MON/varz" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["in_msgs"], d["out_msgs"])'; }
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

for round in $(seq "$ROUNDS"); do
  for v in "$@"; do
    name=${v%%=*}; BIN=${v#*=}
    rm -rf "$OUT/run"; mkdir -p "$OUT/run"
    printf 'port: %s\nhttp_port: %s\njetstream { store_dir: "%s/run/js" }\n' "$PORT" "$MON" "$OUT" > "$OUT/run/nats.conf"
    nats-server -c "$OUT/run/nats.conf" > "$OUT/run/nats.log" 2>&1 & NATS=$!; pids=("$NATS")
    sleep 0.5
    "$BIN" run --pipelines "$PIPELINES" --nats-url "$URL" --data-dir "$OUT/run/data" --http-addr off > "$OUT/run/run.log" 2>&1 & RUN=$!; pids+=("$RUN")
    nosegs=(); "$BIN" worker --help | grep -q -- --default-segments && nosegs=(--default-segments 0)
    "$BIN" worker --simulate --pipelines "$PIPELINES" "${nosegs[@]}" --nats-url "$URL" > "$OUT/run/worker.log" 2>&1 & WRK=$!; pids+=("$WRK")
    sleep 1
    "$BIN" loadgen --pipelines "$PIPELINES" --nats-url "$URL" --concurrency 32 --workflows 500 > /dev/null 2>&1
    for t in $TESTS; do
      rep="$OUT/$name-r$round-$t.json"
      case $t in
        u)
          "$BIN" loadgen --pipelines "$PIPELINES" --nats-url "$URL" --concurrency 1 --workflows 300 --report "$rep" > /dev/null 2>&1
          echo "round $round $name unloaded: p50=$(field "$rep" "d['latency_ms']['p50']") p99=$(field "$rep" "d['latency_ms']['p99']") errors=$(field "$rep" "d['errors']")"
          ;;
        o*)
          rate=${t#o}
          a1=$(cpu "$NATS"); b1=$(cpu "$RUN"); c1=$(cpu "$WRK"); m1=$(varz)
          "$BIN" loadgen --pipelines "$PIPELINES" --nats-url "$URL" --rate "$rate/s" --duration "${DURATION}s" --report "$rep" > /dev/null 2>&1
          a2=$(cpu "$NATS"); b2=$(cpu "$RUN"); c2=$(cpu "$WRK"); m2=$(varz)
          n=$(field "$rep" "d['completed']")
          python3 - "$name" "$round" "$rate" "$rep" "$n" "$a1" "$a2" "$b1" "$b2" "$c1" "$c2" $m1 $m2 <<'PY'
import json, sys
name, rnd, rate, rep, n = sys.argv[1:6]
a1, a2, b1, b2, c1, c2, i1, o1, i2, o2 = map(float, sys.argv[6:16])
d = json.load(open(rep)); n = max(float(n), 1.0)
ms = lambda x, y: (y - x) * 10 / n  # clock ticks (10 ms) -> ms per workflow
print(f"round {rnd} {name} {rate}/s: p50={d['latency_ms']['p50']} p99={d['latency_ms']['p99']} "
      f"errors={d['errors']} cpu_ms_per_wf nats={ms(a1, a2):.2f} orch={ms(b1, b2):.2f} "
      f"worker={ms(c1, c2):.2f} nats_msgs_per_wf in={(i2 - i1) / n:.1f} out={(o2 - o1) / n:.1f}")
PY
          ;;
        *) echo "unknown test $t (u or oN)" >&2; exit 2 ;;
      esac
    done
    kill "$WRK"; sleep 0.3; kill "$RUN"; wait "$RUN" 2>/dev/null || true; kill "$NATS"; wait 2>/dev/null || true
    pids=()
  done
done
