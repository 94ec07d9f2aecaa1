"""A transcribe worker on the SDK (sdk/python): run it next to `orchestrator run`.

    PYTHONPATH=sdk/python python3 examples/transcribe_worker.py
Demo knobs in the workflow input: work_ms (how long a task takes) and
fail {"transcribe": ["retryable", "fatal", ...]} (how attempt 1, 2, ... fail)."""
import asyncio

from narralytica_worker import Fatal, MemoryStore, Retryable, Worker

worker = Worker(pipeline="video")


@worker.task("transcribe", concurrency=2, idempotent=MemoryStore())
async def transcribe(ctx, inp):
    wf = inp["workflow"]
    plan = wf.get("fail", {}).get(ctx.step, [])
    if ctx.attempt <= len(plan):
        raise (Fatal if plan[ctx.attempt - 1] == "fatal" else Retryable)("demo_failure")
    for pct in range(0, 100, 10):
        if await ctx.wait_cancelled(wf.get("work_ms", 0) / 10000):
            return None
        ctx.heartbeat(progress={"pct": pct})
    n = 1 + sum(d.get("n", 0) for d in inp["deps"].values())
    return {"video_id": wf.get("video_id", ctx.workflow_id), "step": ctx.step, "n": n}


if __name__ == "__main__":
    worker.run()
