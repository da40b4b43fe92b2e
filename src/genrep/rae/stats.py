"""Latent normalisation statistics (docs/papers.md s1.3).

Latents are normalised per element -- per channel *and* grid position -- with the data set's mean
and variance: ``z_n = (z - mean) / sqrt(var + eps)``, eps = 1e-5, exactly as bytetriper/RAE
src/stage1/rae.py:91-94 (and de-normalised as rae.py:98-101), computed once over the training
set and stored with the autoencoder. :class:`RunningStats` accumulates them exactly in one
streaming pass (Chan et al.'s parallel update of count, mean and sum of squared deviations), and
merges across DDP ranks, so the result does not depend on batch size or the number of processes.
(The reference's src/calculate_stat.py instead keeps a BatchNorm-style running average of the
per-batch statistics, momentum 0.1, started at mean 0 / var 1; :func:`stats_from_reference`
reads the files it writes.)
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from genrep.core.distributed import current
from genrep.core.errors import UserError

EPS = 1e-5


class RunningStats:
    """Streaming per-element mean / (population) variance over the batch dimension, in float64."""

    def __init__(self, shape: tuple[int, ...]):
        self.count = 0
        self.mean = torch.zeros(shape, dtype=torch.float64)
        self.m2 = torch.zeros(shape, dtype=torch.float64)

    def update(self, batch: torch.Tensor) -> None:
        x = batch.detach().to("cpu", torch.float64)
        n = x.shape[0]
        if n == 0:
            return
        b_mean = x.mean(0)
        b_m2 = ((x - b_mean) ** 2).sum(0)
        self._merge(n, b_mean, b_m2)

    def _merge(self, n: int, b_mean: torch.Tensor, b_m2: torch.Tensor) -> None:
        total = self.count + n
        delta = b_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + b_m2 + delta**2 * (self.count * n / total)
        self.count = total

    def all_reduce(self) -> None:
        """Merge the statistics of every DDP rank (exact; afterwards all ranks hold the total)."""
        info = current()
        if not info.enabled:
            return
        packed = torch.cat(
            [torch.tensor([float(self.count)], dtype=torch.float64), self.mean.flatten(), self.m2.flatten()]
        )
        parts = [torch.zeros_like(packed) for _ in range(info.world_size)]
        dist.all_gather(parts, packed)
        shape, k = self.mean.shape, self.mean.numel()
        self.count, self.mean, self.m2 = (
            0,
            torch.zeros(shape, dtype=torch.float64),
            torch.zeros(shape, dtype=torch.float64),
        )
        for p in parts:
            n = int(p[0].item())
            if n:
                self._merge(n, p[1 : 1 + k].view(shape), p[1 + k :].view(shape))

    @property
    def var(self) -> torch.Tensor:
        return self.m2 / max(self.count, 1)

    def result(self) -> "LatentStats":
        if self.count == 0:
            raise ValueError("no latents seen")
        return LatentStats(self.mean.float(), self.var.float())


class LatentStats(torch.nn.Module):
    """Per-element mean and variance of the latent, with normalise / de-normalise."""

    mean: torch.Tensor  # buffers registered in __init__
    var: torch.Tensor

    def __init__(self, mean: torch.Tensor, var: torch.Tensor, eps: float = EPS):
        super().__init__()
        if mean.shape != var.shape:
            raise ValueError(f"mean {tuple(mean.shape)} and var {tuple(var.shape)} differ in shape")
        self.eps = eps
        self.register_buffer("mean", mean.float().clone())
        self.register_buffer("var", var.float().clone())

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """``(z - mean) / sqrt(var + eps)``"""
        return (z - self.mean) / torch.sqrt(self.var + self.eps)

    def denormalize(self, zn: torch.Tensor) -> torch.Tensor:
        """``zn * sqrt(var + eps) + mean`` (the inverse of :meth:`normalize`)"""
        return zn * torch.sqrt(self.var + self.eps) + self.mean


def stats_from_reference(payload: object, latent_shape: tuple[int, int, int], where: str) -> LatentStats:
    """The reference's normalisation statistics as genrep's per-element :class:`LatentStats`.

    ``payload`` is what the reference's ``torch.load(normalization_stat_path)`` returns
    (bytetriper/RAE src/stage1/rae.py:64-67): a dict with ``mean`` and ``var``, which
    src/calculate_stat.py writes with the latent's shape without the batch, ``[C, h, w]`` for 2D
    latents. rae.py:91-94 subtracts and divides them by broadcasting against ``[B, C, h, w]``, so
    any shape that broadcasts to ``[1, C, h, w]`` (``[C, h, w]``, ``[1, C, h, w]``, ``[C, 1, 1]``,
    a scalar) is accepted and expanded to ``[C, h, w]``; the numbers are the same. A key that is
    absent stands for 0 (mean) or 1 (var), as in rae.py:92-93; other keys are ignored, as there.
    ``payload=None`` (no ``normalization_stat_path``: the reference does not normalise) gives the
    identity (mean 0, var 1, eps 0).
    """
    c, h, w = latent_shape
    if payload is None:
        return LatentStats(torch.zeros(c, h, w), torch.ones(c, h, w), eps=0.0)
    if not isinstance(payload, dict):
        raise UserError(f"{where}: not a statistics file (expected a dict with 'mean' and 'var')")
    out = {}
    for key, fill in (("mean", 0.0), ("var", 1.0)):
        value = payload.get(key)
        if value is None:
            out[key] = torch.full((c, h, w), fill)
            continue
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise UserError(f"{where}: '{key}' is not a floating-point tensor")
        try:
            fits = torch.broadcast_shapes(value.shape, (1, c, h, w)) == (1, c, h, w)
        except RuntimeError:
            fits = False
        if not fits:
            raise UserError(
                f"{where}: '{key}' has shape {list(value.shape)}, which does not broadcast to the latent [1, {c}, {h}, {w}]"
            )
        out[key] = value.float().expand(1, c, h, w)[0].contiguous()
    return LatentStats(out["mean"], out["var"], eps=EPS)
