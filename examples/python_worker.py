#!/usr/bin/env python3
"""Narralytica reference worker in Python (protocol v1, see docs/protocol.md).

Serves one task type: pulls a task, heartbeats while it works, publishes a
result (success, or a retryable / non-retryable failure), then acks the task.
It spells the protocol out by hand; sdk/python does all of it for you
(examples/transcribe_worker.py).

    pip install nats-py==2.16.0
    python3 examples/python_worker.py transcribe --work-seconds 2
"""
import argparse
import asyncio
import json
import os
import time

import nats
from nats.js.api import AckPolicy, ConsumerConfig


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task_type")
    p.add_argument("--nats-url", default=os.environ.get("NARRALYTICA_NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--prefix", default=os.environ.get("NARRALYTICA_PREFIX", "narralytica"))
    p.add_argument("--name", default=f"py-worker-{os.getpid()}")
    p.add_argument("--work-seconds", type=float, default=0.0, help="how long each task takes")
    p.add_argument("--fail", choices=["none", "retryable", "fatal"], default="none")
    p.add_argument("--max-tasks", type=int, default=0, help="exit after this many tasks (0: never)")
    return p.parse_args()


def do_the_work(task):
    """The real work goes here. This one counts like the simulated workers:
    n = 1 + the sum of n over the step's dependencies."""
    deps = task["input"].get("deps", {})
    n = 1 + sum(d.get("n", 0) for d in deps.values() if isinstance(d, dict))
    video_id = task["input"].get("workflow", {}).get("video_id", task["workflow_id"])
    return {"video_id": video_id, "step": task["step"], "n": n}


async def handle(nc, js, msg, task, args, cancelled):
    # Every report echoes the task's attempt_token: without it the
    # orchestrator refuses the report (docs/protocol.md, "Attempt token").
    token = task.get("attempt_token")
    beat = json.dumps({"v": 1, "task_id": task["task_id"], "attempt_token": token,
                       "workflow_id": task["workflow_id"], "worker": args.name}).encode()
    await nc.publish(task["heartbeat_to"], beat)  # the first heartbeat means "started"
    started = int(time.time() * 1000)
    every = (task.get("heartbeat_timeout_ms") or 60_000) / 3000.0
    deadline = time.monotonic() + args.work_seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(min(every, max(0.0, deadline - time.monotonic())))
        if task["task_id"] in cancelled:  # cancelled or superseded: stop, report nothing
            await msg.ack()
            return
        await nc.publish(task["heartbeat_to"], beat)
        await msg.in_progress()  # keep JetStream from redelivering a long task

    result = {"v": 1, "task_id": task["task_id"], "attempt_token": token,
              "workflow_id": task["workflow_id"],
              "step": task["step"], "attempt": task["attempt"], "worker": args.name,
              "started_at_ms": started}
    if args.fail == "none":
        result.update(status="succeeded", output=do_the_work(task))
    else:
        result.update(status="failed", error={"kind": "py_error", "message": f"{args.fail} failure",
                                              "retryable": args.fail == "retryable"})
    # Results go through JetStream; the id lets the server drop a re-sent copy.
    # Passing the task's trace context on keeps the result in the workflow's trace.
    headers = {"Nats-Msg-Id": "r:" + task["task_id"]}
    for h in ("traceparent", "tracestate"):
        if msg.headers and h in msg.headers:
            headers[h] = msg.headers[h]
    await js.publish(task["reply_to"], json.dumps(result).encode(), headers=headers)
    await msg.ack()  # only after the result is safely stored


async def main():
    args = parse_args()
    nc = await nats.connect(args.nats_url, name=args.name)
    js = nc.jetstream()
    stream = args.prefix.replace(".", "_").upper() + "_TASKS"
    sub = await js.pull_subscribe(
        f"{args.prefix}.tasks.{args.task_type}", durable=f"worker-{args.task_type}", stream=stream,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_ack_pending=1))

    cancelled = set()

    async def on_cancel(m):
        cancelled.add(json.loads(m.data)["task_id"])

    await nc.subscribe(f"{args.prefix}.cancel.{args.task_type}", cb=on_cancel)
    print(f"{args.name}: serving {args.task_type} on {args.nats_url}", flush=True)
    done = 0
    while args.max_tasks == 0 or done < args.max_tasks:
        try:
            msgs = await sub.fetch(1, timeout=5)  # pull only when free
        except nats.errors.TimeoutError:
            continue
        for msg in msgs:
            try:
                task = json.loads(msg.data)
            except ValueError:
                await msg.term()  # malformed: never redeliver
                continue
            await handle(nc, js, msg, task, args, cancelled)
            done += 1
            print(f"{args.name}: {task['task_id']} done", flush=True)
    await nc.drain()


if __name__ == "__main__":
    asyncio.run(main())
