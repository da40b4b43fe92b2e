"""The RAE reference code's learning-rate schedule, for both training stages.

Follows ``build_scheduler`` in bytetriper/RAE src/utils/optim_utils.py:49-120 (a ``LambdaLR``
multiplier of the base LR, stepped once per optimizer step, so step ``s`` below is the 0-based
optimizer step whose update uses that LR):

- warm-up, ``s < W``: ``(s + 1) / W`` with ``warmup_from_zero``, else 1 (the base LR held);
- ``s >= E`` (the decay end): ``r = final_lr / lr``;
- in between, with ``p = (s - W) / max(E - W, 1)``: ``linear``: ``1 - (1 - r) p``;
  ``cosine``: ``r + (1 - r) (1 + cos(pi p)) / 2``.

``W`` and ``E`` are given in optimizer steps (``warmup_steps``, ``decay_end_steps``) or in epochs
(``warmup_epochs``, ``decay_end_epoch``), which become ``int(epochs * steps_per_epoch)`` as in the
reference; a value in steps wins over one in epochs (as there), and ``E`` is raised to ``W``
when smaller. The reference's unspecified values are its
defaults here too: no warm-up, ``E = W``, ``final_lr = lr`` (a constant LR after the warm-up).
``steps_per_epoch`` is what the reference's data loader yields per epoch (:func:`steps_per_epoch`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Optional

import torch

from genrep.core.config import NonNeg, NonNegInt

ScheduleType = Literal["linear", "cosine"]


@dataclass
class LRSchedule:
    """A schedule's settings (the reference's ``scheduler:`` section; :func:`schedule_of` reads them
    from a config's flat fields)."""

    type: ScheduleType = "linear"
    warmup_epochs: Optional[NonNeg] = None
    warmup_steps: Optional[NonNegInt] = None
    decay_end_epoch: Optional[NonNeg] = None
    decay_end_steps: Optional[NonNegInt] = None
    final_lr: Optional[NonNeg] = None  # None: the base LR (no decay)
    warmup_from_zero: bool = False


@dataclass(frozen=True)
class ReferenceLambda:
    """The LR multiplier at optimizer step ``s`` (module docstring); picklable for checkpoints."""

    type: ScheduleType
    warmup: int
    decay_end: int
    final_ratio: float
    warmup_from_zero: bool

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup if self.warmup_from_zero else 1.0
        if step >= self.decay_end:
            return self.final_ratio
        progress = (step - self.warmup) / max(self.decay_end - self.warmup, 1)
        if self.type == "linear":
            return 1.0 - (1.0 - self.final_ratio) * progress
        return self.final_ratio + (1.0 - self.final_ratio) * (0.5 * (1.0 + math.cos(math.pi * progress)))


def steps_per_epoch(num_items: int, batch_size: int, world_size: int = 1) -> int:
    """Optimizer steps per epoch of the reference's loader (src/utils/train_utils.py:63-81): a
    ``DistributedSampler`` pads the data to ``world_size * ceil(N / world_size)`` and each rank's
    loader drops its last partial batch of ``batch_size`` (the per-process batch)."""
    per_rank = -(-num_items // world_size)
    return per_rank // batch_size


def schedule_of(cfg: Any) -> LRSchedule:
    """The :class:`LRSchedule` of a train-dit / train-decoder config, whose flat fields
    ``lr_schedule`` (the type), ``warmup_epochs``, ``warmup_steps``, ``decay_end_epoch``,
    ``decay_end_steps``, ``final_lr`` and ``warmup_from_zero`` are the reference's ``scheduler:`` keys."""
    return LRSchedule(
        type=cfg.lr_schedule,
        warmup_epochs=cfg.warmup_epochs,
        warmup_steps=cfg.warmup_steps,
        decay_end_epoch=cfg.decay_end_epoch,
        decay_end_steps=cfg.decay_end_steps,
        final_lr=cfg.final_lr,
        warmup_from_zero=cfg.warmup_from_zero,
    )


def uses_epochs(sched: LRSchedule) -> bool:
    """Whether a boundary is given in epochs (and not overridden by one in steps)."""
    return (bool(sched.warmup_epochs) and sched.warmup_steps is None) or (
        sched.decay_end_epoch is not None and sched.decay_end_steps is None
    )


def resolve(sched: LRSchedule, lr: float, steps_per_epoch: int) -> ReferenceLambda:
    """The multiplier for base LR ``lr`` with ``steps_per_epoch`` optimizer steps per epoch."""
    if sched.warmup_steps is not None:
        warmup = int(sched.warmup_steps)
    else:
        warmup = int(float(sched.warmup_epochs or 0.0) * steps_per_epoch)
    if sched.decay_end_steps is not None:
        decay_end = int(sched.decay_end_steps)
    elif sched.decay_end_epoch is not None:
        decay_end = int(float(sched.decay_end_epoch) * steps_per_epoch)
    else:
        decay_end = warmup
    warmup = max(warmup, 0)
    decay_end = max(decay_end, warmup)
    final_lr = lr if sched.final_lr is None else float(sched.final_lr)
    ratio = final_lr / lr if lr > 0 else 1.0
    return ReferenceLambda(sched.type, warmup, decay_end, ratio, sched.warmup_from_zero)


def build_scheduler(
    optimizer: torch.optim.Optimizer, sched: LRSchedule, lr: float, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` over ``optimizer`` (whose groups hold ``lr``) with :func:`resolve`'s multiplier."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, resolve(sched, lr, steps_per_epoch))
