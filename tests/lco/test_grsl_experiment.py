"""The GRSL experiment end to end on a tiny random configuration (tiny LM, random EfficientNet)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genrep.core.errors import UserError
from genrep.lco.adapters import load_model
from genrep.lco.backbones import tower_parameters
from genrep.lco.grsl_experiment import GRSLExperimentConfig, RefineConfig, run_experiment
from genrep.lco.pretrain_vlm import PretrainConfig
from genrep.lco.tinyvlm import TinyVLMConfig
from tests.lco.tiny_vlms import tiny_causal_lm


def _cfg(lm):
    return GRSLExperimentConfig(
        pretrain=PretrainConfig(
            vlm=TinyVLMConfig(lm=lm, vision="effnet-lite0-random", image_size=32, grid=1),
            steps=4,
            batch_size=4,
            save_at=[0, 2],
            train_images=40,
            eval_images=6,
            eval_batch_size=6,
            max_new_tokens=3,
            log_every=1,
            checkpoint_every=2,
            lr=1e-2,
        ),
        refine=RefineConfig(steps=2, batch_size=4, text_rows=16, lora_r=2),
        test_images=12,
        captions_per_class=2,
        encode_batch_size=8,
        device="cpu",
    )


def test_whole_pipeline_on_a_tiny_random_configuration(tmp_path):
    lm = tiny_causal_lm(tmp_path / "lm")
    out = tmp_path / "exp"
    m = run_experiment(_cfg(lm), out)
    assert [b["name"] for b in m["backbones"]] == ["step_000000", "step_000002", "step_000004"]
    for b in m["backbones"]:
        for side in ("before", "after"):
            s = b[side]
            assert 0.0 <= s["zero_shot_accuracy"] <= 1.0 and -1.0 <= s["anisotropy_image"] <= 1.0 + 1e-9
            assert s["n_images"] == 12 and s["n_texts"] == 20
    assert m["grsl_fit"]["n"] == 3 or "error" in m["grsl_fit"]
    points = [json.loads(line) for line in (out / "points.jsonl").read_text().splitlines()]
    assert [p["name"] for p in points] == ["step_000000", "step_000002", "step_000004"]
    assert (out / "figures" / "transfer.png").stat().st_size > 1000
    assert (out / "metrics.json").is_file() and (out / "config.yaml").is_file()
    # refinement data is text only
    rows = [json.loads(line) for line in (out / "refine_data.jsonl").read_text().splitlines()]
    assert rows and all(set(v) == {"text"} for r in rows for k, v in r.items() if isinstance(v, dict))

    # text-only training leaves every vision weight (tower and projector) unchanged, and does change the LM
    for b in m["backbones"]:
        base = load_model(f"base:{b['dir']}").model
        tuned = load_model(str(out / "family" / b["name"] / "refine" / "model")).model
        t_base, t_tuned = tower_parameters(base), tower_parameters(tuned)
        assert t_base and set(t_base) == set(t_tuned)
        assert all(torch.equal(t_base[n], t_tuned[n]) for n in t_base)
        lm_base = dict(base.language_model.named_parameters())
        assert any(not torch.equal(p, lm_base[n]) for n, p in tuned.language_model.named_parameters())

    # a refined tiny VLM merges into a standalone directory (full weights) that embeds the same
    from genrep.lco.adapters import merge

    refined = out / "family" / "step_000004" / "refine" / "model"
    merged = merge(refined, tmp_path / "merged")
    items = [{"image": np.full((28, 28), 200, np.uint8)}, "A photo of a coat."]
    a = load_model(str(refined)).encode(items, show_progress=False)
    b = load_model(str(merged)).encode(items, show_progress=False)
    assert np.allclose(a, b, atol=1e-5)

    # resume: every stage is found finished and nothing is recomputed
    before = {p: p.stat().st_mtime_ns for p in (out / "family").rglob("*.json")}
    again = run_experiment(_cfg(lm), out, resume=True)
    assert {p: p.stat().st_mtime_ns for p in (out / "family").rglob("*.json")} == before
    assert again["backbones"] == m["backbones"]

    # a resume with other settings (a finished stage would keep the old ones) and a new run over the old
    # checkpoints are one-line errors that write nothing
    import hashlib

    def fingerprint():
        return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*")) if p.is_file()}

    written = fingerprint()
    changed = _cfg(lm)
    changed.test_images = 10
    with pytest.raises(
        UserError,
        match=r"lco grsl-experiment --resume: test_images is 10 but the experiment in .* "
        r"ran with 12 \(start a new --out",
    ):
        run_experiment(changed, out, resume=True)
    changed = _cfg(lm)
    changed.refine.steps = 3
    with pytest.raises(UserError, match="refine.steps is 3 but"):
        run_experiment(changed, out, resume=True)
    with pytest.raises(UserError, match=r"pretrain/checkpoints holds checkpoints of an earlier run \(step 4\)"):
        run_experiment(_cfg(lm), out)
    assert fingerprint() == written


def test_transfer_only_run_takes_one_backbone_and_fits_nothing(tmp_path):
    lm = tiny_causal_lm(tmp_path / "lm")
    cfg = _cfg(lm)
    cfg.pretrain.save_at, cfg.fit = [4], False
    m = run_experiment(cfg, tmp_path / "exp")
    assert [b["name"] for b in m["backbones"]] == ["step_000004"]
    assert "not fitted" in m["grsl_fit"]["error"] and m["grsl_fits_by_generative_metric"] == {}
    assert not (tmp_path / "exp" / "figures" / "grsl.png").exists()
    b = m["backbones"][0]
    correct = {side: np.array(b[side]["zero_shot_correct"]) for side in ("before", "after")}
    assert all(len(c) == 12 and c.mean() == b[side]["zero_shot_accuracy"] for side, c in correct.items())
    (test,) = m["transfer"]["zero_shot_mcnemar"]
    assert test["gained"] == int(np.sum(~correct["before"] & correct["after"]))
    assert test["lost"] == int(np.sum(correct["before"] & ~correct["after"])) and 0 < test["p_value"] <= 1
    # a re-run into the same directory (the demo's) needs fresh, which replaces every stage's result
    with pytest.raises(UserError, match="holds checkpoints of an earlier run"):
        run_experiment(cfg, tmp_path / "exp")
    (tmp_path / "exp" / "family" / "step_000002").mkdir()  # a backbone of some earlier run
    again = run_experiment(cfg, tmp_path / "exp", fresh=True)
    assert again["backbones"] == m["backbones"] and [p.name for p in (tmp_path / "exp" / "family").iterdir()] == [
        "step_000004"
    ]


def test_bad_settings_are_one_line_errors(tmp_path):
    cfg = GRSLExperimentConfig(generative_metric="bleu")
    with pytest.raises(UserError, match="generative_metric"):
        run_experiment(cfg, tmp_path)
    cfg = GRSLExperimentConfig(pretrain=PretrainConfig(steps=10, save_at=[10]))
    with pytest.raises(UserError, match="at least 3 backbones"):
        run_experiment(cfg, tmp_path)


def test_photos_can_be_mixed_into_captioning(tmp_path):
    from genrep.lco.captioning import fashion_split
    from genrep.lco.captions import PHOTO_CAPTIONS
    from genrep.lco.pretrain_vlm import training_rows

    cfg = PretrainConfig(photos_fraction=1.0)
    photos = {"chelsea": np.full((64, 80, 3), 120, np.uint8), "coffee": np.zeros((50, 50, 3), np.uint8)}
    images, texts = training_rows(fashion_split("train", 8, 0), list(range(8)), 0, cfg, photos)
    assert all(t in PHOTO_CAPTIONS["chelsea"] + PHOTO_CAPTIONS["coffee"] for t in texts)
    assert all(im.ndim == 3 and im.shape[0] >= 8 for im in images)
    cfg.photos_fraction = 0.0
    images, texts = training_rows(fashion_split("train", 8, 0), list(range(8)), 0, cfg, photos)
    assert all(im.shape == (28, 28) for im in images)


def test_cli_fast_profile_and_one_line_errors(tmp_path):
    import subprocess
    import sys

    from genrep.core.config import load_config
    from genrep.lco.grsl_experiment import fast_config

    assert load_config(GRSLExperimentConfig, base=fast_config()) == fast_config()
    assert load_config(GRSLExperimentConfig, overrides=["refine.steps=3"], base=fast_config()).refine.steps == 3
    for args in (
        ["grsl-experiment", "--fast", "--set", "generative_metric=bleu"],
        ["pretrain-vlm", "--set", "vlm.vision=dinov2"],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "genrep", "lco", *args, "--out", str(tmp_path / "x")], capture_output=True, text=True
        )
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.slow
def test_fast_profile_with_the_bundled_models(tmp_path):
    """``genrep lco grsl-experiment --fast`` on SmolLM2 + EfficientNet-Lite0 (about 10 minutes on 2 cores)."""
    from genrep.lco.grsl_experiment import fast_config

    m = run_experiment(fast_config(), tmp_path)
    gen = [b["generative"]["caption_loglik"] for b in m["backbones"]]
    assert gen == sorted(gen)  # more captioning training, better held-out likelihood
    assert "slope" in m["grsl_fit"]
    assert (tmp_path / "figures" / "grsl.png").is_file()
