"""Learning-rate schedules as picklable multipliers for ``torch.optim.lr_scheduler.LambdaLR``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class WarmupCosine:
    """Linear warmup from 0 over ``warmup`` steps, then cosine decay to ``final_ratio`` x base LR.

    Multiplier at step s (0-based): ``(s + 1) / warmup`` during warmup; afterwards with
    ``p = (s - warmup) / (total - warmup)``: ``final + (1 - final) * (1 + cos(pi p)) / 2``.
    """

    warmup: int
    total: int
    final_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        if self.warmup > 0 and step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        p = min(1.0, max(0.0, (step - self.warmup) / span))
        return self.final_ratio + (1.0 - self.final_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int, final_ratio: float = 0.0):
    """A LambdaLR with :class:`WarmupCosine`; its state dict round-trips through a checkpoint."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup, total, final_ratio))


@dataclass(frozen=True)
class WarmupLinear:
    """Hugging Face ``Trainer``'s default schedule (``get_linear_schedule_with_warmup``): linear warmup
    from 0, then linear decay to 0 at ``total``.

    Multiplier at step s (0-based, the step about to be taken): ``s / warmup`` while ``s < warmup`` (so
    the first update has learning rate 0, as in the Trainer), afterwards
    ``max(0, (total - s) / max(1, total - warmup))``.
    """

    warmup: int
    total: int

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return step / max(1, self.warmup)
        return max(0.0, (self.total - step) / max(1, self.total - self.warmup))


def warmup_linear(optimizer: torch.optim.Optimizer, warmup: int, total: int):
    """A LambdaLR with :class:`WarmupLinear`; its state dict round-trips through a checkpoint."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupLinear(warmup, total))
