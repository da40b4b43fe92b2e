"""What the ViT decoder (:mod:`genrep.rae.decoder`) and the DiT (:mod:`genrep.rae.dit`) share: the
fixed 2D sin-cos position embedding of MAE and a parameter count."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn


def sincos_2d(dim: int, grid: int, first: Literal["row", "col"] = "row") -> torch.Tensor:
    """Fixed 2D sin-cos position embedding [grid*grid, dim] (MAE): half the channels encode one grid
    coordinate, half the other, each as ``[sin(p w_k), cos(p w_k)]`` with ``w_k = 1 / 10000^(2k/(dim/2))``.

    ``first`` names the coordinate of the first half: ``"row"`` (the default, what the DiT uses) or
    ``"col"`` (the order of the reference decoder's table, src/stage1/decoders/decoder.py:114-151 of
    bytetriper/RAE, whose ``np.meshgrid(grid_w, grid_h)`` puts the column coordinate first). Tokens
    are row-major in both cases.
    """
    if dim % 4 != 0:
        raise ValueError(f"sin-cos embedding needs a width divisible by 4, got {dim}")
    if first not in ("row", "col"):
        raise ValueError(f"sin-cos embedding: first must be 'row' or 'col', got {first!r}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)
    rows, cols = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")

    def embed(pos: np.ndarray) -> np.ndarray:
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    halves = (rows, cols) if first == "row" else (cols, rows)
    return torch.from_numpy(np.concatenate([embed(h) for h in halves], axis=1)).float()


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
