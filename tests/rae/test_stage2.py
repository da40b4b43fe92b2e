"""The stage-2 pipeline end to end on a tiny RAE: train-dit, resume, NaN stop, sample, eval."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from genrep.cli import main
from genrep.core.errors import UserError
from genrep.rae.encoders import build_encoder
from genrep.rae.latents import cache_latents
from genrep.rae.train_decoder import TrainDecoderConfig, train_decoder
from genrep.rae.train_dit import TrainDiTConfig, train_dit


@pytest.fixture(scope="module")
def rae_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("stage2")
    cache_latents(build_encoder("effnet-lite0"), "fashion-mnist", base / "latents", limit=120, batch_size=60)
    train_decoder(
        TrainDecoderConfig(
            latents=base / "latents",
            max_steps=3,
            batch_size=8,
            perceptual="none",
            log_every=1,
            checkpoint_every=3,
            device="cpu",
        ),
        base / "rae",
    )
    return base / "rae"


def _cfg(rae_run, **kw):
    base = dict(
        rae=rae_run, model="dit-tiny", max_steps=12, batch_size=8, log_every=2, checkpoint_every=6, device="cpu"
    )
    base.update(kw)
    return TrainDiTConfig(**base)


def test_train_dit_uses_the_shift_and_writes_a_model(rae_run, tmp_path):
    m = train_dit(_cfg(rae_run, model="ditdh-tiny"), tmp_path / "dit")
    assert m["shift_alpha"] == pytest.approx((320 * 16 / 4096) ** 0.5)
    assert (tmp_path / "dit" / "model" / "dit.safetensors").exists()
    assert m["final"]["step"] == 12 and np.isfinite(m["final"]["loss"])
    m_off = train_dit(_cfg(rae_run, shift=False, max_steps=2), tmp_path / "noshift")
    assert m_off["shift_alpha"] == 1.0


def test_train_dit_resume_equals_uninterrupted(rae_run, tmp_path, monkeypatch):
    train_dit(_cfg(rae_run), tmp_path / "full")
    import genrep.rae.train_dit as td

    real = td.flow_matching_loss
    calls = {"n": 0}

    def crash(*a, **k):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(td, "flow_matching_loss", crash)
    with pytest.raises(KeyboardInterrupt):
        train_dit(_cfg(rae_run), tmp_path / "parts")
    monkeypatch.setattr(td, "flow_matching_loss", real)
    train_dit(_cfg(rae_run), tmp_path / "parts", resume=True)
    a = load_file(str(tmp_path / "full" / "checkpoints" / "step-00000012.safetensors"))
    b = load_file(str(tmp_path / "parts" / "checkpoints" / "step-00000012.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("rng."))


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(rae_run, tmp_path, monkeypatch):
    import genrep.rae.train_dit as td

    real = td.flow_matching_loss
    calls = {"n": 0}

    def nan_after_7(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] > 7 else loss

    monkeypatch.setattr(td, "flow_matching_loss", nan_after_7)
    with pytest.raises(UserError, match=r"loss became nan at step 7 .*step-00000006"):
        train_dit(_cfg(rae_run), tmp_path / "nan")
    assert [p.name for p in (tmp_path / "nan" / "checkpoints").iterdir()] == ["step-00000006.safetensors"]


def test_sample_and_eval_commands(rae_run, tmp_path, capsys):
    train_dit(_cfg(rae_run, max_steps=4), tmp_path / "dit")
    main(
        [
            "rae",
            "sample",
            "--dit",
            str(tmp_path / "dit"),
            "--num",
            "20",
            "--steps",
            "3",
            "--guidance",
            "cfg",
            "--scale",
            "1.5",
            "--set",
            "per_class=2",
            "--out",
            str(tmp_path / "samples"),
        ]
    )
    data = np.load(tmp_path / "samples" / "samples.npz")
    assert data["arr_0"].shape == (20, 28, 28, 3) and data["arr_0"].dtype == np.uint8
    assert np.bincount(data["labels"], minlength=10).tolist() == [2] * 10
    assert (tmp_path / "samples" / "figures" / "grid.png").exists()
    main(
        [
            "rae",
            "sample",
            "--dit",
            str(tmp_path / "dit"),
            "--num",
            "10",
            "--steps",
            "2",
            "--sampler",
            "heun",
            "--guidance",
            "autoguidance",
            "--set",
            f"guide={tmp_path / 'dit'}",
            "--out",
            str(tmp_path / "ag"),
        ]
    )
    main(
        [
            "rae",
            "eval",
            "--samples",
            str(tmp_path / "samples"),
            "--set",
            "real_limit=20",
            "--set",
            "classifier_train=60",
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {"fd_effnet", "precision", "recall", "class_accuracy", "classifier_real_accuracy"} <= set(m)
    assert 0 <= m["class_accuracy"] <= 1 and m["fid"] is None
    with pytest.raises(SystemExit) as e:
        main(["rae", "sample", "--dit", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and "no trained DiT found" in capsys.readouterr().err


@pytest.mark.slow  # torchrun, 2 processes
def test_train_dit_runs_data_parallel_under_torchrun(rae_run, tmp_path):
    import os
    import subprocess
    import sys

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
        "rae",
        "train-dit",
        "--rae",
        str(rae_run),
        "--model",
        "dit-tiny",
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--set",
        "log_every=1",
        "--set",
        "device=cpu",
        "--out",
        str(tmp_path / "ddp"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = [json.loads(line)["step"] for line in (tmp_path / "ddp" / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2] and (tmp_path / "ddp" / "model" / "dit.safetensors").exists()


@pytest.mark.slow  # torchrun, 2 processes
def test_two_process_train_dit_step_equals_one_process_on_the_concatenated_batch(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("scripts_dit_ddp_step.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        str(tmp_path / "r.json"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["moved"] > 1e-4  # the steps changed the weights (clipped), and both runs agree
    assert r["param_err"] < 1e-6 and r["ema_err"] < 1e-6
    assert min(r["norms"]) > 0.05 and r["norm_rel_err"] < 1e-5  # gradients averaged (not summed) over ranks


def test_sample_with_another_stage1_decoder(rae_run, tmp_path):
    from genrep.rae.autoencoder import RAE
    from genrep.rae.sample import swap_decoder

    train_dit(_cfg(rae_run, max_steps=2), tmp_path / "dit")
    args = ["rae", "sample", "--dit", str(tmp_path / "dit"), "--num", "10", "--steps", "2"]
    main([*args, "--out", str(tmp_path / "own")])
    main([*args, "--set", f"rae={rae_run}", "--out", str(tmp_path / "swapped")])
    a, b = (np.load(tmp_path / d / "samples.npz")["arr_0"] for d in ("own", "swapped"))
    assert np.array_equal(a, b)  # the same decoder behind the same statistics decodes identically

    trained, other = RAE.from_pretrained(rae_run / "model"), RAE.from_pretrained(rae_run / "model")
    other.stats.mean.add_(1.0)
    assert torch.equal(swap_decoder(trained, other, "x").stats.mean, trained.stats.mean)  # the DiT's statistics
    other.encoder_spec = {**other.encoder_spec, "input_size": 64}
    with pytest.raises(UserError, match="encoder .* differs"):
        swap_decoder(trained, other, "x")


def test_eval_caches_the_real_features(tmp_path, monkeypatch):
    import genrep.rae.evaluate as ev

    monkeypatch.setenv("GENREP_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "s.npz", arr_0=rng.integers(0, 255, (10, 28, 28, 3), dtype=np.uint8), labels=np.arange(10))
    cfg = ev.EvalConfig(samples=tmp_path / "s.npz", real_limit=20, classifier_train=30, device="cpu")
    first = ev.evaluate(cfg, tmp_path / "e1")
    assert len(list((tmp_path / "cache" / "rae_eval").glob("real_*.npz"))) == 2  # test split and training split

    def no_images(*a, **k):
        raise AssertionError("real images were loaded again")

    monkeypatch.setattr(ev, "_real_images", no_images)
    second = ev.evaluate(cfg, tmp_path / "e2")
    assert second["fd_effnet"] == first["fd_effnet"] and second["class_accuracy"] == first["class_accuracy"]
    with pytest.raises(AssertionError, match="loaded again"):
        ev.evaluate(
            ev.EvalConfig(samples=tmp_path / "s.npz", real_limit=21, classifier_train=30, device="cpu"), tmp_path / "e3"
        )


def test_train_dit_writes_periodic_sample_grids_and_evaluations(rae_run, tmp_path):
    m = train_dit(
        _cfg(rae_run, max_steps=4, sample_every=2, eval_every=2, eval_num=20, eval_steps=2, eval_real=20),
        tmp_path / "dit",
    )
    figs = sorted(p.name for p in (tmp_path / "dit" / "figures").glob("samples-step-*.png"))
    assert figs == ["samples-step-00000002.png", "samples-step-00000004.png"]
    rows = [json.loads(line) for line in (tmp_path / "dit" / "eval_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and all(np.isfinite(r["fd_effnet"]) for r in rows)
    assert m["eval"]["step"] == 4 and 0 <= m["eval"]["class_accuracy"] <= 1


@pytest.fixture(scope="module")
def dit_done(rae_run, tmp_path_factory):
    """A finished 4-step train-dit run with checkpoints at 2 and 4 and evaluations at 2 and 4."""
    out = tmp_path_factory.mktemp("dit_done") / "run"
    train_dit(
        _cfg(
            rae_run, max_steps=4, log_every=1, checkpoint_every=2, eval_every=2, eval_num=20, eval_steps=2, eval_real=20
        ),
        out,
    )
    return out


def _copy(run, tmp_path):
    import shutil

    return shutil.copytree(run, tmp_path / "run")


def _fingerprint(run) -> dict:
    import hashlib

    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file()
    }


def _dit_argv(rae_run, out, *extra):
    return [
        "rae",
        "train-dit",
        "--rae",
        str(rae_run),
        "--model",
        "dit-tiny",
        "--max-steps",
        "4",
        "--batch-size",
        "8",
        "--set",
        "log_every=1",
        "--set",
        "checkpoint_every=2",
        "--set",
        "eval_every=2",
        "--set",
        "eval_num=20",
        "--set",
        "eval_steps=2",
        "--set",
        "eval_real=20",
        "--set",
        "device=cpu",
        "--out",
        str(out),
        *extra,
    ]


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_train_dit_resume_refuses_other_settings_and_writes_nothing(rae_run, dit_done, tmp_path, capsys):
    run = _copy(dit_done, tmp_path)
    before = _fingerprint(run)
    with pytest.raises(SystemExit) as e:
        main([*_dit_argv(rae_run, run, "--resume"), "--model", "ditdh-tiny"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    assert f"train-dit --resume: model is 'ditdh-tiny' but the checkpoint in {run} was trained with 'dit-tiny'" in err
    base = dict(max_steps=4, log_every=1, checkpoint_every=2, eval_every=2, eval_num=20, eval_steps=2, eval_real=20)
    with pytest.raises(UserError, match="max_steps is 3 but the checkpoint .* at step 4"):
        train_dit(_cfg(rae_run, **{**base, "max_steps": 3}), run, resume=True)
    with pytest.raises(UserError, match="lr is 0.1 but"):
        train_dit(_cfg(rae_run, **base, lr=0.1), run, resume=True)
    with pytest.raises(UserError, match="holds checkpoints of an earlier run .step 4.; pass --resume"):
        train_dit(_cfg(rae_run, **base), run)
    assert _fingerprint(run) == before


def test_train_dit_resume_with_nothing_left_re_exports_the_checkpoint(rae_run, dit_done, tmp_path, capsys):
    from genrep.core.checkpoint import load_model_weights

    run = _copy(dit_done, tmp_path)
    (run / "model" / "dit.safetensors").unlink()
    with (run / "train_log.jsonl").open("a") as f:
        f.write('{"step": 5, "lo')  # torn by a kill
    stale = run / "checkpoints" / ".step-00000006.safetensors.x7.tmp"
    stale.write_bytes(b"\0" * 500)
    main(_dit_argv(rae_run, run, "--resume"))
    out = capsys.readouterr().out
    assert "nan" not in out and "nothing left to train" in out and "final loss" in out
    m = json.loads((run / "metrics.json").read_text())
    log = _rows(run / "train_log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3, 4] and m["final"] == log[-1]
    assert m["steps"] == 4 and m["resumed_from"] == 4
    assert [r["step"] for r in _rows(run / "eval_log.jsonl")] == [2, 4] and m["eval"]["step"] == 4  # not re-evaluated
    ema = load_model_weights(run / "checkpoints" / "step-00000004.safetensors", "ema")
    exported = load_file(str(run / "model" / "dit.safetensors"))
    assert ema.keys() == exported.keys() and all(torch.equal(ema[k], exported[k]) for k in ema)
    assert not stale.exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step-00000002.safetensors",
        "step-00000004.safetensors",
    ]


def test_train_dit_raised_budget_is_recorded_and_fresh_starts_over(rae_run, dit_done, tmp_path):
    run = _copy(dit_done, tmp_path)
    base = dict(log_every=1, checkpoint_every=2, eval_every=2, eval_num=20, eval_steps=2, eval_real=20)
    m = train_dit(_cfg(rae_run, max_steps=5, **{**base, "eval_every": 0}), run, resume=True)
    (event,) = [r for r in _rows(run / "train_log.jsonl") if "event" in r]
    assert (event["step"], event["from"], event["to"]) == (4, 4, 5) and "does not depend" in event["note"]
    assert m["resumed_from"] == 4 and m["final"]["step"] == 5
    assert json.loads((run / "metrics.json").read_text())["max_steps_changed"][0]["to"] == 5
    train_dit(_cfg(rae_run, max_steps=2, **{**base, "eval_every": 0}), run, fresh=True)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000002.safetensors"]
    assert [r["step"] for r in _rows(run / "train_log.jsonl")] == [1, 2]
    assert not (run / "eval_log.jsonl").exists()  # the earlier run's evaluations went with it
    assert "resumed_from" not in json.loads((run / "metrics.json").read_text())
