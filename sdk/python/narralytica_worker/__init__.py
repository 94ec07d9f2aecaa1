"""Narralytica worker SDK: serve orchestrator task types in a few lines.

    worker = Worker(nats_url, pipeline="video")

    @worker.task("transcribe", concurrency=2)
    async def transcribe(ctx, inp):
        ctx.heartbeat(progress={"pct": 40})
        if ctx.cancelled:
            return None
        return {"transcript_uri": "s3://..."}

    worker.run()

The contract it implements is docs/protocol.md of the orchestrator.
"""
from .context import TaskContext
from .contract import TaskInput
from .errors import Fatal, Retryable, TaskFailure
from .idempotency import DirectoryStore, MemoryStore, Store
from .worker import Worker

__all__ = ["Worker", "TaskContext", "TaskInput", "Retryable", "Fatal", "TaskFailure",
           "Store", "MemoryStore", "DirectoryStore"]
