"""RAE stage-1 adversarial term (docs/papers.md s1.5).

    L = L1 + w_p * LPIPS + 0.75 * lambda * L_G,
    lambda = ||grad_last(L1 + w_p * LPIPS)|| / (||grad_last(L_G)|| + eps), clamped to [0, 1e4],

with ``last`` the decoder's last layer (VQGAN's adaptive weight). The discriminator is a frozen
feature backbone with small trainable heads, fed DiffAug-ed images; D is trained with the hinge
loss and G with the non-saturating loss. D starts at epoch 6 and the GAN term at epoch 8 of 16.
The paper's backbone is DINO-S/8; offline genrep uses the bundled EfficientNet-Lite0.
"""

from __future__ import annotations

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
    channels), so K = 4 logits per image, each the spatial mean of its head's logit map. Images
    (RGB in [0, 1]) are resized so the shorter side is ``resolution``; in training mode with
    ``diffaug`` they are DiffAug-ed (in [-1, 1], as the reference code) first. The backbone is frozen
    and in eval mode but not under ``no_grad``: the generator's gradients flow through it. Train
    only :meth:`trainable_parameters` (the heads).
    """

    def __init__(
        self,
        backbone: str = "effnet-lite0",
        resolution: int = 128,
        head_channels: int = 64,
        diffaug: bool = True,
        spectral_norm: bool = True,
        policy: str = DEFAULT_POLICY,
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise UserError(f"unknown discriminator backbone {backbone!r}; available: {', '.join(BACKBONES)}")
        if resolution < 32:
            raise UserError(f"discriminator resolution must be >= 32, got {resolution}")
        self.resolution, self.diffaug, self.policy = resolution, diffaug, policy
        self.backbone = load_efficientnet_lite0().requires_grad_(False)
        ends = effnet_stage_ends(self.backbone)
        self.taps = [ends[s] for s in PYRAMID_STRIDES]
        channels = self.backbone.block_channels()
        self.heads = nn.ModuleList(_head(channels[t - 1], head_channels, spectral_norm) for t in self.taps)

    @property
    def num_logits(self) -> int:
        return len(self.heads)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.heads.parameters() if p.requires_grad]

    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        """Per-sample logits [B, K], one per feature level (higher = more real)."""
        x = resize_short_side(images01, self.resolution)
        if self.training and self.diffaug:
            x = (diff_augment(x * 2 - 1, self.policy) + 1) / 2
        feats = effnet_pyramid(self.backbone, x, self.taps)
        return torch.cat([head(f).mean(dim=(2, 3)) for head, f in zip(self.heads, feats)], dim=1)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """D's hinge loss, VQGAN convention: 0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake)))."""
    return 0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean())


def nonsaturating_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """G's non-saturating loss: mean(softplus(-D(G(z)))) = -mean(log sigmoid(D(G(z))))."""
    return F.softplus(-logits_fake).mean()


def adaptive_weight(
    rec_loss: torch.Tensor,
    g_loss: torch.Tensor,
    last_layer: torch.Tensor,
    max_weight: float = 1e4,
    eps: float = 1e-4,
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


def discriminator_loss(disc: FeatureDiscriminator, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The D step: hinge loss on real images and detached reconstructions (augmented separately)."""
    return hinge_d_loss(disc(real), disc(fake.detach()))
