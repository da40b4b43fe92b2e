"""The numbers diffusers' ``AutoencoderRAE`` and genrep's RAE compute the same way.

diffusers de-normalises latents with ``z * (std + 1e-5) + mean``, genrep with
``z * sqrt(var + eps) + mean``: :func:`std_for_scale` and :func:`var_for_scale` pick float32 values
for which both give one float32 scale (see :mod:`genrep.rae.diffusers_interop`). diffusers
recomputes the decoder's sin-cos position table (:func:`diffusers_positions`) instead of loading one.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from genrep.rae.stats import EPS

STD_OFFSET = 1e-5  # diffusers de-normalises latents with (latents_std + 1e-5)
POSITION_BASE = 16  # diffusers scales the decoder's grid coordinates to a 16-token side


def diffusers_positions(width: int, grid: int) -> Tensor:
    """The decoder position table diffusers computes, ``[1, 1 + grid^2, width]``: a zero row for the
    CLS slot, then sin-cos of the column coordinate in the first half and of the row in the second,
    coordinates scaled by ``16 / grid`` (equal to the reference's table when grid is 16)."""
    if width % 4:
        raise ValueError(f"sin-cos table needs a width divisible by 4, got {width}")
    coords = torch.arange(grid, dtype=torch.float32) / (grid / POSITION_BASE)
    cols = coords[None, :].expand(grid, grid).reshape(-1)
    rows = coords[:, None].expand(grid, grid).reshape(-1)
    quarter = width // 4
    freq = torch.arange(quarter, dtype=torch.float64)
    freq /= quarter
    freq = 1.0 / 10000**freq

    def waves(pos: Tensor) -> Tensor:
        angles = torch.outer(pos.double(), freq)
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    table = torch.cat([waves(cols), waves(rows)], dim=1)
    return torch.cat([torch.zeros(1, width, dtype=torch.float64), table]).float()[None]


def _nudge(values: Tensor, image: Any, target: Tensor, steps: int = 16) -> Tensor:
    """Move float32 ``values`` by whole ulps until ``image(values) == target`` where that can be
    reached (``image`` must be non-decreasing); elsewhere the last value is kept."""
    up = torch.full_like(values, math.inf)
    down = torch.full_like(values, -math.inf)
    for _ in range(steps):
        got = image(values)
        low, high = got < target, got > target
        if not bool((low | high).any()):
            break
        values = torch.where(low, torch.nextafter(values, up), torch.where(high, torch.nextafter(values, down), values))
    return values


def std_for_scale(scale: Tensor) -> Tensor:
    """diffusers' ``latents_std`` whose float32 ``std + 1e-5`` equals ``scale``."""
    scale = scale.float()
    return _nudge((scale.double() - STD_OFFSET).float(), lambda s: s + STD_OFFSET, scale)


def var_for_scale(scale: Tensor) -> tuple[Tensor, float]:
    """genrep's ``(var, eps)`` whose float32 ``sqrt(var + eps)`` equals ``scale`` (one float32 step
    off for the rare scales float32 sqrt never gives): eps is genrep's 1e-5 unless some scale is
    below sqrt(1e-5) (a near-zero diffusers std), then 0."""
    scale = scale.float()
    eps = EPS if float((scale.double() ** 2).min()) >= EPS * (1 - 1e-6) else 0.0
    var = (scale.double() ** 2 - eps).clamp_min(0.0).float()
    var = _nudge(var, lambda v: torch.sqrt(v.clamp_min(0.0) + eps), scale).clamp_min(0.0)
    return var, eps
