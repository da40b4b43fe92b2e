"""Captioning pre-training of the tiny VLM: batch layout, loss, backbone family, exact resume, LM LoRA."""

from __future__ import annotations

import json

import pytest
import torch

from genrep.core.errors import UserError
from genrep.lco.captioning import caption_loss, captioning_batch, fashion_split, prompt_text, reference_captions
from genrep.lco.pretrain_vlm import PretrainConfig, generative_score, pretrain
from genrep.lco.tinyvlm import TinyVLMConfig, build_tinyvlm, load_tinyvlm
from tests.lco.tiny_vlms import tiny_causal_lm


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return tiny_causal_lm(tmp_path_factory.mktemp("tinylm"))


def _cfg(tiny_lm, **kw):
    base = dict(
        vlm=TinyVLMConfig(lm=tiny_lm, vision="effnet-lite0-random", image_size=32, grid=1),
        steps=4,
        batch_size=4,
        save_at=[0, 2],
        train_images=40,
        eval_images=6,
        eval_batch_size=4,
        max_new_tokens=3,
        log_every=1,
        checkpoint_every=2,
        device="cpu",
        lr=1e-2,
    )
    base.update(kw)
    return PretrainConfig(**base)


def test_labels_cover_exactly_the_caption_and_eos(tiny_lm):
    model, processor = build_tinyvlm(_cfg(tiny_lm).vlm)
    data = fashion_split("test", 3, 0)
    prompt = prompt_text(processor, "Describe the image.")
    caps = ["a short one.", "a much longer caption of a dress.", "a bag."]
    b = captioning_batch(processor, prompt, list(data.images), caps)
    tok = processor.tokenizer
    for i, c in enumerate(caps):
        want = tok(c + tok.eos_token, add_special_tokens=False)["input_ids"]
        got = b["labels"][i][b["labels"][i] != -100].tolist()
        assert got == want
        assert b["input_ids"][i, -len(want) :].tolist() == want  # at the end: left padding
    assert int((b["input_ids"] == processor.image_token_id).sum()) == 3  # grid 1: one token per image
    total, count = caption_loss(model, b)
    with torch.no_grad():
        ref = model(**b).loss  # the LM's own shifted loss over the same labels
    assert torch.allclose(total / count, ref, atol=1e-5)


def test_pretraining_saves_a_family_with_scores_and_only_the_projector_moves(tiny_lm, tmp_path):
    cfg = _cfg(tiny_lm)
    m = pretrain(cfg, tmp_path)
    from genrep.core.checkpoint import load_model_weights

    ckpt = sorted((tmp_path / "checkpoints").glob("*.safetensors"))[-1]
    keys = set(load_model_weights(ckpt))
    assert keys and all(k.startswith("multi_modal_projector.") for k in keys), sorted(keys)[:5]
    steps = [b["step"] for b in m["backbones"]]
    assert steps == [0, 2, 4]
    for b in m["backbones"]:
        assert {"caption_loglik", "caption_accuracy", "names_a_class"} <= set(b)
        assert b["caption_loglik"] == pytest.approx(-b["caption_nll"])
    first, last = (
        load_tinyvlm(tmp_path / "backbones" / "step_000000")[0],
        load_tinyvlm(tmp_path / "backbones" / "step_000004")[0],
    )
    assert not torch.equal(first.multi_modal_projector[0].weight, last.multi_modal_projector[0].weight)
    for (n, a), (_, b) in zip(first.language_model.named_parameters(), last.language_model.named_parameters()):
        assert torch.equal(a, b), n
    for (n, a), (_, b) in zip(first.vision_tower.named_parameters(), last.vision_tower.named_parameters()):
        assert torch.equal(a, b), n
    assert (tmp_path / "figures" / "captions.png").stat().st_size > 1000
    assert (tmp_path / "figures" / "generative_score.png").is_file()
    # the saved score is the score of the saved model
    model, processor = load_tinyvlm(tmp_path / "backbones" / "step_000002")
    score = generative_score(model, processor, fashion_split("test", cfg.eval_images, cfg.seed), cfg)
    saved = json.loads((tmp_path / "backbones" / "step_000002" / "generative.json").read_text())
    assert score["caption_nll"] == pytest.approx(saved["caption_nll"], rel=1e-5)


def test_resume_after_a_crash_is_exact(tiny_lm, tmp_path, monkeypatch):
    straight = pretrain(_cfg(tiny_lm), tmp_path / "a")
    import genrep.lco.pretrain_vlm as pv

    calls = {"n": 0}
    real = pv.caption_loss

    def crashing(model, batch):
        calls["n"] += 1
        if calls["n"] == 4:  # the 4th training step (the step-2 checkpoint and backbone exist)
            raise KeyboardInterrupt
        return real(model, batch)

    monkeypatch.setattr(pv, "caption_loss", crashing)
    monkeypatch.setattr(
        pv,
        "generative_score",
        lambda *a, **k: {
            "caption_nll": 0.0,
            "caption_loglik": 0.0,
            "caption_accuracy": 0.0,
            "names_a_class": 0.0,
            "samples": [],
        },
    )
    with pytest.raises(KeyboardInterrupt):
        pretrain(_cfg(tiny_lm), tmp_path / "b")
    after = {"n": 0}

    def counting(model, batch):
        after["n"] += 1
        return real(model, batch)

    monkeypatch.setattr(pv, "caption_loss", counting)
    pretrain(_cfg(tiny_lm), tmp_path / "b", resume=True)
    assert after["n"] == 2  # steps 2 and 3 only: the run continued from the step-2 checkpoint
    a = load_tinyvlm(tmp_path / "a" / "backbones" / "step_000004")[0].multi_modal_projector.state_dict()
    b = load_tinyvlm(tmp_path / "b" / "backbones" / "step_000004")[0].multi_modal_projector.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight["backbones"][-1]["step"] == 4


def test_lm_lora_pretraining_saves_an_adapter_that_loads_merged(tiny_lm, tmp_path):
    pretrain(_cfg(tiny_lm, lm_lora_r=2, save_at=[0]), tmp_path)
    d = tmp_path / "backbones" / "step_000004"
    assert (d / "lm_adapter").is_dir()
    model, _ = load_tinyvlm(d)
    base, _ = load_tinyvlm(tmp_path / "backbones" / "step_000000")
    changed = [
        n
        for (n, a), (_, b) in zip(model.language_model.named_parameters(), base.language_model.named_parameters())
        if not torch.equal(a, b)
    ]
    assert changed and all("proj" in n for n in changed)


def test_bad_settings_are_one_line_errors(tiny_lm, tmp_path):
    with pytest.raises(UserError, match="save_at"):
        pretrain(_cfg(tiny_lm, save_at=[9]), tmp_path)
    with pytest.raises(UserError, match="photos_fraction"):
        pretrain(_cfg(tiny_lm, photos_fraction=2.0), tmp_path)


def test_reference_captions_are_fixed_per_image():
    data = fashion_split("test", 5, 0)
    assert reference_captions(data, 0) == reference_captions(data, 0)
    ten = fashion_split("test", 10, 0)
    assert (ten.images[5:] == fashion_split("test", 5, 0, offset=5).images).all()  # offsets give disjoint slices
    assert (ten.images[:5] == data.images).all()


def _fingerprint(run) -> dict:
    import hashlib

    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file()
    }


def test_resume_rules(tiny_lm, tmp_path):
    """Other settings and a lower step budget are refused before any write, so is a new run over the
    old checkpoints; nothing left to train re-makes metrics.json; fresh starts over and drops old backbones."""
    out = tmp_path / "run"
    first = pretrain(_cfg(tiny_lm), out)
    before = _fingerprint(out)
    with pytest.raises(
        UserError,
        match=r"lco pretrain-vlm --resume: lr is 0.5 but the checkpoint in .* was trained "
        r"with 0.01 \(start a new --out",
    ):
        pretrain(_cfg(tiny_lm, lr=0.5), out, resume=True)
    with pytest.raises(UserError, match="vlm.image_size is 64 but"):
        pretrain(
            _cfg(tiny_lm, vlm=TinyVLMConfig(lm=tiny_lm, vision="effnet-lite0-random", image_size=64, grid=1)),
            out,
            resume=True,
        )
    with pytest.raises(UserError, match="steps is 3 but the checkpoint .* at step 4"):
        pretrain(_cfg(tiny_lm, steps=3), out, resume=True)
    with pytest.raises(UserError, match="holds checkpoints of an earlier run .step 4."):
        pretrain(_cfg(tiny_lm), out)
    assert _fingerprint(out) == before
    (out / "metrics.json").unlink()
    again = pretrain(_cfg(tiny_lm), out, resume=True)
    assert again["resumed_from"] == 4 and again["final_loss"] == first["final_loss"] is not None
    assert again["backbones"] == first["backbones"]
    pretrain(_cfg(tiny_lm, steps=2, save_at=[0]), out, fresh=True)
    assert sorted(p.name for p in (out / "backbones").iterdir()) == ["step_000000", "step_000002"]
    assert [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()] == [1, 2]
