"""RAE stage-1 frozen encoders: the bundled EfficientNet and tiny random transformers ViTs (no hub)."""

import json

import pytest
import torch
import torch.nn.functional as F
import transformers

from genrep.core.bundled.effnet import MEAN as EFFNET_MEAN
from genrep.core.errors import UserError
from genrep.rae.encoders import (
    ENCODERS,
    FrozenEncoder,
    build_encoder,
    grid_to_tokens,
    hf_encoder_from_model,
    tokens_to_grid,
)

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}


def _frozen(enc: FrozenEncoder) -> None:
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training and not any(m.training for m in enc.modules())


def _randomise_final_ln(ln: torch.nn.LayerNorm) -> None:
    """Give the final LayerNorm a non-trivial affine, so that dropping it is observable."""
    torch.nn.init.normal_(ln.weight, 2.0, 0.5)
    torch.nn.init.normal_(ln.bias, 1.0, 0.5)


def _assert_plain_layernorm(ln: torch.nn.LayerNorm, latent: torch.Tensor) -> None:
    assert not ln.elementwise_affine and ln.weight is None and ln.bias is None
    tokens = grid_to_tokens(latent)  # per-token statistics over channels
    assert torch.allclose(tokens.mean(-1), torch.zeros(()), atol=1e-4)
    assert torch.allclose(tokens.var(-1, unbiased=False), torch.ones(()), atol=1e-2)


# ------------------------------------------------------------------------------------------------
# effnet-lite0 (bundled)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def effnet():
    return build_encoder("effnet-lite0")


def test_effnet_default_latent_is_320x4x4(effnet):
    assert effnet.name == "effnet-lite0" and effnet.input_size == 128
    assert effnet.latent_shape == (320, 4, 4)
    assert effnet.pixel_mean == EFFNET_MEAN
    for size in (28, 128):  # Fashion-MNIST-sized images are upsampled to 128
        z = effnet.encode(torch.rand(3, 3, size, size))
        assert z.shape == (3, 320, 4, 4) and z.dtype == torch.float32 and not z.requires_grad


def test_effnet_is_frozen_and_deterministic(effnet):
    _frozen(effnet)
    x = torch.rand(2, 3, 28, 28)
    assert torch.equal(effnet.encode(x), effnet.encode(x))
    with torch.enable_grad():
        assert not effnet.encode(x.requires_grad_()).requires_grad


def test_effnet_head_layer_and_224_input():
    head = build_encoder("effnet-lite0", layer="head")
    assert head.latent_shape == (1280, 4, 4)
    assert head.encode(torch.rand(1, 3, 28, 28)).shape == (1, 1280, 4, 4)
    big = build_encoder("effnet-lite0", input_size=224)
    assert big.latent_shape == (320, 7, 7)
    assert big.encode(torch.rand(1, 3, 28, 28)).shape == (1, 320, 7, 7)


def test_effnet_spec_round_trips(effnet):
    spec = json.loads(json.dumps(effnet.spec()))
    assert spec["name"] == "effnet-lite0" and spec["layer"] == "block16" and spec["input_size"] == 128
    again = build_encoder(**spec)
    x = torch.rand(2, 3, 28, 28)
    assert torch.equal(again.encode(x), effnet.encode(x))


def test_preprocess_resizes_and_normalises(effnet):
    x = torch.rand(2, 3, 28, 28)
    p = effnet.preprocess(x)
    assert p.shape == (2, 3, 128, 128)
    same = effnet.preprocess(torch.full((1, 3, 128, 128), 127.0 / 255.0))  # no resize at input_size
    assert torch.allclose(same, torch.zeros(()), atol=1e-6)
    assert effnet.preprocess(torch.rand(1, 3, 300, 200)).shape == (1, 3, 128, 128)


def test_resize_is_the_references_plain_bicubic_unless_asked(effnet):
    x = torch.rand(2, 3, 300, 200)
    plain = F.interpolate(x, size=(128, 128), mode="bicubic", align_corners=False)  # rae.py:81-82
    assert torch.equal(effnet.resize(x), plain)  # no antialiasing, no clamping
    assert effnet.resize(x).min() < 0 or effnet.resize(x).max() > 1  # bicubic overshoots, left as is
    old = build_encoder("effnet-lite0", resize="bicubic-antialias-clamp")
    smooth = old.resize(x)
    assert torch.equal(smooth, F.interpolate(x, size=(128, 128), mode="bicubic", antialias=True).clamp(0, 1))
    assert old.spec()["resize"] == "bicubic-antialias-clamp" and "resize" not in effnet.spec()
    assert torch.equal(build_encoder(**old.spec()).resize(x), smooth)
    with pytest.raises(UserError, match="unknown resize 'area'"):
        build_encoder("effnet-lite0", resize="area")


# ------------------------------------------------------------------------------------------------
# transformers encoders, tiny random configs
# ------------------------------------------------------------------------------------------------


def _tiny_dinov2():
    torch.manual_seed(0)
    cfg = transformers.Dinov2WithRegistersConfig(
        **TINY, mlp_ratio=2, patch_size=14, image_size=56, num_register_tokens=4
    )
    model = transformers.Dinov2WithRegistersModel(cfg)
    _randomise_final_ln(model.layernorm)
    return model


def test_dinov2_drops_cls_and_registers_and_the_ln_affine():
    model = _tiny_dinov2()
    enc = hf_encoder_from_model("dinov2-reg-s", model, input_size=56)
    _frozen(enc)
    assert enc.latent_shape == (32, 4, 4)
    assert enc.pixel_mean == (0.485, 0.456, 0.406) and enc.pixel_std == (0.229, 0.224, 0.225)
    x = torch.rand(2, 3, 64, 64)
    z = enc.encode(x)
    assert z.shape == (2, 32, 4, 4)
    with torch.no_grad():
        out = model(pixel_values=enc.preprocess(x)).last_hidden_state
    assert out.shape[1] == 1 + 4 + 16  # CLS + 4 registers + 4x4 patches
    assert torch.equal(z, tokens_to_grid(out[:, 1 + 4 :]))
    assert torch.equal(z[:, :, 1, 2], out[:, 1 + 4 + 1 * 4 + 2])  # row-major patch order
    _assert_plain_layernorm(model.layernorm, z)


def test_dinov2_register_count_comes_from_config():
    torch.manual_seed(0)
    cfg = transformers.Dinov2WithRegistersConfig(
        **TINY, mlp_ratio=2, patch_size=14, image_size=56, num_register_tokens=2
    )
    model = transformers.Dinov2WithRegistersModel(cfg)
    enc = hf_encoder_from_model("dinov2-reg-s", model, input_size=56)
    x = torch.rand(1, 3, 56, 56)
    with torch.no_grad():
        out = model(pixel_values=enc.preprocess(x)).last_hidden_state
    assert torch.equal(enc.encode(x), tokens_to_grid(out[:, 3:]))


def test_siglip_keeps_every_token():
    torch.manual_seed(0)
    cfg = transformers.SiglipVisionConfig(**TINY, intermediate_size=64, image_size=16, patch_size=4)
    model = transformers.SiglipVisionModel(cfg)
    _randomise_final_ln(model.post_layernorm)
    enc = hf_encoder_from_model("siglip2-b", model, input_size=16)
    _frozen(enc)
    assert enc.latent_shape == (32, 4, 4) and enc.pixel_mean == (0.5, 0.5, 0.5)
    x = torch.rand(2, 3, 28, 28)
    z = enc.encode(x)
    with torch.no_grad():
        out = model(pixel_values=enc.preprocess(x)).last_hidden_state
    assert out.shape[1] == 16  # no CLS in SigLIP
    assert torch.equal(z, tokens_to_grid(out))
    _assert_plain_layernorm(model.post_layernorm, z)


def test_mae_keeps_all_patches_in_order_and_drops_cls():
    torch.manual_seed(0)
    cfg = transformers.ViTMAEConfig(**TINY, intermediate_size=64, image_size=16, patch_size=4, mask_ratio=0.75)
    model = transformers.ViTMAEModel(cfg)
    _randomise_final_ln(model.layernorm)
    enc = hf_encoder_from_model("mae-b", model, input_size=16)
    _frozen(enc)
    assert model.config.mask_ratio == 0.0 and enc.latent_shape == (32, 4, 4)
    x = torch.rand(2, 3, 28, 28)
    z = enc.encode(x)
    pixels = enc.preprocess(x)
    with torch.no_grad():
        direct = model(pixel_values=pixels, noise=torch.arange(16.0).expand(2, 16), interpolate_pos_encoding=True)
        shuffled = model(pixel_values=pixels, noise=torch.rand(2, 16), interpolate_pos_encoding=True)
    assert direct.last_hidden_state.shape[1] == 1 + 16 and not direct.mask.any()
    assert torch.equal(direct.ids_restore, torch.arange(16).expand(2, 16))
    assert torch.equal(z, tokens_to_grid(direct.last_hidden_state[:, 1:]))
    # a random token order, put back with ids_restore, gives the same grid: z is in patch order
    idx = shuffled.ids_restore.unsqueeze(-1).expand(-1, -1, 32)
    unshuffled = torch.gather(shuffled.last_hidden_state[:, 1:], 1, idx)
    assert torch.allclose(z, tokens_to_grid(unshuffled), atol=1e-5)
    _assert_plain_layernorm(model.layernorm, z)


def test_hf_encoder_loads_from_a_local_directory_and_spec_round_trips(tmp_path):
    model = _tiny_dinov2()
    model.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.2, 0.2]})
    )
    enc = build_encoder("dinov2-reg-b", source=str(tmp_path), input_size=56)
    assert enc.pixel_mean == (0.5, 0.4, 0.3) and enc.pixel_std == (0.2, 0.2, 0.2)  # read from the processor config
    assert enc.latent_shape == (32, 4, 4)
    spec = json.loads(json.dumps(enc.spec()))
    assert spec["source"] == str(tmp_path) and spec["input_size"] == 56
    again = build_encoder(**spec)
    x = torch.rand(2, 3, 40, 40)
    assert torch.equal(again.encode(x), enc.encode(x))
    _assert_plain_layernorm(enc.net.layernorm, enc.encode(x))


# ------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------


def test_unknown_encoder_names_the_known_ones():
    with pytest.raises(UserError) as err:
        build_encoder("dinov3-b")
    assert "dinov3-b" in str(err.value)
    assert all(name in str(err.value) for name in ENCODERS)


def test_missing_source_is_a_one_line_user_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(UserError) as err:
        build_encoder("dinov2-reg-b", source=str(missing))
    msg = str(err.value)
    assert msg.startswith(f"cannot load encoder 'dinov2-reg-b' from '{missing}': ")
    assert "\n" not in msg and err.value.__suppress_context__


def test_unknown_option_and_layer_are_user_errors():
    with pytest.raises(UserError, match="layer"):
        build_encoder("effnet-lite0", layer="block3x")
    with pytest.raises(UserError, match="unknown option"):
        build_encoder("mae-b", layer="head")


def _tiny_siglip_full():
    torch.manual_seed(0)
    vision = {**TINY, "intermediate_size": 64, "image_size": 16, "patch_size": 4}
    text = {**TINY, "intermediate_size": 64, "vocab_size": 99, "max_position_embeddings": 16}
    return transformers.SiglipModel(transformers.SiglipConfig(vision_config=vision, text_config=text))


def _tiny_mae_pretraining():
    torch.manual_seed(0)
    cfg = transformers.ViTMAEConfig(
        **TINY,
        intermediate_size=64,
        image_size=16,
        patch_size=4,
        decoder_hidden_size=16,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
    )
    return transformers.ViTMAEForPreTraining(cfg)


@pytest.mark.parametrize(("name", "make"), [("siglip2-b", _tiny_siglip_full), ("mae-b", _tiny_mae_pretraining)])
def test_full_checkpoints_load_as_their_vision_encoder(tmp_path, name, make):
    """siglip2-b checkpoints are SiglipModel (vision + text) and mae-b ViTMAEForPreTraining (encoder +
    decoder): build_encoder loads only the vision encoder, with the same weights as the full model's."""
    model = make()
    model.save_pretrained(tmp_path)
    loaded = build_encoder(name, source=str(tmp_path), input_size=16)
    wrapped = hf_encoder_from_model(name, model, input_size=16)
    assert loaded.latent_shape == wrapped.latent_shape == (32, 4, 4)
    x = torch.rand(2, 3, 28, 28)
    assert torch.allclose(loaded.encode(x), wrapped.encode(x), atol=1e-6)


def test_effnet_token_norm_makes_each_token_zero_mean_unit_variance():
    x = torch.rand(3, 3, 28, 28)
    normed = build_encoder("effnet-lite0").encode(x)
    raw = build_encoder("effnet-lite0", token_norm=False).encode(x)
    assert torch.allclose(normed.mean(1), torch.zeros(3, 4, 4), atol=1e-4)
    assert torch.allclose(normed.var(1, unbiased=False), torch.ones(3, 4, 4), atol=1e-3)
    assert raw.var(1).mean() > 2.0  # the raw block-16 activations are not unit scale
    expected = torch.nn.functional.layer_norm(raw.permute(0, 2, 3, 1), (320,), eps=1e-6).permute(0, 3, 1, 2)
    assert torch.allclose(normed, expected, atol=1e-5)
