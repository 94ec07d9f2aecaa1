"""Runs a handler and turns what it returns or raises into a result message."""
from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, Awaitable, Callable, Dict, Optional, Union

from . import contract
from .context import TaskContext
from .errors import TaskFailure
from .idempotency import Store

log = logging.getLogger("narralytica_worker")

Handler = Callable[[TaskContext, contract.TaskInput],
                   Union[Awaitable[Optional[Dict[str, Any]]], Optional[Dict[str, Any]]]]


async def run_handler(fn: Handler, ctx: TaskContext, store: Optional[Store]) -> Dict[str, Any]:
    """The result message for one attempt. An async handler runs on the
    event loop; a plain function runs in a thread, so blocking work does
    not stop heartbeats. `Retryable`/`Fatal` become failures with that
    retryability; any other exception is a retryable failure named after
    its class (the orchestrator's `max_attempts` bounds it)."""
    task, worker, started = ctx.task, ctx.worker, ctx.started_at_ms
    if store is not None:
        done = store.get(ctx.idempotency_key)
        if done is not None:
            return contract.success(task, worker, started, done)
    try:
        if inspect.iscoroutinefunction(fn):
            output = await fn(ctx, task["input"])
        else:
            output = await asyncio.to_thread(fn, ctx, task["input"])
    except TaskFailure as e:
        return contract.failure(task, worker, started, e.kind, e.message, e.retryable)
    except Exception as e:  # noqa: BLE001 - any handler bug is reported, not fatal to the worker
        log.warning("handler raised task_id=%s error=%r", ctx.task_id, e)
        return contract.failure(task, worker, started, type(e).__name__, str(e) or repr(e), True)
    problem = contract.output_problem(output)
    if problem is not None:
        return contract.failure(task, worker, started, "invalid_output", problem, False)
    if store is not None:
        store.put(ctx.idempotency_key, output)
    return contract.success(task, worker, started, output)
