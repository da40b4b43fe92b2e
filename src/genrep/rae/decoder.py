"""The RAE decoder: an MAE-style ViT that maps encoder tokens back to pixels (docs/papers.md s1.4).

Latent tokens [B, C, h, w] -> linear embedding to the decoder width -> a learnable CLS token is
prepended -> fixed 2D sin-cos positions are added (zeros for the CLS slot) -> pre-norm
transformer blocks -> LayerNorm -> a linear head predicts ``patch x patch x 3`` values per token
-> the CLS output is dropped and the patches are put back in place ("unpatchify").

The output lives in the encoder's *normalised* pixel space; :class:`~genrep.rae.autoencoder.RAE`
de-normalises it with the encoder's pixel mean/std. The patch size maps the latent grid to the
output resolution: ``image_size = grid * patch`` (DINOv2-B at 256 px: 16 x 16 tokens, patch 16).

Sizes (width / depth / heads / MLP) are data, not subclasses: B, L and XL as in the paper and
the reference's configs/decoder/ViT{B,L,XL}/config.json; ``tiny`` and ``S`` for laptops. With the
same weights the output equals the reference GeneralDecoder's (bytetriper/RAE
src/stage1/decoders/decoder.py) to float32 rounding; :mod:`genrep.rae.convert_stage1` maps its
checkpoints onto this module.
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


PosOrder = Literal["col-row", "row-col"]
DecoderInit = Literal["torch", "xavier"]
OtherGrid = Literal["resize", "error"]


@dataclass(frozen=True)
class DecoderConfig:
    """The decoder's shape and the few choices where genrep keeps an alternative to the reference.

    Defaults are the reference's GeneralDecoder (bytetriper/RAE src/stage1/decoders/decoder.py):
    ``layer_norm_eps`` 1e-12 (configs/decoder/ViT*/config.json), biases on q/k/v (``qkv_bias``),
    ``pos_order="col-row"`` (its sin-cos table encodes the column in the first half, decoder.py:132),
    ``init="torch"`` (GeneralDecoder re-initialises nothing but the position table, so its linear
    layers keep PyTorch's default init; ``"xavier"`` is MAE's xavier-uniform / zero-bias init),
    ``other_grid="resize"`` (a latent grid of another side is resized bilinearly after the input
    embedding, decoder.py:613-625; ``"error"`` refuses it).

    ``size`` names one of :data:`DECODER_SIZES`, or is ``"custom"`` with ``width``, ``depth``,
    ``heads`` and ``mlp`` given (a converted decoder of another shape; tiny test decoders).
    """

    latent_channels: int
    grid: int  # tokens per side of the (square) latent grid
    patch: int  # pixels per token side in the output
    size: str = "tiny"
    out_channels: int = 3
    layer_norm_eps: float = 1e-12
    qkv_bias: bool = True
    pos_order: PosOrder = "col-row"
    init: DecoderInit = "torch"
    other_grid: OtherGrid = "resize"
    width: int | None = None  # these four only with size="custom"
    depth: int | None = None
    heads: int | None = None
    mlp: int | None = None

    @property
    def dims(self) -> DecoderSize:
        custom = (self.width, self.depth, self.heads, self.mlp)
        if self.size == "custom":
            if any(not isinstance(v, int) or v < 1 for v in custom):
                raise ValueError(f"decoder size 'custom' needs positive width/depth/heads/mlp, got {custom}")
            return DecoderSize(*custom)  # type: ignore[arg-type]
        if self.size not in DECODER_SIZES:
            raise ValueError(f"unknown decoder size '{self.size}' (sizes: {', '.join(DECODER_SIZES)}, custom)")
        if any(v is not None for v in custom):
            raise ValueError(f"decoder size '{self.size}' is fixed; width/depth/heads/mlp are for size 'custom'")
        return DECODER_SIZES[self.size]

    @property
    def image_size(self) -> int:
        return self.grid * self.patch

    def to_dict(self) -> dict:
        return asdict(self)


def decoder_positions(cfg: DecoderConfig) -> torch.Tensor:
    """[1, 1 + grid^2, width]: zeros for the CLS slot, then the sin-cos table in ``cfg.pos_order``
    (the reference's ``get_2d_sincos_pos_embed(..., add_cls_token=True)``, decoder.py:114-139)."""
    width = cfg.dims.width
    first: Literal["row", "col"] = "col" if cfg.pos_order == "col-row" else "row"
    table = sincos_2d(width, cfg.grid, first=first)
    return torch.cat([table.new_zeros(1, width), table])[None]


class Block(nn.Module):
    """Pre-norm ViT block: x + Attn(LN(x)), then x + MLP(LN(x)) with exact (erf) GELU; the
    reference's ViTMAELayer (decoder.py:500-539), with q/k/v fused into one linear layer."""

    def __init__(self, width: int, heads: int, mlp: int, eps: float = 1e-12, qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.fc1 = nn.Linear(width, mlp)
        self.fc2 = nn.Linear(mlp, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, w))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViTDecoder(nn.Module):
    """The reference's GeneralDecoder (decoder.py:542-747) called as RAE.decode calls it
    (``drop_cls_token=False``, no position interpolation), then unpatchified (decoder.py:636-680)."""

    pos_embed: torch.Tensor  # buffer registered in __init__

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        d = cfg.dims  # checks the size
        if d.width % d.heads or d.width % 4:
            raise ValueError(f"decoder width {d.width} must be a multiple of 4 and of the heads ({d.heads})")
        self.cfg = cfg
        self.embed = nn.Linear(cfg.latent_channels, d.width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d.width))  # learnable CLS, zero-initialised
        # fixed, not trained; persistent so that a converted checkpoint's own table is kept exactly
        self.register_buffer("pos_embed", decoder_positions(cfg), persistent=True)
        self._register_load_state_dict_pre_hook(self._fill_positions)
        self.blocks = nn.ModuleList(
            Block(d.width, d.heads, d.mlp, cfg.layer_norm_eps, cfg.qkv_bias) for _ in range(d.depth)
        )
        self.norm = nn.LayerNorm(d.width, eps=cfg.layer_norm_eps)
        self.head = nn.Linear(d.width, cfg.patch * cfg.patch * cfg.out_channels)
        if cfg.init == "xavier":
            self.apply(self._xavier)
        elif cfg.init != "torch":
            raise ValueError(f"unknown decoder init '{cfg.init}' (torch, xavier)")

    def _fill_positions(self, state: dict, prefix: str, *args) -> None:
        # state dicts written before the table was saved (older genrep runs) get the fixed table
        state.setdefault(prefix + "pos_embed", decoder_positions(self.cfg).to(self.pos_embed.device))

    @staticmethod
    def _xavier(m: nn.Module) -> None:
        # MAE initialisation: xavier-uniform linear weights, zero biases, unit LayerNorms
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight of the pixel head (for the GAN's adaptive weight)."""
        return self.head.weight

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """[B, g*g, p*p*c] -> [B, c, g*p, g*p] (row-major tokens, patch pixels row-major, channels last
        within a patch: the reference's ``einsum("nhwpqc->nchpwq")``, decoder.py:673)."""
        g, p, c = self.cfg.grid, self.cfg.patch, self.cfg.out_channels
        b = patches.shape[0]
        x = patches.view(b, g, g, p, p, c)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(b, c, g * p, g * p)

    def patches(self, latent: torch.Tensor) -> torch.Tensor:
        """Raw encoder latent [B, C, h, w] -> per-token pixel predictions [B, g*g, p*p*c] (the
        reference's ``.logits``). A square grid of another side is resized bilinearly to ``grid``
        after the input embedding (decoder.py:613-625) unless ``other_grid="error"``."""
        b, c, h, w = latent.shape
        g = self.cfg.grid
        if c != self.cfg.latent_channels or h != w or (h != g and self.cfg.other_grid == "error"):
            raise ValueError(f"decoder expects latents of shape {(self.cfg.latent_channels, g, g)}, got {(c, h, w)}")
        tokens = self.embed(latent.flatten(2).transpose(1, 2))
        if h != g:
            grid = tokens.transpose(1, 2).reshape(b, -1, h, w)
            grid = F.interpolate(grid, size=(g, g), mode="bilinear", align_corners=False)
            tokens = grid.flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))[:, 1:]

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """Raw encoder latent [B, C, h, w] -> image in the encoder's normalised pixel space (not clamped)."""
        return self.unpatchify(self.patches(latent))

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
