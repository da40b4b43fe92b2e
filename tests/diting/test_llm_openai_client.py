import asyncio
import email.utils
import random
import threading
import time
import types
from collections import Counter

import pytest

from genrep.core.errors import UserError
from genrep.diting.llm import LLMError, OpenAIBackend, Sampling
from genrep.diting.llm.openai_client import parse_retry_after

from .fault_server import FaultServer

FAST = dict(backoff_base_s=0.01, backoff_max_s=0.05)


@pytest.fixture
def sleeps(monkeypatch):
    """Every ``asyncio.sleep`` the client itself does (its waits between attempts), in seconds.

    Checking the waits the client chose, rather than the wall time a test took, keeps the tests
    independent of how busy the machine is."""
    from genrep.diting.llm import openai_client

    real = asyncio.sleep
    recorded: list[float] = []

    async def sleep(delay, *args, **kwargs):
        recorded.append(delay)
        return await real(delay, *args, **kwargs)

    proxy = types.ModuleType("asyncio")
    proxy.__dict__.update(vars(asyncio))
    proxy.sleep = sleep
    monkeypatch.setattr(openai_client, "asyncio", proxy)
    return recorded


def _ask(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


async def _run_all(backend: OpenAIBackend, prompts: list[str], sampling: Sampling = Sampling()) -> list:
    async def one(p):
        try:
            return await backend.complete(_ask(p), sampling)
        except LLMError as err:
            return err

    try:
        return await asyncio.gather(*(one(p) for p in prompts))
    finally:
        await backend.aclose()


def test_parse_retry_after_reads_seconds_and_http_dates():
    now = time.time()
    assert parse_retry_after("2") == 2.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None and parse_retry_after("") is None


def test_request_body_carries_every_sampling_field():
    fmt = {"type": "json_object"}
    with FaultServer() as server:
        backend = OpenAIBackend("m", server.url, api_key="k", **FAST)
        [c] = asyncio.run(
            _run_all(
                backend,
                ["hi"],
                Sampling(temperature=0.3, top_p=0.9, max_tokens=7, seed=5, stop=("\n",), response_format=fmt),
            )
        )
        [bare] = asyncio.run(_run_all(backend, ["hey"], Sampling(seed=None)))
    assert c.text == "echo: hi" and c.model == "m" and c.attempts == 1 and not c.cached
    assert (c.prompt_tokens, c.completion_tokens) == (1, 2)
    body = server.bodies[0]
    assert body == {
        "model": "m",
        "messages": _ask("hi"),
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 7,
        "seed": 5,
        "stop": ["\n"],
        "response_format": fmt,
    }
    assert bare.text == "echo: hey" and not {"seed", "stop", "response_format"} & set(server.bodies[1])


# What each injected fault looks like in a final LLMError reason.
REASONS = {
    "500": "HTTP 500 after {n} attempts: injected 500 for {prompt}",
    "503:0.02": "HTTP 503 after {n} attempts: injected 503 for {prompt}",
    "429:0.02": "HTTP 429 after {n} attempts: injected 429 for {prompt}",
    "hang": "timeout after {n} attempts",
    "truncated": "connection error (RemoteProtocolError) after {n} attempts",
    "nonjson": "invalid JSON body after {n} attempts",
    "nochoices": "no choices in body after {n} attempts",
}
FAULTS = {
    "ok": 50,
    "slow:0.05": 5,
    "500": 8,
    "503:0.02": 5,
    "429:0.02": 7,
    "hang": 5,
    "truncated": 5,
    "nonjson": 5,
    "nochoices": 5,
    "400": 5,
}


def _expected(faults: list[str]) -> tuple[str, int]:
    """(outcome, attempts): "ok", the reason of a final failure."""
    for i, fault in enumerate(faults):
        if fault in ("ok", "slow:0.05"):
            return "ok", i + 1
        if fault == "400":
            return "HTTP 400: injected 400 for {prompt}", i + 1
    return REASONS[faults[-1]].replace("{n}", str(len(faults))), len(faults)


def test_200_requests_with_random_faults_finish_or_fail_with_a_reason():
    max_retries = 3
    rng = random.Random(0)
    prompts = [f"item {i}" for i in range(200)]
    script = {p: rng.choices(list(FAULTS), weights=list(FAULTS.values()), k=1 + max_retries) for p in prompts}
    with FaultServer(script) as server:
        # "hang" never answers, so it times out whatever timeout_s is; 3 s leaves a busy machine room to
        # answer the others in time.
        backend = OpenAIBackend(
            "m", server.url, concurrency=16, timeout_s=3, max_retries=max_retries, retry_after_max_s=0.05, **FAST
        )
        results = asyncio.run(_run_all(backend, prompts))
    kinds = Counter()
    for prompt, result in zip(prompts, results):
        outcome, attempts = _expected(script[prompt])
        assert server.counts[prompt] == attempts <= 1 + max_retries, prompt
        if outcome == "ok":
            assert result.text == f"echo: {prompt}" and result.attempts == attempts, prompt
        else:
            assert isinstance(result, LLMError) and result.reason == outcome.format(prompt=prompt), (prompt, result)
        kinds["ok" if outcome == "ok" else "not retried" if outcome.startswith("HTTP 400") else "gave up"] += 1
    assert kinds["ok"] > 150 and kinds["not retried"] > 0 and kinds["gave up"] > 0, kinds


def test_retry_after_is_honoured_in_seconds_and_as_a_date(sleeps):
    script = {"seconds": ["429:0.4", "ok"], "unavailable": ["503:0.4", "ok"], "date": ["429date:2", "ok"]}
    with FaultServer(script) as server:
        backend = OpenAIBackend("m", server.url, **FAST)
        results = asyncio.run(_run_all(backend, list(script)))
    assert all(r.attempts == 2 for r in results), results
    # At least the Retry-After between the two arrivals (a busy machine only adds to it) ...
    waited = {p: server.arrivals[p][1] - server.arrivals[p][0] for p in script}
    assert 0.38 <= waited["seconds"] and 0.38 <= waited["unavailable"], waited
    assert 0.9 <= waited["date"], waited  # an HTTP-date has whole seconds: 2 s ahead is 1-2 s ahead
    # ... and no more than it: the client's own waits are the Retry-After, not backoff on top of it.
    assert len(sleeps) == 3 and sleeps.count(0.4) >= 2 and all(0 <= s <= 2 for s in sleeps), sleeps


def test_retry_after_is_capped(sleeps):
    with FaultServer({"p": ["429:30", "503:30", "ok"]}) as server:
        backend = OpenAIBackend("m", server.url, retry_after_max_s=0.1, **FAST)
        [c] = asyncio.run(_run_all(backend, ["p"]))
    assert c.attempts == 3 and sleeps == [0.1, 0.1]


@pytest.mark.parametrize("status", ["400", "401", "403", "404", "422"])
def test_client_errors_fail_at_once_with_the_servers_message(status):
    with FaultServer({"p": [status, "ok"]}) as server:
        [err] = asyncio.run(_run_all(OpenAIBackend("m", server.url, **FAST), ["p"]))
    assert isinstance(err, LLMError) and err.reason == f"HTTP {status}: injected {status} for p"
    assert server.counts["p"] == 1


def test_timeouts_are_retried_a_bounded_number_of_times():
    with FaultServer({"p": ["hang"] * 5}) as server:
        [err] = asyncio.run(_run_all(OpenAIBackend("m", server.url, timeout_s=0.2, max_retries=2, **FAST), ["p"]))
    assert err.reason == "timeout after 3 attempts" and server.counts["p"] == 3


def test_no_retries_means_one_attempt():
    with FaultServer({"p": ["500", "ok"]}) as server:
        [err] = asyncio.run(_run_all(OpenAIBackend("m", server.url, max_retries=0, **FAST), ["p"]))
    assert err.reason == "HTTP 500 after 1 attempt: injected 500 for p" and server.counts["p"] == 1
    assert err.attempts == 1 and err.status == 500


def test_connection_refused_is_reported():
    with FaultServer() as server:
        url = server.url  # the port is free again after the server closes
    [err] = asyncio.run(_run_all(OpenAIBackend("m", url, max_retries=1, **FAST), ["p"]))
    assert err.reason == "connection error (ConnectError) after 2 attempts"


def test_concurrency_is_bounded():
    four_in_flight = threading.Event()

    def script(prompt, n):
        # Hold each request until 4 are in flight at once, so the bound is reached however slowly the
        # client's requests arrive (a client allowing fewer would wait here for 60 s, then fail below).
        if server.max_in_flight >= 4:
            four_in_flight.set()
        four_in_flight.wait(60)
        return "slow:0.1"

    with FaultServer(script) as server:
        results = asyncio.run(
            _run_all(OpenAIBackend("m", server.url, concurrency=4, **FAST), [str(i) for i in range(16)])
        )
    assert all(not isinstance(r, LLMError) for r in results)
    assert server.max_in_flight == 4


def test_a_backend_serves_several_event_loops_in_turn():
    with FaultServer() as server:
        backend = OpenAIBackend("m", server.url, **FAST)
        first = asyncio.run(_run_all(backend, ["a"]))
        second = asyncio.run(_run_all(backend, ["b"]))
    assert [first[0].text, second[0].text] == ["echo: a", "echo: b"]


def test_a_base_url_without_scheme_is_the_users_to_fix():
    with pytest.raises(UserError, match="localhost:8000"):
        OpenAIBackend("m", "localhost:8000/v1")
