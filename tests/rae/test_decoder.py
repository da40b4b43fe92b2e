import math

import pytest
import torch

from genrep.rae.decoder import DECODER_SIZES, DecoderConfig, ViTDecoder, decoder_positions
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


def test_decoder_positions_put_the_column_first_like_the_reference():
    # token 1 is (row 0, col 1): in the reference's table its first half encodes the column
    row_first, col_first = sincos_2d(16, 4), sincos_2d(16, 4, first="col")
    assert torch.equal(col_first[:, :8], row_first[:, 8:]) and torch.equal(col_first[:, 8:], row_first[:, :8])
    assert torch.allclose(col_first[1, :4], torch.sin(torch.tensor(1.0) / 10000 ** (torch.arange(4) / 4)))
    dec = ViTDecoder(DecoderConfig(latent_channels=8, grid=4, patch=2, size="tiny"))
    assert torch.equal(dec.pos_embed[0, 1:], sincos_2d(192, 4, first="col"))
    legacy = ViTDecoder(DecoderConfig(latent_channels=8, grid=4, patch=2, size="tiny", pos_order="row-col"))
    assert torch.equal(legacy.pos_embed[0, 1:], sincos_2d(192, 4))


def test_reference_defaults_eps_init_and_cls():
    torch.manual_seed(0)
    dec = ViTDecoder(DecoderConfig(latent_channels=8, grid=4, patch=2, size="tiny"))
    assert dec.norm.eps == 1e-12 and dec.blocks[0].norm1.eps == 1e-12 and dec.blocks[0].qkv.bias is not None
    assert torch.equal(dec.cls_token, torch.zeros(1, 1, 192))
    assert dec.embed.bias.abs().max() > 0  # PyTorch's default Linear init (the reference re-initialises nothing)
    xavier = ViTDecoder(DecoderConfig(latent_channels=8, grid=4, patch=2, size="tiny", init="xavier"))
    assert torch.equal(xavier.embed.bias, torch.zeros(192))


def test_positions_travel_in_the_state_dict_and_old_state_dicts_still_load():
    dec = ViTDecoder(DecoderConfig(latent_channels=8, grid=4, patch=2, size="tiny"))
    state = dec.state_dict()
    assert "pos_embed" in state
    state["pos_embed"] = state["pos_embed"] + 1e-6  # a converted checkpoint's own table is kept as is
    dec.load_state_dict(state)
    assert torch.equal(dec.pos_embed, state["pos_embed"])
    del state["pos_embed"]  # written before the table was saved: the fixed table
    dec.load_state_dict(state)
    assert torch.equal(dec.pos_embed, decoder_positions(dec.cfg))


def test_other_grid_is_resized_or_rejected():
    dec = ViTDecoder(DecoderConfig(latent_channels=8, grid=4, patch=2, size="tiny"))
    assert dec(torch.randn(1, 8, 5, 5)).shape == (1, 3, 8, 8)  # bilinear resize after the embedding
    strict = ViTDecoder(DecoderConfig(latent_channels=8, grid=4, patch=2, size="tiny", other_grid="error"))
    with pytest.raises(ValueError, match="expects latents of shape"):
        strict(torch.randn(1, 8, 5, 5))
    for bad in (torch.randn(1, 7, 4, 4), torch.randn(1, 8, 4, 5)):
        with pytest.raises(ValueError, match="expects latents of shape"):
            dec(bad)


def test_custom_size():
    cfg = DecoderConfig(latent_channels=8, grid=2, patch=2, size="custom", width=32, depth=2, heads=2, mlp=64)
    dec = ViTDecoder(cfg)
    assert len(dec.blocks) == 2 and dec.head.in_features == 32
    assert dec(torch.randn(1, 8, 2, 2)).shape == (1, 3, 4, 4)
    with pytest.raises(ValueError, match="needs positive width"):
        ViTDecoder(DecoderConfig(latent_channels=8, grid=2, patch=2, size="custom"))
    with pytest.raises(ValueError, match="is fixed"):
        ViTDecoder(DecoderConfig(latent_channels=8, grid=2, patch=2, size="tiny", width=32))


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
