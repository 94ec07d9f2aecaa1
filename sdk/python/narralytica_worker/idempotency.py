"""Idempotency helper: outputs remembered by `idempotency_key`.

Every attempt of a step (and every redelivery of one attempt) carries the
same `idempotency_key`. A handler registered with `idempotent=store` runs
once per key: a second task with the key returns the stored output without
running the handler again. Side effects that must happen once should also
be keyed on `ctx.idempotency_key` (write to a key derived from it).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from typing import Any, Dict, Optional, Protocol


class Store(Protocol):
    """Where outputs are remembered. `get` returns None for an unknown key."""

    def get(self, key: str) -> Optional[Dict[str, Any]]: ...

    def put(self, key: str, output: Dict[str, Any]) -> None: ...


class MemoryStore:
    """Outputs of this process, the `max_entries` most recent. Covers
    redeliveries to the same process; use `DirectoryStore` (or your own
    database) to cover a crash."""

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: "OrderedDict[str, Dict[str, Any]]" = OrderedDict()

    def get(self, key: str) -> Optional[Dict[str, Any]]:
        out = self._entries.get(key)
        if out is not None:
            self._entries.move_to_end(key)
        return out

    def put(self, key: str, output: Dict[str, Any]) -> None:
        self._entries[key] = output
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class DirectoryStore:
    """One JSON file per key in `path`, written atomically (temp file and
    rename), so an output survives a crash of the worker and is shared by
    every worker process on the host."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(path, exist_ok=True)

    def _file(self, key: str) -> str:
        return os.path.join(self.path, hashlib.sha256(key.encode()).hexdigest() + ".json")

    def get(self, key: str) -> Optional[Dict[str, Any]]:
        try:
            with open(self._file(key), encoding="utf-8") as f:
                entry = json.load(f)
        except (FileNotFoundError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        out = entry.get("output")
        return out if isinstance(out, dict) else None

    def put(self, key: str, output: Dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"key": key, "output": output}, f)
            os.replace(tmp, self._file(key))
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
