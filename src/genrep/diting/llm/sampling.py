"""Seeded temperature / top-p sampling of the next token, shared by the local backend's free
generation (:mod:`genrep.diting.llm.local`) and its schema-guided JSON decoding
(:mod:`genrep.diting.llm.constrained`).

The sampler owns a ``torch.Generator``, so a seeded request draws the same tokens every time and
leaves the global RNG alone. torch is imported on first use, not with this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class SeededSampler:
    """A logits processor that samples the next token itself (temperature, top-p) with its own generator.

    ``generate`` then runs greedily and simply takes the one token left standing.
    """

    def __init__(self, temperature: float, top_p: float, seed: int | None):
        import torch

        self.temperature, self.top_p = temperature, top_p
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            sorted_p = sorted_p * ((sorted_p.cumsum(-1) - sorted_p) < self.top_p)  # the top token always stays
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        token = torch.multinomial(probs, 1, generator=self.generator)
        return torch.full_like(scores, float("-inf")).scatter(-1, token, 0.0)
