import math

import pytest
import torch

from genrep.rae.decoder import DECODER_SIZES, DecoderConfig, ViTDecoder
from genrep.rae.vit_parts import num_params, sincos_2d


@pytest.mark.parametrize("size", list(DECODER_SIZES))
def test_every_size_has_the_paper_dims_and_maps_grid_to_pixels(size):
    d = DECODER_SIZES[size]
    assert d.width % d.heads == 0 and d.width % 4 == 0
    if size in ("tiny", "S"):
        dec = ViTDecoder(DecoderConfig(latent_channels=320, grid=4, patch=7, size=size))
        out = dec(torch.randn(2, 320, 4, 4))
        assert out.shape == (2, 3, 28, 28)
        assert dec.cfg.image_size == 28


def test_paper_sizes():
    assert (DECODER_SIZES["B"].width, DECODER_SIZES["B"].depth, DECODER_SIZES["B"].heads, DECODER_SIZES["B"].mlp) == (
        768,
        12,
        12,
        3072,
    )
    assert (DECODER_SIZES["L"].width, DECODER_SIZES["L"].depth, DECODER_SIZES["L"].heads, DECODER_SIZES["L"].mlp) == (
        1024,
        24,
        16,
        4096,
    )
    assert (
        DECODER_SIZES["XL"].width,
        DECODER_SIZES["XL"].depth,
        DECODER_SIZES["XL"].heads,
        DECODER_SIZES["XL"].mlp,
    ) == (1152, 28, 16, 4096)


@pytest.mark.parametrize("size, paper_gflops", [("B", 22.2), ("L", 78.1), ("XL", 106.7)])
def test_paper_decoder_gflops_at_256px(size, paper_gflops):
    # DINOv2-B latent (768 x 16 x 16), patch 16 -> 256 px; the paper's GFLOPs count
    # multiply-accumulates of the linear layers (fvcore style, attention scores not counted)
    dec = ViTDecoder.__new__(ViTDecoder)
    dec.cfg = DecoderConfig(latent_channels=768, grid=16, patch=16, size=size)
    gmacs = dec.flops_per_image(include_attention=False) / 2 / 1e9
    assert gmacs == pytest.approx(paper_gflops, rel=0.005)
    assert dec.flops_per_image() > dec.flops_per_image(include_attention=False)


def test_unpatchify_puts_each_token_in_its_place():
    dec = ViTDecoder(DecoderConfig(latent_channels=8, grid=2, patch=3, size="tiny"))
    patches = torch.zeros(1, 4, 3 * 3 * 3)
    patches[0, 1] = 1.0  # token (row 0, col 1)
    img = dec.unpatchify(patches)
    assert img.shape == (1, 3, 6, 6)
    assert img[0, :, 0:3, 3:6].eq(1).all() and img.sum() == 27


def test_sincos_positions_are_fixed_and_distinct():
    pe = sincos_2d(16, 4)
    assert pe.shape == (16, 16)
    assert torch.allclose(pe[0, :4], torch.zeros(4))  # sin(0) on the row half, first quarter
    assert torch.allclose(pe[0, 4:8], torch.ones(4))  # cos(0)
    assert torch.cdist(pe, pe).add(torch.eye(16)).min() > 0.1
    dec = ViTDecoder(DecoderConfig(latent_channels=8, grid=4, patch=2, size="tiny"))
    assert "pos_embed" not in dict(dec.named_parameters())
    assert torch.equal(dec.pos_embed[0, 0], torch.zeros(192))  # the CLS slot


def test_wrong_latent_shape_is_rejected():
    dec = ViTDecoder(DecoderConfig(latent_channels=8, grid=4, patch=2, size="tiny"))
    with pytest.raises(ValueError, match="expects latents of shape"):
        dec(torch.randn(1, 8, 5, 5))


def test_tiny_and_s_parameter_counts():
    tiny = ViTDecoder(DecoderConfig(latent_channels=320, grid=4, patch=7, size="tiny"))
    s = ViTDecoder(DecoderConfig(latent_channels=320, grid=4, patch=7, size="S"))
    per_block = lambda w, m: 4 * w * w + 2 * w * m
    assert num_params(tiny) == pytest.approx(4 * per_block(192, 768), rel=0.15)
    assert num_params(s) == pytest.approx(12 * per_block(384, 1536), rel=0.1)
    assert math.isclose(
        s.flops_per_image() / tiny.flops_per_image(),
        12 * per_block(384, 1536) / (4 * per_block(192, 768)),
        rel_tol=0.15,
    )
