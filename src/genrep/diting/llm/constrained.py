"""JSON-schema-guided decoding over a transformers causal LM, so that a tiny model's answer always validates.

Servers such as vLLM constrain their decoding to the ``json_schema`` of OpenAI's ``response_format``;
:func:`generate_json` does the same for a model in this process (``LocalBackend`` uses it). It walks
the schema and writes the JSON itself, asking the model only where the schema leaves a choice:

* structure (``{``, ``"key": ``, ``, ``, ``}``, ``[``, ``]``, ``null``, a ``const``) is forced: the text
  is tokenized and fed to the model, which gets no say; the layout is ``json.dumps``'s default,
  ``{"reasons": "...", "mistranslation": false, "specific": 1}``;
* objects emit every property in schema order (strict mode requires them all); an object without
  properties is ``{}``;
* a choice among literal texts (enum / ``Literal`` values, ``true`` / ``false``, an integer range of
  at most 50 values given by minimum and maximum, ``, `` vs ``]`` after an array item) runs
  through a token trie of the candidates, each tokenized on its own: every step keeps only the
  logits of the trie node's children. Where one candidate's tokens are a prefix of another's, the
  model continues when its unconstrained pick is one of the continuations, else stops there;
* ``anyOf`` / ``oneOf`` / a list ``type``: the alternative whose first token (``{``, ``[``, ``"``,
  ``null``, a digit, an enum literal, ...) the model picks among all alternatives' first tokens,
  ties to the first listed; the same rule decides between ``]`` and a first item of an array
  whose ``minItems`` is 0. ``minItems`` / ``maxItems`` are respected;
* a free string is generated token by token with nothing disallowed: a token whose text contains
  ``"`` ends it (its text before the quote is kept, the token is not fed: the closing quote is),
  so does EOS or any other special token, and ``max_string_tokens`` caps it; the value is written
  with ``json.dumps``, so newlines and backslashes are harmless. ``maxLength`` truncates;
* an integer or number without a small range: a first digit (or ``-``) chosen among ``0``-``9``
  (and ``-``), then the model's unconstrained pick is taken while it is all ASCII digits (at most
  12 integer digits, 6 after the point), and the number ends at the first other pick, except
  that a number continues with ``.`` and one chosen digit when that pick starts with ``.``;
  a leading ``0`` ends the integer part. The result is clamped to ``minimum`` / ``maximum``;
* a schema without a type (``{}``, any value) is a free string.

Decoding is greedy at temperature 0, else temperature / top-p sampling among the allowed tokens
from a generator seeded with ``seed`` (:class:`~genrep.diting.llm.sampling.SeededSampler`, the
local backend's sampler). The model runs with its KV cache, fed only the new tokens (consecutive
forced pieces in one forward pass); with a ``prefix_cache``
(:class:`~genrep.diting.llm.prefix_cache.PrefixCache`) the prompt's prefix shared with a recent
request is not processed again.

``max_new_tokens`` bounds the tokens the model processes after the prompt, forced and chosen
alike. When it runs out, decoding stops where it is and the text written so far comes back as
it stands, with finish reason ``"length"``: an unclosed, partial JSON (an open string, a number's
first digits, a forced piece whose tokens did not fit left out), never completed with values the
model did not choose. Callers reject such a reply (:func:`genrep.diting.llm.structured.complete_json`
asks again with a larger budget or raises :class:`~genrep.diting.llm.types.TruncatedError`).

Unsupported constructs (``pattern``, ``format``, ``minLength``, ``multipleOf``, ``prefixItems``,
``not``, ``allOf`` of several schemas, a ``$ref`` outside the document, ...) raise
:class:`ValueError` naming the construct, before any decoding
(:func:`genrep.diting.llm.json_schema.check_schema`, with the schema's resolution rules).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from typing import Any

import torch

from genrep.diting.llm.json_schema import MAX_DEPTH, alternatives, branch, check_schema, int_bounds, kind_of, resolve
from genrep.diting.llm.prefix_cache import PrefixCache
from genrep.diting.llm.sampling import SeededSampler

MAX_RANGE_CHOICES = 50  # an integer range up to this many values is a choice; a wider one is digits
MAX_INT_DIGITS = 12
MAX_FRACTION_DIGITS = 6
DIGITS = [str(d) for d in range(10)]


DEFAULT_STRING_TOKENS = 160  # generate_json's cap on one free-text string, in tokens


def generate_json(
    model: Any,
    tokenizer: Any,
    input_ids: torch.Tensor,
    schema: dict,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    max_string_tokens: int = DEFAULT_STRING_TOKENS,
    use_cache: bool = True,
    prefix_cache: PrefixCache | None = None,
) -> tuple[str, int, str]:
    """``(json_text, completion_tokens, finish_reason)`` for the prompt ``input_ids`` (shape ``(1, n)`` or ``(n,)``).

    With ``finish_reason`` ``"stop"``, ``json_text`` parses and validates against ``schema``. With
    ``"length"``, ``max_new_tokens`` ran out first and ``json_text`` is the partial JSON written up
    to that point (a prefix of a valid answer, nothing filled in); ``completion_tokens`` counts the
    tokens processed after the prompt, at most ``max_new_tokens``. ``use_cache=False`` recomputes the
    whole sequence every step (slow; for tests); ``prefix_cache`` starts from the kept states that share
    the longest prefix with this prompt and keeps this request's. Call it under ``torch.no_grad()`` or
    not: it disables gradients itself. Raises :class:`ValueError` for a schema construct it cannot
    guarantee.
    """
    check_schema(schema)
    ids = input_ids.reshape(-1).tolist()
    if not ids:
        raise ValueError("an empty prompt (the model needs at least one token to condition on)")
    decoder = _Decoder(
        model,
        tokenizer,
        ids,
        schema,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        max_string_tokens=max_string_tokens,
        use_cache=use_cache,
    )
    if prefix_cache is not None and use_cache:
        decoder.resume_from(prefix_cache)
    with torch.no_grad():
        result = decoder.run()
    if prefix_cache is not None and use_cache and decoder.cache is not None:
        prefix_cache.keep(decoder.fed, decoder.cache)
    return result


# --- the decoder ---------------------------------------------------------------------------------------------------


class _Exhausted(Exception):
    """The token budget ran out: decoding stops and the text written so far is the reply."""


@dataclass
class _Trie:
    children: dict[int, _Trie] = field(default_factory=dict)
    end: int | None = None  # candidate index ending here


class _Decoder:
    def __init__(
        self,
        model: Any,
        tok: Any,
        prompt: list[int],
        schema: dict,
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
        max_string_tokens: int,
        use_cache: bool,
    ):
        self.model, self.tok, self.schema = model, tok, schema
        self.budget, self.max_string_tokens, self.use_cache = max_new_tokens, max_string_tokens, use_cache
        self.sampler = SeededSampler(temperature, top_p, seed) if temperature > 0 else None
        self.fed: list[int] = []  # what the model has processed (its KV cache)
        self.unfed: list[int] = list(prompt)  # tokens to feed before the next logits
        self.pending: list[str] = []  # forced text not tokenized yet (written once its tokens fit the budget)
        self.pieces: list[str] = []  # the JSON text
        self.used = 0  # tokens after the prompt, forced and chosen
        self.cache: Any = None
        self.logits: torch.Tensor | None = None
        self.device = next(model.parameters()).device
        params = inspect.signature(model.forward).parameters
        self.keep_kwargs = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self.cache_arg = "cache" if "cache" in params else "past_key_values"  # transformers 5.2x renamed it
        stop = set(getattr(tok, "all_special_ids", None) or [])
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        stop |= set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tok.eos_token_id is not None:
            stop.add(tok.eos_token_id)
        self.stop_ids = stop
        self.tries: dict[tuple[str, ...], _Trie] = {}
        self.first_tokens: dict[str, int] = {}

    def resume_from(self, prefix: PrefixCache) -> None:
        """Start from the states of the prompt's prefix that ``prefix`` holds (the rest is fed as usual)."""
        prompt = self.unfed
        self.cache, n = prefix.take(prompt)
        self.fed, self.unfed = prompt[:n], prompt[n:]

    def run(self) -> tuple[str, int, str]:
        try:
            self.value(self.schema, 0)
            self.flush()  # the closing text counts too
        except _Exhausted:
            return "".join(self.pieces), self.used, "length"
        return "".join(self.pieces), self.used, "stop"

    # -- the model --

    def encode(self, text: str) -> list[int]:
        ids = self.tok.encode(text, add_special_tokens=False)
        if not ids:
            raise ValueError(f"the tokenizer gives no tokens for {text!r}")
        return ids

    def force(self, text: str) -> None:
        """Forced text, fed to the model and written to the JSON when its tokens fit (see :meth:`flush`)."""
        self.pending.append(text)

    def write(self, text: str) -> None:
        """JSON text for tokens already taken (queued forced text goes first)."""
        self.flush()
        self.pieces.append(text)

    def flush(self) -> None:
        """Tokenize the pending forced text, queue it and write it; :class:`_Exhausted` when it does not fit."""
        if self.pending:
            text = "".join(self.pending)
            self.pending = []
            ids = self.encode(text)
            if self.used + len(ids) > self.budget:
                raise _Exhausted
            self.used += len(ids)
            self.unfed += ids
            self.pieces.append(text)

    def room(self) -> None:
        """Make sure the model may add one more token (flushing forced text first), else :class:`_Exhausted`."""
        self.flush()
        if self.used >= self.budget:
            raise _Exhausted

    def next_logits(self) -> torch.Tensor:
        self.flush()
        if self.unfed:
            if self.use_cache:
                ids = torch.tensor([self.unfed], device=self.device)
                out = self.model(input_ids=ids, use_cache=True, **{self.cache_arg: self.cache}, **self.keep_kwargs)
                self.cache = getattr(out, self.cache_arg)
            else:
                ids = torch.tensor([self.fed + self.unfed], device=self.device)
                out = self.model(input_ids=ids, use_cache=False, **self.keep_kwargs)
            self.fed += self.unfed
            self.unfed = []
            self.logits = out.logits[0, -1].float()
        assert self.logits is not None
        return self.logits

    def take(self, token: int) -> None:
        """Feed a chosen token (the caller called :meth:`room`)."""
        self.used += 1
        self.unfed.append(token)

    def pick(self, allowed: list[int] | None) -> int:
        """The next token: argmax or a sample, among ``allowed`` (None: the whole vocabulary)."""
        logits = self.next_logits()
        if allowed is not None:
            index = torch.tensor(allowed, device=logits.device)
            scores = torch.full_like(logits, float("-inf")).scatter(0, index, logits[index])
        else:
            scores = logits
        if self.sampler is not None:
            return int(self.sampler(None, scores[None])[0].argmax())  # type: ignore[arg-type]  # input_ids unused
        return int(scores.argmax())

    # -- choices --

    def trie(self, texts: tuple[str, ...]) -> _Trie:
        if texts not in self.tries:
            root = _Trie()
            for i, text in enumerate(texts):
                node = root
                for t in self.encode(text):
                    node = node.children.setdefault(t, _Trie())
                if node.end is None:
                    node.end = i
            self.tries[texts] = root
        return self.tries[texts]

    def choose(self, texts: list[str]) -> int:
        """The model's pick among literal ``texts``, fed and written (out of budget: the tokens taken so far)."""
        root = self.trie(tuple(texts))
        node, index = root, None
        taken: list[int] = []
        while node.children:
            try:
                self.room()
            except _Exhausted:
                if taken:
                    self.pieces.append(self.tok.decode(taken, skip_special_tokens=True))
                raise
            if node.end is not None:  # a candidate ends here and longer ones go on: the model decides
                token = self.pick(None)
                if token not in node.children:
                    break
            else:
                token = self.pick(list(node.children))
            self.take(token)
            taken.append(token)
            node = node.children[token]
        if index is None:
            index = node.end
        assert index is not None
        self.write(texts[index])
        return index

    def first_token(self, text: str) -> int:
        if text not in self.first_tokens:
            self.first_tokens[text] = self.encode(text)[0]
        return self.first_tokens[text]

    def starts(self, schema: dict, depth: int = 0) -> list[str]:
        """Texts a value of ``schema`` can begin with."""
        schema = resolve(schema, self.schema)
        kind = kind_of(schema)
        if kind == "const":
            return [_dump(schema["const"])]
        if kind == "enum":
            return [_dump(v) for v in schema["enum"]]
        if kind == "anyOf":
            if depth > MAX_DEPTH:
                raise ValueError(f"unsupported schema construct: nesting deeper than {MAX_DEPTH}")
            return [s for alt in alternatives(schema) or [] for s in self.starts(branch(alt, self.schema), depth + 1)]
        if kind == "integer":
            lo, hi = int_bounds(schema)
            if lo is not None and hi is not None and hi - lo < MAX_RANGE_CHOICES:
                return [str(i) for i in range(lo, hi + 1)]
            return (["-"] if lo is None or lo < 0 else []) + DIGITS
        if kind == "number":
            lo = schema.get("minimum")
            return (["-"] if lo is None or lo < 0 else []) + DIGITS
        return {"object": ["{"], "array": ["["], "boolean": ["true", "false"], "null": ["null"]}.get(kind, ['"'])

    def pick_branch(self, branches: list[list[str]]) -> int:
        """Which branch the model starts: the one owning its pick among all branches' first tokens."""
        self.room()
        firsts = [{self.first_token(t) for t in texts} for texts in branches]
        allowed = sorted(set().union(*firsts))
        token = self.pick(allowed)
        return next(i for i, f in enumerate(firsts) if token in f)

    # -- values --

    def value(self, schema: Any, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ValueError(f"unsupported schema construct: nesting deeper than {MAX_DEPTH}")
        schema = resolve(schema, self.schema)
        kind = kind_of(schema)
        if kind == "const":
            self.force(_dump(schema["const"]))
        elif kind == "enum":
            texts = list(dict.fromkeys(_dump(v) for v in schema["enum"]))
            if len(texts) == 1:
                self.force(texts[0])
            else:
                self.choose(texts)
        elif kind == "anyOf":
            branches = [branch(alt, self.schema) for alt in alternatives(schema) or []]
            i = 0 if len(branches) == 1 else self.pick_branch([self.starts(b) for b in branches])
            self.value(branches[i], depth + 1)
        elif kind == "object":
            props = schema.get("properties") or {}
            if not props:
                self.force("{}")
                return
            for i, (key, sub) in enumerate(props.items()):
                self.force(("{" if i == 0 else ", ") + _dump(key) + ": ")
                self.value(sub, depth + 1)
            self.force("}")
        elif kind == "array":
            self.array(schema, depth)
        elif kind == "boolean":
            self.choose(["true", "false"])
        elif kind == "null":
            self.force("null")
        elif kind == "integer":
            self.integer(schema)
        elif kind == "number":
            self.number(schema)
        else:  # string, or any value
            self.string(schema.get("maxLength"))

    def array(self, schema: dict, depth: int) -> None:
        items = schema.get("items", {})
        lo, hi = schema.get("minItems", 0) or 0, schema.get("maxItems")
        self.force("[")
        if hi == 0 or (lo == 0 and self.pick_branch([["]"], self.starts(items)]) == 0):
            self.force("]")
            return
        count = 0
        while True:
            self.value(items, depth + 1)
            count += 1
            if hi is not None and count >= hi:
                break
            if count < lo:
                self.force(", ")
            elif self.choose(["]", ", "]) == 0:
                return  # the "]" is written
        self.force("]")

    def string(self, max_length: int | None) -> None:
        self.force('"')
        ids: list[int] = []
        text = ""
        try:
            while len(ids) < self.max_string_tokens:
                self.room()
                token = self.pick(None)
                if token in self.stop_ids:
                    break
                full = self.tok.decode(ids + [token], skip_special_tokens=True)
                new = full[len(text) :] if full.startswith(text) else self.tok.decode([token], skip_special_tokens=True)
                if '"' in new:
                    text += new[: new.index('"')]
                    break
                ids.append(token)
                self.take(token)
                text = full
        except _Exhausted:  # the open string as far as it got, no closing quote
            text = text.rstrip("\ufffd")
            if text:
                self.pieces.append(_dump(text[:max_length] if max_length is not None else text)[1:-1])
            raise
        # a cap (or the closing quote) that falls inside a multibyte character leaves its bytes undecodable
        # ("\ufffd" from the byte-level tokenizer): the partial character is dropped, not written
        text = text.rstrip("\ufffd")
        if max_length is not None:
            text = text[:max_length]
        self.write(_dump(text)[1:-1])
        self.force('"')

    def peek(self) -> tuple[int, str]:
        """The model's unconstrained pick and its text, not taken yet (:class:`_Exhausted` out of budget)."""
        self.room()
        token = self.pick(None)
        return token, self.tok.decode([token], skip_special_tokens=True)

    def digits(self, cap: int) -> str:
        """Digits the model adds while it wants to (at most ``cap``), each written as it is taken, and the
        text of the pick that ended them."""
        out = ""
        while True:
            token, text = self.peek()
            if not text or not all(c in "0123456789" for c in text) or len(out) + len(text) > cap:
                return text
            self.take(token)
            self.write(text)
            out += text

    def numeral(self, negative: bool, fraction: bool) -> str:
        """An integer or decimal numeral chosen by the model (see the module docstring), written as it goes."""
        self.flush()  # queued forced text is not part of the numeral
        start = len(self.pieces)
        first = (["-"] if negative else []) + DIGITS
        if self.choose(first) == 0 and negative:
            self.choose(DIGITS)
        if "".join(self.pieces[start:]).lstrip("-") != "0":
            stopper = self.digits(MAX_INT_DIGITS - 1)
        else:  # no digit after a leading zero
            stopper = self.peek()[1]
        if fraction and stopper.startswith("."):
            self.force(".")
            self.choose(DIGITS)
            self.digits(MAX_FRACTION_DIGITS - 1)
        text = "".join(self.pieces[start:])
        del self.pieces[start:]
        return text

    def integer(self, schema: dict) -> None:
        lo, hi = int_bounds(schema)
        if lo is not None and hi is not None and hi - lo < MAX_RANGE_CHOICES:
            self.choose([str(v) for v in range(lo, hi + 1)])
            return
        text = self.numeral(negative=lo is None or lo < 0, fraction=False)
        value = int(text)
        clamped = _nearest(value, lo, hi)
        self.pieces.append(text if clamped == value else str(clamped))

    def number(self, schema: dict) -> None:
        lo, hi = schema.get("minimum"), schema.get("maximum")
        text = self.numeral(negative=lo is None or lo < 0, fraction=True)
        value = float(text)
        if lo is not None and value < lo:
            text = _dump(lo)
        elif hi is not None and value > hi:
            text = _dump(hi)
        self.pieces.append(text)


def _nearest(value: int, lo: int | None, hi: int | None) -> int:
    if lo is not None and value < lo:
        return lo
    if hi is not None and value > hi:
        return hi
    return value


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
