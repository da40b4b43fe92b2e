"""Golden parity of genrep's stage 2 with the reference code (bytetriper/RAE).

The fixtures in tests/fixtures/rae_reference/dit/ were written by
tests/fixtures/make_rae_reference_fixtures.py from the reference classes (random weights, the
reference's YAML and checkpoint formats, the reference's outputs). Here they go through
``genrep rae convert --reference`` and genrep must reproduce the outputs in fp32 within 1e-5.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from genrep.cli import main as genrep_main
from genrep.core.errors import UserError
from genrep.rae.convert_stage2 import dit_config_from_reference, dit_state_from_reference
from genrep.rae.dit import DiT
from genrep.rae.dit_io import load_dit, read_dit
from genrep.rae.flow import flow_matching_loss, make_guided_velocity, reference_grid
from genrep.rae.sample import SampleConfig, sample_latents

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rae_reference" / "dit"
TOL = 1e-5


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).detach().abs().max())


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / "outputs.safetensors"))


def _run(*argv: str) -> int:
    """Run the genrep CLI in-process; its exit code (0 when it returns)."""
    try:
        genrep_main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _convert(config: str, out: Path) -> Path:
    code = _run("rae", "convert", "--reference", str(FIXTURES / config), "--root", str(FIXTURES), "--out", str(out))
    assert code == 0
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("converted")
    return {name: _convert(f"{name}.yaml", base / name) for name in ("ddt_cfg_euler", "ddt_ag_heun", "lightning")}


def _sample_cfg(out: Path) -> SampleConfig:
    doc = yaml.safe_load((out / "sample.yaml").read_text())
    doc["interval"] = tuple(doc["interval"])
    return SampleConfig(**{k: (Path(v) if k in ("dit", "guide") else v) for k, v in doc.items()})


def test_ddt_forward_equals_the_reference(ref, converted):
    main = load_dit(converted["ddt_cfg_euler"] / "dit")
    guide = load_dit(converted["ddt_ag_heun"] / "guide")  # qk-norm on, identity projector
    with torch.no_grad():
        assert _max_diff(main(ref["x"], ref["t"], ref["y"]), ref["ddt_main"]) <= TOL
        assert _max_diff(guide(ref["x"], ref["t"], ref["y"]), ref["ddt_guide"]) <= TOL
    assert guide.cfg.qk_norm and isinstance(guide.head_cond, torch.nn.Identity)
    assert not main.cfg.qk_norm and isinstance(main.head_cond, torch.nn.Linear)


def test_lightning_dit_forward_equals_the_reference(ref, converted):
    model = load_dit(converted["lightning"] / "dit")  # patch 2, learn_sigma, qk-norm
    assert model.cfg.patch == 2 and model.cfg.learn_sigma and not model.cfg.has_head
    with torch.no_grad():
        assert _max_diff(model(ref["x"], ref["t"], ref["y"]), ref["lightning"]) <= TOL


def test_cfg_interval_and_autoguidance_equal_the_reference(ref, converted):
    main = load_dit(converted["ddt_cfg_euler"] / "dit")
    guide = load_dit(converted["ddt_ag_heun"] / "guide")
    cfg = make_guided_velocity(main, ref["y_cond"], guidance="cfg", scale=3.0, interval=(0.3, 0.8), null_class=10)
    ag = make_guided_velocity(main, ref["y_cond"], guidance="autoguidance", scale=1.5, guide_model=guide)
    assert _max_diff(cfg(ref["x"], ref["t"]), ref["cfg"]) <= TOL
    assert _max_diff(ag(ref["x"], ref["t"]), ref["autoguidance"]) <= TOL


def test_the_sampling_grid_is_the_reference_grid(ref, converted):
    cfg = _sample_cfg(converted["ddt_cfg_euler"])
    alpha = read_dit(converted["ddt_cfg_euler"] / "dit")[1]["shift_alpha"]
    assert cfg.steps == 10 and cfg.t_end == 1e-3
    assert torch.equal(reference_grid(cfg.steps, alpha, cfg.t_end), ref["grid_euler"])
    assert torch.equal(reference_grid(cfg.steps, alpha, cfg.t_end), ref["grid_heun"])
    assert float(reference_grid(50, 6.928203230275509)[-1]) == pytest.approx(0.0069, abs=1e-4)  # 256 px


def test_euler_with_cfg_and_heun_with_autoguidance_sample_as_the_reference(ref, converted):
    for name, key, expected_solver, expected_guidance in (
        ("ddt_cfg_euler", "sample_euler_cfg", "euler", "cfg"),
        ("ddt_ag_heun", "sample_heun_ag", "heun", "autoguidance"),
    ):
        out = converted[name]
        cfg = _sample_cfg(out)
        assert (cfg.sampler, cfg.guidance) == (expected_solver, expected_guidance)
        model, meta = read_dit(cfg.dit)
        guide = load_dit(cfg.guide) if cfg.guide is not None else None
        z = sample_latents(model, ref["y_cond"], ref["noise"], meta["shift_alpha"], cfg, guide)
        assert _max_diff(z, ref[key]) <= TOL, name
    plain = SampleConfig(steps=10)  # no guidance
    model, meta = read_dit(converted["ddt_cfg_euler"] / "dit")
    assert (
        _max_diff(
            sample_latents(model, ref["y_cond"], ref["noise"], meta["shift_alpha"], plain), ref["sample_euler_plain"]
        )
        <= TOL
    )


def test_flow_matching_loss_at_fixed_t_and_noise_equals_the_reference(ref, converted):
    model = load_dit(converted["ddt_cfg_euler"] / "dit")  # eval mode, as the reference model was (no label drop)
    loss = flow_matching_loss(
        model, ref["loss_data"], ref["y_cond"], alpha=1.0, t=ref["loss_t"], noise=ref["loss_noise"]
    )
    assert abs(float(loss.detach()) - float(ref["loss"])) <= TOL


def test_released_ditdh_xl_and_s_shapes_convert_strictly():
    shapes = json.loads((FIXTURES / "released_shapes.json").read_text())
    for name, preset, count in (("ditdh-xl", "ditdh-XL", 838_675_796), ("ditdh-s", "ditdh-S", 196_455_764)):
        entry = shapes[name]
        assert entry["num_parameters"] == count
        cfg = dit_config_from_reference("stage2.models.DDT.DiTwDDTHead", entry["params"], name)
        from genrep.rae.dit import dit_config

        assert cfg == dit_config(preset, in_channels=768, grid=16, num_classes=1000), "the preset is the released model"
        from genrep.rae.convert_stage2 import fixed_tables

        tables = fixed_tables(cfg)
        state = {k: (tables[k].reshape(s) if k in tables else torch.empty(s)) for k, s in entry["state"].items()}
        mapped = dit_state_from_reference(state, cfg, name)
        with torch.device("meta"):
            model = DiT(cfg)
        missing, unexpected = model.load_state_dict(mapped, strict=True, assign=True)
        assert not missing and not unexpected
        trainable = sum(v.numel() for k, v in mapped.items()) - mapped["t_embed.W"].numel()
        assert (
            trainable + entry["state"]["t_embedder.W"][0] + 256 * cfg.width == count
        )  # + W + pos_embed (fixed in both)


def test_bad_checkpoints_and_configs_are_one_line_errors(tmp_path):
    doc = yaml.safe_load((FIXTURES / "ddt_cfg_euler.yaml").read_text())
    state = torch.load(FIXTURES / "ddt_main.pt", weights_only=True)["ema"]
    cfg = dit_config_from_reference(doc["stage_2"]["target"], doc["stage_2"]["params"], "x.yaml")
    with pytest.raises(UserError, match=r"ckpt.pt: unmapped tensor 'extra.weight'"):
        dit_state_from_reference({**state, "extra.weight": torch.zeros(1)}, cfg, "ckpt.pt")
    without = {k: v for k, v in state.items() if k != "blocks.2.mlp.w3.bias"}
    with pytest.raises(UserError, match=r"ckpt.pt: missing tensor 'blocks.2.mlp.w3.bias'"):
        dit_state_from_reference(without, cfg, "ckpt.pt")
    wrong = {**state, "s_projector.weight": torch.zeros(3, 3)}
    with pytest.raises(UserError, match=r"s_projector.weight has shape \(3, 3\)"):
        dit_state_from_reference(wrong, cfg, "ckpt.pt")
    bigger = dit_config_from_reference(
        doc["stage_2"]["target"], {**doc["stage_2"]["params"], "input_size": 8}, "x.yaml"
    )
    with pytest.raises(UserError, match=r"ckpt.pt: pos_embed"):
        dit_state_from_reference(state, bigger, "ckpt.pt")
    params = dict(doc["stage_2"]["params"])
    del params["in_channels"]
    with pytest.raises(UserError, match=r"x.yaml: missing key 'in_channels'"):
        dit_config_from_reference(doc["stage_2"]["target"], params, "x.yaml")
    with pytest.raises(UserError, match=r"wo_shift"):
        dit_config_from_reference(doc["stage_2"]["target"], {**doc["stage_2"]["params"], "wo_shift": True}, "x.yaml")
    with pytest.raises(UserError, match=r"target"):
        dit_config_from_reference("stage2.models.Other", doc["stage_2"]["params"], "x.yaml")


def test_convert_cli_bad_inputs_exit_2_and_write_nothing(tmp_path, capsys):
    doc = yaml.safe_load((FIXTURES / "ddt_cfg_euler.yaml").read_text())
    cases = {
        "no_stage2": {k: v for k, v in doc.items() if k != "stage_2"},
        "latent": {**doc, "misc": {**doc["misc"], "latent_size": [8, 8, 8]}},
        "sde": {**doc, "sampler": {"mode": "SDE", "params": {}}},
        "ckpt": {**doc, "stage_2": {**doc["stage_2"], "ckpt": "missing.pt"}},
        "lightning_ckpt": {**doc, "stage_2": {**doc["stage_2"], "ckpt": "lightning.pt"}},
    }
    expected = {
        "no_stage2": "missing block 'stage_2' (or 'stage_1'",
        "latent": "latent_size",
        "sde": "sampler.mode",
        "ckpt": "not found",
        "lightning_ckpt": "lightning.pt",
    }
    for name, bad in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(bad))
        out = tmp_path / f"out_{name}"
        capsys.readouterr()
        code = _run("rae", "convert", "--reference", str(path), "--root", str(FIXTURES), "--out", str(out))
        err = capsys.readouterr().err
        assert code == 2, (name, err)
        assert expected[name] in err and len(err.strip().splitlines()) == 1, (name, err)
        assert not out.exists() or not any(p.name != ".lock" for p in out.iterdir()), name


def test_a_converted_yaml_with_all_blocks_samples_and_decodes_as_the_reference_sample_py(tmp_path):
    """stage_1 + stage_2 + AutoGuidance + Euler: genrep's latents and decoded pixels against the
    reference's sample.py with the same noise and labels (the converted RAE decodes without its encoder)."""
    from genrep.rae import load_rae

    root = FIXTURES.parent
    out = tmp_path / "converted"
    code = _run(
        "rae", "convert", "--reference", str(root / "sample" / "sample.yaml"), "--root", str(root), "--out", str(out)
    )
    assert code == 0
    listed = sorted(p.name for p in out.iterdir() if p.name != ".lock")
    assert listed == ["config.yaml", "dit", "guide", "metrics.json", "rae", "sample.yaml"]
    assert sorted(json.loads((out / "metrics.json").read_text())["written"]) == ["dit", "guide", "rae", "sample.yaml"]
    ref = load_file(str(root / "sample" / "outputs.safetensors"))
    cfg = _sample_cfg(out)
    assert (cfg.steps, cfg.sampler, cfg.guidance, cfg.scale, cfg.interval) == (
        12,
        "euler",
        "autoguidance",
        1.42,
        (0.0, 1.0),
    )
    model, meta = read_dit(cfg.dit)
    assert cfg.guide is not None
    z = sample_latents(model, ref["labels"], ref["noise"], meta["shift_alpha"], cfg, load_dit(cfg.guide))
    assert _max_diff(z, ref["latents"]) <= TOL
    rae = load_rae(meta["rae"])
    with torch.no_grad():
        pixels = rae.decode(z)
    assert rae._encoder is None  # decoding built no encoder
    assert _max_diff(pixels, ref["pixels"]) <= TOL


def test_a_stage1_only_yaml_converts_to_an_rae_alone(tmp_path):
    from genrep.rae import load_rae

    root = FIXTURES.parent
    out = tmp_path / "decoder_only"
    code = _run(
        "rae",
        "convert",
        "--reference",
        str(root / "stage1" / "stage1.yaml"),
        "--root",
        str(root / "stage1"),
        "--out",
        str(out),
    )
    assert code == 0
    assert sorted(p.name for p in out.iterdir() if p.name != ".lock") == ["config.yaml", "metrics.json", "rae"]
    ref = load_file(str(root / "stage1" / "reference.safetensors"))
    with torch.no_grad():
        assert _max_diff(load_rae(out / "rae").decode(ref["decode_in"]), ref["decode_out"]) <= TOL
