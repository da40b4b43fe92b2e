"""Backends by name: ``KIND:MODEL[@BASE_URL]``, e.g. ``openai:gpt-4o-mini``, ``vllm:Qwen/Qwen3-32B@http://gpu:8000/v1``.

Kinds, each with its default base URL and the environment variable that holds its API key:

    local     the model in this process (a bundled name, a directory or a hub id)
    openai    https://api.openai.com/v1     OPENAI_API_KEY (required)
    deepseek  https://api.deepseek.com/v1   DEEPSEEK_API_KEY (required)
    vllm      http://localhost:8000/v1
    llamacpp  http://localhost:8080/v1
    ollama    http://localhost:11434/v1
    http      any OpenAI-compatible server; needs @BASE_URL or GENREP_LLM_BASE_URL

For every HTTP kind the base URL is ``@BASE_URL`` if given, else ``$GENREP_LLM_BASE_URL``, else the
default; the key is ``$GENREP_LLM_API_KEY`` if set, else the kind's own variable. The model part
may itself contain ``:`` and ``/`` (``ollama:qwen2.5:7b``, ``vllm:Qwen/Qwen3-32B``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from genrep.core.errors import UserError
from genrep.diting.llm.cache import CachedBackend, LLMCache
from genrep.diting.llm.local import LocalBackend
from genrep.diting.llm.openai_client import OpenAIBackend
from genrep.diting.llm.types import Backend

BASE_URL_ENV = "GENREP_LLM_BASE_URL"
API_KEY_ENV = "GENREP_LLM_API_KEY"


@dataclass(frozen=True)
class HttpKind:
    base_url: str | None
    key_env: str | None = None  # the kind's own API-key variable
    key_required: bool = False


HTTP_KINDS: dict[str, HttpKind] = {
    "openai": HttpKind("https://api.openai.com/v1", "OPENAI_API_KEY", key_required=True),
    "deepseek": HttpKind("https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", key_required=True),
    "vllm": HttpKind("http://localhost:8000/v1"),
    "llamacpp": HttpKind("http://localhost:8080/v1"),
    "ollama": HttpKind("http://localhost:11434/v1"),
    "http": HttpKind(None),
}
KINDS = ("local", *HTTP_KINDS)


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """``(kind, model, base_url or None)`` from ``KIND:MODEL[@BASE_URL]``."""
    kind, sep, rest = spec.partition(":")
    model, _, base_url = rest.partition("@")
    if not sep or not model:
        raise UserError(f"LLM backend '{spec}' is not KIND:MODEL[@BASE_URL] (kinds: {', '.join(KINDS)})")
    if kind not in KINDS:
        raise UserError(f"unknown LLM backend kind '{kind}' in '{spec}' (kinds: {', '.join(KINDS)})")
    return kind, model, base_url or None


def _api_key(kind: str, spec: str) -> str | None:
    info = HTTP_KINDS[kind]
    key = os.environ.get(API_KEY_ENV) or (os.environ.get(info.key_env) if info.key_env else None)
    if info.key_required and not key:
        raise UserError(f"LLM backend '{spec}' needs an API key: set {info.key_env} (or {API_KEY_ENV})")
    return key


def make_backend(
    spec: str,
    *,
    cache: LLMCache | None | bool = True,
    concurrency: int = 16,
    timeout_s: float = 60,
    max_retries: int = 4,
    structured: str | None = None,
    reasoning: bool | None = None,
    local_string_tokens: int | None = None,
) -> Backend:
    """The backend ``spec`` names, behind the completion cache unless ``cache`` is False.

    ``cache``: True or None -> the default cache file (``cache_dir("llm")/cache.sqlite``), an
    :class:`LLMCache` -> that one, False -> no cache. ``structured`` (a structured-output dialect)
    and ``reasoning`` go to :class:`OpenAIBackend`; None leaves each to the environment, else to
    the kind's default (see :func:`~genrep.diting.llm.openai_client.wire_settings`). A ``local``
    model takes neither: it decodes a JSON schema itself, with ``local_string_tokens`` capping one
    free-text string (None: the decoder's default); an HTTP backend ignores that cap.
    """
    kind, model, base_url = parse_spec(spec)
    backend: Backend
    if kind == "local":
        if base_url is not None:
            raise UserError(f"LLM backend '{spec}': a local model takes no @BASE_URL")
        given = [f"{n}={v!r}" for n, v in (("structured", structured), ("reasoning", reasoning)) if v is not None]
        if given:
            raise UserError(
                f"LLM backend '{spec}': a local model takes no structured/reasoning setting (got {', '.join(given)})"
            )
        backend = LocalBackend(model, max_string_tokens=local_string_tokens)
    else:
        base_url = base_url or os.environ.get(BASE_URL_ENV) or HTTP_KINDS[kind].base_url
        if base_url is None:
            raise UserError(
                f"LLM backend '{spec}' needs a base URL: write {kind}:{model}@BASE_URL or set {BASE_URL_ENV}"
            )
        backend = OpenAIBackend(
            model,
            base_url,
            api_key=_api_key(kind, spec),
            concurrency=concurrency,
            timeout_s=timeout_s,
            max_retries=max_retries,
            name=f"{kind}:{model}",
            structured=structured,
            reasoning=reasoning,
        )
    if cache is False:
        return backend
    return CachedBackend(backend, cache if isinstance(cache, LLMCache) else LLMCache())
