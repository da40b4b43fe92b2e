"""The RAE decoder: an MAE-style ViT that maps encoder tokens back to pixels (docs/papers.md s1.4).

Latent tokens [B, C, h, w] -> linear embedding to the decoder width -> a learnable CLS token is
prepended -> fixed 2D sin-cos positions are added (zeros for the CLS slot) -> pre-norm
transformer blocks -> LayerNorm -> a linear head predicts ``patch x patch x 3`` values per token
-> the CLS output is dropped and the patches are put back in place ("unpatchify").

The output lives in the encoder's *normalised* pixel space; :class:`~genrep.rae.autoencoder.RAE`
de-normalises it with the encoder's pixel mean/std. The patch size maps the latent grid to the
output resolution: ``image_size = grid * patch`` (DINOv2-B at 256 px: 16 x 16 tokens, patch 16).

Sizes (width / depth / heads / MLP) are data, not subclasses: B, L and XL as in the paper;
``tiny`` and ``S`` for laptops.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from genrep.rae.vit_parts import sincos_2d


@dataclass(frozen=True)
class DecoderSize:
    width: int
    depth: int
    heads: int
    mlp: int


DECODER_SIZES: dict[str, DecoderSize] = {
    "tiny": DecoderSize(192, 4, 3, 768),
    "S": DecoderSize(384, 12, 6, 1536),
    "B": DecoderSize(768, 12, 12, 3072),  # 22.2 GFLOPs at 256 px (paper)
    "L": DecoderSize(1024, 24, 16, 4096),  # 78.1 GFLOPs
    "XL": DecoderSize(1152, 28, 16, 4096),  # 106.7 GFLOPs
}
DecoderSizeName = Literal["tiny", "S", "B", "L", "XL"]  # the keys of DECODER_SIZES (a test keeps them equal)


@dataclass(frozen=True)
class DecoderConfig:
    latent_channels: int
    grid: int  # tokens per side of the (square) latent grid
    patch: int  # pixels per token side in the output
    size: str = "tiny"
    out_channels: int = 3

    @property
    def dims(self) -> DecoderSize:
        return DECODER_SIZES[self.size]

    @property
    def image_size(self) -> int:
        return self.grid * self.patch

    def to_dict(self) -> dict:
        return asdict(self)


class Block(nn.Module):
    """Pre-norm ViT block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int, mlp: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.fc1 = nn.Linear(width, mlp)
        self.fc2 = nn.Linear(mlp, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, w))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViTDecoder(nn.Module):
    pos_embed: torch.Tensor  # buffer registered in __init__

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        if cfg.size not in DECODER_SIZES:
            raise ValueError(f"unknown decoder size '{cfg.size}' (sizes: {', '.join(DECODER_SIZES)})")
        self.cfg = cfg
        d = cfg.dims
        self.embed = nn.Linear(cfg.latent_channels, d.width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d.width))  # learnable CLS, zero-initialised
        pos = torch.cat([torch.zeros(1, d.width), sincos_2d(d.width, cfg.grid)])  # CLS slot gets zeros
        self.register_buffer("pos_embed", pos[None], persistent=False)  # fixed, not trained
        self.blocks = nn.ModuleList(Block(d.width, d.heads, d.mlp) for _ in range(d.depth))
        self.norm = nn.LayerNorm(d.width, eps=1e-6)
        self.head = nn.Linear(d.width, cfg.patch * cfg.patch * cfg.out_channels)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        # MAE initialisation: xavier-uniform linear weights, zero biases, unit LayerNorms
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight of the pixel head (for the GAN's adaptive weight)."""
        return self.head.weight

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """[B, g*g, p*p*c] -> [B, c, g*p, g*p] (row-major tokens, patch pixels row-major)."""
        g, p, c = self.cfg.grid, self.cfg.patch, self.cfg.out_channels
        b = patches.shape[0]
        x = patches.view(b, g, g, p, p, c)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(b, c, g * p, g * p)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """Raw encoder latent [B, C, h, w] -> image in the encoder's normalised pixel space."""
        b, c, h, w = latent.shape
        if (c, h, w) != (self.cfg.latent_channels, self.cfg.grid, self.cfg.grid):
            raise ValueError(
                f"decoder expects latents of shape {(self.cfg.latent_channels, self.cfg.grid, self.cfg.grid)}, got {(c, h, w)}"
            )
        tokens = self.embed(latent.flatten(2).transpose(1, 2))
        x = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.unpatchify(self.head(self.norm(x))[:, 1:])

    def flops_per_image(self, include_attention: bool = True) -> float:
        """Forward FLOPs (2 x multiply-accumulates) of the matmuls, per image.

        ``include_attention=False`` leaves out the two attention-score matmuls, as fvcore-style
        counters do; half of that number reproduces the paper's decoder GFLOPs (B 22.2, L 78.1,
        XL 106.7 at 256 px with a DINOv2-B latent).
        """
        d, n = self.cfg.dims, self.cfg.grid**2 + 1
        per_block = 2 * n * (4 * d.width**2 + 2 * d.width * d.mlp)
        if include_attention:
            per_block += 2 * 2 * n * n * d.width
        embed = 2 * (n - 1) * self.cfg.latent_channels * d.width
        head = 2 * n * d.width * self.cfg.patch**2 * self.cfg.out_channels
        return float(d.depth * per_block + embed + head)
