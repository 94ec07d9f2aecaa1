"""Every worker of the video pipeline in one process, on the SDK (sdk/python).

    PYTHONPATH=sdk/python python3 examples/video_workers.py [--concurrency 8]

Each step's work is simulated: it takes `work_ms` of the workflow input
(a number, or {"<step>": ms}), fails attempt k as `fail[<step>][k-1]` says
("retryable" or "fatal"), and outputs what the orchestrator's simulated
workers do, {"video_id", "step", "n"}, so `orchestrator loadgen` can check it.
"""
import argparse
import asyncio

from narralytica_worker import Fatal, MemoryStore, Retryable, Worker

TASK_TYPES = ["ingest", "extract_audio", "transcribe", "segment", "enrich_topics",
              "enrich_entities", "enrich_sentiment", "embed", "index"]


async def work(ctx, inp):
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
    n = 1 + sum(d.get("n", 0) for d in inp["deps"].values())
    return {"video_id": wf.get("video_id", ctx.workflow_id), "step": ctx.step, "n": n}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concurrency", type=int, default=8, help="tasks at once per task type")
    p.add_argument("--types", default=",".join(TASK_TYPES), help="task types to serve")
    p.add_argument("--nats-url")
    p.add_argument("--prefix")
    args = p.parse_args()
    worker = Worker(args.nats_url, pipeline="video", prefix=args.prefix)
    for t in args.types.split(","):
        worker.task(t, concurrency=args.concurrency, idempotent=MemoryStore())(work)
    worker.run()


if __name__ == "__main__":
    main()
