"""Stage-2 denoisers of RAE: LightningDiT and DiT^DH, exactly as the reference (docs/papers.md s1.9).

The network predicts the flow-matching velocity ``v = eps - x`` of a noisy latent
``x_t = (1 - t) x + t eps`` (t = 1 is pure noise), given the class label.

Plain DiT (``head_width == 0``) = the reference ``LightningDiT`` (bytetriper/RAE
``src/stage2/models/lightningDiT.py``): latent [B, C, h, w] -> ``patch x patch`` patches,
linearly embedded to the width -> fixed 2D sin-cos positions added -> blocks conditioned on
``c = t_emb + y_emb`` through adaLN-Zero (``SiLU -> Linear`` per block), RMSNorm with a gain,
attention with 2D RoPE on q and k (q/k RMSNorm optional), SwiGLU MLP -> adaLN-modulated RMSNorm
-> a linear layer predicts ``patch x patch x C`` values per token -> unpatchify.

DiT^DH = the reference ``DiTwDDTHead`` (``src/stage2/models/DDT.py``): the same backbone, but
conditioned on ``c = SiLU(t_emb + y_emb)`` (``DDT.py`` forward: a SiLU *before* the blocks,
whose adaLN applies SiLU again) and without a final layer; its output tokens ``z`` condition a
shallow, wide head:

- the head's *input* is a fresh linear embedding of the noisy latent patches ``x_t`` (no
  absolute positions; RoPE in the head's attention gives it the geometry);
- its *conditioning* is per token: ``c_tok = P(SiLU(z + t_emb))`` with ``P`` a linear
  projection to the head width, or the identity when the widths are equal (``s_projector``);
  the class enters only through ``z``;
- head blocks and the head's final layer take shift/scale/gate from ``c_tok`` per token.

Reference facts these modules reproduce (the golden tests in tests/rae/test_reference_dit.py
check them against outputs of the reference code):

- time embedding: Gaussian Fourier features ``[sin(2 pi t W), cos(2 pi t W)]`` of the flow time,
  ``W ~ N(0, 1)`` of 256 entries fixed at construction and saved with the weights
  (``model_utils.py`` ``GaussianFourierEmbedding``), then ``Linear(512, w) -> SiLU -> Linear``;
  DiT's sinusoidal embedding of ``1000 t`` is kept as ``time_embed="sinusoidal"`` (not the paper's);
- the 2D sin-cos table puts the *column* coordinate in the first half of the channels
  (``get_2d_sincos_pos_embed``: ``meshgrid(grid_w, grid_h)``);
- the modulated RMSNorms (before attention, before the MLP, in the final layer) have a learnable
  gain (``RMSNorm`` in ``model_utils.py``, eps 1e-6); ``norm_gain=False`` drops it;
- ``qk_norm`` is off: every reference config trains without it;
- initialisation: LightningDiT xavier-uniform on every Linear, DiT^DH PyTorch's default Linear init
  (``initialize_weights(xavier_uniform_init=False)``); both: patch embeddings xavier, label table
  N(0, 0.02), time MLP N(0, 0.02), adaLN and output layers zero. ``linear_init`` overrides;
- SwiGLU hidden width ``int(2/3 * int(mlp_ratio * width))`` (truncation): 3072 at width 1152,
  5461 at 2048, 682 at 256;
- the label table has ``num_classes + 1`` rows (the last is the null class) when label dropout
  is on, ``num_classes`` rows when ``class_dropout == 0`` (``LabelEmbedder``).

Sizes are data (``DIT_PRESETS``): S/B/L/XL backbones and DiT^DH-S/XL as in the paper,
``dit-tiny`` (256/4/4), ``ditdh-tiny`` (+ head 512/2/8) and ``ditdh-micro`` (128/2/2 + head
192/1/3, the demo's) for laptops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genrep.core.errors import UserError
from genrep.rae.vit_parts import sincos_2d

TimeEmbed = Literal["fourier", "sinusoidal"]
LinearInit = Literal["auto", "xavier", "default"]


@dataclass(frozen=True)
class DiTConfig:
    in_channels: int  # latent channels C
    grid: int  # latent tokens per side (h = w)
    num_classes: int
    width: int
    depth: int
    heads: int
    mlp_ratio: float = 4.0  # SwiGLU hidden = int(2/3 * int(mlp_ratio * width))
    patch: int = 1  # patch size on the latent grid (paper: 1)
    head_width: int = 0  # DDT head width (0 = plain DiT, no head)
    head_depth: int = 0
    head_heads: int = 0
    qk_norm: bool = False  # RMSNorm on q and k per head (the reference configs: off)
    rope: bool = True  # 2D RoPE on q, k
    pos_embed: bool = True  # fixed 2D sin-cos positions added to the backbone input (DDT: use_pos_embed)
    class_dropout: float = 0.1  # label dropout for CFG; index num_classes is the null class
    learn_sigma: bool = False  # 2C outputs (LightningDiT); forward returns the first C
    time_embed: TimeEmbed = "fourier"  # reference: Gaussian Fourier features; "sinusoidal": DiT's
    norm_gain: bool = True  # learnable gain in the modulated RMSNorms (reference); False: none
    linear_init: LinearInit = "auto"  # auto: as the reference (LightningDiT xavier, DiT^DH default)

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise UserError(f"DiT config: {msg}")

        need(self.grid % self.patch == 0, f"grid {self.grid} is not divisible by patch {self.patch}")
        need(self.width % 4 == 0, f"width {self.width} must be divisible by 4 (2D sin-cos positions)")
        need(self.width % self.heads == 0, f"width {self.width} is not divisible by heads {self.heads}")
        need(0.0 <= self.class_dropout <= 1.0, f"class_dropout must be in [0, 1], got {self.class_dropout}")
        need(
            self.time_embed in ("fourier", "sinusoidal"),
            f"time_embed must be fourier or sinusoidal, got {self.time_embed!r}",
        )
        need(
            self.linear_init in ("auto", "xavier", "default"),
            f"linear_init must be auto, xavier or default, got {self.linear_init!r}",
        )
        has_head = (self.head_width > 0, self.head_depth > 0, self.head_heads > 0)
        need(len(set(has_head)) == 1, "head_width, head_depth and head_heads must be all positive or all 0")
        widths = [(self.width, self.heads)] + ([(self.head_width, self.head_heads)] if self.has_head else [])
        for w, h in widths:
            need(w % h == 0, f"width {w} is not divisible by heads {h}")
            need(not self.rope or (w // h) % 4 == 0, f"RoPE needs a head dim divisible by 4, got {w // h}")

    @property
    def has_head(self) -> bool:
        return self.head_width > 0

    @property
    def tokens(self) -> int:
        return (self.grid // self.patch) ** 2

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def xavier(self) -> bool:
        """Whether Linear weights start xavier-uniform (LightningDiT) or at PyTorch's default (DiT^DH)."""
        return self.linear_init == "xavier" or (self.linear_init == "auto" and not self.has_head)


DIT_PRESETS: dict[str, dict] = {
    "dit-tiny": dict(width=256, depth=4, heads=4),  # laptop size (head dim 64)
    "dit-S": dict(width=384, depth=12, heads=6),
    "dit-B": dict(width=768, depth=12, heads=12),
    "dit-L": dict(width=1024, depth=24, heads=16),
    "dit-XL": dict(width=1152, depth=28, heads=16),
    "ditdh-tiny": dict(width=256, depth=4, heads=4, head_width=512, head_depth=2, head_heads=8),  # laptop size
    # the demo's size for a 112-d latent (effnet-lite0 block11 at 64 px): backbone and head wider than a token
    "ditdh-micro": dict(width=128, depth=2, heads=2, head_width=192, head_depth=1, head_heads=3),
    "ditdh-S": dict(width=384, depth=12, heads=6, head_width=2048, head_depth=2, head_heads=16),
    "ditdh-XL": dict(width=1152, depth=28, heads=16, head_width=2048, head_depth=2, head_heads=16),  # 839M (paper)
}
# the keys of DIT_PRESETS (a test keeps them equal)
DiTPreset = Literal["dit-tiny", "dit-S", "dit-B", "dit-L", "dit-XL", "ditdh-tiny", "ditdh-micro", "ditdh-S", "ditdh-XL"]


def dit_config(name: str, in_channels: int, grid: int, num_classes: int, **overrides) -> DiTConfig:
    """A named size (``DIT_PRESETS``) for a latent of ``in_channels x grid x grid``."""
    if name not in DIT_PRESETS:
        raise UserError(f"unknown DiT preset '{name}' (presets: {', '.join(DIT_PRESETS)})")
    known = {f.name for f in fields(DiTConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UserError(f"unknown DiT config field(s) {', '.join(unknown)} (fields: {', '.join(sorted(known))})")
    kwargs = {**DIT_PRESETS[name], **overrides}
    return DiTConfig(in_channels=in_channels, grid=grid, num_classes=num_classes, **kwargs)


def swiglu_hidden(width: int, mlp_ratio: float) -> int:
    """SwiGLU hidden width: 2/3 of the plain MLP's, truncated (reference rule)."""
    return int(2 / 3 * int(width * mlp_ratio))


def position_table(width: int, side: int) -> Tensor:
    """The DiT's fixed 2D sin-cos positions [side*side, width]: the column coordinate encodes the
    first half of the channels, the row the second (reference ``model_utils.get_2d_sincos_pos_embed``,
    whose ``meshgrid(grid_w, grid_h)`` puts the column first)."""
    table = sincos_2d(width, side)  # row half first
    half = width // 2
    return torch.cat([table[:, half:], table[:, :half]], dim=1)


# ---------------------------------------------------------------------------------------------
# 2D rotary position embedding


def rope_2d_angles(rows: Tensor, cols: Tensor, head_dim: int, theta: float = 10000.0) -> Tensor:
    """Rotation angles [N, head_dim/2] for tokens at (rows[i], cols[i]).

    The head dim is split in half: the first half is rotated by the row, the second by the
    column. Each half is ``head_dim/4`` adjacent pairs with frequencies ``theta^(-2k / (head_dim/2))``,
    computed in float32 as the reference ``VisionRotaryEmbeddingFast`` (``model_utils.py``) does."""
    half = head_dim // 2
    freqs = 1.0 / (theta ** (torch.arange(0, half, 2)[: half // 2].float() / half))
    return torch.cat([rows.float()[:, None] * freqs, cols.float()[:, None] * freqs], dim=1)


def rope_table(angles: Tensor) -> Tensor:
    """``[2, N, head_dim/2]``: the cosines and sines of ``angles``, computed once per model (the
    reference's ``freqs_cos`` / ``freqs_sin`` buffers, without their pair repetition)."""
    return torch.stack([angles.cos(), angles.sin()])


def apply_rope(x: Tensor, table: Tensor) -> Tensor:
    """Rotate adjacent pairs ``(x[2i], x[2i+1])`` of ``x [..., N, head_dim]`` by the angles whose
    :func:`rope_table` is ``table``; the same products and sums as the reference's
    ``t * cos + rotate_half(t) * sin``."""
    cos, sin = table[0].to(x.dtype), table[1].to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


def grid_angles(side: int, head_dim: int) -> Tensor:
    """RoPE angles for a row-major ``side x side`` token grid."""
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return rope_2d_angles(rows.reshape(-1), cols.reshape(-1), head_dim)


# ---------------------------------------------------------------------------------------------
# Embedders


class FourierTimeEmbedder(nn.Module):
    """Flow time t in [0, 1] -> width: ``[sin(2 pi t W), cos(2 pi t W)]``, ``W ~ N(0, 1)`` (256 entries,
    fixed, saved as ``W``) -> ``Linear(512, width) -> SiLU -> Linear`` (reference
    ``GaussianFourierEmbedding``, ``model_utils.py``)."""

    W: Tensor

    def __init__(self, width: int, features: int = 256):
        super().__init__()
        self.register_buffer("W", torch.randn(features))
        self.mlp = nn.Sequential(nn.Linear(2 * features, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: Tensor) -> Tensor:
        args = t[:, None] * self.W[None, :] * 2 * torch.pi  # same order of products as the reference
        return self.mlp(torch.cat([torch.sin(args), torch.cos(args)], dim=-1))


class SinusoidalTimeEmbedder(nn.Module):
    """DiT's sinusoidal frequency embedding of ``1000 t`` (256 frequencies) -> MLP (``time_embed="sinusoidal"``,
    genrep's earlier choice; not the reference's)."""

    def __init__(self, width: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: Tensor) -> Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = 1000 * t.float()[:, None] * freqs  # DiT's scale: t in [0, 1] -> [0, 1000]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(self.mlp[0].weight.dtype))  # type: ignore[arg-type]


class LabelEmbedder(nn.Module):
    """Class label -> width; row ``num_classes`` is the null class used for classifier-free guidance
    (present only when label dropout is on, as the reference ``LabelEmbedder``)."""

    def __init__(self, num_classes: int, width: int, dropout: float):
        super().__init__()
        self.num_classes, self.dropout = num_classes, dropout
        self.table = nn.Embedding(num_classes + int(dropout > 0), width)

    def drop(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Replace each label by the null class with probability ``dropout`` (reproducible with ``generator``)."""
        dropped = torch.rand(y.shape, generator=generator, device=y.device) < self.dropout
        return torch.where(dropped, torch.full_like(y, self.num_classes), y)

    def forward(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.training and self.dropout > 0:
            y = self.drop(y, generator)
        return self.table(y)


# ---------------------------------------------------------------------------------------------
# Blocks


class ModulatedNorm(nn.Module):
    """RMSNorm (eps 1e-6) computed in float32 and cast back, times a learnable gain when ``gain``
    (reference ``RMSNorm``: ``norm(x.float()).type_as(x) * weight``); the adaLN shift/scale follows."""

    def __init__(self, width: int, gain: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width)) if gain else None

    def forward(self, x: Tensor) -> Tensor:
        out = F.rms_norm(x.float(), (x.shape[-1],), eps=1e-6).type_as(x)
        return out * self.weight if self.weight is not None else out


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class Attention(nn.Module):
    """Multi-head self-attention with optional q/k RMSNorm and 2D RoPE on q and k."""

    def __init__(self, width: int, heads: int, qk_norm: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.q_norm = ModulatedNorm(width // heads, gain=True) if qk_norm else nn.Identity()
        self.k_norm = ModulatedNorm(width // heads, gain=True) if qk_norm else nn.Identity()
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor, rope: Tensor | None) -> Tensor:
        b, n, w = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        out = F.scaled_dot_product_attention(q.to(v.dtype), k.to(v.dtype), v)
        return self.proj(out.transpose(1, 2).reshape(b, n, w))


class SwiGLU(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.w12 = nn.Linear(width, 2 * hidden)
        self.w3 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class Block(nn.Module):
    """adaLN-Zero block: x + gate * Attn(modulate(norm1(x))), then the same with the SwiGLU MLP.

    ``c`` is [B, width] (one conditioning per sample, the backbone) or [B, N, width] (one per
    token, the DDT head)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, qk_norm: bool, norm_gain: bool = True):
        super().__init__()
        self.norm1 = ModulatedNorm(width, norm_gain)
        self.attn = Attention(width, heads, qk_norm)
        self.norm2 = ModulatedNorm(width, norm_gain)
        self.mlp = SwiGLU(width, swiglu_hidden(width, mlp_ratio))
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x: Tensor, c: Tensor, rope: Tensor | None) -> Tensor:
        mod = self.adaLN(c if c.dim() == 3 else c[:, None])
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1), rope)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    """adaLN-modulated RMSNorm (shift, scale; no gate) -> linear to ``patch x patch x C_out``."""

    def __init__(self, width: int, out_dim: int, norm_gain: bool = True):
        super().__init__()
        self.norm = ModulatedNorm(width, norm_gain)
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, out_dim)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN(c if c.dim() == 3 else c[:, None]).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


# ---------------------------------------------------------------------------------------------
# The model


class DiT(nn.Module):
    """LightningDiT (``head_width == 0``) or DiT^DH (backbone + wide DDT head) velocity predictor."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        side = cfg.grid // cfg.patch
        # patch embedding: a convolution of kernel = stride = patch (timm PatchEmbed in the reference)
        self.x_embed = nn.Conv2d(cfg.in_channels, cfg.width, cfg.patch, cfg.patch)
        pos = position_table(cfg.width, side)[None] if cfg.pos_embed else None
        self.register_buffer("pos_table", pos, persistent=False)  # fixed, not trained
        time_cls = FourierTimeEmbedder if cfg.time_embed == "fourier" else SinusoidalTimeEmbedder
        self.t_embed = time_cls(cfg.width)
        self.y_embed = LabelEmbedder(cfg.num_classes, cfg.width, cfg.class_dropout)
        self.blocks = nn.ModuleList(
            Block(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.qk_norm, cfg.norm_gain) for _ in range(cfg.depth)
        )
        rope = rope_table(grid_angles(side, cfg.width // cfg.heads)) if cfg.rope else None
        self.register_buffer("rope", rope, persistent=False)  # [2, N, head_dim/2] cos, sin
        out_dim = cfg.patch**2 * cfg.out_channels
        if cfg.has_head:
            self.head_x_embed = nn.Conv2d(cfg.in_channels, cfg.head_width, cfg.patch, cfg.patch)  # re-embeds x_t
            # c_tok = P(SiLU(z + t_emb)); P is the identity when the widths agree (reference s_projector)
            self.head_cond = nn.Linear(cfg.width, cfg.head_width) if cfg.width != cfg.head_width else nn.Identity()
            self.head_blocks = nn.ModuleList(
                Block(cfg.head_width, cfg.head_heads, cfg.mlp_ratio, cfg.qk_norm, cfg.norm_gain)
                for _ in range(cfg.head_depth)
            )
            head_rope = rope_table(grid_angles(side, cfg.head_width // cfg.head_heads)) if cfg.rope else None
            self.register_buffer("head_rope", head_rope, persistent=False)
            self.final_layer = FinalLayer(cfg.head_width, out_dim, cfg.norm_gain)
        else:
            self.final_layer = FinalLayer(cfg.width, out_dim, cfg.norm_gain)
        self._init_weights()

    def _init_weights(self) -> None:
        """The reference's initialisation (``initialize_weights`` in ``lightningDiT.py`` / ``DDT.py``)."""
        if self.cfg.xavier:
            for m in self.modules():  # xavier-uniform linear weights, zero biases
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)
        embeds: list[nn.Conv2d] = [self.x_embed] + ([self.head_x_embed] if self.cfg.has_head else [])
        for embed in embeds:  # patch embeddings: xavier as a Linear on the flattened kernel, zero bias
            nn.init.xavier_uniform_(embed.weight.view(embed.weight.shape[0], -1))
            assert embed.bias is not None
            nn.init.zeros_(embed.bias)
        nn.init.normal_(self.y_embed.table.weight, std=0.02)  # label table N(0, 0.02)
        nn.init.normal_(self.t_embed.mlp[0].weight, std=0.02)  # type: ignore[arg-type]  # time MLP N(0, 0.02)
        nn.init.normal_(self.t_embed.mlp[2].weight, std=0.02)  # type: ignore[arg-type]
        for block in [*self.blocks, *getattr(self, "head_blocks", [])]:
            nn.init.zeros_(block.adaLN[-1].weight)  # adaLN-Zero: gates start at 0, every block is the identity
            nn.init.zeros_(block.adaLN[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN[-1].weight)  # type: ignore[arg-type]  # final modulation starts at shift 0, scale 1
        nn.init.zeros_(self.final_layer.adaLN[-1].bias)  # type: ignore[arg-type]
        nn.init.zeros_(self.final_layer.linear.weight)  # zero output layer: the model predicts 0 at init
        nn.init.zeros_(self.final_layer.linear.bias)

    def patchify(self, x: Tensor) -> Tensor:
        """[B, C, h, w] -> [B, (h/p)(w/p), p*p*C], row-major tokens, each patch flattened as (p, p, C)."""
        b, c, h, w = x.shape
        p = self.cfg.patch
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, (h // p) * (w // p), p * p * c)

    def unpatchify(self, tokens: Tensor) -> Tensor:
        """Inverse of :meth:`patchify` for ``C_out`` channels."""
        b, p, c, side = tokens.shape[0], self.cfg.patch, self.cfg.out_channels, self.cfg.grid // self.cfg.patch
        x = tokens.reshape(b, side, side, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, c, side * p, side * p)

    def forward(self, x: Tensor, t: Tensor, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Noisy latent [B, C, h, w], time t [B] in [0, 1] (1 = noise), labels y [B] (``num_classes`` =
        null) -> velocity [B, C, h, w]. In training mode labels are dropped to the null class with
        probability ``class_dropout``, drawn from ``generator``."""
        cfg = self.cfg
        expected = (cfg.in_channels, cfg.grid, cfg.grid)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"DiT expects latents of shape {expected}, got {tuple(x.shape[1:])}")
        t_emb = self.t_embed(t)
        c = t_emb + self.y_embed(y, generator)
        if cfg.has_head:
            c = F.silu(c)  # DiTwDDTHead: SiLU before the blocks (whose adaLN applies SiLU again)
        z = self.x_embed(x).flatten(2).transpose(1, 2)  # [B, N, width], row-major tokens
        if self.pos_table is not None:
            z = z + self.pos_table
        for block in self.blocks:
            z = block(z, c, self.rope)
        if cfg.has_head:
            # DDT head: input = the noisy latent re-embedded; per-token condition = backbone output + time
            c_tok = self.head_cond(F.silu(t_emb[:, None] + z))
            h = self.head_x_embed(x).flatten(2).transpose(1, 2)
            for block in self.head_blocks:
                h = block(h, c_tok, self.head_rope)
            out = self.final_layer(h, c_tok)
        else:
            out = self.final_layer(z, c)
        return self.unpatchify(out)[:, : cfg.in_channels]

    def forward_with_cfg(self, x: Tensor, t: Tensor, y: Tensor, scale: float) -> Tensor:
        """Classifier-free guidance ``v_u + scale (v_c - v_u)``, conditional and null passes batched
        together (call in eval mode, or labels are also dropped at random)."""
        null = torch.full_like(y, self.cfg.num_classes)
        v_c, v_u = self.forward(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null])).chunk(2)
        return v_u + scale * (v_c - v_u)

    def flops_per_sample(self) -> float:
        """Forward FLOPs (2 x multiply-accumulates) of the matmuls for one sample, attention scores
        (q k^T and attn v) included; per-sample conditioning (time MLP, backbone adaLN) counted once."""
        cfg = self.cfg
        n, patch_dim, out_dim = cfg.tokens, cfg.patch**2 * cfg.in_channels, cfg.patch**2 * cfg.out_channels

        def block(w: int, per_token_cond: bool) -> int:
            hidden = swiglu_hidden(w, cfg.mlp_ratio)
            body = n * (4 * w * w + 3 * w * hidden) + 2 * n * n * w  # qkv + proj, SwiGLU, scores + attn.v
            return body + (n if per_token_cond else 1) * 6 * w * w  # adaLN modulation

        time_features = 512 if cfg.time_embed == "fourier" else 256  # the time MLP's input features
        macs = n * patch_dim * cfg.width + time_features * cfg.width + cfg.width**2  # patch embed, time MLP
        macs += cfg.depth * block(cfg.width, False)
        if cfg.has_head:
            hw = cfg.head_width
            macs += n * patch_dim * hw  # head input embedding
            macs += n * cfg.width * hw if cfg.width != hw else 0  # c_tok projection
            macs += cfg.head_depth * block(hw, True)
            macs += n * (2 * hw * hw + hw * out_dim)  # per-token final modulation + output linear
        else:
            macs += 2 * cfg.width**2 + n * cfg.width * out_dim
        return float(2 * macs)
