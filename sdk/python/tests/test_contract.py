"""The protocol rules the SDK encodes, without NATS."""
import json

import pytest

from narralytica_worker import contract

TASK = {"v": 1, "task_id": "v-1:transcribe:0:2", "idempotency_key": "v-1:transcribe:0",
        "workflow_id": "v-1", "pipeline": "video", "step": "transcribe",
        "task_type": "transcribe", "attempt": 2, "max_attempts": 10,
        "input": {"workflow": {}, "deps": {}}, "reply_to": "p.results.3",
        "heartbeat_to": "p.heartbeats.3"}


def test_stream_names_follow_the_prefix():
    assert contract.stream_name("narralytica", "TASKS") == "NARRALYTICA_TASKS"
    assert contract.stream_name("acme.prod", "RESULTS") == "ACME_PROD_RESULTS"
    assert contract.consumer_name("embed") == "worker-embed"
    assert contract.tasks_subject("p", "embed") == "p.tasks.embed"


@pytest.mark.parametrize("hb_ms, ack_wait_s, every_s", [
    (60_000, 30.0, 10.0),    # the ack wait is the tighter bound
    (300_000, 30.0, 10.0),   # a long heartbeat timeout must not outlast the ack wait
    (3_000, 30.0, 1.0),      # a short heartbeat timeout wins
    (None, 30.0, 10.0),      # no heartbeat timeout: the ack wait alone
    (None, 90.0, 30.0),
])
def test_keepalive_interval_is_a_third_of_the_tighter_bound(hb_ms, ack_wait_s, every_s):
    assert contract.keepalive_interval_s(hb_ms, ack_wait_s) == pytest.approx(every_s)


def test_tasks_of_another_version_or_incomplete_are_refused():
    assert contract.task_problem(TASK) is None
    assert "version" in contract.task_problem({**TASK, "v": 2})
    assert "reply_to" in contract.task_problem({k: v for k, v in TASK.items() if k != "reply_to"})
    assert contract.task_problem([1, 2]) == "not a JSON object"
    assert contract.task_problem({**TASK, "input": "x"}) == "input is not an object"


def test_results_and_heartbeats_echo_the_attempt_token_only_when_given():
    assert "attempt_token" not in contract.success(TASK, "w", 1, {"a": 1})
    with_token = {**TASK, "attempt_token": "t0k"}
    assert contract.success(with_token, "w", 1, {"a": 1})["attempt_token"] == "t0k"
    assert contract.failure(with_token, "w", 1, "k", "m", True)["attempt_token"] == "t0k"
    assert contract.heartbeat(with_token, "w", {"pct": 5})["attempt_token"] == "t0k"


def test_result_shapes_copy_the_task_ids():
    ok = contract.success(TASK, "gpu-7", 123, {"transcript": "s3://x"})
    assert ok == {"v": 1, "task_id": TASK["task_id"], "workflow_id": "v-1", "step": "transcribe",
                  "attempt": 2, "worker": "gpu-7", "started_at_ms": 123,
                  "status": "succeeded", "output": {"transcript": "s3://x"}}
    bad = contract.failure(TASK, "gpu-7", 123, "cuda_oom", "out of memory", False)
    assert bad["status"] == "failed"
    assert bad["error"] == {"kind": "cuda_oom", "message": "out of memory", "retryable": False}
    assert "output" not in bad


def test_outputs_must_be_small_json_objects():
    assert contract.output_problem({"a": 1}) is None
    assert "JSON object" in contract.output_problem([1])
    assert "JSON object" in contract.output_problem(None)
    assert "limit" in contract.output_problem({"a": "x" * (64 * 1024)})
    assert "not JSON" in contract.output_problem({"a": object()})


def test_the_result_is_a_child_span_of_the_task():
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    h = contract.result_headers({"traceparent": parent, "tracestate": "a=b"})
    version, trace, span, flags = h["traceparent"].split("-")
    assert (version, trace, flags) == ("00", "0af7651916cd43dd8448eb211c80319c", "01")
    assert len(span) == 16 and span != "b7ad6b7169203331"
    assert h["tracestate"] == "a=b"
    assert contract.result_headers({"traceparent": "garbage"}) == {}
    assert contract.result_headers(None) == {}
    json.dumps(h)
