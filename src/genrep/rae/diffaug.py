"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

RAE's stage-1 discriminator sees DiffAug-ed images (docs/papers.md s1.5). train-decoder uses
:func:`reference_diff_augment`, the reference code's variant (bytetriper/RAE src/disc/diffaug.py:8-104,
from StyleGAN-T): translation, then colour, then cutout, each applied to the whole batch with
probability ``prob``, cutout 0 (off) in the released config. :func:`diff_augment` below is the
original DiffAugment policy code (kept for its own uses). Its policy
"color,translation,cutout" is a port of the reference PyTorch code: every op is a differentiable
tensor op on [B, C, H, W], with fresh random parameters per sample and per call, so a batch of real
and a batch of fake images are augmented separately, as in the original. The reference applies it to
images in [-1, 1] (translation pads and cutout fills with 0, i.e. grey there); the ops themselves
work on any range. Randomness comes from the global torch RNG on the input's device
(``torch.manual_seed`` makes it repeatable).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from genrep.core.errors import UserError

DEFAULT_POLICY = "color,translation,cutout"


def _per_sample(x: torch.Tensor) -> torch.Tensor:
    """One uniform draw in [0, 1) per sample, broadcastable to x."""
    return torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device)


def rand_brightness(x: torch.Tensor) -> torch.Tensor:
    """Add a per-sample offset in [-0.5, 0.5)."""
    return x + (_per_sample(x) - 0.5)


def rand_saturation(x: torch.Tensor) -> torch.Tensor:
    """Scale the deviation from the per-pixel channel mean by a factor in [0, 2)."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_per_sample(x) * 2) + mean


def rand_contrast(x: torch.Tensor) -> torch.Tensor:
    """Scale the deviation from the per-image mean by a factor in [0.5, 1.5)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_per_sample(x) + 0.5) + mean


def rand_translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size in x and y, filling with zeros."""
    b, _, h, w = x.shape
    shift_h, shift_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dh = torch.randint(-shift_h, shift_h + 1, size=(b, 1, 1), device=x.device)
    dw = torch.randint(-shift_w, shift_w + 1, size=(b, 1, 1), device=x.device)
    gb, gh, gw = torch.meshgrid(
        torch.arange(b, device=x.device),
        torch.arange(h, device=x.device),
        torch.arange(w, device=x.device),
        indexing="ij",
    )
    gh = torch.clamp(gh + dh + 1, 0, h + 1)
    gw = torch.clamp(gw + dw + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])  # the zero border is what shifted-in pixels read
    return padded.permute(0, 2, 3, 1)[gb, gh, gw].permute(0, 3, 1, 2)


def rand_cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ``ratio`` times the image size at a random centre per image."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oh = torch.randint(0, h + (1 - ch % 2), size=(b, 1, 1), device=x.device)
    ow = torch.randint(0, w + (1 - cw % 2), size=(b, 1, 1), device=x.device)
    gb, gh, gw = torch.meshgrid(
        torch.arange(b, device=x.device),
        torch.arange(ch, device=x.device),
        torch.arange(cw, device=x.device),
        indexing="ij",
    )
    gh = torch.clamp(gh + oh - ch // 2, min=0, max=h - 1)
    gw = torch.clamp(gw + ow - cw // 2, min=0, max=w - 1)
    mask = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gh, gw] = 0
    return x * mask.unsqueeze(1)


AUGMENTATIONS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], ...]] = {
    "color": (rand_brightness, rand_saturation, rand_contrast),
    "translation": (rand_translation,),
    "cutout": (rand_cutout,),
}


def diff_augment(x: torch.Tensor, policy: str = DEFAULT_POLICY) -> torch.Tensor:
    """Apply the comma-separated DiffAugment ``policy`` to a batch [B, C, H, W]; differentiable."""
    for name in filter(None, (p.strip() for p in policy.split(","))):
        if name not in AUGMENTATIONS:
            raise UserError(f"unknown DiffAugment policy {name!r}; choose from {', '.join(AUGMENTATIONS)}")
        for fn in AUGMENTATIONS[name]:
            x = fn(x)
    return x.contiguous()


def _round_half_even(x: float) -> int:
    return int(round(x))  # Python's round, as the reference's ``round(raw * ratio)``


def reference_diff_augment(
    x: torch.Tensor, prob: float = 1.0, cutout: float = 0.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The reference's DiffAug (src/disc/diffaug.py:31-104, without its unused warm-up blur) on a
    batch [B, C, H, W] in [-1, 1], computed in float32; differentiable.

    Three gates ``torch.rand(3) <= prob`` pick translation / colour / cutout for the whole batch;
    the per-sample parameters come from one ``rand(7, B, 1, 1)``: a shift of up to
    ``round(0.125 * size)`` pixels in y and x (zero-padded), brightness + [-0.5, 0.5), saturation
    x [0, 2), contrast x [0.5, 1.5), and a zeroed square of ``round(cutout * size)`` (none when
    ``cutout`` is 0). Numbers are drawn in the reference's order, from ``generator`` (a CPU
    generator) or else the global RNG on the input's device, so with the same seed the output is
    the reference's.
    """
    x = x.float()
    if prob < 1e-6:
        return x
    gates = torch.rand(3, generator=generator) <= prob
    trans, color, cut = (bool(g) for g in gates)
    b, _, h, w = x.shape
    dev = x.device
    if not (trans or color or cut):
        return x
    if generator is not None:
        r = torch.rand(7, b, 1, 1, generator=generator).to(dev)
    else:
        r = torch.rand(7, b, 1, 1, device=dev)
    if trans:
        dh, dw = _round_half_even(h * 0.125), _round_half_even(w * 0.125)
        sh = (r[0] * (2 * dh + 1)).floor().long() - dh
        sw = (r[1] * (2 * dw + 1)).floor().long() - dw
        gb, gh, gw = torch.meshgrid(
            torch.arange(b, device=dev), torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij"
        )
        gh = (gh + sh + 1).clamp(0, h + 1)
        gw = (gw + sw + 1).clamp(0, w + 1)
        x = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)[gb, gh, gw].permute(0, 3, 1, 2).contiguous()
    if color:
        x = x + (r[2].unsqueeze(-1) - 0.5)
        m = x.mean(dim=1, keepdim=True)
        x = (x - m) * (r[3].unsqueeze(-1) * 2) + m
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - m) * (r[4].unsqueeze(-1) + 0.5) + m
    if cut:
        ch, cw = _round_half_even(h * cutout), _round_half_even(w * cutout)
        oh = (r[5] * (h + (1 - ch % 2))).floor().long()
        ow = (r[6] * (w + (1 - cw % 2))).floor().long()
        gb, gh, gw = torch.meshgrid(
            torch.arange(b, device=dev), torch.arange(ch, device=dev), torch.arange(cw, device=dev), indexing="ij"
        )
        gh = (gh + oh - ch // 2).clamp(0, h - 1)
        gw = (gw + ow - cw // 2).clamp(0, w - 1)
        mask = torch.ones(b, h, w, dtype=x.dtype, device=dev)
        mask[gb, gh, gw] = 0
        x = x * mask.unsqueeze(1)
    return x
