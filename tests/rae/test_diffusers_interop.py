"""genrep RAE <-> diffusers AutoencoderRAE, checked live against diffusers with tiny random models.

Every model here is built offline from a small config (64-wide one-layer encoders, genrep's
"tiny" decoder) on a 16 x 16 latent grid, the grid on which diffusers' decoder position table is
the reference's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from genrep.core.errors import UserError
from genrep.rae.autoencoder import RAE
from genrep.rae.decoder import DecoderConfig, ViTDecoder
from genrep.rae.diffusers_interop import rae_from_diffusers, rae_to_diffusers
from genrep.rae.diffusers_layout import DIFFUSERS_CONFIG, DIFFUSERS_WEIGHTS
from genrep.rae.diffusers_numerics import diffusers_positions, std_for_scale, var_for_scale
from genrep.rae.encoders import EffNetEncoder, hf_encoder_from_model
from genrep.rae.stats import LatentStats

diffusers = pytest.importorskip(
    "diffusers", reason="diffusers is not installed (the dev extra pins diffusers==0.42.1 for these tests)"
)

HIDDEN = 64
TINY_DECODER = {
    "decoder_hidden_size": 192,
    "decoder_num_hidden_layers": 4,
    "decoder_num_attention_heads": 3,
    "decoder_intermediate_size": 768,
}
ENCODERS = {  # encoder_type -> (patch, input size): a 16 x 16 grid
    "dinov2": (14, 224),
    "mae": (16, 256),
}


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Random weights everywhere (layer-norm scales near 1), so no mapping error can hide behind an init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * 0.05
            is_norm_scale = name.endswith("weight") and p.ndim == 1
            p.copy_(1.0 + noise if is_norm_scale else noise)


def _diffusers_model(encoder_type: str = "dinov2", seed: int = 0, **over):
    patch, size = ENCODERS[encoder_type]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    kwargs = {
        "encoder_type": encoder_type,
        "encoder_hidden_size": HIDDEN,
        "encoder_patch_size": patch,
        "encoder_num_hidden_layers": 1,
        "encoder_input_size": size,
        "patch_size": 1,
        "latents_mean": torch.randn(HIDDEN, 16, 16, generator=gen) * 0.3,
        "latents_std": torch.rand(HIDDEN, 16, 16, generator=gen) * 1.5 + 0.2,
        **TINY_DECODER,
        **over,
    }
    model = diffusers.AutoencoderRAE(**kwargs)
    _randomise(model.decoder, seed + 2)
    return model.eval()


def _save(model, directory: Path) -> Path:
    model.save_pretrained(directory)
    return directory


def _tiny_genrep_rae(seed: int = 0, grid: int = 16, **decoder_over) -> tuple[RAE, object]:
    """A genrep RAE with a tiny DINOv2 built exactly as diffusers builds its encoder."""
    torch.manual_seed(seed)
    cfg = transformers.Dinov2WithRegistersConfig(
        hidden_size=HIDDEN, patch_size=14, image_size=518, num_attention_heads=1, num_hidden_layers=1
    )
    enc = hf_encoder_from_model("dinov2-reg-b", transformers.Dinov2WithRegistersModel(cfg), input_size=14 * grid)
    gen = torch.Generator().manual_seed(seed + 1)
    stats = LatentStats(
        torch.randn(HIDDEN, grid, grid, generator=gen) * 0.3, torch.rand(HIDDEN, grid, grid, generator=gen) * 2.0
    )
    decoder = ViTDecoder(DecoderConfig(latent_channels=HIDDEN, grid=grid, patch=1, size="tiny", **decoder_over))
    _randomise(decoder, seed + 2)
    return RAE(enc, stats, decoder).eval(), enc


def _one_line_naming(exc: pytest.ExceptionInfo, *parts: str) -> None:
    text = str(exc.value)
    assert "\n" not in text
    for part in parts:
        assert part in text, (part, text)


# ------------------------------------------------------------------------------------------------
# the position table
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [16, 4])
def test_position_table_is_the_one_diffusers_computes(grid):
    from diffusers.models.autoencoders.autoencoder_rae import RAEDecoder

    dec = RAEDecoder(hidden_size=8, decoder_hidden_size=32, decoder_num_hidden_layers=1, num_patches=grid * grid)
    assert torch.equal(diffusers_positions(32, grid), dec.decoder_pos_embed)


def test_genrep_reference_table_equals_diffusers_only_on_a_16_grid():
    for grid, same in ((16, True), (4, False)):
        ours = ViTDecoder(DecoderConfig(latent_channels=8, grid=grid, patch=1)).pos_embed
        assert torch.allclose(ours, diffusers_positions(192, grid), atol=1e-6) is same


def test_scales_are_matched_to_the_last_float32_bit():
    gen = torch.Generator().manual_seed(0)
    scale = torch.cat([torch.rand(5000, generator=gen) * 3 + 0.01, torch.tensor([1.0, 0.5, 2.0, 1e-3])])
    assert torch.equal(std_for_scale(scale) + 1e-5, scale)
    var, eps = var_for_scale(scale)
    assert eps == 0.0 and bool((var >= 0).all())  # 1e-3 < sqrt(1e-5): genrep's eps cannot be kept
    assert torch.equal(torch.sqrt(var + eps), scale)
    var, eps = var_for_scale(scale[scale > 0.01])
    assert eps == 1e-5 and torch.equal(torch.sqrt(var + eps), scale[scale > 0.01])


# ------------------------------------------------------------------------------------------------
# diffusers -> genrep
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoder_type", sorted(ENCODERS))
def test_diffusers_to_genrep_decodes_the_same(tmp_path, encoder_type):
    model = _diffusers_model(encoder_type)
    directory = _save(model, tmp_path / "diffusers")
    rae = rae_from_diffusers(directory)
    assert rae.latent_shape == (HIDDEN, 16, 16) and rae.image_size == 16
    z = torch.randn(2, HIDDEN, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        theirs = model.decode(z).sample
        ours = rae.decode(z)
    diff = (theirs - ours).abs().max().item()
    print(f"diffusers -> genrep ({encoder_type}): max |decode difference| = {diff:.3g}")
    assert diff < 1e-5
    spec = rae.encoder_spec
    assert spec["name"] == {"dinov2": "dinov2-reg-b", "mae": "mae-b"}[encoder_type]
    assert spec["source"] is None  # a 64-wide one-layer encoder is no released checkpoint
    assert spec["input_size"] == ENCODERS[encoder_type][1]


@pytest.mark.parametrize("encoder_type", sorted(ENCODERS))
def test_loaded_encoder_encodes_as_diffusers(tmp_path, encoder_type):
    model = _diffusers_model(encoder_type)
    rae = rae_from_diffusers(_save(model, tmp_path / "diffusers"), load_encoder=True)
    size = ENCODERS[encoder_type][1]
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        theirs = model.encode(x).latent
    diff = (theirs - rae.encode(x)).abs().max().item()
    print(f"diffusers -> genrep ({encoder_type}): max |encode difference| = {diff:.3g}")
    assert diff < 1e-5


def _legacy_encoder_names(directory: Path, model, tmp: Path) -> None:
    """Rewrite the file's encoder.* tensors under transformers' legacy (4.x) weight names, as a
    diffusers file written under transformers 4 has them (transformers 5 saves legacy names)."""
    model.encoder.save_pretrained(tmp)
    legacy = load_file(str(tmp / "model.safetensors"))
    path = directory / DIFFUSERS_WEIGHTS
    tensors = {k: v for k, v in load_file(str(path)).items() if not k.startswith("encoder.")}
    tensors.update({f"encoder.{k}": v for k, v in legacy.items()})
    save_file(tensors, str(path))


@pytest.mark.parametrize("encoder_type", sorted(ENCODERS))
def test_encoder_weights_under_legacy_transformers_names_are_read(tmp_path, encoder_type):
    model = _diffusers_model(encoder_type)
    directory = _save(model, tmp_path / "diffusers")
    current = set(load_file(str(directory / DIFFUSERS_WEIGHTS)))
    _legacy_encoder_names(directory, model, tmp_path / "legacy")
    assert set(load_file(str(directory / DIFFUSERS_WEIGHTS))) != current  # the names really differ
    rae = rae_from_diffusers(directory, load_encoder=True)
    size = ENCODERS[encoder_type][1]
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert (model.encode(x).latent - rae.encode(x)).abs().max().item() < 1e-5
    rae_from_diffusers(directory)  # without loading the encoder, the names are checked all the same
    key = next(k for k in load_file(str(directory / DIFFUSERS_WEIGHTS)) if "encoder.layer" in k)
    path = _edit_tensors(directory, lambda t: t.pop(key))
    _fails(directory, str(path), "missing tensor 'encoder.")


def test_siglip2_files_are_read_and_written(tmp_path):
    """diffusers 0.42.1 cannot build its siglip2 encoder under transformers 5 (it looks for
    SiglipVisionModel.vision_model), so the file is assembled here: a dinov2 model's latent
    statistics and decoder with a SigLIP encoder built as diffusers builds it (256 px, patch 16)."""
    model = _diffusers_model("mae")  # patch 16 at 256 px: the grid a siglip2 encoder gives
    directory = _save(model, tmp_path / "diffusers")
    siglip = transformers.SiglipVisionModel(
        transformers.SiglipVisionConfig(
            hidden_size=HIDDEN, patch_size=16, image_size=256, num_attention_heads=1, num_hidden_layers=1
        )
    )
    norm = {f"post_layernorm.{p}" for p in ("weight", "bias")} | {
        f"vision_model.post_layernorm.{p}" for p in ("weight", "bias")
    }
    tensors = {k: v for k, v in load_file(str(directory / DIFFUSERS_WEIGHTS)).items() if not k.startswith("encoder.")}
    tensors.update({f"encoder.{k}": v for k, v in siglip.state_dict().items() if k not in norm})
    tensors["encoder_mean"], tensors["encoder_std"] = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.5)
    save_file(tensors, str(directory / DIFFUSERS_WEIGHTS))
    _edit_config(directory, encoder_type="siglip2")
    rae = rae_from_diffusers(directory, load_encoder=True)
    assert rae.encoder_spec["name"] == "siglip2-b" and rae.encoder_spec["pixel_mean"] == [0.5, 0.5, 0.5]
    z = torch.randn(1, HIDDEN, 16, 16, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        model._denormalize_image = lambda x: x * 0.5 + 0.5  # the SigLIP pixel statistics
        assert (model.decode(z).sample - rae.decode(z)).abs().max().item() < 1e-5
    rae.save_pretrained(tmp_path / "genrep")
    out = rae_to_diffusers(tmp_path / "genrep", tmp_path / "again", encoder=rae.encoder)
    again = load_file(str(out / DIFFUSERS_WEIGHTS))
    for key, value in tensors.items():
        if key != "_latents_std":
            assert torch.equal(again[key], value), key


def test_scaling_factor_is_folded_into_the_statistics(tmp_path):
    model = _diffusers_model(scaling_factor=0.7)
    rae = rae_from_diffusers(_save(model, tmp_path / "diffusers"))
    z = torch.randn(1, HIDDEN, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert (model.decode(z).sample - rae.decode(z)).abs().max().item() < 1e-5


def test_released_architecture_names_its_hub_source(tmp_path):
    """The spec of a full-size encoder names the hub checkpoint (its config is checked, not loaded)."""
    model = _diffusers_model()
    directory = _save(model, tmp_path / "diffusers")
    cfg = json.loads((directory / DIFFUSERS_CONFIG).read_text())
    tensors = load_file(str(directory / DIFFUSERS_WEIGHTS))
    cfg.update(encoder_hidden_size=384, encoder_num_hidden_layers=12)
    big = diffusers.AutoencoderRAE(**{k: v for k, v in cfg.items() if not k.startswith("_")}).state_dict()
    tensors = {**{k: v for k, v in big.items() if k.startswith("encoder.")}, **_resize_decoder_input(tensors, 384)}
    tensors["_latents_mean"] = torch.zeros(384, 16, 16)
    tensors["_latents_std"] = torch.ones(384, 16, 16)
    cfg.update(latents_mean=None, latents_std=None)
    tensors["_latents_mean"], tensors["_latents_std"] = torch.zeros(1), torch.ones(1)
    save_file(tensors, str(directory / DIFFUSERS_WEIGHTS))
    (directory / DIFFUSERS_CONFIG).write_text(json.dumps(cfg))
    rae = rae_from_diffusers(directory)
    assert rae.encoder_spec["name"] == "dinov2-reg-s"
    assert rae.encoder_spec["source"] == "facebook/dinov2-with-registers-small"
    assert torch.allclose(torch.sqrt(rae.stats.var + rae.stats.eps), torch.full((384, 16, 16), 1.00001))
    assert rae_from_diffusers(directory, encoder_source="/models/dino").encoder_spec["source"] == "/models/dino"


def _resize_decoder_input(tensors: dict, latent: int) -> dict:
    out = {k: v for k, v in tensors.items() if not k.startswith("encoder.")}
    out["decoder.decoder_embed.weight"] = torch.zeros(out["decoder.decoder_embed.weight"].shape[0], latent)
    return out


# ------------------------------------------------------------------------------------------------
# genrep -> diffusers, and back
# ------------------------------------------------------------------------------------------------


def _to_diffusers(tmp_path: Path, seed: int = 0):
    rae, enc = _tiny_genrep_rae(seed)
    src = rae.save_pretrained(tmp_path / "genrep")
    out = rae_to_diffusers(src, tmp_path / "diffusers", encoder=enc)
    return rae, enc, out


def test_genrep_to_diffusers_loads_completely_and_decodes_the_same(tmp_path):
    rae, _, out = _to_diffusers(tmp_path)
    assert sorted(p.name for p in out.iterdir()) == sorted([DIFFUSERS_CONFIG, DIFFUSERS_WEIGHTS])
    model, info = diffusers.AutoencoderRAE.from_pretrained(out, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    model.eval()
    z = torch.randn(2, HIDDEN, 16, 16, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        diff = (model.decode(z).sample - rae.decode(z)).abs().max().item()
        x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(7))
        enc_diff = (model.encode(x).latent - rae.encode(x)).abs().max().item()
    print(f"genrep -> diffusers: max |decode difference| = {diff:.3g}, max |encode difference| = {enc_diff:.3g}")
    assert diff < 1e-5 and enc_diff < 1e-5
    # the same float32 latent scale in both: de-normalisation is bit-identical
    assert torch.equal(model._latents_std + 1e-5, torch.sqrt(rae.stats.var + rae.stats.eps))


def test_round_trip_genrep_diffusers_genrep_is_exact(tmp_path):
    rae, _, out = _to_diffusers(tmp_path)
    back = rae_from_diffusers(out)
    assert back.decoder.cfg == rae.decoder.cfg
    ours, theirs = rae.decoder.state_dict(), back.decoder.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    assert torch.equal(back.stats.mean, rae.stats.mean)
    assert torch.equal(torch.sqrt(back.stats.var + back.stats.eps), torch.sqrt(rae.stats.var + rae.stats.eps))
    assert back.stats.eps == rae.stats.eps
    assert torch.allclose(back.stats.var, rae.stats.var, rtol=1e-6, atol=1e-6)  # var itself: to its last bits
    assert back.encoder_spec == {**rae.encoder_spec, "source": None}
    z = torch.randn(2, HIDDEN, 16, 16, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        assert torch.equal(back.decode(z), rae.decode(z))


def test_round_trip_diffusers_genrep_diffusers_keeps_every_tensor(tmp_path):
    model = _diffusers_model()
    first = _save(model, tmp_path / "first")
    rae = rae_from_diffusers(first, load_encoder=True)
    rae.save_pretrained(tmp_path / "genrep")
    second = rae_to_diffusers(tmp_path / "genrep", tmp_path / "second", encoder=rae.encoder)
    a, b = load_file(str(first / DIFFUSERS_WEIGHTS)), load_file(str(second / DIFFUSERS_WEIGHTS))
    assert a.keys() == b.keys()
    for key in a:
        if key != "_latents_std":
            assert torch.equal(a[key], b[key]), key
    # the scale std + 1e-5 survives genrep's sqrt(var + eps) bit for bit wherever a float32 var can
    # give it (float32 sqrt skips a few values: there it is off by one float32 step)
    sa, sb = a["_latents_std"] + 1e-5, b["_latents_std"] + 1e-5
    off = sa != sb
    assert off.float().mean().item() < 1e-3
    assert torch.equal(torch.nextafter(sa[off], sb[off]), sb[off])


# ------------------------------------------------------------------------------------------------
# what cannot be converted: one line naming the file and the key, nothing written
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def diffusers_dir(tmp_path) -> Path:
    return _save(_diffusers_model(), tmp_path / "diffusers")


def _edit_config(directory: Path, **changes) -> Path:
    path = directory / DIFFUSERS_CONFIG
    cfg = json.loads(path.read_text())
    for key, value in changes.items():
        if value is ...:
            del cfg[key]
        else:
            cfg[key] = value
    path.write_text(json.dumps(cfg))
    return path


def _edit_tensors(directory: Path, edit) -> Path:
    path = directory / DIFFUSERS_WEIGHTS
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))
    return path


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _fails(directory: Path, *parts: str) -> None:
    before = _listing(directory.parent)
    with pytest.raises(UserError) as exc:
        rae_from_diffusers(directory)
    _one_line_naming(exc, *parts)
    assert _listing(directory.parent) == before


def test_another_class_is_refused(diffusers_dir):
    path = _edit_config(diffusers_dir, _class_name="AutoencoderKL")
    _fails(diffusers_dir, str(path), "_class_name", "AutoencoderKL")


def test_a_missing_tensor_is_named(diffusers_dir):
    key = "decoder.decoder_layers.2.attention.to_v.bias"
    path = _edit_tensors(diffusers_dir, lambda t: t.pop(key))
    _fails(diffusers_dir, str(path), key, "missing")


def test_a_missing_encoder_tensor_is_named(diffusers_dir):
    path = _edit_tensors(diffusers_dir, lambda t: t.pop("encoder.embeddings.cls_token"))
    _fails(diffusers_dir, str(path), "encoder.embeddings.cls_token")


def test_an_extra_tensor_is_named(diffusers_dir):
    path = _edit_tensors(diffusers_dir, lambda t: t.update({"decoder.extra.weight": torch.zeros(3)}))
    _fails(diffusers_dir, str(path), "decoder.extra.weight", "unexpected")


def test_a_wrong_shape_is_named(diffusers_dir):
    key = "decoder.decoder_pred.weight"
    path = _edit_tensors(diffusers_dir, lambda t: t.update({key: torch.zeros(4, 192)}))
    _fails(diffusers_dir, str(path), key, "[4, 192]", "[3, 192]")


def test_a_config_missing_a_field_is_named(diffusers_dir):
    path = _edit_config(diffusers_dir, decoder_num_hidden_layers=...)
    _fails(diffusers_dir, str(path), "decoder_num_hidden_layers")


def test_an_unknown_config_field_is_named(diffusers_dir):
    path = _edit_config(diffusers_dir, decoder_flavour="new")
    _fails(diffusers_dir, str(path), "decoder_flavour")


def test_a_decoder_size_without_a_genrep_name_is_custom(tmp_path):
    model = _diffusers_model(decoder_intermediate_size=320, decoder_num_attention_heads=4)
    rae = rae_from_diffusers(_save(model, tmp_path / "diffusers"))
    cfg = rae.decoder.cfg
    assert (cfg.size, cfg.width, cfg.depth, cfg.heads, cfg.mlp) == ("custom", 192, 4, 4, 320)
    z = torch.randn(1, HIDDEN, 16, 16, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        assert (model.decode(z).sample - rae.decode(z)).abs().max().item() < 1e-5


def test_decoder_heads_that_do_not_divide_the_width_are_named(diffusers_dir):
    path = _edit_config(diffusers_dir, decoder_num_attention_heads=5)
    _fails(diffusers_dir, str(path), "decoder_num_attention_heads")


def test_latent_statistics_that_disagree_with_the_config_are_named(diffusers_dir):
    path = _edit_tensors(diffusers_dir, lambda t: t.update({"_latents_std": torch.ones(HIDDEN, 1, 1)}))
    _fails(diffusers_dir, str(path), "_latents_std", "[64, 1, 1]")


def test_a_directory_without_a_config_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError) as exc:
        rae_from_diffusers(tmp_path / "empty")
    _one_line_naming(exc, str(tmp_path / "empty"), DIFFUSERS_CONFIG)


def _fails_to_write(src: Path, out: Path, *parts: str, encoder=None) -> None:
    before = _listing(out.parent)
    with pytest.raises(UserError) as exc:
        rae_to_diffusers(src, out, encoder=encoder)
    _one_line_naming(exc, *parts)
    assert _listing(out.parent) == before  # no output, no temporary directory left behind


def test_effnet_encoder_cannot_be_expressed(tmp_path):
    enc = EffNetEncoder(input_size=128)
    c, h, _ = enc.latent_shape
    decoder = ViTDecoder(DecoderConfig(latent_channels=c, grid=h, patch=2))
    rae = RAE(enc, LatentStats(torch.zeros(enc.latent_shape), torch.ones(enc.latent_shape)), decoder)
    src = rae.save_pretrained(tmp_path / "genrep")
    _fails_to_write(src, tmp_path / "out", "rae_config.json", "effnet-lite0", encoder=enc)


def test_a_grid_other_than_16_cannot_be_expressed(tmp_path):
    rae, enc = _tiny_genrep_rae(grid=4)
    src = rae.save_pretrained(tmp_path / "genrep")
    _fails_to_write(src, tmp_path / "out", "rae_config.json", "position table", "4x4", encoder=enc)


def test_a_decoder_with_other_layer_norm_eps_cannot_be_expressed(tmp_path):
    rae, enc = _tiny_genrep_rae(layer_norm_eps=1e-6)
    src = rae.save_pretrained(tmp_path / "genrep")
    _fails_to_write(src, tmp_path / "out", "rae_config.json", "eps", encoder=enc)


def test_an_encoder_diffusers_does_not_build_is_named(tmp_path):
    cfg = transformers.Dinov2WithRegistersConfig(
        hidden_size=HIDDEN, patch_size=14, image_size=518, num_attention_heads=2, num_hidden_layers=1
    )
    enc = hf_encoder_from_model("dinov2-reg-b", transformers.Dinov2WithRegistersModel(cfg), input_size=224)
    rae, _ = _tiny_genrep_rae()
    rae = RAE(enc, rae.stats, rae.decoder)
    src = rae.save_pretrained(tmp_path / "genrep")
    _fails_to_write(src, tmp_path / "out", "rae_config.json", "num_attention_heads", encoder=enc)


def test_an_existing_output_is_not_touched(tmp_path):
    rae, enc = _tiny_genrep_rae()
    src = rae.save_pretrained(tmp_path / "genrep")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    _fails_to_write(src, tmp_path / "out", str(tmp_path / "out"), "exists", encoder=enc)


def test_config_json_is_plain_numbers(tmp_path):
    """diffusers reads latents_mean/std from config.json to size its buffers: they are nested lists."""
    _, _, out = _to_diffusers(tmp_path)
    cfg = json.loads((out / DIFFUSERS_CONFIG).read_text())
    assert cfg["_class_name"] == "AutoencoderRAE" and cfg["encoder_type"] == "dinov2"
    assert len(cfg["latents_std"]) == HIDDEN and len(cfg["latents_std"][0][0]) == 16
    assert all(math.isfinite(v) for row in cfg["latents_mean"][0] for v in row)


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import genrep.rae.diffusers_interop as interop

    rae, enc = _tiny_genrep_rae()
    src = rae.save_pretrained(tmp_path / "genrep")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(interop, "save_file", full_disk)
    before = _listing(tmp_path)
    with pytest.raises(OSError):
        rae_to_diffusers(src, tmp_path / "new" / "deeper" / "out", encoder=enc)
    assert _listing(tmp_path) == before  # no output, no temporary directory, no new parents


def test_an_encoder_with_another_resize_cannot_be_expressed(tmp_path):
    rae, enc = _tiny_genrep_rae()
    enc.resize_mode = "bicubic-antialias-clamp"
    src = rae.save_pretrained(tmp_path / "genrep")
    _fails_to_write(src, tmp_path / "out", "rae_config.json", "bicubic-antialias-clamp", encoder=enc)


def _cli(*argv: str) -> int:
    from genrep.cli import main

    try:
        main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_the_convert_command_runs_both_directions(tmp_path):
    """``genrep rae convert --diffusers`` / ``--to-diffusers``: the files decode as diffusers does."""
    model = _diffusers_model("dinov2", seed=3)
    src = _save(model, tmp_path / "src")
    assert _cli("rae", "convert", "--diffusers", str(src), "--out", str(tmp_path / "g")) == 0
    rae = RAE.from_pretrained(tmp_path / "g" / "rae")
    z = torch.randn(2, HIDDEN, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert (model.decode(z).sample - rae.decode(z)).abs().max().item() < 1e-5

    # back, with the encoder weights from a local directory (--encoder-source)
    genrep_rae, enc = _tiny_genrep_rae(seed=5)
    enc_dir = tmp_path / "encoder"
    enc.net.save_pretrained(enc_dir)
    rae_dir = genrep_rae.save_pretrained(tmp_path / "genrep")
    code = _cli(
        "rae", "convert", "--to-diffusers", str(rae_dir), "--encoder-source", str(enc_dir), "--out", str(tmp_path / "d")
    )
    assert code == 0
    for out, written in ((tmp_path / "g", ["rae"]), (tmp_path / "d", ["diffusers"])):  # the run files too
        assert json.loads((out / "metrics.json").read_text())["written"] == written and (out / "config.yaml").is_file()
    back = diffusers.AutoencoderRAE.from_pretrained(tmp_path / "d" / "diffusers").eval()
    with torch.no_grad():
        assert (back.decode(z).sample - genrep_rae.decode(z)).abs().max().item() < 1e-5
