"""RAE stage-1 decoder losses: L1, perceptual, DiffAug, discriminator, GAN losses, adaptive weight."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genrep.core.errors import UserError
from genrep.rae import losses as L
from genrep.rae.diffaug import diff_augment
from genrep.rae.gan import (
    FeatureDiscriminator,
    adaptive_weight,
    gan_schedule,
    hinge_d_loss,
    nonsaturating_g_loss,
)


def _photo(name: str, size: int) -> torch.Tensor:
    from skimage import data

    img = torch.from_numpy(getattr(data, name)().astype(np.float32) / 255).permute(2, 0, 1)[None]
    return F.interpolate(img, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


@pytest.fixture(scope="module")
def cat128() -> torch.Tensor:
    return _photo("chelsea", 128)


@pytest.fixture(scope="module")
def effnet_loss() -> L.PerceptualLoss:
    return L.build_perceptual_loss("effnet", resolution=64)


# --- simple losses -----------------------------------------------------------------------------------


def test_l1_hand_values():
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    y = torch.tensor([[0.0, 0.0], [1.0, 3.0]])
    assert L.l1_loss(x, y).item() == pytest.approx((1 + 2 + 0.5 + 0) / 4)


def test_hinge_and_nonsaturating_hand_values():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - r) = 0, 0.5, 2     -> mean 2.5/3
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + f) = 0, 1, 2       -> mean 1
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (2.5 / 3 + 1.0))
    expected = np.mean([math.log1p(math.exp(-v)) for v in fake.tolist()])
    assert nonsaturating_g_loss(fake).item() == pytest.approx(expected, rel=1e-6)
    assert nonsaturating_g_loss(fake).item() == pytest.approx(-torch.log(torch.sigmoid(fake)).mean().item())


def test_adaptive_weight_is_the_gradient_norm_ratio():
    torch.manual_seed(0)
    w = torch.randn(3, 4, requires_grad=True)  # a tiny linear "decoder": its last (only) layer
    z = torch.randn(5, 4)
    target = torch.randn(5, 3)
    out = z @ w.t()
    rec = (out - target).abs().mean()
    g = -(out.sum(dim=1)).mean() * 0.1
    # by hand: d rec / dw = sign(out - target)^T z / (5*3); d g / dw = -0.1 * 1 z.sum(0) / 5
    grad_rec = torch.sign(out - target).detach().t() @ z / 15
    grad_g = -0.1 * torch.ones(3, 1) * z.sum(0, keepdim=True) / 5
    expected = grad_rec.norm() / (grad_g.norm() + 1e-6)  # the reference's eps (src/train_stage1.py:76)
    lam = adaptive_weight(rec, g, w)
    assert lam.item() == pytest.approx(expected.item(), rel=1e-5)
    assert not lam.requires_grad
    (rec + lam * g).backward()  # the graph was retained
    assert w.grad is not None


def test_adaptive_weight_is_capped():
    w = torch.randn(3, 4, requires_grad=True)
    out = torch.randn(5, 4) @ w.t()
    rec = out.abs().mean() * 100
    g = out.sum() * 1e-12  # tiny generator gradients: ||grad rec|| / eps alone is ~1e6
    assert adaptive_weight(rec, g, w, max_weight=1e4).item() == pytest.approx(1e4)
    assert adaptive_weight(rec, g, w, max_weight=50.0).item() == pytest.approx(50.0)


def test_adaptive_weight_eps_is_the_reference_1e_6():
    w = torch.ones(1, 1, requires_grad=True)
    x = torch.ones(1, 1)
    rec = (x @ w.t()).sum() * 2.0  # d rec / dw = 2
    g = (x @ w.t()).sum() * 0.0  # no generator gradient: lambda = 2 / eps
    assert adaptive_weight(rec, g, w, max_weight=1e9).item() == pytest.approx(2.0 / 1e-6, rel=1e-6)


def test_gan_schedule():
    assert gan_schedule(5, 6, 8) == (False, False)
    assert gan_schedule(7, 6, 8) == (True, False)
    assert gan_schedule(9, 6, 8) == (True, True)


# --- perceptual ----------------------------------------------------------------------------------------


def test_effnet_taps_are_stage_ends(effnet_loss):
    assert effnet_loss.taps == [3, 5, 11, 16]
    channels = effnet_loss.effnet.block_channels()
    assert [channels[t - 1] for t in effnet_loss.taps] == [24, 40, 112, 320]


def test_effnet_perceptual_orders_distortions(effnet_loss, cat128):
    assert effnet_loss.name == "effnet-perceptual"
    torch.manual_seed(0)
    noise = torch.randn_like(cat128)
    mild = (cat128 + 0.05 * noise).clamp(0, 1)
    strong = (cat128 + 0.3 * noise).clamp(0, 1)
    same = effnet_loss(cat128, cat128).item()
    d_mild, d_strong = effnet_loss(mild, cat128).item(), effnet_loss(strong, cat128).item()
    assert abs(same) < 1e-6
    assert 0 < d_mild < d_strong


def test_effnet_perceptual_gradients_and_frozen(effnet_loss, cat128):
    x = (cat128 * 0.8).requires_grad_(True)
    effnet_loss.train()  # must stay in eval
    assert not effnet_loss.training and not effnet_loss.effnet.net.training
    effnet_loss(x, cat128).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in effnet_loss.parameters())


def test_effnet_perceptual_small_images(effnet_loss):
    torch.manual_seed(0)
    a = torch.rand(2, 3, 28, 28, requires_grad=True)
    d = effnet_loss(a, torch.rand(2, 3, 28, 28))
    assert d.ndim == 0 and d.item() > 0
    d.backward()
    assert a.grad.abs().sum() > 0


def test_build_perceptual_auto_and_lpips():
    ok, reason = L.lpips_available()
    assert isinstance(reason, str) and reason
    if ok:
        assert L.build_perceptual_loss("auto").name == "lpips"
    else:
        assert L.build_perceptual_loss("auto").name == "effnet-perceptual"
        with pytest.raises(UserError, match="lpips"):
            L.build_perceptual_loss("lpips")
    with pytest.raises(UserError):
        L.build_perceptual_loss("vgg")


def test_lpips_wiring_with_a_fake_package(monkeypatch, tmp_path):
    """With lpips importable and VGG weights cached, 'auto' builds LPIPS and feeds it [-1, 1]."""
    seen = {}

    class FakeLPIPS(torch.nn.Module):
        def __init__(self, net, verbose):
            super().__init__()
            seen["net"] = net
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, a, b):
            seen["range"] = (a.min().item(), a.max().item())
            return ((a - b) * self.w).abs().mean(dim=(1, 2, 3), keepdim=True)

    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=FakeLPIPS))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert not L.lpips_available()[0]  # package but no weights
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / L.LPIPS_BACKBONE_FILES["vgg"]).write_bytes(b"")
    assert L.lpips_available()[0]
    loss = L.build_perceptual_loss("lpips")
    assert loss.name == "lpips" and seen["net"] == "vgg"
    assert not any(p.requires_grad for p in loss.parameters())
    x = torch.zeros(1, 3, 4, 4)
    x[..., 0, 0] = 1.0
    assert loss(x, torch.zeros_like(x)).item() == pytest.approx(2.0 / 16)  # [0, 1] -> [-1, 1]
    assert seen["range"] == (-1.0, 1.0)


# --- DiffAugment -------------------------------------------------------------------------------------


def test_diff_augment_shape_grad_determinism_cutout():
    x = torch.rand(4, 3, 32, 32) + 0.5  # strictly positive: zeros can only come from cutout/padding
    x.requires_grad_(True)
    torch.manual_seed(1)
    a = diff_augment(x)
    torch.manual_seed(1)
    b = diff_augment(x)
    assert a.shape == x.shape
    assert torch.equal(a, b)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    torch.manual_seed(2)
    cut = diff_augment(x.detach(), "cutout")
    zero_frac = (cut == 0).all(dim=1).float().mean(dim=(1, 2))
    assert (zero_frac > 0.05).all()  # each image lost a patch (up to a quarter of it)
    assert (zero_frac <= 0.25 + 1e-6).all()
    with pytest.raises(UserError):
        diff_augment(x, "rotate")


# --- discriminator ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def disc() -> FeatureDiscriminator:
    torch.manual_seed(0)
    return FeatureDiscriminator(resolution=32, head_channels=32)


def test_discriminator_shape_and_trainable_params(disc):
    assert disc.num_heads == 4
    # per-token logits (the reference's form): every position of the stride 4, 8, 16, 32 maps at 32 px
    logits = disc(torch.rand(3, 3, 48, 48))
    assert logits.shape == (3, 8 * 8 + 4 * 4 + 2 * 2 + 1 * 1)
    disc.per_token = False  # the spatially averaged form: one logit per head
    try:
        means = disc(torch.rand(3, 3, 48, 48))
    finally:
        disc.per_token = True
    assert means.shape == (3, 4)
    trainable = {n for n, p in disc.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("heads.") for n in trainable)
    assert sum(p.numel() for p in disc.trainable_parameters()) == sum(p.numel() for p in disc.heads.parameters())
    assert all(not p.requires_grad for p in disc.backbone.parameters())


def test_discriminator_gradients_reach_images(disc):
    disc.train()
    images = torch.rand(2, 3, 64, 64, requires_grad=True)
    nonsaturating_g_loss(disc(images)).backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in disc.backbone.parameters())
    disc.zero_grad(set_to_none=True)


def test_discriminator_learns_photos_vs_noise(disc):
    real = torch.cat([_photo(n, 32) for n in ("chelsea", "astronaut", "coffee", "rocket")])
    torch.manual_seed(0)
    fake = torch.rand_like(real)

    def margin() -> float:
        disc.eval()
        with torch.no_grad():
            return (disc(real).mean() - disc(fake).mean()).item()

    before = margin()
    opt = torch.optim.Adam(disc.trainable_parameters(), lr=2e-3, betas=(0.5, 0.9))
    disc.train()
    for _ in range(4):
        opt.zero_grad(set_to_none=True)
        hinge_d_loss(disc(real), disc(fake)).backward()
        opt.step()
    after = margin()
    assert after > before + 1.0  # typically -1 -> +15 in four steps
    assert after > 0
