"""A client for OpenAI-compatible chat-completions servers, with bounded concurrency and bounded retries.

``POST {base_url}/chat/completions`` is the one protocol that OpenAI, DeepSeek, vLLM, llama.cpp's
server and Ollama (under ``/v1``) all speak, so it is the only remote backend genrep needs.

The retry policy, in full:

- retried: HTTP 408, 409, 429 and 5xx; timeouts; connection errors (refused, reset, a body cut
  short); a 200 whose body is not JSON or has no ``choices``;
- not retried: every other status (400, 401, 403, 404, ...), reported with the server's message;
- at most ``max_retries`` retries after the first attempt, then :class:`LLMError` says what
  failed and how often (``"HTTP 500 after 5 attempts"``);
- between attempts: exponential backoff with full jitter, ``uniform(0, min(max, base * 2**k))``,
  unless a 429/503 carries ``Retry-After`` (seconds or an HTTP-date), which is obeyed up to
  ``retry_after_max_s``.

A request holds its concurrency slot while it waits to retry, so a struggling server sees fewer
requests, not more.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from datetime import timezone
from typing import Any, NoReturn

import httpx

from genrep.core.errors import UserError
from genrep.diting.llm.types import Completion, LLMError, Sampling

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 409, 429})  # plus every 5xx
RETRY_AFTER_STATUSES = frozenset({429, 503})


class _Retryable(Exception):
    """One attempt failed in a way worth another try."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date); None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def request_body(model: str, messages: list[dict], sampling: Sampling) -> dict[str, Any]:
    """The JSON body of a chat-completions request; optional fields only when set."""
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_tokens,
    }
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if sampling.response_format is not None:
        body["response_format"] = sampling.response_format
    return body


def _error_message(resp: httpx.Response) -> str:
    """The server's own words about a failed request, on one line."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    message: Any = None
    if isinstance(body, dict):
        err = body.get("error")
        message = err.get("message") if isinstance(err, dict) else err
        message = message or body.get("message") or body.get("detail")
    text = str(message) if message else resp.text or resp.reason_phrase
    return " ".join(text.split())[:300]


def _raise_for_status(resp: httpx.Response) -> NoReturn:
    status = resp.status_code
    if status in RETRY_STATUSES or status >= 500:
        wait = parse_retry_after(resp.headers.get("retry-after")) if status in RETRY_AFTER_STATUSES else None
        raise _Retryable(f"HTTP {status}", wait)
    raise LLMError(f"HTTP {status}: {_error_message(resp)}")


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _parse(body: Any, model: str, latency_s: float, attempts: int) -> Completion:
    """A :class:`Completion` from a chat-completions body; a body without a choice is worth a retry."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise _Retryable("no choices in body")
    choice = choices[0]
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    usage = body.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    return Completion(
        text=content if isinstance(content, str) else "",
        model=body.get("model") or model,
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
        cached=False,
        latency_s=latency_s,
        attempts=attempts,
        finish_reason=choice.get("finish_reason") or "stop",
    )


class OpenAIBackend:
    """An OpenAI-compatible server at ``base_url`` (e.g. ``http://localhost:8000/v1``) serving ``model``.

    One ``httpx.AsyncClient`` and one semaphore per event loop, so the backend can be used from
    several ``asyncio.run`` calls in turn; call :meth:`aclose` at the end of each.
    """

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key: str | None = None,
        concurrency: int = 16,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        retry_after_max_s: float = 60.0,
        name: str | None = None,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise UserError(f"base URL '{base_url}' must start with http:// or https://")
        if concurrency < 1 or max_retries < 0:
            raise UserError(f"concurrency must be >= 1 and max_retries >= 0 (got {concurrency}, {max_retries})")
        self.model, self.name = model, name or f"openai:{model}"
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.concurrency, self.timeout_s, self.max_retries = concurrency, timeout_s, max_retries
        self.backoff_base_s, self.backoff_max_s, self.retry_after_max_s = (
            backoff_base_s,
            backoff_max_s,
            retry_after_max_s,
        )
        self._rng = random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None

    def __repr__(self) -> str:
        return f"OpenAIBackend(name={self.name!r}, base_url={self.base_url!r})"

    def _session(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._client is None or self._slots is None:
            from genrep import __version__

            headers = {"User-Agent": f"genrep/{__version__}"}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
            self._client = httpx.AsyncClient(timeout=self.timeout_s, headers=headers, limits=limits)
            self._slots = asyncio.Semaphore(self.concurrency)
            self._loop = loop
        return self._client, self._slots

    def backoff_s(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_max_s)
        return self._rng.uniform(0.0, min(self.backoff_max_s, self.backoff_base_s * 2.0 ** min(attempt, 60)))

    async def _attempt(self, client: httpx.AsyncClient, body: dict[str, Any]) -> Any:
        """One POST; the parsed JSON body of a 2xx answer, else :class:`_Retryable` or :class:`LLMError`."""
        try:
            # httpx's timeout bounds each read; the outer deadline also bounds a server that trickles bytes.
            resp = await asyncio.wait_for(client.post(f"{self.base_url}/chat/completions", json=body), self.timeout_s)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            raise _Retryable("timeout") from None
        except httpx.TransportError as err:
            raise _Retryable(f"connection error ({type(err).__name__})") from None
        except httpx.RequestError as err:  # a body httpx cannot decode, e.g. broken gzip
            raise _Retryable(f"bad response ({type(err).__name__})") from None
        if not resp.is_success:
            _raise_for_status(resp)
        try:
            return resp.json()
        except ValueError:
            raise _Retryable("invalid JSON body") from None

    async def complete(self, messages: list[dict], sampling: Sampling) -> Completion:
        body = request_body(self.model, messages, sampling)
        client, slots = self._session()
        async with slots:
            start = time.perf_counter()
            attempts = self.max_retries + 1
            for attempt in range(attempts):
                try:
                    answer = await self._attempt(client, body)
                    return _parse(answer, self.model, time.perf_counter() - start, attempt + 1)
                except _Retryable as err:
                    failure = err
                    if attempt + 1 < attempts:
                        wait = self.backoff_s(attempt, err.retry_after)
                        log.debug("%s: %s, retry %d in %.2f s", self.name, err.reason, attempt + 1, wait)
                        await asyncio.sleep(wait)
        raise LLMError(f"{failure.reason} after {attempts} attempt{'s' if attempts > 1 else ''}")

    async def aclose(self) -> None:
        """Close this event loop's HTTP client (a client of a finished loop is just dropped)."""
        client, loop = self._client, self._loop
        self._client = self._slots = self._loop = None
        if client is not None and loop is asyncio.get_running_loop():
            await client.aclose()
