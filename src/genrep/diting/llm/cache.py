"""A persistent cache of LLM completions, so a judged item is paid for once (GEMBA-MQM style).

The key is the sha256 of the canonical JSON of the backend name, the messages and *every*
:class:`Sampling` field, so any change to the request is a different entry. Only successes are
stored; a failure is retried on the next run.

Storage is one SQLite file (default ``cache_dir("llm") / "cache.sqlite"``) in WAL mode with a busy
timeout: readers never block, one process writes at a time and the others wait. Within a process
one connection serves every thread and asyncio task under a lock; a forked child opens its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from genrep.core.cache import cache_dir
from genrep.core.errors import UserError
from genrep.diting.llm.types import Backend, Completion, Sampling

_SCHEMA = """CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, request TEXT NOT NULL, response TEXT NOT NULL, created REAL NOT NULL
)"""


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def request_record(model: str, messages: list[dict], sampling: Sampling) -> dict[str, Any]:
    """What identifies a request: the model, the messages and every sampling field."""
    return {"model": model, "messages": messages, "sampling": dataclasses.asdict(sampling)}


def cache_key(model: str, messages: list[dict], sampling: Sampling) -> str:
    """sha256 (hex) of the canonical JSON of :func:`request_record`."""
    return hashlib.sha256(_canonical(request_record(model, messages, sampling)).encode("utf-8")).hexdigest()


class LLMCache:
    """Completions by key in one SQLite file; usable from many tasks, threads and processes at once."""

    def __init__(self, path: str | Path | None = None, *, busy_timeout_s: float = 60.0):
        self.path = Path(path) if path is not None else cache_dir("llm") / "cache.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_s = busy_timeout_s
        self.hits = self.misses = 0
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pid = -1
        with self._lock:
            self._connection()

    def _connection(self) -> sqlite3.Connection:
        """This process's connection (call with the lock held)."""
        if self._db is None or self._pid != os.getpid():
            try:
                db = sqlite3.connect(
                    self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
                )
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")  # in WAL mode: durable enough for a cache, never corrupt
                db.execute(_SCHEMA)
            except sqlite3.DatabaseError as err:
                raise UserError(f"cannot use LLM cache file '{self.path}': {err}") from None
            self._db, self._pid = db, os.getpid()
        return self._db

    def get(self, key: str) -> Completion | None:
        """The stored completion, marked ``cached`` with no latency and no attempts; None on a miss."""
        with self._lock:
            row = self._connection().execute("SELECT response FROM completions WHERE key = ?", (key,)).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
        stored = json.loads(row[0])
        known = {f.name: stored[f.name] for f in dataclasses.fields(Completion) if f.name in stored}
        return Completion(**{**known, "cached": True, "latency_s": 0.0, "attempts": 0})

    def put(self, key: str, model: str, request: dict[str, Any], completion: Completion) -> None:
        response = _canonical(dataclasses.asdict(completion))
        with self._lock:
            self._connection().execute(
                "INSERT OR REPLACE INTO completions (key, model, request, response, created) VALUES (?, ?, ?, ?, ?)",
                (key, model, _canonical(request), response, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._connection().execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def stats(self) -> dict[str, Any]:
        """Entries per model in the file, and this instance's hits and misses."""
        with self._lock:
            rows = self._connection().execute("SELECT model, COUNT(*) FROM completions GROUP BY model").fetchall()
        per_model = {model: n for model, n in rows}
        return {
            "path": str(self.path),
            "entries": sum(per_model.values()),
            "per_model": per_model,
            "hits": self.hits,
            "misses": self.misses,
        }

    def close(self) -> None:
        with self._lock:
            if self._db is not None and self._pid == os.getpid():
                self._db.close()
            self._db = None


class CachedBackend:
    """``backend`` with ``cache`` in front: a hit costs a lookup, a success is stored, a failure is not."""

    def __init__(self, backend: Backend, cache: LLMCache):
        self.backend, self.cache = backend, cache
        self.name, self.model = backend.name, backend.model

    def __repr__(self) -> str:
        return f"CachedBackend({self.backend!r}, {str(self.cache.path)!r})"

    async def complete(self, messages: list[dict], sampling: Sampling) -> Completion:
        start = time.perf_counter()
        # The key names the backend (e.g. "vllm:qwen"), not just the model: two servers are two caches.
        # A backend may version its key (``cache_name``) when its outputs change for the same request.
        name = getattr(self.backend, "cache_name", self.name)
        key = cache_key(name, messages, sampling)
        hit = self.cache.get(key)
        if hit is not None:
            return dataclasses.replace(hit, latency_s=time.perf_counter() - start)
        completion = await self.backend.complete(messages, sampling)
        self.cache.put(key, self.name, request_record(name, messages, sampling), completion)
        return completion

    async def aclose(self) -> None:
        await self.backend.aclose()
