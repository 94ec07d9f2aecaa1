"""What a handler returns or raises, as the result the orchestrator gets."""
import asyncio

from narralytica_worker import DirectoryStore, Fatal, MemoryStore, Retryable, TaskContext
from narralytica_worker.outcome import run_handler

TASK = {"v": 1, "task_id": "v-1:embed:0:1", "idempotency_key": "v-1:embed:0",
        "workflow_id": "v-1", "step": "embed", "task_type": "embed", "attempt": 1,
        "input": {"workflow": {"video_id": "v"}, "deps": {"segment": {"n": 4}}},
        "reply_to": "r", "heartbeat_to": "h", "attempt_token": "tok"}


def run(fn, store=None, task=TASK):
    async def go():
        sent = []

        async def send(beat):
            sent.append(beat)
        ctx = TaskContext(task, {}, send, "w-1")
        return await run_handler(fn, ctx, store)
    return asyncio.run(go())


def test_a_returned_object_is_the_output():
    async def fn(ctx, inp):
        return {"n": 1 + inp["deps"]["segment"]["n"]}
    r = run(fn)
    assert (r["status"], r["output"], r["attempt_token"]) == ("succeeded", {"n": 5}, "tok")


def test_retryable_and_fatal_keep_their_kind_and_retryability():
    async def retry(ctx, inp):
        raise Retryable("gpu_preempted", "spot instance reclaimed")

    async def fatal(ctx, inp):
        raise Fatal("invalid_input")
    assert run(retry)["error"] == {"kind": "gpu_preempted", "message": "spot instance reclaimed",
                                   "retryable": True}
    assert run(fatal)["error"] == {"kind": "invalid_input", "message": "invalid_input",
                                   "retryable": False}


def test_an_unexpected_exception_is_a_retryable_failure_named_after_it():
    def fn(ctx, inp):  # a plain function runs in a thread
        raise KeyError("video_url")
    r = run(fn)
    assert r["error"]["kind"] == "KeyError" and r["error"]["retryable"] is True


def test_an_output_that_is_not_an_object_is_a_fatal_failure():
    async def fn(ctx, inp):
        return "done"
    r = run(fn)
    assert r["status"] == "failed"
    assert r["error"]["kind"] == "invalid_output" and r["error"]["retryable"] is False


def test_the_idempotency_store_runs_a_key_once(tmp_path):
    calls = []

    async def fn(ctx, inp):
        calls.append(ctx.task_id)
        return {"n": len(calls)}
    for store in (MemoryStore(), DirectoryStore(str(tmp_path))):
        calls.clear()
        first = run(fn, store)
        again = run(fn, store, {**TASK, "task_id": "v-1:embed:0:2", "attempt": 2})
        assert first["output"] == again["output"] == {"n": 1}
        assert calls == ["v-1:embed:0:1"]
        assert again["task_id"] == "v-1:embed:0:2"


def test_failures_are_not_remembered():
    calls = []

    async def fn(ctx, inp):
        calls.append(1)
        raise Retryable("flaky")
    store = MemoryStore()
    run(fn, store)
    run(fn, store)
    assert len(calls) == 2


def test_a_directory_store_survives_a_new_process(tmp_path):
    DirectoryStore(str(tmp_path)).put("k:1", {"uri": "s3://x"})
    assert DirectoryStore(str(tmp_path)).get("k:1") == {"uri": "s3://x"}
    assert DirectoryStore(str(tmp_path)).get("k:2") is None


def test_the_memory_store_forgets_the_oldest_past_its_bound():
    s = MemoryStore(max_entries=2)
    s.put("a", {"x": 1})
    s.put("b", {"x": 2})
    s.get("a")
    s.put("c", {"x": 3})
    assert s.get("b") is None and s.get("a") == {"x": 1}


def test_heartbeats_carry_progress_and_the_token():
    async def go():
        sent = []

        async def send(beat):
            sent.append(beat)
        ctx = TaskContext(TASK, {}, send, "w-1")
        ctx.heartbeat(progress={"pct": 40})
        await asyncio.sleep(0)
        ctx._cancel("operator said so")
        ctx.heartbeat(progress={"pct": 50})  # nothing after a cancel
        await asyncio.sleep(0)
        return sent, ctx
    sent, ctx = asyncio.run(go())
    assert sent == [{"v": 1, "task_id": TASK["task_id"], "workflow_id": "v-1", "worker": "w-1",
                     "progress": {"pct": 40}, "attempt_token": "tok"}]
    assert ctx.cancelled and ctx.cancel_reason == "operator said so"
