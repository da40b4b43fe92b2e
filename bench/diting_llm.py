"""Benchmark DITING's LLM layer on this machine; writes the results into docs/benchmarks.md.

Measured in one process:
  1. OpenAIBackend against a loopback LLMServer in a second process whose backend answers after a
     fixed latency (50 ms, standing in for a model server): N requests one at a time against 16 at a time,
     requests/s and the ratio (target >= 10x; 16x is the ceiling);
  2. a warm LLMCache with 10,000 entries: writes/s while filling it, lookups/s of ``get`` and of a
     hit through CachedBackend (key hashing included) (target >= 1,000/s).

usage: python bench/diting_llm.py [--requests N] [--latency-ms MS] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rae_stage1 import write_section  # noqa: E402

from genrep.diting.llm import CachedBackend, Completion, LLMCache, LLMServer, OpenAIBackend, Sampling  # noqa: E402
from genrep.diting.llm.cache import cache_key  # noqa: E402


class SleepyBackend:
    """Answers every request after ``latency_s``, like a model server with that latency and no queue."""

    name, model = "bench:sleepy", "sleepy"

    def __init__(self, latency_s: float):
        self.latency_s = latency_s

    async def complete(self, messages: list[dict], sampling: Sampling) -> Completion:
        await asyncio.sleep(self.latency_s)
        return Completion(
            text="ok",
            model=self.model,
            prompt_tokens=1,
            completion_tokens=1,
            cached=False,
            latency_s=self.latency_s,
            attempts=1,
        )

    async def aclose(self) -> None:
        pass


def _messages(i: int) -> list[dict]:
    return [
        {"role": "system", "content": "You are an expert translation judge."},
        {"role": "user", "content": f"Score translation number {i} on the DITING rubric."},
    ]


def _serve(latency_s: float, urls: multiprocessing.Queue, stop: multiprocessing.Event) -> None:
    with LLMServer(SleepyBackend(latency_s)) as server:
        urls.put(server.url)
        stop.wait()


def throughput(url: str, n: int, concurrency: int) -> float:
    """Requests per second for ``n`` requests at ``concurrency``."""

    async def run() -> float:
        client = OpenAIBackend("sleepy", url, concurrency=concurrency)
        try:
            await client.complete(_messages(-1), Sampling())  # connect once outside the timing
            start = time.perf_counter()
            await asyncio.gather(*(client.complete(_messages(i), Sampling()) for i in range(n)))
            return n / (time.perf_counter() - start)
        finally:
            await client.aclose()

    return asyncio.run(run())


def cache_rates(entries: int, lookups: int, path: Path) -> dict[str, float]:
    """Writes/s filling a cache with ``entries``, then lookups/s of ``get`` and of CachedBackend hits."""
    cache = LLMCache(path)
    sampling = Sampling()
    done = Completion(
        text='{"agree": "yes", "specific": 2}',
        model="m",
        prompt_tokens=300,
        completion_tokens=20,
        cached=False,
        latency_s=1.0,
        attempts=1,
    )
    keys = [cache_key("bench:sleepy", _messages(i), sampling) for i in range(entries)]
    start = time.perf_counter()
    for i, key in enumerate(keys):
        cache.put(key, "bench:sleepy", {"i": i}, done)
    writes = entries / (time.perf_counter() - start)
    picks = random.Random(0).choices(range(entries), k=lookups)
    start = time.perf_counter()
    for i in picks:
        assert cache.get(keys[i]) is not None
    gets = lookups / (time.perf_counter() - start)
    backend = CachedBackend(SleepyBackend(10.0), cache)  # a miss would take 10 s

    async def hits() -> float:
        start = time.perf_counter()
        for i in picks:
            await backend.complete(_messages(i), sampling)
        return lookups / (time.perf_counter() - start)

    through = asyncio.run(hits())
    return {"writes": writes, "gets": gets, "hits": through, "bytes": path.stat().st_size}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    args = ap.parse_args()
    from genrep.core.runtime import environment

    env = environment()
    load = os.getloadavg()[0]
    # The server runs in its own process, as a model server would; client and server share no GIL.
    ctx = multiprocessing.get_context("spawn")
    urls, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(args.latency_ms / 1000, urls, stop), daemon=True)
    server.start()
    try:
        url = urls.get(timeout=120)
        rates = {c: throughput(url, args.requests, c) for c in (1, 16)}
    finally:
        stop.set()
        server.join(timeout=30)
    with tempfile.TemporaryDirectory() as tmp:
        cache = cache_rates(10_000, 5_000, Path(tmp) / "cache.sqlite")
    ratio = rates[16] / rates[1]
    md = f"""
## DITING LLM layer (`python bench/diting_llm.py`)

Machine: {env["cpu"]}, {env["cpu_count"]} cores, Python {env["python"]}, load average {load:.1f} at the start
(the client, the server and the cache all share these cores).

`OpenAIBackend` against a loopback `LLMServer` (its own process) whose backend answers every request
after {args.latency_ms:.0f} ms, {args.requests} requests (HTTP/1.1 keep-alive, one connection per slot):

| concurrency | requests/s |
|---|---|
| 1 | {rates[1]:.1f} |
| 16 | {rates[16]:.1f} |

Speed-up at concurrency 16: **{ratio:.1f}x** (target >= 10x; 16x is the ceiling).

`LLMCache` (SQLite, WAL) filled with 10,000 entries: **{cache["writes"]:,.0f} writes/s**; then 5,000 random
lookups on the warm file: **{cache["gets"]:,.0f} `get`/s**, **{cache["hits"]:,.0f} hits/s** through
`CachedBackend` (key hashing included) (target >= 1,000/s). File size {cache["bytes"] / 2**20:.1f} MiB.
"""
    print(md)
    if not args.no_write:
        write_section(md, "DITING LLM layer")


if __name__ == "__main__":
    main()
