"""The vocabulary every LLM backend shares: sampling settings, a completion, a failure, the protocol.

DITING's judges (the AgentEval experts and the single-agent baseline, docs/papers.md s3.4) talk
to a model through a :class:`Backend`: an OpenAI-style chat request in, a :class:`Completion`
out. Reproducible judging means temperature 0 and a fixed seed, which are the defaults of
:class:`Sampling`; a request that cannot be answered raises :class:`LLMError` with a short reason
that ends up next to the item it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Sampling:
    """How to decode; every field is part of the cache key (see :func:`genrep.diting.llm.cache.cache_key`)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = 0
    stop: tuple[str, ...] = ()
    response_format: dict[str, Any] | None = None  # OpenAI's, e.g. {"type": "json_schema", "json_schema": {...}}

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif not isinstance(self.stop, tuple):
            object.__setattr__(self, "stop", tuple(self.stop))


@dataclass(frozen=True)
class Completion:
    """One answer (one logical call). ``attempts`` counts the HTTP requests it took (0 for a cache hit).

    ``finish_reason`` is ``"length"`` when the answer was cut by the token limit (a schema-guided
    local reply too: its text is then the partial JSON so far); such an answer is never a usable
    structured answer (:func:`~genrep.diting.llm.structured.complete_json` retries
    it a bounded number of times and then raises :class:`TruncatedError`). ``reasoning_content`` is
    a reasoning model's thinking as the server returned it (``""`` when there is none);
    ``cached_tokens`` (prompt tokens served from the server's prompt cache) and
    ``reasoning_tokens`` (completion tokens spent thinking) are the server's counts, 0 when it
    reports none. Both are included in ``prompt_tokens`` / ``completion_tokens``, as OpenAI counts.
    """

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    latency_s: float
    attempts: int
    finish_reason: str = "stop"  # "stop" or "length" (cut by max_tokens)
    reasoning_content: str = ""
    cached_tokens: int = 0
    reasoning_tokens: int = 0


class LLMError(Exception):
    """A request that failed for good.

    ``reason`` is one line with what the server said, e.g. ``"HTTP 500 after 5 attempts: out of
    memory"``; ``attempts`` counts the HTTP requests spent on it (0 when unknown); ``status`` is
    the last HTTP status, if there was one.
    """

    def __init__(self, reason: str, *, attempts: int = 0, status: int | None = None):
        super().__init__(reason)
        self.reason, self.attempts, self.status = reason, attempts, status


class TruncatedError(LLMError):
    """A structured answer cut off by the token limit (``finish_reason == "length"``), still cut after
    the bounded retries; ``completions`` are the truncated answers, for the transcript."""

    def __init__(self, reason: str, completions: list[Completion], *, attempts: int = 0):
        super().__init__(reason, attempts=attempts)
        self.completions = completions


@runtime_checkable
class Backend(Protocol):
    """Anything that answers chat requests: a remote server, a local model, a cache in front of either."""

    name: str  # e.g. "openai:gpt-4o-mini"
    model: str

    async def complete(self, messages: list[dict], sampling: Sampling) -> Completion: ...

    async def aclose(self) -> None: ...
