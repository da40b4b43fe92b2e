"""DITING's LLM layer: one :class:`Backend` protocol in front of remote servers and local models.

- :mod:`~genrep.diting.llm.types`          Sampling, Completion, LLMError, the Backend protocol
- :mod:`~genrep.diting.llm.openai_client`  OpenAI-compatible servers: bounded concurrency and retries
- :mod:`~genrep.diting.llm.local`          a causal LM in this process (the bundled ones or any transformers model)
- :mod:`~genrep.diting.llm.sampling`       seeded temperature / top-p sampling of the next token (local models)
- :mod:`~genrep.diting.llm.cache`          persistent SQLite cache of completions, CachedBackend
- :mod:`~genrep.diting.llm.usage`          calls, cache hits, failures, tokens and USD for metrics.json
- :mod:`~genrep.diting.llm.structured`     validated JSON answers: constrained decoding plus repair
- :mod:`~genrep.diting.llm.registry`       backends by name, ``KIND:MODEL[@BASE_URL]``
- :mod:`~genrep.diting.llm.server`         any backend as an OpenAI-compatible HTTP server

The front door is ``make_backend("openai:gpt-4o-mini")`` (cached, concurrent, temperature 0 by
default) and ``complete_json(backend, messages, Schema)``.
"""

from genrep.diting.llm.cache import CachedBackend, LLMCache, cache_key
from genrep.diting.llm.local import LocalBackend
from genrep.diting.llm.openai_client import OpenAIBackend
from genrep.diting.llm.registry import KINDS, make_backend, parse_spec
from genrep.diting.llm.server import LLMServer, serve
from genrep.diting.llm.structured import complete_json, extract_json, response_format, strict_json_schema
from genrep.diting.llm.types import Backend, Completion, LLMError, Sampling
from genrep.diting.llm.usage import UsageMeter

__all__ = [
    "KINDS",
    "Backend",
    "CachedBackend",
    "Completion",
    "LLMCache",
    "LLMError",
    "LLMServer",
    "LocalBackend",
    "OpenAIBackend",
    "Sampling",
    "UsageMeter",
    "cache_key",
    "complete_json",
    "extract_json",
    "make_backend",
    "parse_spec",
    "response_format",
    "serve",
    "strict_json_schema",
]
