"""Latent normalisation statistics (docs/papers.md s1.3).

Latents are normalised per element -- per channel *and* grid position -- with the data set's mean
and variance: ``z_n = (z - mean) / sqrt(var + eps)``, eps = 1e-5, computed once over the training
set and stored with the autoencoder. :class:`RunningStats` accumulates them exactly in one
streaming pass (Chan et al.'s parallel update of count, mean and sum of squared deviations), and
merges across DDP ranks, so the result does not depend on batch size or the number of processes.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from genrep.core.distributed import current

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
