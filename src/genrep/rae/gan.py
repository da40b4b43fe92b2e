"""RAE stage-1 adversarial term (docs/papers.md s1.5).

    L = L1 + w_p * LPIPS + 0.75 * lambda * L_G,
    lambda = ||grad_last(L1 + w_p * LPIPS)|| / (||grad_last(L_G)|| + eps), clamped to [0, 1e4],

with ``last`` the decoder's last layer (VQGAN's adaptive weight; eps = 1e-6 as the reference,
src/train_stage1.py:68-78). The discriminator is a frozen feature backbone with small trainable
heads whose logits are kept per token (per position of each head's map, concatenated, as the
reference's DinoDisc, src/disc/dinodisc.py:258-268); it sees images in [-1, 1] DiffAug-ed by the
trainer (:func:`genrep.rae.diffaug.reference_diff_augment`). D is trained with the hinge loss on
those per-token logits; G with ``-mean(D(G(z)))`` (the reference's ``gen_loss: vanilla``,
src/disc/gan_loss.py:23-29, i.e. the generator side of the hinge GAN; the non-saturating loss is
an option). D starts at epoch 6 and the GAN term at epoch 8 of 16.

Stand-in: the reference's backbone is a frozen DINO-S/8 (weights not available offline) with
its own head design; offline genrep uses the bundled EfficientNet-Lite0 with the heads below.
Everything around the discriminator (augmentation, losses, schedule, quantised D input) is the
reference's.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from genrep.core.bundled.effnet import load_efficientnet_lite0
from genrep.core.errors import UserError
from genrep.rae.diffaug import DEFAULT_POLICY, diff_augment
from genrep.rae.losses import (
    PYRAMID_STRIDES,
    effnet_pyramid,
    effnet_stage_ends,
    resize_short_side,
)

BACKBONES = ("effnet-lite0",)


def _head(in_channels: int, hidden: int, spectral_norm: bool) -> nn.Sequential:
    """Conv3x3 -> LeakyReLU(0.2) -> Conv1x1 to one channel: a per-position logit map."""
    wrap = _sn if spectral_norm else (lambda m: m)
    return nn.Sequential(
        wrap(nn.Conv2d(in_channels, hidden, 3, padding=1)),
        nn.LeakyReLU(0.2),
        wrap(nn.Conv2d(hidden, 1, 1)),
    )


class FeatureDiscriminator(nn.Module):
    """Frozen feature backbone + small trainable heads (docs/papers.md s1.5: frozen DINO-S/8 features with
    small trainable heads; offline: frozen EfficientNet-Lite0 features).

    One head per backbone level: the last MBConv block at strides 4, 8, 16, 32 (24, 40, 112, 320
    channels). With ``per_token`` (the reference's form) the logits are every position of every
    head's map, flattened and concatenated, [B, sum_l h_l w_l]; without it, K = 4 per image, each
    the spatial mean of its head's map (genrep's earlier form). Images (RGB in [0, 1]) are resized
    so the shorter side is ``resolution``; in training mode with ``diffaug`` they are DiffAug-ed
    with :func:`diff_augment` first (train-decoder augments outside instead, as the reference).
    The backbone is frozen and in eval mode but not under ``no_grad``: the generator's gradients
    flow through it. Train only :meth:`trainable_parameters` (the heads).
    """

    def __init__(
        self,
        backbone: str = "effnet-lite0",
        resolution: int = 128,
        head_channels: int = 64,
        diffaug: bool = True,
        spectral_norm: bool = True,
        policy: str = DEFAULT_POLICY,
        per_token: bool = True,
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise UserError(f"unknown discriminator backbone {backbone!r}; available: {', '.join(BACKBONES)}")
        if resolution < 32:
            raise UserError(f"discriminator resolution must be >= 32, got {resolution}")
        self.resolution, self.diffaug, self.policy, self.per_token = resolution, diffaug, policy, per_token
        self.backbone = load_efficientnet_lite0().requires_grad_(False)
        ends = effnet_stage_ends(self.backbone)
        self.taps = [ends[s] for s in PYRAMID_STRIDES]
        channels = self.backbone.block_channels()
        self.heads = nn.ModuleList(_head(channels[t - 1], head_channels, spectral_norm) for t in self.taps)

    @property
    def num_heads(self) -> int:
        return len(self.heads)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.heads.parameters() if p.requires_grad]

    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        """Logits [B, L] (higher = more real): per token, or one per feature level (class docstring)."""
        x = resize_short_side(images01, self.resolution)
        if self.training and self.diffaug:
            x = (diff_augment(x * 2 - 1, self.policy) + 1) / 2
        feats = effnet_pyramid(self.backbone, x, self.taps)
        maps = [head(f) for head, f in zip(self.heads, feats)]
        if self.per_token:
            return torch.cat([m.flatten(1) for m in maps], dim=1)
        return torch.cat([m.mean(dim=(2, 3)) for m in maps], dim=1)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """D's hinge loss, VQGAN convention: 0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake)))."""
    return 0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """G's loss in the reference (``vanilla_g_loss``, src/disc/gan_loss.py:23-29): ``-mean(D(G(z)))``
    over every logit."""
    return -logits_fake.mean()


GenLoss = Literal["hinge", "non-saturating"]


def generator_loss(kind: GenLoss, logits_fake: torch.Tensor) -> torch.Tensor:
    return hinge_g_loss(logits_fake) if kind == "hinge" else nonsaturating_g_loss(logits_fake)


def nonsaturating_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """G's non-saturating loss: mean(softplus(-D(G(z)))) = -mean(log sigmoid(D(G(z))))."""
    return F.softplus(-logits_fake).mean()


def adaptive_weight(
    rec_loss: torch.Tensor,
    g_loss: torch.Tensor,
    last_layer: torch.Tensor,
    max_weight: float = 1e4,
    eps: float = 1e-6,
) -> torch.Tensor:
    """VQGAN's lambda = ||grad_last(rec)|| / (||grad_last(g)|| + eps), clamped to [0, max_weight].

    ``last_layer`` is the decoder's last layer weight; the graphs are retained for the backward of
    the total loss, and the result is detached.
    """
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = torch.linalg.vector_norm(rec_grad) / (torch.linalg.vector_norm(g_grad) + eps)
    return weight.clamp(0.0, max_weight).detach()


def gan_schedule(epoch: float, disc_start: float, gan_start: float) -> tuple[bool, bool]:
    """(train_discriminator, use_gan_term) at ``epoch`` (paper: disc_start 6, gan_start 8 of 16)."""
    return epoch >= disc_start, epoch >= gan_start


def quantize_8bit(x_pm1: torch.Tensor) -> torch.Tensor:
    """Clamp to [-1, 1] and round to the 256 levels of an 8-bit image, ``round((x + 1) 127.5) / 127.5 - 1``
    (the reference's D input, src/train_stage1.py:434-436)."""
    return torch.round((x_pm1.clamp(-1.0, 1.0) + 1.0) * 127.5) / 127.5 - 1.0


def discriminator_loss(disc: FeatureDiscriminator, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss on real images and detached reconstructions (no augmentation here)."""
    return hinge_d_loss(disc(real), disc(fake.detach()))


def reference_d_loss(
    disc: FeatureDiscriminator,
    real01: torch.Tensor,
    fake01: torch.Tensor,
    augment,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's D step loss (src/train_stage1.py:423-441): the fake (a fresh decode, [0, 1])
    mapped to [-1, 1] and quantised to 8 bits, real and fake augmented separately by ``augment``
    (on [-1, 1]), hinge loss on the per-token logits. Returns (loss, accuracy: the share of
    logits with real > fake)."""
    fake = quantize_8bit(fake01.detach() * 2.0 - 1.0)
    fake_in, real_in = augment(fake), augment(real01 * 2.0 - 1.0)
    logits_fake = disc((fake_in + 1.0) / 2.0)
    logits_real = disc((real_in + 1.0) / 2.0)
    return hinge_d_loss(logits_real, logits_fake), (logits_real > logits_fake).float().mean()
