"""train-decoder's reference recipe pieces: DiffAug, per-token hinge, 8-bit D input, adaptive weight."""

import json
from pathlib import Path

import pytest
import torch

from genrep.rae.diffaug import reference_diff_augment

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rae_reference" / "diffaug"
DIFFAUG_CASES = sorted(p.stem for p in FIXTURES.glob("*.json"))


def test_diffaug_fixture_has_the_released_setting():
    assert "released" in DIFFAUG_CASES and len(DIFFAUG_CASES) >= 4


@pytest.mark.parametrize("case", DIFFAUG_CASES)
def test_reference_diffaug_equals_the_reference_output(case):
    rec = json.loads((FIXTURES / f"{case}.json").read_text())
    x = torch.tensor(rec["input"])
    torch.manual_seed(rec["seed"])
    y = reference_diff_augment(x, rec["prob"], rec["cutout"])
    torch.testing.assert_close(y, torch.tensor(rec["output"]), rtol=1e-6, atol=1e-6)


def test_reference_diffaug_order_is_translation_colour_cutout():
    """Translation before colour: the zero border a shift brings in is then moved by the colour ops,
    so it is not 0 afterwards; with colour first (DiffAugment's policy order) it would stay 0."""
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    gen = torch.Generator().manual_seed(3)
    y = reference_diff_augment(x, 1.0, 0.0, generator=gen)
    gen = torch.Generator().manual_seed(3)
    torch.rand(3, generator=gen)
    r = torch.rand(7, 4, 1, 1, generator=gen)
    shift_h = (r[0] * 5).floor().long() - 2  # round(16 * 0.125) = 2
    i = int((shift_h.view(-1) > 0).nonzero()[0])  # an image shifted up: its last row came from the border
    row = y[i, :, -1, :]
    assert row.abs().max() > 0 and torch.allclose(row, row[:, :1].expand_as(row))  # a uniform colour, not data
    # cutout 0 (the released config) leaves no zeroed square: the same draws without cutout agree
    gen_a, gen_b = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    torch.testing.assert_close(
        reference_diff_augment(x, 1.0, 0.0, generator=gen_a), reference_diff_augment(x, 1.0, 1e-9, generator=gen_b)
    )


def test_reference_diffaug_is_differentiable_and_float32():
    x = (torch.rand(2, 3, 8, 8, dtype=torch.float64) * 2 - 1).requires_grad_()
    y = reference_diff_augment(x, 1.0, 0.2, generator=torch.Generator().manual_seed(0))
    assert y.dtype == torch.float32
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# --- GAN losses --------------------------------------------------------------------------------------

from genrep.rae.gan import (  # noqa: E402
    generator_loss,
    hinge_d_loss,
    hinge_g_loss,
    quantize_8bit,
    reference_d_loss,
)


def test_hinge_on_per_token_logits_by_hand():
    # two images, three tokens each: the loss averages over every token, not over per-image means
    real = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])  # relu(1 - r): 0 .5 2 | 1 0 0 -> 3.5 / 6
    fake = torch.tensor([[-2.0, 0.0, 1.0], [-0.5, 2.0, -3.0]])  # relu(1 + f): 0 1 2 | .5 3 0 -> 6.5 / 6
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (3.5 / 6 + 6.5 / 6))
    # the same logits averaged per image first would give another value (what genrep did before)
    pooled = hinge_d_loss(real.mean(1), fake.mean(1)).item()
    assert pooled != pytest.approx(0.5 * (3.5 / 6 + 6.5 / 6))
    assert hinge_g_loss(fake).item() == pytest.approx(-fake.mean().item())  # the reference's vanilla_g_loss
    assert generator_loss("hinge", fake).item() == pytest.approx(-fake.mean().item())
    expected = torch.nn.functional.softplus(-fake).mean().item()
    assert generator_loss("non-saturating", fake).item() == pytest.approx(expected)


def test_quantize_8bit_by_hand():
    x = torch.tensor([-1.5, -1.0, -0.999, 0.0, 0.003, 0.5, 1.0, 2.0])
    want = torch.tensor([0, 0, 0, 128, 128, 191, 255, 255], dtype=torch.float32) / 127.5 - 1.0
    # 0 -> round(127.5) = 128 (round half to even); 0.5 -> round(191.25) = 191
    torch.testing.assert_close(quantize_8bit(x), want, rtol=0, atol=1e-7)
    levels = quantize_8bit(torch.linspace(-1.2, 1.2, 1001))
    assert torch.unique(torch.round((levels + 1) * 127.5)).numel() <= 256
    assert torch.equal(quantize_8bit(levels), levels)  # idempotent: already 8-bit


class _Recorder(torch.nn.Module):
    """A discriminator stand-in that records its inputs and returns one logit per pixel."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x01):
        self.seen.append(x01.detach().clone())
        return x01.mean(1).flatten(1) * 4 - 2


def test_reference_d_step_sees_the_8bit_fake_and_augments_each_side():
    torch.manual_seed(0)
    real = torch.randint(0, 256, (2, 3, 4, 4)).float() / 255
    fake = torch.rand(2, 3, 4, 4) * 1.2 - 0.1  # a decode, not clamped, not on the 8-bit grid
    calls = []

    def augment(x):
        calls.append(x.detach().clone())
        return x

    disc = _Recorder()
    loss, acc = reference_d_loss(disc, real, fake, augment)
    assert len(calls) == 2  # fake first, then real, each augmented on its own (reference order)
    torch.testing.assert_close(calls[0], quantize_8bit(fake * 2 - 1))
    torch.testing.assert_close(calls[1], real * 2 - 1)
    fake_in, real_in = disc.seen
    torch.testing.assert_close(fake_in, (quantize_8bit(fake * 2 - 1) + 1) / 2)
    lr_, lf = real_in.mean(1).flatten(1) * 4 - 2, fake_in.mean(1).flatten(1) * 4 - 2
    assert loss.item() == pytest.approx(hinge_d_loss(lr_, lf).item())
    assert acc.item() == pytest.approx((lr_ > lf).float().mean().item())
