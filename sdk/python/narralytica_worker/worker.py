"""The worker process: consumers, the pull loop, keep-alive, result
delivery, cancels and a graceful drain (docs/protocol.md)."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

import nats
from nats.js import api
from nats.js.errors import BadRequestError, NotFoundError

from . import contract
from .context import TaskContext
from .idempotency import Store
from .outcome import Handler, run_handler

log = logging.getLogger("narralytica_worker")

#: Cancels remembered for tasks not (yet) running here, so a task delivered
#: after its cancel is dropped; the oldest are forgotten first.
RECENT_CANCELS_MAX = 10_000


@dataclass
class _TaskType:
    name: str
    fn: Handler
    concurrency: int
    store: Optional[Store]
    busy: int = 0
    freed: asyncio.Event = field(default_factory=asyncio.Event)
    ack_wait_s: float = contract.ACK_WAIT_S


class Worker:
    """Serves one or more task types from one process.

    ``nats_url`` and ``prefix`` default to ``NARRALYTICA_NATS_URL`` and
    ``NARRALYTICA_PREFIX`` (then ``nats://127.0.0.1:4222`` and
    ``narralytica``). ``pipeline`` only names the worker (its default
    ``name`` is ``<pipeline>-<host>-<pid>``); task types are global.
    """

    def __init__(self, nats_url: Optional[str] = None, *, pipeline: Optional[str] = None,
                 prefix: Optional[str] = None, name: Optional[str] = None,
                 ack_wait_s: float = contract.ACK_WAIT_S, max_deliver: int = contract.MAX_DELIVER,
                 max_ack_pending: int = contract.MAX_ACK_PENDING,
                 result_timeout_s: float = 5.0, result_retry_for_s: float = 120.0,
                 drain_timeout_s: float = 60.0, cancel_grace_s: float = 1.0,
                 started_after_s: float = contract.STARTED_AFTER_S) -> None:
        self.nats_url = nats_url or os.environ.get("NARRALYTICA_NATS_URL", "nats://127.0.0.1:4222")
        self.prefix = prefix or os.environ.get("NARRALYTICA_PREFIX", "narralytica")
        self.name = name or f"{pipeline or 'worker'}-{socket.gethostname()}-{os.getpid()}"
        self.ack_wait_s = ack_wait_s
        self.max_deliver = max_deliver
        self.max_ack_pending = max_ack_pending
        self.result_timeout_s = result_timeout_s
        self.result_retry_for_s = result_retry_for_s
        self.drain_timeout_s = drain_timeout_s
        self.cancel_grace_s = cancel_grace_s
        self.started_after_s = started_after_s
        self._types: Dict[str, _TaskType] = {}
        self._running: Dict[str, TaskContext] = {}
        self._handlers: Dict[str, "asyncio.Task[Any]"] = {}
        #: Every task in hand, from its delivery to its ack: what a drain waits for.
        self._inflight: "set[asyncio.Task[None]]" = set()
        self._recent_cancels: "OrderedDict[str, str]" = OrderedDict()
        self._stop: Optional[asyncio.Event] = None
        self._nc: Any = None
        self._js: Any = None

    def task(self, task_type: str, *, concurrency: int = 1,
             idempotent: Optional[Store] = None) -> Callable[[Handler], Handler]:
        """Registers ``fn(ctx, inp)`` for ``task_type``: at most
        ``concurrency`` tasks run at once in this process. With
        ``idempotent=store`` a task whose ``idempotency_key`` has a stored
        output returns it without running ``fn``."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")

        def register(fn: Handler) -> Handler:
            if task_type in self._types:
                raise ValueError(f"task type {task_type!r} registered twice")
            self._types[task_type] = _TaskType(task_type, fn, concurrency, idempotent)
            return fn
        return register

    def run(self) -> None:
        """Serves until SIGTERM or SIGINT, then drains: no new tasks, the
        running ones finish and hand their results over."""
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        asyncio.run(self.serve())

    def stop(self) -> None:
        """Starts the drain (what SIGTERM does)."""
        if self._stop is not None:
            self._stop.set()

    async def serve(self) -> None:
        if not self._types:
            raise ValueError("no task types registered")
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._stop.set)
            except (NotImplementedError, RuntimeError):
                pass  # not the main thread: the caller stops it with stop()
        self._nc = await nats.connect(self.nats_url, name=self.name, max_reconnect_attempts=-1)
        self._js = self._nc.jetstream()
        pulls = []
        for tt in self._types.values():
            sub = await self._bind(tt)
            if sub is None:
                break
            await self._nc.subscribe(contract.cancel_subject(self.prefix, tt.name), cb=self._on_cancel)
            pulls.append(asyncio.create_task(self._pull(tt, sub)))
        log.info("worker serving name=%s types=%s nats=%s", self.name,
                 ",".join(self._types), self.nats_url)
        await self._stop.wait()
        log.info("worker draining running=%d", len(self._inflight))
        await asyncio.gather(*pulls, return_exceptions=True)
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=self.drain_timeout_s)
        # Every ack and result is sent by now: flush them out and close
        # (a drain would wait on the pull subscriptions' idle inboxes).
        try:
            await self._nc.flush(timeout=5)
        finally:
            await self._nc.close()
        log.info("worker stopped name=%s", self.name)

    async def _bind(self, tt: _TaskType) -> Any:
        """Gets or creates the task type's shared consumer (the contract's
        settings; an existing one is used as it is) and binds to it. Waits
        for the orchestrator to create the TASKS stream."""
        stream = contract.stream_name(self.prefix, "TASKS")
        durable = contract.consumer_name(tt.name)
        waited = False
        while not self._stop.is_set():
            try:
                await self._js.stream_info(stream)
                break
            except NotFoundError:
                if not waited:
                    log.info("waiting for stream %s (the orchestrator creates it)", stream)
                    waited = True
                await asyncio.sleep(1.0)
        else:
            return None
        try:
            info = await self._js.consumer_info(stream, durable)
        except NotFoundError:
            config = api.ConsumerConfig(
                durable_name=durable, filter_subject=contract.tasks_subject(self.prefix, tt.name),
                ack_policy=api.AckPolicy.EXPLICIT, deliver_policy=api.DeliverPolicy.ALL,
                ack_wait=self.ack_wait_s, max_deliver=self.max_deliver,
                max_ack_pending=self.max_ack_pending)
            try:
                info = await self._js.add_consumer(stream, config)
            except BadRequestError:
                info = await self._js.consumer_info(stream, durable)  # another instance won
        tt.ack_wait_s = info.config.ack_wait or contract.ACK_WAIT_S
        return await self._js.pull_subscribe_bind(durable=durable, stream=stream)

    async def _pull(self, tt: _TaskType, sub: Any) -> None:
        """Pulls only as many tasks as there are free slots."""
        while not self._stop.is_set():
            free = tt.concurrency - tt.busy
            if free <= 0:
                tt.freed.clear()
                await tt.freed.wait()
                continue
            try:
                msgs = await sub.fetch(free, timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            except Exception as e:  # noqa: BLE001 - a disconnect: try again
                log.warning("fetch failed task_type=%s error=%r", tt.name, e)
                await asyncio.sleep(1.0)
                continue
            for msg in msgs:
                tt.busy += 1
                t = asyncio.create_task(self._handle(tt, msg))
                self._inflight.add(t)
                t.add_done_callback(lambda t, tt=tt: self._freed(tt, t))

    def _freed(self, tt: _TaskType, t: "asyncio.Task[None]") -> None:
        self._inflight.discard(t)
        tt.busy -= 1
        tt.freed.set()
        if not t.cancelled() and t.exception() is not None:
            log.error("task handling failed error=%r", t.exception())

    async def _handle(self, tt: _TaskType, msg: Any) -> None:
        try:
            task = json.loads(msg.data)
        except ValueError:
            task = None
        problem = contract.task_problem(task)
        if problem is not None:
            # Never redeliver what cannot be read: a task of another
            # version belongs to a newer worker, and a redelivery would not
            # make it readable (its attempt times out and is retried).
            log.warning("task refused subject=%s problem=%s", msg.subject, problem)
            await msg.term()
            return
        task_id = task["task_id"]
        if task_id in self._running:
            # A redelivery of the task this process is still running (an
            # in-progress ack was lost): the running one answers and acks
            # the same stream message.
            return
        if task_id in self._recent_cancels:
            await msg.ack()  # cancelled before it arrived
            return
        ctx = TaskContext(task, msg.headers, self._publish_beat(task), self.name)
        self._running[task_id] = ctx
        keepalive = asyncio.create_task(self._keepalive(ctx, msg, tt.ack_wait_s))
        handler = asyncio.create_task(run_handler(tt.fn, ctx, tt.store))
        self._handlers[task_id] = handler
        try:
            try:
                result = await handler
            except asyncio.CancelledError:
                result = None
            if ctx.cancelled or result is None:
                await msg.ack()  # stop, report nothing (the cancel said so)
                return
            outcome = await self._deliver(task, result, ctx.result_headers)
            if outcome == "ok":
                await msg.ack()  # only after the result is acknowledged
            elif outcome == "refused":
                await msg.term()
            # "gave_up": left unacked; JetStream redelivers it after the ack wait.
        finally:
            keepalive.cancel()
            self._running.pop(task_id, None)
            self._handlers.pop(task_id, None)

    def _publish_beat(self, task: Dict[str, Any]) -> Callable[[Dict[str, Any]], Any]:
        async def send(beat: Dict[str, Any]) -> None:
            try:
                await self._nc.publish(task["heartbeat_to"], json.dumps(beat).encode())
            except Exception as e:  # noqa: BLE001 - heartbeats may be lost
                log.debug("heartbeat not sent task_id=%s error=%r", task["task_id"], e)
        return send

    async def _keepalive(self, ctx: TaskContext, msg: Any, ack_wait_s: float) -> None:
        """Heartbeats and in-progress acks while the task runs and while its
        result is being delivered."""
        every = contract.keepalive_interval_s(ctx.heartbeat_timeout_ms, ack_wait_s)
        await asyncio.sleep(min(self.started_after_s, every))
        while not ctx.cancelled:
            if ctx.beats_sent == 0 or time.monotonic() - ctx._last_beat >= every * 0.5:
                await ctx.beat()
            try:
                await msg.in_progress()
            except Exception as e:  # noqa: BLE001 - retried on the next beat
                log.debug("in-progress ack failed task_id=%s error=%r", ctx.task_id, e)
            await asyncio.sleep(every)

    async def _deliver(self, task: Dict[str, Any], result: Dict[str, Any],
                       headers: Dict[str, str]) -> str:
        """Hands a result over: `ok`, `refused` (never accepted; a refused
        success is reported as a fatal `result_refused` failure first) or
        `gave_up` after `result_retry_for_s`."""
        status = await self._send_result(task, result, headers)
        if isinstance(status, str):
            return status
        log.warning("result refused task_id=%s error=%s", task["task_id"], status[1])
        if result["status"] == "succeeded":
            failed = contract.failure(task, self.name, result["started_at_ms"], "result_refused",
                                      f"the orchestrator refused the result: {status[1]}", False)
            await self._send_result(task, failed, headers)
        return "refused"

    async def _send_result(self, task: Dict[str, Any], result: Dict[str, Any],
                           headers: Dict[str, str]) -> Any:
        payload = json.dumps(result, separators=(",", ":")).encode()
        direct = task.get("result_direct_to")
        direct_failures = 0
        give_up = time.monotonic() + self.result_retry_for_s
        backoff = 0.1
        while True:
            if direct and direct_failures < 3:
                try:
                    reply = await self._nc.request(direct, payload, timeout=self.result_timeout_s,
                                                   headers=headers or None)
                    answer = json.loads(reply.data)
                    if answer.get("ok"):
                        return "ok"
                    if not answer.get("retry"):
                        return ("refused", answer.get("error"))
                except Exception as e:  # noqa: BLE001 - timeout, no responders, disconnect
                    log.debug("direct result not answered task_id=%s error=%r", task["task_id"], e)
                direct_failures += 1
            else:
                # The stream keeps the result while the orchestrator is away.
                try:
                    await self._js.publish(task["reply_to"], payload, timeout=self.result_timeout_s,
                                           headers={**headers, "Nats-Msg-Id": "r:" + task["task_id"]})
                    return "ok"
                except Exception as e:  # noqa: BLE001 - NATS unreachable: try again
                    log.debug("result publish failed task_id=%s error=%r", task["task_id"], e)
            if time.monotonic() + backoff > give_up:
                log.error("result not delivered, giving up task_id=%s", task["task_id"])
                return "gave_up"
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _on_cancel(self, msg: Any) -> None:
        try:
            cancel = json.loads(msg.data)
            task_id = cancel["task_id"]
            reason = str(cancel.get("reason", "cancelled"))
        except (ValueError, KeyError, TypeError):
            return
        ctx = self._running.get(task_id)
        if ctx is None:
            self._recent_cancels[task_id] = reason
            while len(self._recent_cancels) > RECENT_CANCELS_MAX:
                self._recent_cancels.popitem(last=False)
            return
        log.info("task cancelled task_id=%s reason=%s", task_id, reason)
        ctx._cancel(reason)
        handler = self._handlers.get(task_id)
        if handler is not None:
            # A handler that does not look at ctx.cancelled is stopped at
            # its next await once the grace is over.
            asyncio.get_running_loop().call_later(self.cancel_grace_s, handler.cancel)
