"""Exceptions a task handler raises to report a failure."""
from __future__ import annotations


class TaskFailure(Exception):
    """A failure the handler reports on purpose: `kind` is a short machine
    name (`cuda_oom`, `invalid_input`), the message is for people."""

    retryable: bool = True

    def __init__(self, kind: str, message: str = "") -> None:
        super().__init__(message or kind)
        self.kind = kind
        self.message = message or kind


class Retryable(TaskFailure):
    """The orchestrator may run the step again, with backoff, up to its
    `max_attempts` (unless the pipeline lists `kind` as non-retryable)."""

    retryable = True


class Fatal(TaskFailure):
    """Running the step again will not help: the step, and the workflow,
    fail at once (operators can retry it later)."""

    retryable = False
