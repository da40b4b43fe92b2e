"""Prefix caching for the in-process backend: the KV caches of recent requests kept for the next.

AgentEval's calls on one item share almost all of their prompt (the rules, the rubric, the worked
examples, the source and the translation; only the last turn differs), as do a server's requests,
which is why vLLM and llama.cpp cache prompt prefixes. :class:`PrefixCache` holds the tokens the
model processed in recent requests and their key/value states; the next request whose prompt starts
with some of those tokens gets the states cut back to the shared prefix and feeds only the rest.
What the model computes is the same as a full prompt pass, up to floating-point rounding. A few
entries are kept (the longest match is used), since the judge's prompt starts differently from the experts'.

Only a cache made of plain full-attention layers (transformers' ``DynamicLayer``) is reused: a
sliding-window layer (Gemma-3's local layers) may have dropped the states a shorter prefix needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MIN_SHARED_TOKENS = 16  # a shorter shared prefix is not worth keeping the states for


@dataclass
class PrefixCache:
    entries: int = 2  # states kept: AgentEval's experts share one prefix, its judge another
    kept: list[tuple[list[int], Any]] = field(default_factory=list)  # (tokens, their states), oldest first
    reused: int = 0  # prompt tokens the last request took from the cache

    def take(self, prompt: list[int]) -> tuple[Any, int]:
        """``(states, n)``: the kept states that share the longest prefix with ``prompt``, cut back to
        ``prompt[:n]`` (at most ``len(prompt) - 1``: the last prompt token is always fed, for its logits)
        and taken out of the cache (the caller extends them and hands them back with :meth:`keep`);
        ``(None, 0)`` when no entry shares :data:`MIN_SHARED_TOKENS` tokens or can be cut."""
        self.reused = 0
        best, best_n = -1, 0
        for i, (tokens, _) in enumerate(self.kept):
            n = _shared(tokens, prompt, len(prompt) - 1)
            if n > best_n:
                best, best_n = i, n
        if best < 0 or best_n < MIN_SHARED_TOKENS:
            return None, 0
        tokens, states = self.kept.pop(best)
        if not _full_attention(states) or states.get_seq_length() != len(tokens):
            return None, 0
        if len(tokens) > best_n:
            states.crop(best_n - len(tokens))  # a negative argument removes that many tokens (transformers 4.x and 5.x)
        self.reused = best_n
        return states, best_n

    def keep(self, tokens: list[int], states: Any) -> None:
        """Keep ``states`` (the model's cache after processing exactly ``tokens``), dropping the oldest entry
        beyond :attr:`entries`."""
        self.kept.append((list(tokens), states))
        del self.kept[: max(0, len(self.kept) - self.entries)]

    def clear(self) -> None:
        self.kept, self.reused = [], 0


def _shared(a: list[int], b: list[int], limit: int) -> int:
    n, limit = 0, min(len(a), len(b), limit)
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def _full_attention(states: Any) -> bool:
    layers = getattr(states, "layers", None) or []
    return bool(layers) and all(type(layer).__name__ == "DynamicLayer" for layer in layers)
