"""What a task handler sees of its task: ids, heartbeats, cancellation."""
from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, Dict, Mapping, Optional

from . import contract

#: Heartbeats a handler asks for closer together than this are folded into
#: the next one (the progress is kept), so a tight loop cannot flood NATS.
HEARTBEAT_MIN_GAP_S = 0.05


class TaskContext:
    """One attempt of one task, as its handler sees it."""

    def __init__(self, task: Mapping[str, Any], headers: Optional[Mapping[str, str]],
                 send: Callable[[Dict[str, Any]], Awaitable[None]], worker: str) -> None:
        self.task = task
        self.task_id: str = task["task_id"]
        self.workflow_id: str = task["workflow_id"]
        self.step: str = task["step"]
        self.task_type: str = task["task_type"]
        self.attempt: int = task["attempt"]
        self.max_attempts: Optional[int] = task.get("max_attempts")
        self.idempotency_key: str = task["idempotency_key"]
        self.pipeline: Optional[str] = task.get("pipeline")
        self.deadline_ms: Optional[int] = task.get("deadline_ms")
        self.heartbeat_timeout_ms: Optional[int] = task.get("heartbeat_timeout_ms")
        self.worker = worker
        self.started_at_ms = int(time.time() * 1000)
        self.result_headers = contract.result_headers(headers)
        #: This worker's span, a child of the task's (None without one):
        #: pass it on to whatever the handler calls.
        self.traceparent: Optional[str] = self.result_headers.get("traceparent")
        self.cancel_reason: Optional[str] = None
        self._cancelled = asyncio.Event()
        self._send = send
        self._progress: Optional[Any] = None
        self._last_beat = 0.0
        self.beats_sent = 0

    @property
    def cancelled(self) -> bool:
        """True once the orchestrator asked to stop this attempt (workflow
        cancelled or failed, attempt superseded): return; the SDK sends
        nothing for it."""
        return self._cancelled.is_set()

    async def wait_cancelled(self, timeout: Optional[float] = None) -> bool:
        """Sleeps until the attempt is cancelled or `timeout` passes; True if cancelled."""
        try:
            await asyncio.wait_for(self._cancelled.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        return self.cancelled

    def heartbeat(self, progress: Optional[Any] = None) -> None:
        """Tells the orchestrator the attempt is alive (the first one marks
        it started) with optional progress; the SDK also keeps the JetStream
        message in progress. Safe to call often."""
        if progress is not None:
            self._progress = progress
        if self.cancelled or time.monotonic() - self._last_beat < HEARTBEAT_MIN_GAP_S:
            return
        asyncio.get_running_loop().create_task(self.beat())

    async def beat(self) -> None:
        """Sends one heartbeat now (the SDK's keep-alive loop calls it)."""
        if self.cancelled:
            return
        self._last_beat = time.monotonic()
        self.beats_sent += 1
        await self._send(contract.heartbeat(self.task, self.worker, self._progress))

    def _cancel(self, reason: str) -> None:
        self.cancel_reason = reason
        self._cancelled.set()
