"""A deliberately broken worker for the conformance kit's own test: it
creates its consumer and answers tasks with well-formed results, but never
heartbeats, ignores cancels, reports every failure as retryable, runs tasks
of any version, sends no trace context and dies on SIGTERM mid-task.

    python3 sdk/python/tests/broken_worker.py <task_type>
"""
import asyncio
import json
import os
import sys

import nats
from nats.js.api import AckPolicy, ConsumerConfig


async def main(task_type):
    prefix = os.environ.get("NARRALYTICA_PREFIX", "narralytica")
    nc = await nats.connect(os.environ.get("NARRALYTICA_NATS_URL", "nats://127.0.0.1:4222"))
    js = nc.jetstream()
    stream = prefix.replace(".", "_").upper() + "_TASKS"
    sub = await js.pull_subscribe(
        f"{prefix}.tasks.{task_type}", durable=f"worker-{task_type}", stream=stream,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_deliver=5))
    while True:
        try:
            msgs = await sub.fetch(1, timeout=1)
        except nats.errors.TimeoutError:
            continue
        for msg in msgs:
            task = json.loads(msg.data)
            wf = task["input"]["workflow"]
            await asyncio.sleep(wf.get("work_ms", 0) / 1000)
            result = {k: task.get(k) for k in ("v", "task_id", "workflow_id", "step", "attempt",
                                                "attempt_token")}
            result["v"] = 1
            if wf.get("fail"):
                result.update(status="failed", error={"kind": "oops", "message": "failed",
                                                      "retryable": True})
            else:
                result.update(status="succeeded", output={"n": 1})
            await js.publish(task["reply_to"], json.dumps(result).encode(),
                             headers={"Nats-Msg-Id": "r:" + task["task_id"] + str(id(msg))})
            await msg.ack()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
