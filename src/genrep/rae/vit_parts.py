"""What the ViT decoder (:mod:`genrep.rae.decoder`) and the DiT (:mod:`genrep.rae.dit`) share: the
fixed 2D sin-cos position embedding of MAE and a parameter count."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def sincos_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2D sin-cos position embedding [grid*grid, dim] (MAE): half the channels encode the row,
    half the column, each as ``[sin(p w_k), cos(p w_k)]`` with ``w_k = 1 / 10000^(2k/(dim/2))``."""
    if dim % 4 != 0:
        raise ValueError(f"sin-cos embedding needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)
    rows, cols = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")

    def embed(pos: np.ndarray) -> np.ndarray:
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return torch.from_numpy(np.concatenate([embed(rows), embed(cols)], axis=1)).float()


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
