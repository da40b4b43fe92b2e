"""What a run spent on LLM calls, per backend, for ``metrics.json``.

A :class:`UsageMeter` observes completions: wrap a backend with :meth:`UsageMeter.wrap` (outermost,
so cache hits are seen) or call :meth:`UsageMeter.record` / :meth:`UsageMeter.record_failure`
yourself. Tokens and cost count what this run *spent*: a cache hit is counted as a call and a
hit, but adds no tokens and no cost. Prices are optional, ``{model: (usd_per_1M_prompt,
usd_per_1M_completion)}``, looked up by backend name (``"openai:gpt-4o-mini"``) and then by the
part after the kind (``"gpt-4o-mini"``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from genrep.diting.llm.types import Backend, Completion, LLMError, Sampling

Prices = dict[str, tuple[float, ...]]  # (prompt, completion) or (prompt, completion, cached prompt), USD per 1M


def parse_prices(prices: dict[str, Any], where: str = "prices") -> Prices:
    """``{model: (usd_per_1M_prompt, usd_per_1M_completion[, usd_per_1M_cached_prompt])}`` from a config's
    ``prices`` field, or a one-line UserError naming the model whose entry is not two or three
    non-negative finite numbers."""
    import math

    from genrep.core.errors import UserError

    out: Prices = {}
    for model, pair in prices.items():
        values = list(pair) if isinstance(pair, (list, tuple)) else None
        if (
            values is None
            or len(values) not in (2, 3)
            or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in values
            )
        ):
            raise UserError(
                f"{where}: model '{model}': expected [USD per 1M prompt tokens, USD per 1M completion "
                f"tokens] and optionally USD per 1M cached prompt tokens (numbers >= 0), got {pair!r}"
            )
        out[str(model)] = tuple(float(v) for v in values)
    return out


@dataclass
class _Tally:
    calls: int = 0
    cache_hits: int = 0
    failures: int = 0
    http_attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    failure_reasons: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "failures": self.failures,
            "http_attempts": self.http_attempts,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "latency_s": round(self.latency_s, 3),
            "failure_reasons": dict(self.failure_reasons),
        }


class UsageMeter:
    """Calls, cache hits, failures, tokens and USD per backend."""

    def __init__(self, prices: Prices | None = None):
        self.prices = dict(prices or {})
        self._tallies: dict[str, _Tally] = {}

    def _tally(self, model: str) -> _Tally:
        return self._tallies.setdefault(model, _Tally())

    def price(self, model: str) -> tuple[float, ...] | None:
        return self.prices.get(model) or self.prices.get(model.split(":", 1)[-1])

    def record(self, completion: Completion, model: str | None = None) -> None:
        """Count one answer under ``model`` (default: the model the server named)."""
        model = model or completion.model
        t = self._tally(model)
        t.calls += 1
        if completion.cached:
            t.cache_hits += 1
            return
        t.http_attempts += completion.attempts
        t.prompt_tokens += completion.prompt_tokens
        t.completion_tokens += completion.completion_tokens
        t.cached_tokens += completion.cached_tokens
        t.reasoning_tokens += completion.reasoning_tokens
        t.latency_s += completion.latency_s
        t.cost_usd += self.cost_usd(completion, model)

    def cost_usd(self, completion: Completion, model: str | None = None) -> float:
        """What ``completion`` cost: prompt tokens at the prompt price, those the server's prompt cache
        served at the cached price (the prompt price if none is given), completion tokens (reasoning
        tokens included, as OpenAI and DeepSeek count them) at the completion price; 0 without a price."""
        price = self.price(model or completion.model)
        if price is None or completion.cached:
            return 0.0
        prompt, output = price[0], price[1]
        cached_price = price[2] if len(price) > 2 else prompt
        cached = min(completion.cached_tokens, completion.prompt_tokens)
        return (
            (completion.prompt_tokens - cached) * prompt + cached * cached_price + completion.completion_tokens * output
        ) / 1e6

    def record_failure(self, model: str, reason: str, attempts: int = 0) -> None:
        t = self._tally(model)
        t.failures += 1
        t.http_attempts += attempts
        t.failure_reasons[reason] += 1

    def wrap(self, backend: Backend) -> Backend:
        """``backend`` with every answer and failure counted under its name."""
        return _MeteredBackend(backend, self)

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable totals and per-backend tallies (``failure_reasons`` counts each reason)."""
        total = _Tally()
        for t in self._tallies.values():
            for name in (
                "calls",
                "cache_hits",
                "failures",
                "http_attempts",
                "prompt_tokens",
                "completion_tokens",
                "cached_tokens",
                "reasoning_tokens",
                "cost_usd",
                "latency_s",
            ):
                setattr(total, name, getattr(total, name) + getattr(t, name))
            total.failure_reasons.update(t.failure_reasons)
        return {
            "total": total.as_dict(),
            "per_model": {m: t.as_dict() for m, t in sorted(self._tallies.items())},
            "prices_usd_per_1M_tokens": {m: list(p) for m, p in sorted(self.prices.items())},
        }


class _MeteredBackend:
    def __init__(self, backend: Backend, meter: UsageMeter):
        self.backend, self.meter = backend, meter
        self.name, self.model = backend.name, backend.model

    async def complete(self, messages: list[dict], sampling: Sampling) -> Completion:
        try:
            completion = await self.backend.complete(messages, sampling)
        except LLMError as err:
            self.meter.record_failure(self.name, err.reason, err.attempts)
            raise
        self.meter.record(completion, self.name)
        return completion

    async def aclose(self) -> None:
        await self.backend.aclose()
