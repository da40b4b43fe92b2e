"""A client for OpenAI-compatible chat-completions servers, with bounded concurrency and bounded retries.

``POST {base_url}/chat/completions`` is the one protocol that OpenAI, DeepSeek, vLLM, llama.cpp's
server and Ollama (under ``/v1``) all speak, so it is the only remote backend genrep needs.

The retry policy, in full:

- retried: HTTP 408, 409, 429 and 5xx; timeouts; connection errors (refused, reset, a body cut
  short); a 200 whose body is not JSON or has no ``choices``;
- not retried: every other status (400, 401, 403, 404, 422, ...), and a 5xx whose body is a
  request-validation error (llama.cpp's server answers a ``response_format`` it does not know
  with HTTP 500 "Input should be 'text' or 'json_object'"; asking again cannot help). Both are
  reported at once with the server's message;
- at most ``max_retries`` retries after the first attempt, then :class:`LLMError` says what
  failed, how often and what the server said last
  (``"HTTP 500 after 5 attempts: CUDA out of memory"``); ``LLMError.attempts`` counts the requests;
- between attempts: exponential backoff with full jitter, ``uniform(0, min(max, base * 2**k))``,
  unless the answer carries ``retry-after-ms`` (milliseconds, OpenAI's) or ``Retry-After``
  (seconds or an HTTP-date), which is obeyed up to ``retry_after_max_s``.

A request holds its concurrency slot while it waits to retry, so a struggling server sees fewer
requests, not more.

Per-backend wire settings (each defaults from the backend kind and model, see
:func:`kind_defaults`; ``$GENREP_LLM_STRUCTURED`` and ``$GENREP_LLM_REASONING`` override the
defaults):

- ``structured``: how a JSON-schema ``response_format`` is sent (:data:`STRUCTURED_DIALECTS`):
  ``"json_schema"`` as is (OpenAI, vLLM, Ollama); ``"llama-cpp"`` as
  ``{"type": "json_object", "schema": ...}`` (llama-cpp-python's server); ``"json_object"`` as
  ``{"type": "json_object"}`` with the schema described in a system message (DeepSeek);
  ``"text"`` with no ``response_format`` at all, the schema in a system message, the JSON read
  from the free-text reply;
- ``reasoning``: a reasoning model (OpenAI o-series and gpt-5, DeepSeek-R1 /
  ``deepseek-reasoner``): no ``temperature``, ``top_p`` or ``seed`` is sent, and for the
  ``openai`` kind ``max_completion_tokens`` replaces ``max_tokens``;
- ``sampling_fields`` and ``max_tokens_field`` set those two things directly.
"""

from __future__ import annotations

import asyncio
import copy
import email.utils
import json
import logging
import os
import random
import re
import time
from dataclasses import dataclass
from datetime import timezone
from typing import Any, Literal, NoReturn, cast

import httpx

from genrep.core.errors import UserError
from genrep.diting.llm.types import Completion, LLMError, Sampling

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 409, 429})  # plus every 5xx, unless its body is a validation error
# Words that mark a 5xx body as the server rejecting the request itself (asking again cannot help).
VALIDATION_MARKERS = (
    "input should be",
    "validation",
    "invalid_request_error",
    "unsupported",
    "not supported",
)
StructuredDialect = Literal["json_schema", "llama-cpp", "json_object", "text"]
STRUCTURED_DIALECTS: tuple[str, ...] = ("json_schema", "llama-cpp", "json_object", "text")
SAMPLING_FIELDS: tuple[str, ...] = ("temperature", "top_p", "seed")
MaxTokensField = Literal["max_tokens", "max_completion_tokens"]
STRUCTURED_ENV = "GENREP_LLM_STRUCTURED"
REASONING_ENV = "GENREP_LLM_REASONING"

SCHEMA_NOTE = "Reply with one JSON object only, no other text. It must match this JSON schema: {schema}"
JSON_NOTE = "Reply with one JSON object only, no other text."

_OPENAI_REASONING = re.compile(r"^(o\d|gpt-5)", re.I)
_R1 = re.compile(r"deepseek-(reasoner|r1)", re.I)


@dataclass(frozen=True)
class WireSettings:
    """What one backend sends: the structured-output dialect, the sampling fields, the token-limit field."""

    structured: StructuredDialect = "json_schema"
    reasoning: bool = False
    sampling_fields: tuple[str, ...] = SAMPLING_FIELDS
    max_tokens_field: MaxTokensField = "max_tokens"


def is_reasoning_model(kind: str, model: str) -> bool:
    """True for OpenAI's o-series and gpt-5 (kind ``openai``) and DeepSeek-R1 / ``deepseek-reasoner`` (any kind)."""
    name = model.rsplit("/", 1)[-1]
    return bool(_R1.search(model)) or (kind == "openai" and bool(_OPENAI_REASONING.match(name)))


def kind_defaults(kind: str, model: str) -> tuple[StructuredDialect, bool]:
    """``(structured, reasoning)`` for a backend kind and model when nothing is configured.

    llama.cpp's server rejects ``json_schema`` (HTTP 500 "Input should be 'text' or
    'json_object'") and takes the schema under ``json_object``; DeepSeek knows only plain
    ``json_object``; OpenAI, vLLM, Ollama, genrep's own server and any other ``http`` server get
    ``json_schema``.
    """
    structured: StructuredDialect = {"llamacpp": "llama-cpp", "deepseek": "json_object"}.get(  # type: ignore[assignment]
        kind, "json_schema"
    )
    return structured, is_reasoning_model(kind, model)


def _field_defaults(kind: str, reasoning: bool) -> tuple[tuple[str, ...], str]:
    """``(sampling_fields, max_tokens_field)`` when not configured: no sampling fields for a reasoning model,
    and OpenAI's reasoning models take ``max_completion_tokens``."""
    fields = () if reasoning else SAMPLING_FIELDS
    return fields, "max_completion_tokens" if reasoning and kind == "openai" else "max_tokens"


def _kind_wire(kind: str, model: str) -> WireSettings:
    """The wire settings :func:`wire_settings` gives a ``kind`` backend with nothing configured (no environment)."""
    structured, reasoning = kind_defaults(kind, model)
    fields, max_field = _field_defaults(kind, reasoning)
    return WireSettings(structured, reasoning, fields, cast(MaxTokensField, max_field))


def _bool_env(value: str) -> bool:
    low = value.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise UserError(f"${REASONING_ENV}='{value}': expected true or false")


def wire_settings(
    kind: str,
    model: str,
    *,
    structured: str | None = None,
    reasoning: bool | None = None,
    sampling_fields: tuple[str, ...] | list[str] | None = None,
    max_tokens_field: str | None = None,
) -> WireSettings:
    """The settings of a ``kind`` backend serving ``model``: what is given, else the environment, else :func:`kind_defaults`."""
    default_structured, default_reasoning = kind_defaults(kind, model)
    structured = structured or os.environ.get(STRUCTURED_ENV) or default_structured
    if structured not in STRUCTURED_DIALECTS:
        raise UserError(f"structured output '{structured}' is not one of {', '.join(STRUCTURED_DIALECTS)}")
    if reasoning is None:
        env = os.environ.get(REASONING_ENV)
        reasoning = _bool_env(env) if env else default_reasoning
    default_fields, default_max_field = _field_defaults(kind, reasoning)
    if sampling_fields is None:
        sampling_fields = default_fields
    unknown = sorted(set(sampling_fields) - set(SAMPLING_FIELDS))
    if unknown:
        raise UserError(f"sampling fields {unknown} are not among {', '.join(SAMPLING_FIELDS)}")
    if max_tokens_field is None:
        max_tokens_field = default_max_field
    if max_tokens_field not in ("max_tokens", "max_completion_tokens"):
        raise UserError(f"max_tokens_field '{max_tokens_field}' is not max_tokens or max_completion_tokens")
    return WireSettings(
        structured=cast(StructuredDialect, structured),
        reasoning=reasoning,
        sampling_fields=tuple(sampling_fields),
        max_tokens_field=cast(MaxTokensField, max_tokens_field),
    )


class _Retryable(Exception):
    """One attempt failed in a way worth another try; ``detail`` is the server's message, if any."""

    def __init__(self, reason: str, retry_after: float | None = None, detail: str = "", status: int | None = None):
        super().__init__(reason)
        self.reason, self.retry_after, self.detail, self.status = reason, retry_after, detail, status


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


def retry_after_s(headers: httpx.Headers | dict[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (milliseconds, OpenAI's; preferred) or ``Retry-After``."""
    headers = httpx.Headers(headers)
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    return parse_retry_after(headers.get("retry-after"))


def _schema_note(response_format: dict[str, Any]) -> str:
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if schema is None:
        return JSON_NOTE
    return SCHEMA_NOTE.format(schema=json.dumps(schema, separators=(",", ":"), ensure_ascii=False))


def _with_system_note(messages: list[dict], note: str) -> list[dict]:
    """``messages`` with ``note`` added to the leading system message (one is put first if there is none)."""
    if messages and messages[0].get("role") == "system" and isinstance(messages[0].get("content"), str):
        first = {**messages[0], "content": f"{messages[0]['content']}\n\n{note}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]


def structured_request(
    messages: list[dict], response_format: dict[str, Any] | None, dialect: StructuredDialect
) -> tuple[list[dict], dict[str, Any] | None]:
    """``(messages, response_format)`` as a server speaking ``dialect`` wants them.

    Only a ``json_schema`` or ``json_object`` request is translated; anything else is sent as is.
    """
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if response_format is None or kind not in ("json_schema", "json_object") or dialect == "json_schema":
        return messages, response_format
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if kind == "json_schema" and isinstance(spec, dict) else None
    if dialect == "llama-cpp":
        return messages, {"type": "json_object", **({"schema": copy.deepcopy(schema)} if schema is not None else {})}
    note = _schema_note(response_format)
    if dialect == "json_object":
        return _with_system_note(messages, note), {"type": "json_object"}
    return _with_system_note(messages, note), None  # "text"


def request_body(
    model: str, messages: list[dict], sampling: Sampling, settings: WireSettings = WireSettings()
) -> dict[str, Any]:
    """The JSON body of a chat-completions request; optional fields only when set (and sent by ``settings``)."""
    messages, response_format = structured_request(messages, sampling.response_format, settings.structured)
    body: dict[str, Any] = {"model": model, "messages": messages}
    fields = settings.sampling_fields
    if "temperature" in fields:
        body["temperature"] = sampling.temperature
    if "top_p" in fields:
        body["top_p"] = sampling.top_p
    body[settings.max_tokens_field] = sampling.max_tokens
    if sampling.seed is not None and "seed" in fields:
        body["seed"] = sampling.seed
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if response_format is not None:
        body["response_format"] = response_format
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
    if message and not isinstance(message, str):  # FastAPI's detail: a list of {loc, msg, type}
        message = json.dumps(message, ensure_ascii=False)
    text = str(message) if message else resp.text or resp.reason_phrase
    return " ".join(text.split())[:300]


def is_validation_error(resp: httpx.Response) -> bool:
    """True when a body says the request itself is invalid (see :data:`VALIDATION_MARKERS`)."""
    text = resp.text.lower()
    return any(marker in text for marker in VALIDATION_MARKERS)


def _raise_for_status(resp: httpx.Response, attempts: int) -> NoReturn:
    status = resp.status_code
    message = _error_message(resp)
    if status in RETRY_STATUSES or (status >= 500 and not is_validation_error(resp)):
        raise _Retryable(f"HTTP {status}", retry_after_s(resp.headers), message, status)
    raise LLMError(f"HTTP {status}: {message}", attempts=attempts, status=status)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _detail(usage: dict, key: str, field: str) -> int:
    details = usage.get(key)
    return _count(details.get(field)) if isinstance(details, dict) else 0


def _parse(body: Any, model: str, latency_s: float, attempts: int) -> Completion:
    """A :class:`Completion` from a chat-completions body; a body without a choice is worth a retry."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise _Retryable("no choices in body")
    choice = choices[0]
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    content = message.get("content")
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    usage = body.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    cached = _detail(usage, "prompt_tokens_details", "cached_tokens") or _count(usage.get("prompt_cache_hit_tokens"))
    return Completion(
        text=content if isinstance(content, str) else "",
        model=body.get("model") or model,
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
        cached=False,
        latency_s=latency_s,
        attempts=attempts,
        finish_reason=choice.get("finish_reason") or "stop",
        reasoning_content=reasoning if isinstance(reasoning, str) else "",
        cached_tokens=cached,
        reasoning_tokens=_detail(usage, "completion_tokens_details", "reasoning_tokens"),
    )


class OpenAIBackend:
    """An OpenAI-compatible server at ``base_url`` (e.g. ``http://localhost:8000/v1``) serving ``model``.

    One ``httpx.AsyncClient`` and one semaphore per event loop, so the backend can be used from
    several ``asyncio.run`` calls in turn; call :meth:`aclose` at the end of each.

    ``kind`` (default: the part of ``name`` before ``:``, as the registry names backends, else
    ``"http"``) picks the defaults of ``structured``, ``reasoning``, ``sampling_fields`` and
    ``max_tokens_field`` (see :func:`wire_settings`). ``transport`` is handed to httpx (tests use
    ``httpx.MockTransport``).
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
        *,
        kind: str | None = None,
        structured: str | None = None,
        reasoning: bool | None = None,
        sampling_fields: tuple[str, ...] | list[str] | None = None,
        max_tokens_field: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise UserError(f"base URL '{base_url}' must start with http:// or https://")
        if concurrency < 1 or max_retries < 0:
            raise UserError(f"concurrency must be >= 1 and max_retries >= 0 (got {concurrency}, {max_retries})")
        self.model, self.name = model, name or f"openai:{model}"
        if kind is None:
            kind = name.partition(":")[0] if name and ":" in name else "http"
        self.kind = kind
        self.settings = wire_settings(
            kind,
            model,
            structured=structured,
            reasoning=reasoning,
            sampling_fields=sampling_fields,
            max_tokens_field=max_tokens_field,
        )
        # the cache key names the wire settings when they are not the kind's defaults, so answers obtained
        # with another structured-output dialect or reasoning setting are never served from the cache
        if self.settings != _kind_wire(kind, model):
            s = self.settings
            self.cache_name = (
                f"{self.name}#structured={s.structured},reasoning={s.reasoning},"
                f"fields={'+'.join(s.sampling_fields)},max={s.max_tokens_field}"
            )
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.concurrency, self.timeout_s, self.max_retries = concurrency, timeout_s, max_retries
        self.backoff_base_s, self.backoff_max_s, self.retry_after_max_s = (
            backoff_base_s,
            backoff_max_s,
            retry_after_max_s,
        )
        self._transport = transport
        self._rng = random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None

    def __repr__(self) -> str:
        return f"OpenAIBackend(name={self.name!r}, base_url={self.base_url!r}, structured={self.settings.structured!r})"

    def _session(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._client is None or self._slots is None:
            from genrep import __version__

            headers = {"User-Agent": f"genrep/{__version__}"}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
            self._client = httpx.AsyncClient(
                timeout=self.timeout_s, headers=headers, limits=limits, transport=self._transport
            )
            self._slots = asyncio.Semaphore(self.concurrency)
            self._loop = loop
        return self._client, self._slots

    def backoff_s(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_max_s)
        return self._rng.uniform(0.0, min(self.backoff_max_s, self.backoff_base_s * 2.0 ** min(attempt, 60)))

    def request_body(self, messages: list[dict], sampling: Sampling) -> dict[str, Any]:
        """The body this backend sends for ``messages`` and ``sampling``."""
        return request_body(self.model, messages, sampling, self.settings)

    async def _attempt(self, client: httpx.AsyncClient, body: dict[str, Any], attempts: int) -> Any:
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
            _raise_for_status(resp, attempts)
        try:
            return resp.json()
        except ValueError:
            raise _Retryable("invalid JSON body") from None

    async def complete(self, messages: list[dict], sampling: Sampling) -> Completion:
        body = self.request_body(messages, sampling)
        client, slots = self._session()
        async with slots:
            start = time.perf_counter()
            attempts = self.max_retries + 1
            for attempt in range(attempts):
                try:
                    answer = await self._attempt(client, body, attempt + 1)
                    return _parse(answer, self.model, time.perf_counter() - start, attempt + 1)
                except _Retryable as err:
                    failure = err
                    if attempt + 1 < attempts:
                        wait = self.backoff_s(attempt, err.retry_after)
                        log.debug("%s: %s, retry %d in %.2f s", self.name, err.reason, attempt + 1, wait)
                        await asyncio.sleep(wait)
        said = f": {failure.detail}" if failure.detail else ""
        raise LLMError(
            f"{failure.reason} after {attempts} attempt{'s' if attempts > 1 else ''}{said}",
            attempts=attempts,
            status=failure.status,
        )

    async def aclose(self) -> None:
        """Close this event loop's HTTP client (a client of a finished loop is just dropped)."""
        client, loop = self._client, self._loop
        self._client = self._slots = self._loop = None
        if client is not None and loop is asyncio.get_running_loop():
            await client.aclose()
