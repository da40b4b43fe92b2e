"""The trainer on tiny random backbones: learning, exact resume, merge, soup, methods, DDP, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from genrep.cli import main
from genrep.core.checkpoint import Checkpointer
from genrep.core.errors import UserError
from genrep.lco.adapters import load_model, merge, soup
from genrep.lco.train import TrainConfig, batch_indices, train
from tests.lco.tiny_vlms import tiny_causal_lm, tiny_qwen2vl

WORDS = ["cat", "dog", "tree", "house", "sky", "fox", "red", "blue", "green", "small", "white", "brown"]


def _rows(n: int = 24) -> list[dict]:
    rows = []
    for i in range(n):
        a, b = WORDS[i % 12], WORDS[(i * 5 + 1) % 12]
        rows.append(
            {
                "anchor": f"a {a} and a {b}",
                "positive": f"the {a} with the {b}",
                "negative": f"the {WORDS[(i + 3) % 12]} with the {b}",
            }
        )
    return rows


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lco_train")
    lm = tiny_causal_lm(root / "lm")
    data = root / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in _rows()) + "\n")
    return lm, data


def _cfg(setup, **kw) -> TrainConfig:
    lm, data = setup
    base = dict(
        backbone=lm,
        data=str(data),
        max_steps=6,
        batch_size=8,
        warmup_steps=2,
        log_every=1,
        checkpoint_every=3,
        lr=3e-3,
        device="cpu",
    )
    base.update(kw)
    cfg = TrainConfig(**base)
    cfg.lora.r, cfg.lora.alpha = 4, 8
    return cfg


def _adapter(run: Path) -> dict:
    return load_file(str(run / "model" / "adapter" / "adapter_model.safetensors"))


def test_batch_indices_are_epoch_permutations():
    seen = [i for s in range(3) for i in batch_indices(24, 8, s, seed=1)]
    assert sorted(seen) == list(range(24))
    assert batch_indices(24, 8, 3, 1) != batch_indices(24, 8, 0, 1)  # a new epoch, a new order
    with pytest.raises(UserError, match="larger than"):
        batch_indices(4, 8, 0, 0)


def test_lora_training_learns_and_resume_is_exact(setup, tmp_path, monkeypatch):
    m = train(_cfg(setup), tmp_path / "full")
    log = [json.loads(x) for x in (tmp_path / "full" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 7))
    assert max(log[-1]["loss"], log[-2]["loss"]) < log[0]["loss"] - 0.1
    assert m["trainable_params"] > 0 and (tmp_path / "full" / "figures" / "loss.png").is_file()
    assert (tmp_path / "full" / "config.yaml").is_file() and (tmp_path / "full" / "metrics.json").is_file()
    # killed during step 5 (the last checkpoint is step 3), then resumed: bitwise the same adapter and log
    import genrep.lco.train as trainer

    real, calls = trainer._full_step, []

    def crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "_full_step", crash)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(setup), tmp_path / "cut")
    monkeypatch.setattr(trainer, "_full_step", real)
    train(_cfg(setup), tmp_path / "cut", resume=True)
    a, b = _adapter(tmp_path / "full"), _adapter(tmp_path / "cut")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    cut_log = [json.loads(x) for x in (tmp_path / "cut" / "train_log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in cut_log] == [r["loss"] for r in log]


def test_chunked_loss_matches_full_batch_training(setup, tmp_path):
    cfg = _cfg(setup, max_steps=2)
    cfg.lora.dropout = 0.0
    train(cfg, tmp_path / "plain")
    cfg.chunk_size = 5
    train(cfg, tmp_path / "chunked")
    a, b = _adapter(tmp_path / "plain"), _adapter(tmp_path / "chunked")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5


def test_merge_soup_and_methods(setup, tmp_path):
    lm, _ = setup
    train(_cfg(setup, max_steps=2), tmp_path / "r1")
    train(_cfg(setup, max_steps=2, seed=1), tmp_path / "r2")
    texts = ["a cat and a dog", "the blue sky"]
    peft_emb = load_model(str(tmp_path / "r1" / "model"), merge=False).encode(texts, show_progress=False)
    merge(tmp_path / "r1" / "model", tmp_path / "merged")
    merged = load_model(str(tmp_path / "merged")).encode(texts, show_progress=False)
    assert np.abs(peft_emb - merged).max() < 1e-5
    base = load_model(f"base:{lm}").encode(texts, show_progress=False)
    assert np.abs(base - merged).max() > 1e-4  # the adapter changed something
    # a soup of a run with itself is that run; of two runs, the mean of their weight deltas
    soup([tmp_path / "r1" / "model", tmp_path / "r1" / "model"], tmp_path / "self")
    assert np.abs(load_model(str(tmp_path / "self")).encode(texts, show_progress=False) - merged).max() < 1e-5
    soup([tmp_path / "r1" / "model", tmp_path / "r2" / "model"], tmp_path / "soup")
    w = {
        n: load_file(str(p / "model" / "model.safetensors"))
        for n, p in [("a", tmp_path / "merged"), ("s", tmp_path / "soup")]
    }
    merge(tmp_path / "r2" / "model", tmp_path / "merged2")
    w["b"] = load_file(str(tmp_path / "merged2" / "model" / "model.safetensors"))
    key = next(k for k in w["s"] if "q_proj" in k)
    assert torch.allclose(w["s"][key], (w["a"][key] + w["b"][key]) / 2, atol=1e-6)
    # head: only the projection trains; full: the language model trains
    m = train(_cfg(setup, max_steps=2, method="head"), tmp_path / "head")
    assert m["trainable_params"] == 32 * 32 + 32
    assert (tmp_path / "head" / "model" / "head.safetensors").is_file()
    load_model(str(tmp_path / "head" / "model")).encode(texts, show_progress=False)
    m = train(_cfg(setup, max_steps=2, method="full"), tmp_path / "ft")
    assert m["trainable_params"] > 10_000
    assert np.abs(load_model(str(tmp_path / "ft" / "model")).encode(texts, show_progress=False) - base).max() > 1e-4


@pytest.mark.parametrize("scope", ["reference", "language"])
def test_text_only_training_leaves_vision_weights_unchanged(tmp_path, scope):
    """Text-only data never reaches the vision tower: even where the reference's LoRA scope puts adapters on
    it, they get no gradient, and the merged tower is the base tower bit for bit."""
    tiny_qwen2vl(tmp_path / "vlm")
    data = tmp_path / "t.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in _rows(8)) + "\n")
    from genrep.lco.backbones import load_backbone, tower_parameters

    before = {k: v.clone() for k, v in tower_parameters(load_backbone(str(tmp_path / "vlm")).model).items()}
    cfg = TrainConfig(
        backbone=str(tmp_path / "vlm"),
        data=str(data),
        max_steps=2,
        batch_size=4,
        warmup_steps=1,
        lr=1e-2,
        device="cpu",
        log_every=1,
    )
    cfg.lora.r, cfg.lora.alpha, cfg.lora.scope = 4, 8, scope
    train(cfg, tmp_path / "run")
    merged = load_model(str(tmp_path / "run" / "model"))
    after = tower_parameters(merged.backbone.model)
    assert before.keys() == after.keys() and before
    assert all(torch.equal(before[k], after[k]) for k in before)
    lm_keys = [k for k in _adapter(tmp_path / "run")]
    assert lm_keys and any("visual" in k for k in lm_keys) == (scope == "reference")


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]


@pytest.mark.slow  # torchrun, 2 processes
@pytest.mark.parametrize("chunk", [0, 3])
def test_two_process_default_gather_is_the_references_gradient(setup, tmp_path, chunk):
    """The trainer's own step under torchrun (2 ranks, gloo), default settings: every rank scores the global
    batch, so DDP's averaged gradient is the one-process full-batch gradient / world size (what the reference's
    optimizer and gradient clipping see), and every rank's loss is the global batch's."""
    lm, data = setup
    script = str(Path(__file__).with_name("scripts_train_grad_ddp.py"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GENREP_NO_PROGRESS": "1"}
    proc = subprocess.run(
        _torchrun(script, lm, str(data), str(tmp_path / "ddp.st"), str(chunk)), env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run(
        [sys.executable, script, lm, str(data), str(tmp_path / "one.st"), str(chunk)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp, one = load_file(str(tmp_path / "ddp.st")), load_file(str(tmp_path / "one.st"))
    assert ddp.keys() == one.keys() and len(ddp) > 2
    assert float((ddp.pop("loss") - one.pop("loss")).abs()) < 1e-5
    assert max(float(one[k].abs().max()) for k in one) > 1e-3  # a gradient that is not trivially zero
    assert max(float((ddp[k] - one[k] / 2).abs().max()) for k in one) <= 1e-5


@pytest.mark.slow  # torchrun, 2 processes
def test_two_process_training_matches_one_process(setup, tmp_path):
    """torchrun with 2 ranks (gloo), gather=full, no dropout: the same adapter as one process on the whole batch."""
    lm, data = setup
    args = [
        "lco",
        "train",
        "--backbone",
        lm,
        "--data",
        str(data),
        "--max-steps",
        "2",
        "--batch-size",
        "8",
        "--set",
        "lora.r=4",
        "--set",
        "lora.alpha=8",
        "--set",
        "lora.dropout=0.0",
        "--set",
        "gather=full",
        "--set",
        "warmup_steps=1",
        "--set",
        "lr=0.01",
        "--set",
        "device=cpu",
        "--set",
        "log_every=1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GENREP_NO_PROGRESS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "genrep",
        *args,
        "--out",
        str(tmp_path / "ddp"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    main([*args, "--out", str(tmp_path / "one")])
    a, b = _adapter(tmp_path / "ddp"), _adapter(tmp_path / "one")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    la = [json.loads(x)["loss"] for x in (tmp_path / "ddp" / "train_log.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (tmp_path / "one" / "train_log.jsonl").read_text().splitlines()]
    assert len(la) == 2 and la == pytest.approx(lb, abs=1e-5)  # the logged loss is the global batch's


def test_cli_eval_writes_headline_metrics(setup, tmp_path, capsys):
    lm, data = setup
    main(
        [
            "lco",
            "train",
            "--backbone",
            lm,
            "--data",
            str(data),
            "--max-steps",
            "1",
            "--batch-size",
            "8",
            "--set",
            "lora.r=2",
            "--set",
            "device=cpu",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    pytest.importorskip("hsk_sentences_audio")
    main(
        [
            "lco",
            "eval",
            "--model",
            str(tmp_path / "run"),
            "--task",
            "hsk-retrieval",
            "--limit",
            "30",
            "--out",
            str(tmp_path / "ev"),
        ]
    )
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    for key in ("recall@1", "ndcg@10", "anisotropy"):
        assert 0.0 <= m[key] <= 1.0
    assert m["tasks"]["hsk-retrieval"]["num_queries"] == 30
    main(["lco", "eval", "--model", f"base:{lm}", "--limit", "30", "--out", str(tmp_path / "ev0")])
    assert json.loads((tmp_path / "ev0" / "metrics.json").read_text())["recall@1"] >= 0.0
    with pytest.raises(SystemExit):
        main(["lco", "eval", "--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")])
    assert "neither base:NAME nor a trained model directory" in capsys.readouterr().err


def test_user_errors_are_one_line(setup, tmp_path, capsys):
    lm, _ = setup
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"anchor": "a", "positive": "b"}\n{"anchor": "a"}\n')
    with pytest.raises(SystemExit) as exit_info:
        main(["lco", "train", "--backbone", lm, "--data", str(bad), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.count("\n") == 0 and "bad.jsonl:2: missing field 'positive'" in err
    from genrep.lco.backbones import load_backbone

    with pytest.raises(UserError, match="NF4 base weights need a CUDA GPU"):
        load_backbone(lm, quantize="nf4", device="cpu")
    with pytest.raises(UserError, match="method: unknown"):
        train(_cfg(setup, method="adapter"), tmp_path / "m")


def test_reference_format_jsonl_trains_as_is(tmp_path, monkeypatch, capsys):
    """A JSONL in the reference's format (text + image_path sides, "" for absent, paths relative to the working
    directory) trains through the CLI on a tiny Qwen2-VL with the reference budgets given as flags; the saved model
    keeps the evaluation budgets. A missing image is a one-line error naming the file, line and field."""
    from tests.lco.test_data import REFERENCE_ROWS

    tiny_qwen2vl(tmp_path / "vlm")
    (tmp_path / "images").mkdir()
    Image.new("RGB", (900, 300), (200, 40, 40)).save(tmp_path / "images" / "cat.png")
    rows = REFERENCE_ROWS * 2
    data = tmp_path / "ref.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    monkeypatch.chdir(tmp_path)
    args = ["lco", "train", "--backbone", str(tmp_path / "vlm"), "--data", "ref.jsonl", "--batch-size", "2"]
    flags = ["--epochs", "1", "--max-length", "16", "--thumbnail", "112", "--max-pixels", "12544"]
    sets = ["--set", "lora.r=4", "--set", "warmup_steps=1", "--set", "device=cpu", "--set", "log_every=1"]
    main([*args, *flags, *sets, "--out", "run"])
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["steps"] == 2 and m["train_rows"] == 4 and m["gather"] == "global" and m["quantize"] == ""
    assert np.isfinite(m["final"]["loss"])
    spec = json.loads((tmp_path / "run" / "model" / "lco_model.json").read_text())
    assert (spec["max_length"], spec["max_pixels"]) == (300, 1280 * 28 * 28)
    assert spec["prompts"]["train_order"] == "media-first" and spec["prompts"]["eval_order"] == "text-first"
    emb = load_model("run/model")
    assert emb.encode([{"text": "a cat", "image": Image.new("RGB", (64, 64))}], show_progress=False).shape[0] == 1
    rows[3] = {**rows[3], "anchor": {"image_path": "images/gone.png", "text": ""}}
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*args, *sets, "--out", "run2"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.count("\n") == 0
    assert "ref.jsonl:4: anchor.image_path: file not found" in err and not (tmp_path / "run2").exists()


def test_epochs_and_the_linear_schedule(setup, tmp_path):
    """``epochs`` sets the step count (24 rows / batch 8 = 3 steps per epoch); the LR follows HF Trainer's linear
    warmup and decay (0 at the first step)."""
    cfg = _cfg(setup, epochs=2.0, max_steps=1, warmup_steps=2, lr=1e-3, checkpoint_every=100)
    m = train(cfg, tmp_path / "run")
    assert m["steps"] == 6 and m["epochs"] == 2.0
    lrs = [json.loads(x)["lr"] for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    # the logged lr is the one for the next step: s / 2 while warming up, then (6 - s) / 4
    assert lrs == pytest.approx([1e-3 * f for f in (0.5, 1.0, 0.75, 0.5, 0.25, 0.0)])


def test_merge_and_soup_commands_write_config_and_metrics(setup, tmp_path):
    train(_cfg(setup, max_steps=1), tmp_path / "r")
    main(["lco", "merge", "--model", str(tmp_path / "r"), "--out", str(tmp_path / "m")])
    main(["lco", "soup", "--model", str(tmp_path / "r"), "--model", str(tmp_path / "r"), "--out", str(tmp_path / "s")])
    for d in ("m", "s"):
        assert (tmp_path / d / "config.yaml").is_file() and (tmp_path / d / "lco_model.json").is_file()
        assert json.loads((tmp_path / d / "metrics.json").read_text())["model"] == str(tmp_path / d)


@pytest.fixture(scope="module")
def lco_done(setup, tmp_path_factory):
    """A finished 4-step LoRA run with checkpoints at 2 and 4."""
    out = tmp_path_factory.mktemp("lco_done") / "run"
    train(_cfg(setup, max_steps=4, checkpoint_every=2), out)
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, tmp_path / "run"))


def _fingerprint(run: Path) -> dict:
    import hashlib

    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file()
    }


def _train_argv(setup, out: Path, *extra) -> list[str]:
    lm, data = setup
    return [
        "lco",
        "train",
        "--backbone",
        lm,
        "--data",
        str(data),
        "--max-steps",
        "4",
        "--batch-size",
        "8",
        "--lr",
        "0.003",
        "--set",
        "warmup_steps=2",
        "--set",
        "log_every=1",
        "--set",
        "checkpoint_every=2",
        "--set",
        "device=cpu",
        "--set",
        "lora.r=4",
        "--set",
        "lora.alpha=8",
        "--out",
        str(out),
        *extra,
    ]


def _log(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]


def test_resume_refuses_other_settings_and_writes_nothing(setup, lco_done, tmp_path, capsys):
    run = _copy(lco_done, tmp_path)
    before = _fingerprint(run)
    for extra, msg in (
        (
            ["--resume", "--lr", "0.1"],
            f"lco train --resume: lr is 0.1 but the checkpoint in {run} was trained with 0.003",
        ),
        (["--resume", "--set", "lora.r=8"], "lora.r is 8 but"),
        (["--resume", "--max-steps", "3"], "max_steps is 3 but the checkpoint"),
        ([], "holds checkpoints of an earlier run (step 4); pass --resume"),
    ):
        with pytest.raises(SystemExit) as e:
            main(_train_argv(setup, run, *extra))
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and msg in err, err
    assert _fingerprint(run) == before


def test_resume_with_nothing_left_re_exports_the_checkpoint(setup, lco_done, tmp_path, capsys):
    run = _copy(lco_done, tmp_path)
    (run / "model" / "adapter" / "adapter_model.safetensors").unlink()
    with (run / "train_log.jsonl").open("a") as f:
        f.write('{"step": 5, "loss": 0.')  # torn by a kill
    stale = run / "checkpoints" / ".step-00000006.safetensors.q9.tmp"
    stale.write_bytes(b"\0" * 500)
    main(_train_argv(setup, run, "--resume"))
    out = capsys.readouterr().out
    assert "nan" not in out and "nothing left to train" in out and "final loss" in out
    m = json.loads((run / "metrics.json").read_text())
    assert m["steps"] == 4 and m["resumed_from"] == 4 and m["final"] == _log(run)[-1] and m["final"]["step"] == 4
    assert [r["step"] for r in _log(run)] == [1, 2, 3, 4] and not stale.exists()
    a, b = _adapter(lco_done), _adapter(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_raised_budget_on_resume_is_recorded_and_fresh_starts_over(setup, lco_done, tmp_path):
    run = _copy(lco_done, tmp_path)
    m = train(_cfg(setup, max_steps=5, checkpoint_every=2, chunk_size=4), run, resume=True)  # chunk_size: memory only
    rows = _log(run)
    (event,) = [r for r in rows if "event" in r]
    assert (event["step"], event["from"], event["to"]) == (4, 4, 5) and "LR schedule follows max_steps=5" in event[
        "note"
    ]
    assert [r["step"] for r in rows if "event" not in r] == [1, 2, 3, 4, 5]
    assert m["resumed_from"] == 4 and json.loads((run / "metrics.json").read_text())["max_steps_changed"][0]["to"] == 5
    train(_cfg(setup, max_steps=2, checkpoint_every=2), run, fresh=True)
    assert [s for s, _ in Checkpointer(run / "checkpoints").all()] == [2]
    assert [r["step"] for r in _log(run)] == [1, 2] and "resumed_from" not in json.loads(
        (run / "metrics.json").read_text()
    )


def test_kbit_lora_goes_through_prepare_model_for_kbit_training(setup, monkeypatch):
    """With 4-bit base weights the reference calls peft's prepare_model_for_kbit_training before adding LoRA;
    so does apply_method(kbit=True). ``quantize: auto`` picks NF4 only for LoRA on CUDA with bitsandbytes."""
    import peft

    from genrep.lco.adapters import LoraSettings, apply_method
    from genrep.lco.embedding import EmbeddingModel
    from genrep.lco.train import resolve_quantize

    lm, _ = setup
    calls = []
    real = peft.prepare_model_for_kbit_training

    def spy(model, **kw):
        calls.append(kw)
        return real(model, **kw)

    monkeypatch.setattr(peft, "prepare_model_for_kbit_training", spy)
    emb = EmbeddingModel.from_pretrained(lm)
    params = apply_method(emb, "lora", LoraSettings(r=2, alpha=4), kbit=True, grad_checkpointing=True)
    assert calls == [{"use_gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}}]
    assert params and all(p.requires_grad for p in params)
    assert resolve_quantize(_cfg(setup), torch.device("cpu")) == ""
    assert resolve_quantize(_cfg(setup, quantize="nf4"), torch.device("cpu")) == "nf4"  # then a one-line error
    assert resolve_quantize(_cfg(setup, method="full"), torch.device("cuda")) == ""
