"""genrep's stage 1 against golden outputs of the RAE reference code (bytetriper/RAE src/stage1).

The fixtures in tests/fixtures/rae_reference/stage1/ were written by
tests/fixtures/rae_reference_stage1.py from the reference classes with tiny random weights; here
they are read only through :mod:`genrep.rae.convert_stage1`, as a user's released files would be.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from genrep.core.errors import UserError
from genrep.rae import load_rae
from genrep.rae.convert_stage1 import (
    decoder_config_from_reference,
    decoder_state_from_reference,
    decoder_state_to_reference,
    load_reference_checkpoint,
    rae_from_reference,
    reference_decoder_shapes,
)
from genrep.rae.decoder import DECODER_SIZES, ViTDecoder
from genrep.rae.encoders import tokens_to_grid
from genrep.rae.noise import add_latent_noise
from genrep.rae.vit_parts import num_params

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rae_reference" / "stage1"
TOL = 1e-5


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / "reference.safetensors"))


@pytest.fixture(scope="module")
def params() -> dict:
    return yaml.safe_load((FIXTURES / "stage1.yaml").read_text())["stage_1"]["params"]


@pytest.fixture(scope="module")
def rae(params):
    return rae_from_reference(params, FIXTURES, str(FIXTURES / "stage1.yaml"))


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).abs().max())


def _decoder(latent_channels=16, grid=4, patch=2) -> tuple[ViTDecoder, dict]:
    where = str(FIXTURES / "decoder" / "config.json")
    cfg = decoder_config_from_reference(json.loads(Path(where).read_text()), latent_channels, grid, patch, where)
    state = load_reference_checkpoint(FIXTURES / "decoder" / "model.pt")
    dec = ViTDecoder(cfg)
    dec.load_state_dict(decoder_state_from_reference(state, cfg, "model.pt"))
    return dec.eval(), state


# --------------------------------------------------------------------------------------------
# parity
# --------------------------------------------------------------------------------------------


def test_decoder_matches_the_reference_generaldecoder(ref):
    dec, _ = _decoder()
    assert dec.cfg.size == "custom" and dec.cfg.layer_norm_eps == 1e-12 and dec.cfg.pos_order == "col-row"
    with torch.no_grad():
        assert _diff(dec.patches(ref["decoder_in"]), ref["decoder_logits"]) <= TOL
        assert _diff(dec(ref["decoder_in"]), ref["decoder_pixels"]) <= TOL
        assert _diff(dec.patches(ref["decoder_in_3x3"]), ref["decoder_logits_3x3"]) <= TOL  # interpolate_latent


def test_decoder_state_round_trips_to_the_reference_format():
    dec, state = _decoder()
    back = decoder_state_to_reference(dec.state_dict(), dec.cfg)
    assert list(back) == list(state)  # the reference's keys, in its order
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_rae_decode_normalisation_and_encode_match_the_reference(rae, ref):
    assert rae._encoder is None  # nothing of the encoder is loaded to decode
    with torch.no_grad():
        assert _diff(rae.decode(ref["decode_in"]), ref["decode_out"]) <= TOL
        denorm = rae.stats.denormalize(ref["decode_in"]).flatten(2).transpose(1, 2)
        assert _diff(denorm, ref["denormalized_tokens"]) <= TOL
        assert _diff(rae.stats.normalize(tokens_to_grid(ref["encode_tokens"])), ref["encode_out"]) <= TOL
    assert rae._encoder is None
    assert rae.pixel_mean.flatten().tolist() == pytest.approx([0.45, 0.5, 0.55])  # the processor config's
    for name in ("encode", "encode_same"):  # 20 x 28 is resized to 56 x 56; 56 x 56 is not
        with torch.no_grad():
            assert _diff(rae.encoder.preprocess(ref[f"{name}_in"]), ref[f"{name}_pixels"]) <= TOL
            assert _diff(rae.encoder.encode(ref[f"{name}_in"]), tokens_to_grid(ref[f"{name}_tokens"])) <= TOL
            assert _diff(rae.encode(ref[f"{name}_in"]), ref[f"{name}_out"]) <= TOL


def test_noise_matches_the_reference_noising_for_the_same_seed(ref):
    z = tokens_to_grid(ref["encode_tokens"])
    noisy = add_latent_noise(z, 0.8, generator=torch.Generator().manual_seed(7))  # noise_tau 0.8, seed 7
    assert _diff(noisy, tokens_to_grid(ref["noised_tokens"])) <= TOL


def test_converted_rae_saves_and_loads_offline(rae, ref, tmp_path):
    rae.save_pretrained(tmp_path / "rae")
    again = load_rae(tmp_path / "rae")
    assert again._encoder is None and again.encoder_spec == rae.encoder_spec
    assert again.decoder.cfg == rae.decoder.cfg
    with torch.no_grad():
        assert torch.equal(again.decode(ref["decode_in"]), rae.decode(ref["decode_in"]))


# --------------------------------------------------------------------------------------------
# the released decoders' shapes
# --------------------------------------------------------------------------------------------


def test_released_xl_decoder_converts_strictly_and_loads():
    shapes = json.loads((FIXTURES / "xl_decoder_shapes.json").read_text())
    config = {
        "decoder_hidden_size": 1152,
        "decoder_num_hidden_layers": 28,
        "decoder_num_attention_heads": 16,
        "decoder_intermediate_size": 4096,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
        "qkv_bias": True,
        "num_channels": 3,
        "patch_size": "SHOULD BE RELOADED",
    }  # configs/decoder/ViTXL/config.json, the keys genrep reads
    cfg = decoder_config_from_reference(config, shapes["latent_channels"], shapes["grid"], shapes["patch"], "ViTXL")
    assert cfg.size == "XL"
    expected = {k: tuple(v) for k, v in shapes["state"].items()}
    assert reference_decoder_shapes(cfg) == expected
    with torch.device("meta"):
        dec = ViTDecoder(cfg)
    state = {k: torch.empty(v, device="meta") for k, v in expected.items()}
    mine = decoder_state_from_reference(state, cfg, "model.pt")
    dec.load_state_dict(mine, strict=True, assign=True)
    counts = shapes["param_counts"]["ViTXL"]
    assert num_params(dec) == counts["trainable"] == 415_056_640
    assert num_params(dec) + dec.pos_embed.numel() == counts["all"]


@pytest.mark.parametrize("name, size", [("ViTB", "B"), ("ViTL", "L"), ("ViTXL", "XL")])
def test_b_l_xl_reproduce_the_reference_parameter_counts(name, size):
    counts = json.loads((FIXTURES / "xl_decoder_shapes.json").read_text())["param_counts"][name]
    d = DECODER_SIZES[size]
    config = {
        "decoder_hidden_size": d.width,
        "decoder_num_hidden_layers": d.depth,
        "decoder_num_attention_heads": d.heads,
        "decoder_intermediate_size": d.mlp,
    }
    with torch.device("meta"):
        dec = ViTDecoder(decoder_config_from_reference(config, 768, 16, 16, name))
    assert dec.cfg.size == size
    assert num_params(dec) == counts["trainable"]
    assert num_params(dec) + dec.pos_embed.numel() == counts["all"]


# --------------------------------------------------------------------------------------------
# bad inputs: one line, naming the file and the key
# --------------------------------------------------------------------------------------------


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_checkpoint_with_an_extra_a_missing_or_a_misshapen_key_is_refused():
    dec, state = _decoder()
    cfg = dec.cfg
    with pytest.raises(UserError) as exc:
        decoder_state_from_reference({**state, "decoder_layers.2.layernorm_before.weight": torch.ones(32)}, cfg, "m.pt")
    assert (
        _one_line(exc)
        == "m.pt: unexpected key 'decoder_layers.2.layernorm_before.weight' (not a tensor of the custom decoder)"
    )
    missing = {k: v for k, v in state.items() if k != "decoder_layers.1.attention.attention.key.bias"}
    with pytest.raises(UserError) as exc:
        decoder_state_from_reference(missing, cfg, "m.pt")
    assert _one_line(exc) == "m.pt: missing key 'decoder_layers.1.attention.attention.key.bias'"
    with pytest.raises(UserError) as exc:
        decoder_state_from_reference({**state, "decoder_pred.weight": torch.zeros(12, 31)}, cfg, "m.pt")
    assert _one_line(exc) == "m.pt: 'decoder_pred.weight' has shape [12, 31], expected [12, 32]"
    with pytest.raises(UserError, match="m.pt: a training checkpoint"):
        decoder_state_from_reference({"model": state, "ema": state}, cfg, "m.pt")


def test_a_wrong_latent_width_is_caught_by_the_shape_check():
    where = str(FIXTURES / "decoder" / "config.json")
    cfg = decoder_config_from_reference(json.loads(Path(where).read_text()), 24, 4, 2, where)
    state = load_reference_checkpoint(FIXTURES / "decoder" / "model.pt")
    with pytest.raises(UserError, match=r"model.pt: 'decoder_embed.weight' has shape \[32, 16\], expected \[32, 24\]"):
        decoder_state_from_reference(state, cfg, "model.pt")


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"decoder_num_hidden_layers": None}, "config.json: 'decoder_num_hidden_layers' is missing or not an integer"),
        ({"hidden_act": "relu"}, "config.json: 'hidden_act' is 'relu'"),
        ({"hidden_dropout_prob": 0.1}, "config.json: 'hidden_dropout_prob' is 0.1"),
        ({"decoder_num_attention_heads": 3}, "config.json: decoder_hidden_size 32 must be"),
    ],
)
def test_bad_decoder_config_json(edit, message):
    config = json.loads((FIXTURES / "decoder" / "config.json").read_text())
    config = {k: v for k, v in {**config, **edit}.items() if v is not None}
    with pytest.raises(UserError, match=message) as exc:
        decoder_config_from_reference(config, 16, 4, 2, "config.json")
    _one_line(exc)


@pytest.mark.parametrize(
    "key", ["encoder_cls", "encoder_params", "decoder_config_path", "normalization_stat_path", "encoder_input_size"]
)
def test_yaml_block_missing_a_field(params, key):
    block = {k: v for k, v in params.items() if k != key}
    with pytest.raises(UserError) as exc:
        rae_from_reference(block, FIXTURES, "stage1.yaml")
    assert _one_line(exc) == f"stage1.yaml: stage_1.params.{key} is missing"


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"encoder_cls": "Dinov3"}, "stage1.yaml: stage_1.params.encoder_cls 'Dinov3' is not a reference encoder"),
        ({"encoder_params": {"normalize": True}}, "stage1.yaml: stage_1.params.encoder_params.dinov2_path is missing"),
        ({"encoder_params": {"dinov2_path": "encoder", "normalize": False}}, "encoder_params.normalize is not true"),
        ({"reshape_to_2d": False}, "stage1.yaml: stage_1.params.reshape_to_2d must be true"),
        ({"encoder_input_size": 50}, "encoder_input_size 50 is not a multiple of the encoder patch 14"),
        ({"encoder_input_size": "56"}, "stage1.yaml: stage_1.params.encoder_input_size has the wrong type"),
        ({"lr": 1}, "stage1.yaml: stage_1.params.lr is not a parameter of the reference RAE"),
        ({"pretrained_decoder_path": "nope.pt"}, "nope.pt: file not found"),
        ({"decoder_patch_size": 4}, "'decoder_pred.weight' has shape \\[12, 32\\], expected \\[48, 32\\]"),
    ],
)
def test_bad_yaml_blocks(params, edit, message):
    with pytest.raises(UserError, match=message) as exc:
        rae_from_reference({**params, **edit}, FIXTURES, "stage1.yaml")
    _one_line(exc)


def test_null_paths_give_a_random_decoder_and_no_normalisation(params, ref):
    rae = rae_from_reference(
        {**params, "pretrained_decoder_path": None, "normalization_stat_path": None}, FIXTURES, "stage1.yaml"
    )
    z = ref["decode_in"]
    assert torch.equal(rae.stats.normalize(z), z)


def test_released_yaml_blocks_name_encoders_genrep_knows(tmp_path):
    # the shape of configs/stage1/pretrained/DINOv2-B.yaml, with the decoder and statistics made here
    decoder_dir = tmp_path / "configs" / "decoder" / "ViTXL"
    decoder_dir.mkdir(parents=True)
    shutil.copy(FIXTURES / "decoder" / "config.json", decoder_dir / "config.json")
    block = {
        "encoder_cls": "Dinov2withNorm",
        "encoder_config_path": "facebook/dinov2-with-registers-base",
        "encoder_input_size": 224,
        "encoder_params": {"dinov2_path": "facebook/dinov2-with-registers-base", "normalize": True},
        "decoder_config_path": "configs/decoder/ViTXL",
        "pretrained_decoder_path": None,
        "noise_tau": 0.0,
        "reshape_to_2d": True,
        "normalization_stat_path": None,
    }
    rae = rae_from_reference(block, tmp_path, "DINOv2-B.yaml")
    assert (
        rae.encoder_spec["name"] == "dinov2-reg-b"
        and rae.encoder_spec["source"] == block["encoder_params"]["dinov2_path"]
    )
    assert rae.latent_shape == (768, 16, 16) and rae.image_size == 256
    assert rae.pixel_std.flatten().tolist() == pytest.approx([0.229, 0.224, 0.225])
    assert rae.decode(torch.zeros(1, 768, 16, 16)).shape == (1, 3, 256, 256)  # offline: no encoder weights
    siglip = {**block, "encoder_cls": "SigLIP2wNorm", "encoder_input_size": 256}
    siglip["encoder_config_path"] = "google/siglip2-base-patch16-256"
    siglip["encoder_params"] = {"model_name": "google/siglip2-base-patch16-256"}
    rae = rae_from_reference(siglip, tmp_path, "SigLIP2.yaml")
    assert rae.encoder_spec["name"] == "siglip2-b" and rae.pixel_mean.flatten().tolist() == [0.5, 0.5, 0.5]


def test_genrep_rae_directories_from_before_the_reference_decoder_still_decode_the_same(tmp_path):
    from safetensors.torch import save_file

    from genrep.rae.autoencoder import RAE
    from genrep.rae.decoder import DecoderConfig
    from genrep.rae.stats import LatentStats

    torch.manual_seed(0)
    old = DecoderConfig(latent_channels=320, grid=4, patch=7, size="tiny", layer_norm_eps=1e-6, pos_order="row-col")
    spec = {"name": "effnet-lite0", "source": "bundled", "input_size": 128}
    rae = RAE(spec, LatentStats(torch.randn(320, 4, 4), torch.rand(320, 4, 4)), ViTDecoder(old)).eval()
    rae.save_pretrained(tmp_path)
    # what an earlier genrep wrote: no new decoder fields, no position table among the weights
    config = json.loads((tmp_path / "rae_config.json").read_text())
    config["decoder"] = {k: config["decoder"][k] for k in ("latent_channels", "grid", "patch", "size", "out_channels")}
    (tmp_path / "rae_config.json").write_text(json.dumps(config))
    tensors = load_file(str(tmp_path / "rae.safetensors"))
    del tensors["decoder.pos_embed"]
    save_file(tensors, str(tmp_path / "rae.safetensors"))
    again = load_rae(tmp_path)
    assert again.decoder.cfg.pos_order == "row-col" and again.decoder.cfg.layer_norm_eps == 1e-6
    z = torch.randn(2, 320, 4, 4)
    with torch.no_grad():
        assert torch.equal(again.decode(z), rae.decode(z))
    assert again._encoder is None
