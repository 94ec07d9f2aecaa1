"""Writes capacity limits that never bind for a pipeline's task types.

    python3 benches/caps_not_binding.py PIPELINE_TOML OUT_TOML

A cap of 1,000,000 on every task type of the pipeline, a key per video
(`/video_id`) and a priority pointer: every task passes through the
admission gate and none waits. Used by benches/gates.sh (GATES_CAPS=1)
and benches/caps_overhead.sh.
"""
import sys
import tomllib

steps = tomllib.load(open(sys.argv[1], "rb"))["steps"]
types = sorted({s.get("task_type", s["name"]) for s in steps})
with open(sys.argv[2], "w") as f:
    f.write('[capacity]\npriority = "/priority"\n')
    for t in types:
        f.write(f'\n[task_types.{t}]\nmax_in_flight = 1000000\nkey = "/video_id"\n')
