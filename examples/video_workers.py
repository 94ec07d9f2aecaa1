"""Every worker of the video pipeline in one process, on the SDK (sdk/python).

    PYTHONPATH=sdk/python python3 examples/video_workers.py [--concurrency 8]

Each step's work is simulated: it takes `work_ms` of the workflow input
(a number, or {"<step>": ms}), fails attempt k as `fail[<step>][k-1]` says
("retryable" or "fatal"), and outputs what the orchestrator's simulated
workers do, {"video_id", "step", "n"}, so `orchestrator loadgen` can check it:
n = 1 + the n of its dependencies (a map step's list sums its elements, a
skipped step's null counts 0) + the n of a map element's own item. `segment`
lists --default-segments (8), or as many as the workflow input's "segments"
says (then every output lists them), for `enrich` to map over; "language" in the input
is the language every output reports, for `translate`'s condition.
"""
import argparse
import asyncio
import functools

from narralytica_worker import Fatal, MemoryStore, Retryable, Worker

TASK_TYPES = ["ingest", "extract_audio", "transcribe", "translate", "segment",
              "enrich_segment", "embed", "index"]
DEFAULT_SEGMENTS = 8


def n_of(output):
    """The n of a dependency's output, or of a map element's item."""
    if isinstance(output, list):
        return sum(n_of(o) for o in output)
    if isinstance(output, dict):
        return output.get("n", 0)
    return 0


async def work(ctx, inp, default_segments=DEFAULT_SEGMENTS):
    wf = inp["workflow"]
    plan = wf.get("fail", {}).get(ctx.step, [])
    if ctx.attempt <= len(plan):
        raise (Fatal if plan[ctx.attempt - 1] == "fatal" else Retryable)("demo_failure")
    ms = wf.get("work_ms", 0)
    ms = ms.get(ctx.step, 0) if isinstance(ms, dict) else ms
    if ms:
        ctx.heartbeat(progress={"pct": 0})
        if await ctx.wait_cancelled(ms / 1000):
            return None
    n = 1 + sum(n_of(d) for d in inp["deps"].values()) + n_of(inp.get("element"))
    out = {"video_id": wf.get("video_id", ctx.workflow_id), "step": ctx.step, "n": n}
    segments = wf.get("segments")
    if segments is None and ctx.task_type == "segment" and default_segments > 0:
        segments = default_segments
    if segments is not None and "element" not in inp:
        out["segments"] = list(range(segments))
    if "language" in wf:
        out["language"] = wf["language"]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concurrency", type=int, default=8, help="tasks at once per task type")
    p.add_argument("--types", default=",".join(TASK_TYPES), help="task types to serve")
    p.add_argument("--default-segments", type=int, default=DEFAULT_SEGMENTS,
                   help="segments `segment` lists when the input does not say (0: none)")
    p.add_argument("--nats-url")
    p.add_argument("--prefix")
    args = p.parse_args()
    handler = functools.partial(work, default_segments=args.default_segments)
    worker = Worker(args.nats_url, pipeline="video", prefix=args.prefix)
    for t in args.types.split(","):
        worker.task(t, concurrency=args.concurrency, idempotent=MemoryStore())(handler)
    worker.run()


if __name__ == "__main__":
    main()
