import asyncio
import dataclasses
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

from genrep.core.errors import UserError
from genrep.diting.llm import CachedBackend, Completion, LLMCache, LLMError, OpenAIBackend, Sampling, cache_key

from .fakes import EchoBackend
from .fault_server import FaultServer

MESSAGES = [{"role": "system", "content": "你是评审。"}, {"role": "user", "content": "score this"}]
# One changed value per Sampling field; the test fails when a field is added without one.
CHANGED = {
    "temperature": 0.7,
    "top_p": 0.9,
    "max_tokens": 7,
    "seed": None,
    "stop": ("\n",),
    "response_format": {"type": "json_object"},
}


def _completion(text: str = "ok") -> Completion:
    return Completion(
        text=text, model="m", prompt_tokens=3, completion_tokens=1, cached=False, latency_s=0.5, attempts=2
    )


def test_the_key_changes_with_every_sampling_field_the_model_and_the_messages():
    assert set(CHANGED) == {f.name for f in dataclasses.fields(Sampling)}
    base = cache_key("m", MESSAGES, Sampling())
    assert base == cache_key("m", [dict(m) for m in MESSAGES], Sampling()) and len(base) == 64
    keys = {
        cache_key("m", MESSAGES, dataclasses.replace(Sampling(), **{name: value})) for name, value in CHANGED.items()
    }
    keys |= {
        cache_key("m2", MESSAGES, Sampling()),
        cache_key("m", MESSAGES[1:], Sampling()),
        cache_key("m", [MESSAGES[0], {"role": "user", "content": "score that"}], Sampling()),
    }
    assert base not in keys and len(keys) == len(CHANGED) + 3
    assert cache_key("m", MESSAGES, Sampling(stop=["a"])) == cache_key("m", MESSAGES, Sampling(stop=("a",)))


def test_entries_persist_across_instances_and_hits_are_marked(tmp_path):
    path = tmp_path / "llm.sqlite"
    cache = LLMCache(path)
    assert cache.get("k") is None
    cache.put("k", "fake:m", {"any": "request"}, _completion("答案"))
    cache.close()
    again = LLMCache(path)
    hit = again.get("k")
    assert hit == Completion(
        text="答案", model="m", prompt_tokens=3, completion_tokens=1, cached=True, latency_s=0.0, attempts=0
    )
    assert len(again) == 1 and again.stats() == {
        "path": str(path),
        "entries": 1,
        "per_model": {"fake:m": 1},
        "hits": 1,
        "misses": 0,
    }


def test_a_file_that_is_not_a_cache_is_the_users_to_fix(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not a database, just some text that is long enough to have a header " * 20)
    with pytest.raises(UserError, match="notes.txt"):
        LLMCache(bad)


def test_a_second_run_makes_no_requests(tmp_path):
    prompts = [f"p{i}" for i in range(30)]

    async def run(server_url):
        backend = CachedBackend(OpenAIBackend("m", server_url, backoff_base_s=0.01), LLMCache(tmp_path / "c.sqlite"))
        try:
            return await asyncio.gather(
                *(backend.complete([{"role": "user", "content": p}], Sampling()) for p in prompts)
            )
        finally:
            await backend.aclose()

    with FaultServer() as server:
        first = asyncio.run(run(server.url))
        assert server.total == 30
        second = asyncio.run(run(server.url))  # a new LLMCache on the same file
        assert server.total == 30
    assert [c.text for c in first] == [c.text for c in second] == [f"echo: {p}" for p in prompts]
    assert not any(c.cached for c in first) and all(c.cached and c.attempts == 0 for c in second)


def test_failures_are_not_cached(tmp_path):
    cache = LLMCache(tmp_path / "c.sqlite")
    ask = [{"role": "user", "content": "p"}]

    async def run(backend):
        try:
            return await backend.complete(ask, Sampling())
        except LLMError as err:
            return err
        finally:
            await backend.aclose()

    with FaultServer({"p": ["400", "ok"]}) as server:
        backend = CachedBackend(OpenAIBackend("m", server.url, backoff_base_s=0.01), cache)
        assert isinstance(asyncio.run(run(backend)), LLMError) and len(cache) == 0
        assert asyncio.run(run(backend)).text == "echo: p" and len(cache) == 1
        assert asyncio.run(run(backend)).cached and server.counts["p"] == 2


def test_many_tasks_and_threads_share_one_cache(tmp_path):
    cache = LLMCache(tmp_path / "c.sqlite")
    inner = EchoBackend()
    backend = CachedBackend(inner, cache)

    async def run():
        prompts = [f"p{i % 50}" for i in range(200)]
        return await asyncio.gather(*(backend.complete([{"role": "user", "content": p}], Sampling()) for p in prompts))

    results = asyncio.run(run())
    assert [r.text for r in results] == [f"echo: p{i % 50}" for i in range(200)] and len(cache) == 50

    def writer(t):
        for i in range(50):
            cache.put(f"t{t}-{i}", "fake:m", {}, _completion(f"{t}-{i}"))
            assert cache.get(f"t{t}-{i}").text == f"{t}-{i}"

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(writer, range(8)))
    assert len(cache) == 50 + 8 * 50


def test_several_processes_write_one_file(tmp_path):
    path = tmp_path / "c.sqlite"
    script = textwrap.dedent(f"""
        import sys
        from genrep.diting.llm import Completion, LLMCache
        cache = LLMCache({str(path)!r})
        for i in range(100):
            cache.put(f"{{sys.argv[1]}}-{{i}}", "m", {{}}, Completion("x", "m", 1, 1, False, 0.0, 1))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(n)]) for n in range(3)]
    cache = LLMCache(path)
    for i in range(100):
        cache.put(f"main-{i}", "m", {}, _completion())
    assert [p.wait() for p in procs] == [0, 0, 0]
    assert len(cache) == 400
