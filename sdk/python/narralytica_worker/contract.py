"""Worker protocol v1 as data: names, settings, timing rules and message
shapes (docs/protocol.md). Pure functions, no I/O, so they are unit-tested
on their own."""
from __future__ import annotations

import json
import secrets
from typing import Any, Dict, Mapping, Optional, TypedDict

VERSION = 1

#: Largest step output the orchestrator accepts, in bytes of JSON.
OUTPUT_MAX_BYTES = 64 * 1024
#: Largest message the orchestrator and the streams accept, in bytes.
MESSAGE_MAX_BYTES = 1024 * 1024

#: Consumer settings a worker creates its consumer with (docs/protocol.md,
#: "Consumers"): the first instance of a task type creates it, the others
#: bind to it as it is.
ACK_WAIT_S = 30.0
MAX_DELIVER = 5
MAX_ACK_PENDING = 1000

#: The first heartbeat (which marks the attempt started) is sent once the
#: task has run this long, so tasks shorter than that cost no heartbeat.
STARTED_AFTER_S = 0.02

#: Fields every task message has.
TASK_REQUIRED = ("task_id", "idempotency_key", "workflow_id", "step", "task_type",
                 "attempt", "input", "reply_to", "heartbeat_to")


class TaskInput(TypedDict):
    """A task's `input`: the workflow's input and the outputs of the step's
    dependencies, by step name."""

    workflow: Dict[str, Any]
    deps: Dict[str, Dict[str, Any]]


def stream_name(prefix: str, what: str) -> str:
    """`narralytica`, `TASKS` -> `NARRALYTICA_TASKS`."""
    return prefix.replace(".", "_").upper() + "_" + what


def tasks_subject(prefix: str, task_type: str) -> str:
    return f"{prefix}.tasks.{task_type}"


def cancel_subject(prefix: str, task_type: str) -> str:
    return f"{prefix}.cancel.{task_type}"


def consumer_name(task_type: str) -> str:
    return f"worker-{task_type}"


def keepalive_interval_s(heartbeat_timeout_ms: Optional[int], ack_wait_s: float) -> float:
    """How often a running task heartbeats and sends an in-progress ack: a
    third of the heartbeat timeout and a third of the consumer's ack wait,
    whichever is shorter, so two beats can be lost before either runs out."""
    every = ack_wait_s / 3.0
    if heartbeat_timeout_ms:
        every = min(every, heartbeat_timeout_ms / 3000.0)
    return max(every, 0.001)


def task_problem(task: Any) -> Optional[str]:
    """Why a decoded task message cannot be run, or None."""
    if not isinstance(task, dict):
        return "not a JSON object"
    if task.get("v") != VERSION:
        return f"unsupported version {task.get('v')!r}"
    missing = [f for f in TASK_REQUIRED if f not in task]
    if missing:
        return "missing " + ", ".join(missing)
    inp = task["input"]
    if not isinstance(inp, dict):
        return "input is not an object"
    return None


def _echo(task: Mapping[str, Any], msg: Dict[str, Any]) -> Dict[str, Any]:
    # The attempt token proves the message comes from the worker that was
    # given the attempt: every message about the attempt carries it back.
    token = task.get("attempt_token")
    if token is not None:
        msg["attempt_token"] = token
    return msg


def heartbeat(task: Mapping[str, Any], worker: str, progress: Optional[Any] = None) -> Dict[str, Any]:
    msg: Dict[str, Any] = {"v": VERSION, "task_id": task["task_id"],
                           "workflow_id": task["workflow_id"], "worker": worker}
    if progress is not None:
        msg["progress"] = progress
    return _echo(task, msg)


def _result(task: Mapping[str, Any], worker: str, started_at_ms: int) -> Dict[str, Any]:
    return {"v": VERSION, "task_id": task["task_id"], "workflow_id": task["workflow_id"],
            "step": task["step"], "attempt": task["attempt"], "worker": worker,
            "started_at_ms": started_at_ms}


def success(task: Mapping[str, Any], worker: str, started_at_ms: int, output: Any) -> Dict[str, Any]:
    msg = _result(task, worker, started_at_ms)
    msg.update(status="succeeded", output=output)
    return _echo(task, msg)


def failure(task: Mapping[str, Any], worker: str, started_at_ms: int, kind: str,
            message: str, retryable: bool) -> Dict[str, Any]:
    msg = _result(task, worker, started_at_ms)
    msg.update(status="failed", error={"kind": kind, "message": message[:4096],
                                       "retryable": retryable})
    return _echo(task, msg)


def output_problem(output: Any) -> Optional[str]:
    """Why a handler's return value cannot be a step output, or None."""
    if not isinstance(output, dict):
        return f"a step output is a JSON object, got {type(output).__name__}"
    try:
        size = len(json.dumps(output, separators=(",", ":")).encode())
    except (TypeError, ValueError) as e:
        return f"output is not JSON: {e}"
    if size > OUTPUT_MAX_BYTES:
        return f"output is {size} bytes, over the {OUTPUT_MAX_BYTES}-byte limit"
    return None


def child_traceparent(parent: Optional[str]) -> Optional[str]:
    """A W3C `traceparent` for this worker's span: the task's trace id with
    a new span id. None when the task had none (or a malformed one)."""
    if not parent:
        return None
    parts = parent.strip().split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        int(parts[1], 16)
    except ValueError:
        return None
    return f"00-{parts[1]}-{secrets.token_hex(8)}-{parts[3]}"


def result_headers(task_headers: Optional[Mapping[str, str]]) -> Dict[str, str]:
    """Headers of a result: the trace context as a child of the task's."""
    headers: Dict[str, str] = {}
    if not task_headers:
        return headers
    tp = child_traceparent(task_headers.get("traceparent"))
    if tp:
        headers["traceparent"] = tp
        if task_headers.get("tracestate"):
            headers["tracestate"] = task_headers["tracestate"]
    return headers
