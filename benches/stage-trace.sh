#!/usr/bin/env bash
# Where one unloaded workflow stage's time goes, from the kernel's view:
# nats-server, `orchestrator run` and `orchestrator worker --simulate` as
# in benches/gates.sh, a 500-workflow warm-up, then `perf record` of the
# socket and fdatasync syscalls of the three processes during
# `loadgen --concurrency 1 --workflows ${WORKFLOWS:-60}`. Each stage is cut
# at the syscalls that bound it:
#
#   worker: offer read -> answer written          (run a no-op task)
#   hop to orchestrator: answer written -> read by the orchestrator
#   before sync: orchestrator read -> its fdatasync starts (decide, journal)
#   fdatasync
#   after sync: fdatasync ends -> the orchestrator's next socket write
#   hop to worker: that write -> the worker reads the next offer
#
# and the median of each part is printed. Needs root (perf tracepoints), a
# release build and nats-server on PATH. perf adds load of its own: the
# parts are larger than without it; compare them with each other.
# The workload is version 1 of the video pipeline (tests/fixtures/pipelines,
# nine static steps, the `segment` worker listing no segments), as for the
# figures in docs/benchmarks.md.
#
#   benches/stage-trace.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/orchestrator}
OUT=${OUT:-/tmp/narralytica-trace}
PORT=${PORT:-14655}
URL=nats://127.0.0.1:$PORT
PIPELINES=tests/fixtures/pipelines
[ -x "$BIN" ] || { echo "no binary at $BIN: run cargo build --release" >&2; exit 2; }
command -v nats-server >/dev/null || { echo "nats-server not on PATH (bash .ci/setup.sh)" >&2; exit 2; }
command -v perf >/dev/null || { echo "perf not on PATH" >&2; exit 2; }
rm -rf "$OUT"; mkdir -p "$OUT"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
printf 'port: %s\njetstream { store_dir: "%s/js" }\n' "$PORT" "$OUT" > "$OUT/nats.conf"
nats-server -c "$OUT/nats.conf" > "$OUT/nats.log" 2>&1 & NATS=$!; pids+=($NATS)
sleep 0.5
"$BIN" run --pipelines "$PIPELINES" --nats-url "$URL" --data-dir "$OUT/data" --http-addr off > "$OUT/run.log" 2>&1 & RUN=$!; pids+=($RUN)
"$BIN" worker --simulate --pipelines "$PIPELINES" --default-segments 0 --nats-url "$URL" > "$OUT/worker.log" 2>&1 & WRK=$!; pids+=($WRK)
sleep 1
"$BIN" loadgen --pipelines "$PIPELINES" --nats-url "$URL" --concurrency 32 --workflows 500 > /dev/null 2>&1
events=syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_exit_recvfrom,syscalls:sys_exit_read,syscalls:sys_enter_fdatasync,syscalls:sys_exit_fdatasync
perf record -q -o "$OUT/perf.data" -e "$events" -p "$NATS,$RUN,$WRK" -- \
  "$BIN" loadgen --pipelines "$PIPELINES" --nats-url "$URL" --concurrency 1 --workflows "${WORKFLOWS:-60}" --report "$OUT/report.json" > "$OUT/loadgen.log" 2>&1
perf script -i "$OUT/perf.data" -F pid,time,event 2> /dev/null > "$OUT/trace.txt"
python3 - "$OUT/trace.txt" "$OUT/report.json" "$RUN" "$WRK" <<'PY'
import json, re, statistics, sys
trace, report, run, wrk = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
who = {run: "orch", wrk: "worker"}
ev = []
for line in open(trace):
    m = re.match(r"\s*(\d+)\s+([\d.]+):\s+syscalls:(\S+):", line)
    if m and m.group(1) in who:
        ev.append((float(m.group(2)) * 1000, who[m.group(1)], m.group(3)))

def after(i, w, e):
    while i < len(ev) and not (ev[i][1] == w and ev[i][2] == e):
        i += 1
    return i

names = ["worker", "hop to orchestrator", "before sync", "fdatasync", "after sync", "hop to worker", "stage"]
parts = {n: [] for n in names}
for k, (t, w, e) in enumerate(ev):
    if w != "worker" or e != "sys_enter_writev":
        continue
    a = after(k, "orch", "sys_exit_recvfrom")
    b = after(a, "orch", "sys_enter_fdatasync")
    c = after(b, "orch", "sys_exit_fdatasync")
    d = after(c, "orch", "sys_enter_writev")
    r = after(d, "worker", "sys_exit_recvfrom")
    n = after(r, "worker", "sys_enter_writev")
    if n >= len(ev):
        break
    if ev[r][0] - t > 5:  # the gap between two workflows, not a stage
        continue
    at = [t, ev[a][0], ev[b][0], ev[c][0], ev[d][0], ev[r][0], ev[n][0]]
    parts["worker"].append(at[6] - at[5])
    for name, (x, y) in zip(names[1:6], zip(at, at[1:])):
        parts[name].append(y - x)
    parts["stage"].append(at[5] - at[0] + at[6] - at[5])
lat = json.load(open(report))["latency_ms"]
print(f"workflows under perf: p50 {lat['p50']} ms, p99 {lat['p99']} ms; {len(parts['stage'])} stages")
for n in names:
    v = sorted(parts[n])
    if v:
        print(f"{n:<22} median {statistics.median(v) * 1000:6.0f} us   p90 {v[int(len(v) * 0.9)] * 1000:6.0f} us")
PY
