"""JSON answers that validate against a pydantic model: constrained where the server can, repaired where not.

DITING's experts and judge answer with scores in a fixed shape ({agree, reasons, specific,
general_1, general_2}); a judge whose answer cannot be read is a lost item. So
:func:`complete_json`

1. asks for the schema as OpenAI's ``response_format`` (``json_schema`` with ``strict``). The
   backend sends it in its own dialect (:class:`~genrep.diting.llm.openai_client.OpenAIBackend`'s
   ``structured`` setting): as is for OpenAI, vLLM and Ollama; as ``{"type": "json_object",
   "schema": ...}`` for llama.cpp's server, which rejects ``json_schema`` with HTTP 500 "Input
   should be 'text' or 'json_object'"; as plain ``json_object`` plus the schema in a system
   message for DeepSeek; or not at all (schema in the prompt, free text back). ``mode`` asks for
   less than the schema when the caller wants that;
2. never accepts an answer cut by the token limit (``finish_reason == "length"``): it asks again
   with twice the ``max_tokens`` (at most ``max_tokens_cap``; by default the caller's
   ``max_tokens`` is the budget, so there is no retry: the same request at temperature 0 would be
   cut the same way, and a cache would hand back the same cut answer), at most ``length_retries``
   times, and then raises :class:`~genrep.diting.llm.types.TruncatedError` (an :class:`LLMError`, so
   callers record the item as failed). No default is ever filled in for a missing field;
3. reads the first balanced ``{...}`` of the reply, inside a ```json fence if there is one, so
   prose around the object does no harm; a raw control character (a literal newline or tab) inside
   a JSON string, which strict JSON forbids and small models behind grammar-constrained servers
   write (llama.cpp's server did, with the bundled SmolLM2), is read as the character it is;
4. validates it with pydantic, and on failure shows the model its reply and the error (one line)
   and asks for corrected JSON only, at most ``max_repairs`` times.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from genrep.diting.llm.types import Backend, Completion, LLMError, Sampling, TruncatedError

M = TypeVar("M", bound=BaseModel)
JsonMode = Literal["json_schema", "json_object", "none"]

_FENCE = re.compile(r"```(?:json)?[ \t]*\n?(.*?)```", re.S | re.I)
REPAIR_PROMPT = "Your reply could not be used: {error}. Reply with the corrected JSON object only, no other text."


def strict_json_schema(schema: type[BaseModel]) -> dict[str, Any]:
    """``schema.model_json_schema()`` in the form OpenAI's strict mode accepts.

    Strict mode rejects an object schema unless it forbids extra keys and requires every
    property, so both are set on every object (fields with defaults become required in the
    request; the model still validates answers without them).
    """
    root = copy.deepcopy(schema.model_json_schema())

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node["additionalProperties"] = False
                node["required"] = list(node["properties"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(root)
    return root


def response_format(schema: type[BaseModel], mode: JsonMode = "json_schema") -> dict[str, Any] | None:
    """OpenAI's ``response_format`` for ``schema``: the schema itself, plain JSON, or nothing."""
    if mode == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": schema.__name__, "schema": strict_json_schema(schema), "strict": True},
        }
    if mode == "json_object":
        return {"type": "json_object"}
    return None


def _first_object(text: str) -> str | None:
    """The first balanced ``{...}`` (braces inside JSON strings do not count); None if there is none."""
    start = text.find("{")
    if start < 0:
        return None
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    raise ValueError("the JSON object in the reply is not closed (cut off by max_tokens?)")


def extract_json(text: str) -> str:
    """The JSON object in a reply: the first balanced ``{...}``, looking inside ```json fences first."""
    for block in [m.group(1) for m in _FENCE.finditer(text)] + [text]:
        found = _first_object(block)
        if found is not None:
            return found
    raise ValueError("no JSON object in the reply")


def parse_answer(text: str, schema: type[M]) -> M:
    """The reply's JSON object validated against ``schema``; raw control characters inside strings are
    tolerated (``json.loads(strict=False)``), nothing else is."""
    found = extract_json(text)
    try:
        return schema.model_validate_json(found)
    except ValidationError as err:
        if not any(e["type"] == "json_invalid" for e in err.errors()):
            raise
        try:
            value = json.loads(found, strict=False)
        except ValueError:
            raise err from None
        return schema.model_validate_json(json.dumps(value))  # the same object, its control characters escaped


def _one_line(err: Exception) -> str:
    if isinstance(err, ValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc']) or 'reply'}: {e['msg']}" for e in err.errors()[:3]]
        more = err.error_count() - len(parts)
        return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
    return " ".join(str(err).split())


async def complete_json(
    backend: Backend,
    messages: list[dict],
    schema: type[M],
    sampling: Sampling = Sampling(),
    max_repairs: int = 2,
    *,
    mode: JsonMode = "json_schema",
    length_retries: int = 1,
    max_tokens_cap: int | None = None,
) -> tuple[M, list[Completion]]:
    """``(answer, completions)``: a validated ``schema`` instance and every completion it took.

    ``sampling.response_format`` is replaced according to ``mode``. Raises :class:`LLMError` when
    the backend fails or the answer is still invalid after ``max_repairs`` repairs, and
    :class:`TruncatedError` when an answer is still cut by the token limit after
    ``length_retries`` retries, each with ``max_tokens`` doubled up to ``max_tokens_cap`` (default:
    ``sampling.max_tokens``, i.e. no retry; a limit already at the cap is not retried, as the same
    request would be cut the same way).
    """
    sampling = dataclasses.replace(sampling, response_format=response_format(schema, mode))
    conversation = list(messages)
    completions: list[Completion] = []
    truncated: list[Completion] = []
    while True:
        completion = await backend.complete(conversation, sampling)
        completions.append(completion)
        if completion.finish_reason == "length":
            truncated.append(completion)
            cap = sampling.max_tokens if max_tokens_cap is None else max_tokens_cap
            bigger = min(cap, sampling.max_tokens * 2)
            if len(truncated) > length_retries or bigger <= sampling.max_tokens:
                raise TruncatedError(
                    f"answer cut at max_tokens={sampling.max_tokens} (finish_reason 'length') "
                    f"after {len(truncated)} tr{'ies' if len(truncated) > 1 else 'y'}",
                    completions,
                    attempts=sum(c.attempts for c in completions),
                )
            sampling = dataclasses.replace(sampling, max_tokens=bigger)
            continue
        try:
            return parse_answer(completion.text, schema), completions
        except ValueError as err:  # pydantic's ValidationError is a ValueError too
            error = _one_line(err)
        if len(completions) - len(truncated) > max_repairs:
            raise LLMError(
                f"invalid JSON after {max_repairs} repairs: {error}", attempts=sum(c.attempts for c in completions)
            )
        conversation += [
            {"role": "assistant", "content": completion.text},
            {"role": "user", "content": REPAIR_PROMPT.format(error=error)},
        ]
