"""An in-process backend over a causal LM: the bundled SmolLM2 / Gemma-3 or any transformers model.

This is what lets DITING's judges run offline (badly: the bundled models are tiny, docs/papers.md
s4.4) and what tests use for a real model end to end. The model loads on the first
request. A chat model is prompted through its chat template; a base model without one gets a
plain ``role: content`` transcript that ends with ``assistant:``, except that a conversation of a
single user message is passed verbatim, as a text for the base model to continue (few-shot prompts).

Decoding matches the OpenAI parameters: greedy at temperature 0; otherwise temperature and top-p
sampling from a ``torch.Generator`` seeded with ``sampling.seed``, so a seeded request is
reproducible and leaves the global RNG alone. ``max_tokens`` and ``stop`` behave as on a server
(the reply is cut before the first stop string). One generation runs at a time, in a worker
thread, so the event loop stays free. torch is imported on first use, not with this module.

A ``json_schema`` ``response_format`` is honoured as a server such as vLLM honours it: by
schema-guided decoding (:mod:`genrep.diting.llm.constrained`), so a finished reply always parses
and validates against the schema, even from a tiny model. The structure is forced, the model
chooses the values; ``stop`` does not apply, ``max_tokens`` does: when it runs out the reply is
the partial JSON decoded so far (nothing filled in), with ``finish_reason`` ``"length"`` and the
tokens actually used, which :func:`~genrep.diting.llm.structured.complete_json` never accepts. A schema the decoder
cannot guarantee fails the request with :class:`LLMError`. ``json_object`` (no schema) is not
constrained: the model writes freely and the caller extracts and repairs the object.

Schema-guided requests reuse the key/value states of the longest prompt prefix they share with one of
the last two requests (``prefix_cache``, on by default, as vLLM's prefix caching;
:mod:`genrep.diting.llm.prefix_cache`): AgentEval's turns on one item differ only at the end.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from genrep.core.errors import UserError
from genrep.diting.llm.prefix_cache import PrefixCache
from genrep.diting.llm.sampling import SeededSampler
from genrep.diting.llm.types import Completion, LLMError, Sampling


def transcript(messages: list[dict]) -> str:
    """The prompt for a model without a chat template (a lone user message is a text to continue)."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """``text`` up to the first stop string, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


class LocalBackend:
    """A causal LM in this process, e.g. ``LocalBackend("smollm2-135m")``."""

    def __init__(
        self,
        lm_name: str,
        max_new_tokens_cap: int | None = None,
        max_string_tokens: int | None = None,
        prefix_cache: bool = True,
    ):
        """``max_string_tokens``: the schema-guided decoder's cap on one free-text JSON string (None: its
        default, 160); a reply that hits it keeps the string written so far. ``prefix_cache``: reuse recent
        schema-guided requests' states for the prompt prefix the next one shares."""
        if max_string_tokens is not None and max_string_tokens < 1:
            raise UserError(f"local:{lm_name}: max_string_tokens must be >= 1, got {max_string_tokens}")
        self.model = lm_name
        self.name = f"local:{lm_name}"
        # Cache entries written before schema-guided JSON decoding hold unconstrained replies: not reused.
        # Another string cap gives other replies, so it is part of the cache key.
        self.cache_name = f"{self.name}#json-guided" + (f"-s{max_string_tokens}" if max_string_tokens else "")
        self.max_new_tokens_cap = max_new_tokens_cap
        self.max_string_tokens = max_string_tokens
        self._lock = threading.Lock()
        self._lm: tuple[Any, Any] | None = None
        self.prefix_cache = PrefixCache() if prefix_cache else None

    def __repr__(self) -> str:
        return f"LocalBackend({self.model!r})"

    def _load(self) -> tuple[Any, Any]:
        if self._lm is None:
            from genrep.core.bundled.lm import load_causal_lm

            self._lm = load_causal_lm(self.model)
        return self._lm

    def has_chat_template(self) -> bool:
        """Whether the tokenizer has a chat template (loads the model on first use)."""
        return bool(getattr(self._load()[0], "chat_template", None))

    def _generate(self, messages: list[dict], sampling: Sampling) -> Completion:
        import torch

        with self._lock:
            start = time.perf_counter()
            tok, model = self._load()
            if getattr(tok, "chat_template", None):
                prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                ids = tok(prompt, return_tensors="pt", add_special_tokens=False)  # the template has them
            else:
                ids = tok(transcript(messages), return_tensors="pt")
            max_new = sampling.max_tokens
            if self.max_new_tokens_cap is not None:
                max_new = min(max_new, self.max_new_tokens_cap)
            schema = _json_schema(sampling.response_format)
            if schema is not None:
                from genrep.diting.llm.constrained import DEFAULT_STRING_TOKENS, generate_json

                try:
                    with torch.no_grad():
                        text, used, finish = generate_json(
                            model,
                            tok,
                            ids["input_ids"],
                            schema,
                            max_new_tokens=max_new,
                            temperature=sampling.temperature,
                            top_p=sampling.top_p,
                            seed=sampling.seed,
                            max_string_tokens=self.max_string_tokens or DEFAULT_STRING_TOKENS,
                            prefix_cache=self.prefix_cache,
                        )
                except ValueError as err:
                    raise LLMError(f"response_format json_schema: {err}") from None
                return Completion(
                    text=text,
                    model=self.model,
                    prompt_tokens=int(ids["input_ids"].shape[1]),
                    completion_tokens=used,
                    cached=False,
                    latency_s=time.perf_counter() - start,
                    attempts=1,
                    finish_reason=finish,
                )
            pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id  # Gemma's pad id is 0
            kwargs: dict[str, Any] = {"max_new_tokens": max_new, "do_sample": False, "pad_token_id": pad}
            if sampling.temperature > 0:
                kwargs["logits_processor"] = [SeededSampler(sampling.temperature, sampling.top_p, sampling.seed)]
            if sampling.stop:
                kwargs.update(stop_strings=list(sampling.stop), tokenizer=tok)
            with torch.no_grad():
                out = model.generate(**ids, **kwargs)
            new = out[0, ids["input_ids"].shape[1] :]
            text, stopped = cut_at_stop(tok.decode(new, skip_special_tokens=True), sampling.stop)
            ended = stopped or len(new) < max_new or (len(new) and int(new[-1]) in _eos_ids(model, tok))
            if not ended:  # cut by max_tokens inside a multibyte character: drop its partial bytes, as servers do
                text = text.rstrip("\ufffd")
            return Completion(
                text=text,
                model=self.model,
                prompt_tokens=int(ids["input_ids"].shape[1]),
                completion_tokens=len(new),
                cached=False,
                latency_s=time.perf_counter() - start,
                attempts=1,
                finish_reason="stop" if ended else "length",
            )

    async def complete(self, messages: list[dict], sampling: Sampling) -> Completion:
        return await asyncio.to_thread(self._generate, messages, sampling)

    async def aclose(self) -> None:
        """Drop the model (the next request loads it again; a running generation keeps its own reference)."""
        self._lm = None
        if self.prefix_cache is not None:
            self.prefix_cache.clear()


def _json_schema(response_format: dict[str, Any] | None) -> dict | None:
    """The schema of a ``{"type": "json_schema", "json_schema": {"schema": ...}}`` response format, else None."""
    if not response_format or response_format.get("type") != "json_schema":
        return None
    schema = (response_format.get("json_schema") or {}).get("schema")
    if not isinstance(schema, dict):
        raise LLMError("response_format json_schema: no schema under json_schema.schema")
    return schema


def _eos_ids(model: Any, tok: Any) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return ids | ({tok.eos_token_id} if tok.eos_token_id is not None else set())
