import asyncio
import json

import pytest

from genrep.core.errors import UserError
from genrep.diting.llm import CachedBackend, LLMCache, LLMError, Sampling, UsageMeter
from genrep.diting.llm.usage import parse_prices

from .fakes import EchoBackend


def test_the_meter_counts_calls_hits_failures_tokens_and_cost(tmp_path):
    meter = UsageMeter({"echo": (1.0, 10.0)})  # found by the model part of "fake:echo"
    backend = meter.wrap(CachedBackend(EchoBackend(), LLMCache(tmp_path / "c.sqlite")))

    async def run():
        for prompt in ["one two", "one two", "three"]:
            await backend.complete([{"role": "user", "content": prompt}], Sampling())
        with pytest.raises(LLMError):
            await backend.complete([{"role": "user", "content": "fail"}], Sampling())

    asyncio.run(run())
    summary = json.loads(json.dumps(meter.summary()))
    tally = summary["per_model"]["fake:echo"]
    # "one two" -> 2 + 3 tokens, "three" -> 1 + 2 tokens; the repeat is a cache hit and costs nothing
    assert {k: tally[k] for k in ("calls", "cache_hits", "failures", "prompt_tokens", "completion_tokens")} == {
        "calls": 3,
        "cache_hits": 1,
        "failures": 1,
        "prompt_tokens": 3,
        "completion_tokens": 5,
    }
    assert tally["cost_usd"] == pytest.approx((3 * 1.0 + 5 * 10.0) / 1e6)
    assert tally["failure_reasons"] == {"injected failure": 1} and summary["total"]["calls"] == 3
    assert summary["prices_usd_per_1M_tokens"] == {"echo": [1.0, 10.0]}


def test_prices_from_a_config_are_checked():
    assert parse_prices({"gpt-4o-mini": [0.15, 0.6], "free": (0, 0)}) == {
        "gpt-4o-mini": (0.15, 0.6),
        "free": (0.0, 0.0),
    }
    assert parse_prices({"m": [1, 2, 0.5]}) == {"m": (1.0, 2.0, 0.5)}  # a third price: cached prompt tokens
    for bad in ([1.0], [1, 2, 3, 4], [-1, 2], [1, 2, -0.5], [float("nan"), 1], ["1", "2"], [True, 1], 3):
        with pytest.raises(UserError, match=r"^prices: model 'm': expected \[USD per 1M prompt tokens"):
            parse_prices({"m": bad})
