"""RAE stage-1 decoder losses: the reconstruction and perceptual terms (docs/papers.md s1.5).

The RAE decoder is trained with

    L = L1(x_hat, x) + w_p * LPIPS(x_hat, x) + 0.75 * lambda * L_GAN(x_hat),    w_p = 1.0,

lambda being the VQGAN-style adaptive weight (capped at 1e4). This module holds the first two terms;
the GAN term, lambda and the composed objective live in :mod:`genrep.rae.gan`.

The perceptual term is LPIPS when the ``lpips`` package and its torchvision backbone weights are
already on this machine (nothing is ever downloaded), else an offline LPIPS-like distance on the
frozen bundled EfficientNet-Lite0, named ``"effnet-perceptual"`` (never LPIPS: it has no learned
channel weights and a different backbone, so its values are not comparable with LPIPS numbers).
All images are RGB in [0, 1], shape [B, 3, H, W].
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from genrep.core.bundled.effnet import EfficientNetLite0, load_efficientnet_lite0
from genrep.core.errors import UserError

# The files torchvision's pretrained VGG16 / AlexNet (what ``lpips.LPIPS`` builds on) are cached as
# in ``torch.hub.get_dir()/checkpoints``; VGG first, as in VQGAN's and RAE's LPIPS.
LPIPS_BACKBONE_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}

# EfficientNet-Lite0 feature pyramid: the output of the last MBConv block at each of these strides.
# For Lite0 these are blocks (upto=) 3, 5, 11, 16 with 24, 40, 112, 320 channels
# (32^2, 16^2, 8^2, 4^2 positions at 128 px); see effnet_stage_ends.
PYRAMID_STRIDES = (4, 8, 16, 32)
MIN_SIZE = 32  # the encoder downsamples by 32


def l1_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The L1 term: mean absolute error over all elements."""
    return (x - y).abs().mean()


# --- shared EfficientNet-Lite0 helpers (also used by the discriminator) --------------------------


def effnet_stage_ends(effnet: EfficientNetLite0) -> dict[int, int]:
    """{stride: ``upto`` index} of the last MBConv block at each output stride (stem stride 2)."""
    stride, ends = effnet.net._conv_stem.stride[0], {}
    for i, block in enumerate(effnet.net._blocks):
        stride *= block._depthwise_conv.stride[0]
        ends[stride] = i + 1
    return ends


def effnet_pyramid(effnet: EfficientNetLite0, images: torch.Tensor, taps: list[int]) -> list[torch.Tensor]:
    """Feature maps after blocks ``taps`` (``upto`` indices, ascending) in one forward pass.

    Not under ``no_grad``: the weights are frozen, but gradients flow to ``images``.
    """
    net = effnet.net
    x = net._swish(net._bn0(net._conv_stem(effnet.normalize(images))))
    feats = []
    for i, block in enumerate(net._blocks[: max(taps)]):
        x = block(x)
        if i + 1 in taps:
            feats.append(x)
    return feats


def resize_short_side(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize so the shorter side is ``size`` (aspect kept); differentiable."""
    h, w = images.shape[-2:]
    if min(h, w) == size:
        return images
    scale = size / min(h, w)
    out = (max(size, round(h * scale)), max(size, round(w * scale)))
    return F.interpolate(images, size=out, mode="bilinear", align_corners=False, antialias=scale < 1)


# --- perceptual losses -----------------------------------------------------------------------------


class PerceptualLoss(nn.Module):
    """A frozen perceptual distance: ``forward(x, y)`` -> scalar batch mean; ``name`` says which."""

    name: str = "perceptual"

    def train(self, mode: bool = True) -> PerceptualLoss:
        return super().train(False)  # always eval: frozen BatchNorm / dropout

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


def unit_normalize(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Scale each spatial position's feature vector to unit length across channels (as LPIPS)."""
    return features / (torch.linalg.vector_norm(features, dim=1, keepdim=True) + eps)


class EffNetPerceptualLoss(PerceptualLoss):
    """LPIPS-like distance on frozen EfficientNet-Lite0 features (offline stand-in for LPIPS).

    d(x, y) = sum_l mean_{h,w} mean_c (u_l(x) - u_l(y))^2, with u_l the unit-normalised features
    after the last block at strides 4, 8, 16, 32 (``PYRAMID_STRIDES``). Unlike LPIPS there is no
    learned per-channel linear layer: channels weigh equally (a mean), layers too (a sum).
    Images are resized so the shorter side is ``resolution`` (>= 32, since the net downsamples by
    32); 28x28 inputs therefore work.
    """

    name = "effnet-perceptual"

    def __init__(self, resolution: int = 128, effnet: EfficientNetLite0 | None = None):
        super().__init__()
        if resolution < MIN_SIZE:
            raise UserError(f"effnet perceptual loss: resolution must be >= {MIN_SIZE}, got {resolution}")
        self.resolution = resolution
        self.effnet = (effnet or load_efficientnet_lite0()).eval().requires_grad_(False)
        ends = effnet_stage_ends(self.effnet)
        self.taps = [ends[s] for s in PYRAMID_STRIDES]
        self.eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        both = resize_short_side(torch.cat([x, y]), self.resolution)
        total = x.new_zeros(())
        for f in effnet_pyramid(self.effnet, both, self.taps):
            fx, fy = unit_normalize(f).chunk(2)
            total = total + (fx - fy).pow(2).mean()  # mean over batch, channels and positions
        return total


class LPIPSLoss(PerceptualLoss):
    """LPIPS (Zhang et al. 2018) through the ``lpips`` package; inputs in [0, 1] mapped to [-1, 1]."""

    name = "lpips"

    def __init__(self, net: str = "vgg"):
        super().__init__()
        import lpips  # only reached after lpips_available() said yes

        self.net_name = net
        self.lpips = lpips.LPIPS(net=net, verbose=False).eval().requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.lpips(x * 2 - 1, y * 2 - 1).mean()


def _lpips_net() -> tuple[str | None, str]:
    """(net, reason): the LPIPS backbone whose weights are cached locally, or None and why not."""
    try:
        import lpips  # noqa: F401  (imports torchvision too; neither downloads anything)
    except (ImportError, OSError, RuntimeError) as exc:  # missing, or a broken torchvision
        return None, f"the lpips package does not import ({type(exc).__name__}: {exc})"
    checkpoints = os.path.join(torch.hub.get_dir(), "checkpoints")
    for net, filename in LPIPS_BACKBONE_FILES.items():
        if os.path.isfile(os.path.join(checkpoints, filename)):
            return net, f"lpips with {net} weights from {checkpoints}"
    files = " or ".join(LPIPS_BACKBONE_FILES.values())
    return None, f"no LPIPS backbone weights in {checkpoints} (need {files}; nothing is downloaded)"


def lpips_available() -> tuple[bool, str]:
    """(ok, reason): whether LPIPS can be built offline, checked without triggering a download."""
    net, reason = _lpips_net()
    return net is not None, reason


def build_perceptual_loss(kind: str = "auto", resolution: int = 128) -> PerceptualLoss:
    """The perceptual term: ``"lpips"``, ``"effnet"`` or ``"auto"`` (LPIPS if available, else effnet).

    ``resolution`` applies to the effnet distance only. ``kind="lpips"`` raises UserError when LPIPS
    is unavailable; ``"auto"`` then falls back to the module named ``"effnet-perceptual"``.
    """
    if kind not in ("auto", "lpips", "effnet"):
        raise UserError(f"unknown perceptual loss {kind!r}; choose auto, lpips or effnet")
    if kind in ("auto", "lpips"):
        net, reason = _lpips_net()
        if net is not None:
            return LPIPSLoss(net)
        if kind == "lpips":
            raise UserError(f"perceptual loss 'lpips' is unavailable: {reason}")
    return EffNetPerceptualLoss(resolution=resolution)
