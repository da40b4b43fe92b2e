import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genrep.cli import main
from genrep.core.checkpoint import Checkpointer, load_model_weights, read_metadata
from genrep.core.errors import UserError
from genrep.rae.autoencoder import RAE
from genrep.rae.encoders import build_encoder
from genrep.rae.latents import cache_latents, load_cache
from genrep.rae.reconstruct import ReconstructConfig, reconstruct
from genrep.rae.train_decoder import TrainDecoderConfig, train_decoder


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("latents")
    cache_latents(
        build_encoder("effnet-lite0"),
        "fashion-mnist",
        out,
        split="train",
        image_size=28,
        limit=256,
        batch_size=64,
        shard_size=100,
    )
    return out


def test_cache_holds_latents_targets_and_exact_stats(cache_dir):
    cache = load_cache(cache_dir)
    assert cache.meta["num_items"] == 256 and cache.meta["num_shards"] == 3
    assert cache.latents.shape == (256, 320, 4, 4) and cache.images.shape == (256, 28, 28, 3)
    assert torch.allclose(cache.stats.mean, cache.latents.double().mean(0).float(), atol=1e-5)
    assert torch.allclose(cache.stats.var, cache.latents.double().var(0, unbiased=False).float(), atol=1e-4)
    assert cache.meta["encoder"]["name"] == "effnet-lite0"


def test_cache_resumes_by_skipping_finished_shards(cache_dir):
    before = (cache_dir / "shard-00001.safetensors").stat().st_mtime_ns
    (cache_dir / "shard-00002.safetensors").unlink()  # as if the job died before the last shard
    cache_latents(
        build_encoder("effnet-lite0"),
        "fashion-mnist",
        cache_dir,
        split="train",
        image_size=28,
        limit=256,
        batch_size=64,
        shard_size=100,
    )
    assert (cache_dir / "shard-00001.safetensors").stat().st_mtime_ns == before
    assert load_cache(cache_dir).latents.shape[0] == 256


def _cfg(cache_dir, **kw):
    base = dict(
        latents=cache_dir,
        decoder="tiny",
        max_steps=40,
        batch_size=16,
        lr=1e-3,
        warmup_steps=5,
        perceptual="none",
        log_every=5,
        checkpoint_every=10,
        device="cpu",
    )
    base.update(kw)
    return TrainDecoderConfig(**base)


def test_short_training_lowers_the_loss_and_saves_a_loadable_rae(cache_dir, tmp_path):
    m = train_decoder(_cfg(cache_dir, noise_tau=0.0), tmp_path / "run")
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["l1"] < 0.85 * log[0]["l1"]
    assert m["final"]["step"] == 40 and (tmp_path / "run" / "figures" / "loss.png").exists()
    rae = RAE.from_pretrained(tmp_path / "run" / "model")
    x = load_cache(cache_dir).target(torch.arange(4))
    assert rae(x).shape == (4, 3, 28, 28)
    assert (tmp_path / "run" / "config.yaml").exists() and json.loads((tmp_path / "run" / "metrics.json").read_text())[
        "steps"
    ] == 40


def test_resume_equals_an_uninterrupted_run(cache_dir, tmp_path, monkeypatch):
    train_decoder(_cfg(cache_dir, max_steps=20), tmp_path / "full")

    import genrep.rae.train_decoder as td

    calls = {"n": 0}
    real_noise = td.add_latent_noise

    def crash_at_step_13(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 13:
            raise KeyboardInterrupt("simulated crash")
        return real_noise(*args, **kwargs)

    monkeypatch.setattr(td, "add_latent_noise", crash_at_step_13)
    with pytest.raises(KeyboardInterrupt):
        train_decoder(_cfg(cache_dir, max_steps=20), tmp_path / "parts")
    monkeypatch.setattr(td, "add_latent_noise", real_noise)
    ckdir = tmp_path / "parts" / "checkpoints"
    assert [s for s, _ in Checkpointer(ckdir).all()] == [10]
    # what a kill can leave: a log line cut short and the temporary file of a checkpoint write
    with (tmp_path / "parts" / "train_log.jsonl").open("a") as f:
        f.write('{"step": 15, "epoch": 0.9, "lo')
    stale = ckdir / ".step-00000020.safetensors.k1ll3d.tmp"
    stale.write_bytes(b"\0" * 1000)
    train_decoder(_cfg(cache_dir, max_steps=20), tmp_path / "parts", resume=True)
    assert not stale.exists() and not list(ckdir.glob(".*.tmp"))
    a = load_file(str(tmp_path / "full" / "checkpoints" / "step-00000020.safetensors"))
    b = load_file(str(tmp_path / "parts" / "checkpoints" / "step-00000020.safetensors"))
    keys = [k for k in a if not k.startswith("rng.")]
    assert keys and all(torch.equal(a[k], b[k]) for k in keys)
    steps = [json.loads(line)["step"] for line in (tmp_path / "parts" / "train_log.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20]  # no duplicated log lines after the resume


@pytest.fixture(scope="module")
def done_run(cache_dir, tmp_path_factory):
    """A finished 8-step run (checkpoints at 4 and 8); tests work on copies of it."""
    out = tmp_path_factory.mktemp("done") / "run"
    train_decoder(_cfg(cache_dir, max_steps=8, checkpoint_every=4, log_every=2), out)
    return out


def _copy(run, tmp_path):
    import shutil

    return Path(shutil.copytree(run, tmp_path / "run"))


def _fingerprint(run) -> dict:
    """Hashes of every file in the run directory (a refused command must leave them all as they were)."""
    import hashlib

    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file()
    }


def _cli(argv, capsys) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _decoder_argv(cache_dir, out, *extra):
    return [
        "rae",
        "train-decoder",
        "--latents",
        str(cache_dir),
        "--decoder",
        "tiny",
        "--max-steps",
        "8",
        "--batch-size",
        "16",
        "--set",
        "lr=0.001",
        "--set",
        "warmup_steps=5",
        "--set",
        "perceptual=none",
        "--set",
        "log_every=2",
        "--set",
        "checkpoint_every=4",
        "--set",
        "device=cpu",
        "--out",
        str(out),
        *extra,
    ]


def test_resume_with_a_changed_setting_is_one_line_and_writes_nothing(cache_dir, done_run, tmp_path, capsys):
    run = _copy(done_run, tmp_path)
    before = _fingerprint(run)
    code, _, err = _cli([*_decoder_argv(cache_dir, run, "--resume"), "--decoder", "S"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert f"train-decoder --resume: decoder is 'S' but the checkpoint in {run} was trained with 'tiny'" in err
    code, _, err = _cli([*_decoder_argv(cache_dir, run, "--resume"), "--max-steps", "6"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "max_steps is 6 but the checkpoint" in err and "at step 8" in err
    assert _fingerprint(run) == before  # config.yaml, metrics.json, the log, the checkpoints: untouched


def test_the_config_check_does_not_depend_on_config_yaml(cache_dir, done_run, tmp_path):
    run = _copy(done_run, tmp_path)
    (run / "config.yaml").write_text("decoder: S\n")  # the checkpoint's own record of its config wins
    with pytest.raises(UserError, match="noise_tau is 0.5 but the checkpoint"):
        train_decoder(_cfg(cache_dir, max_steps=8, checkpoint_every=4, log_every=2, noise_tau=0.5), run, resume=True)


def test_resume_with_nothing_left_re_exports_the_checkpoint(cache_dir, done_run, tmp_path, capsys):
    run = _copy(done_run, tmp_path)
    (run / "model" / "rae.safetensors").unlink()  # as if the first run was killed while exporting
    (run / "metrics.json").unlink()
    code, out, err = _cli(_decoder_argv(cache_dir, run, "--resume"), capsys)
    assert code == 0, err
    assert "nan" not in out and "nothing left to train" in out and "final loss" in out
    m = json.loads((run / "metrics.json").read_text())
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert m["steps"] == 8 and m["resumed_from"] == 8 and m["final"] == log[-1] and m["final"]["step"] == 8
    assert [r["step"] for r in log] == [2, 4, 6, 8]
    ema = load_model_weights(run / "checkpoints" / "step-00000008.safetensors", "ema")
    exported = {
        k.removeprefix("decoder."): v
        for k, v in load_file(str(run / "model" / "rae.safetensors")).items()
        if k.startswith("decoder.")
    }
    assert ema.keys() == exported.keys() and all(torch.equal(ema[k], exported[k]) for k in ema)
    assert [s for s, _ in Checkpointer(run / "checkpoints").all()] == [4, 8]


def test_raising_max_steps_on_resume_is_recorded(cache_dir, done_run, tmp_path):
    run = _copy(done_run, tmp_path)
    m = train_decoder(_cfg(cache_dir, max_steps=12, checkpoint_every=4, log_every=2), run, resume=True)
    rows = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    events = [r for r in rows if "event" in r]
    assert [r["step"] for r in rows if "event" not in r] == [2, 4, 6, 8, 10, 12]
    assert len(events) == 1 and events[0]["step"] == 8 and (events[0]["from"], events[0]["to"]) == (8, 12)
    # the reference schedule ends at decay_end (steps or epochs), not at max_steps
    assert "the LR schedule does not depend on max_steps" in events[0]["note"]
    written = json.loads((run / "metrics.json").read_text())
    assert m["steps"] == written["steps"] == 12 and written["resumed_from"] == 8 and written["final"]["step"] == 12
    assert written["max_steps_changed"] == [{k: events[0][k] for k in ("step", "from", "to", "note")}]
    meta = read_metadata(run / "checkpoints" / "step-00000012.safetensors")
    assert meta["extra"]["config"]["max_steps"] == 12 and meta["extra"]["config"]["decoder"] == "tiny"


def test_a_new_run_into_an_out_with_checkpoints_is_refused_unless_fresh(cache_dir, done_run, tmp_path, capsys):
    run = _copy(done_run, tmp_path)
    before = _fingerprint(run)
    code, _, err = _cli(_decoder_argv(cache_dir, run), capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert f"{run / 'checkpoints'} holds checkpoints of an earlier run (step 8); pass --resume" in err
    assert _fingerprint(run) == before
    train_decoder(_cfg(cache_dir, max_steps=3, checkpoint_every=2, log_every=1), run, fresh=True)
    assert [s for s, _ in Checkpointer(run / "checkpoints").all()] == [2, 3]
    assert [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert json.loads((run / "metrics.json").read_text())["steps"] == 3


def test_reconstruct_writes_the_metric_contract(cache_dir, tmp_path):
    train_decoder(_cfg(cache_dir, max_steps=10), tmp_path / "run")
    m = reconstruct(ReconstructConfig(model=tmp_path / "run", limit=32, batch_size=16, device="cpu"), tmp_path / "eval")
    assert {"psnr", "ssim", "rfd_effnet"} <= set(m) and m["num_images"] == 32
    assert m["rfid"] is None and m["rfid_status"].startswith("unavailable")
    assert (tmp_path / "eval" / "figures" / "reconstructions.png").exists()


def test_cli_contract_and_user_errors(cache_dir, tmp_path, capsys):
    main(
        [
            "rae",
            "cache-latents",
            "--encoder",
            "effnet-lite0",
            "--dataset",
            "fashion-mnist",
            "--limit",
            "8",
            "--out",
            str(tmp_path / "c"),
        ]
    )
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())["num_items"] == 8
    assert "effnet-lite0" in (tmp_path / "c" / "config.yaml").read_text()
    main(
        [
            "rae",
            "train-decoder",
            "--latents",
            str(cache_dir),
            "--decoder",
            "tiny",
            "--max-steps",
            "4",
            "--out",
            str(tmp_path / "cli"),
            "--noise-tau",
            "0.8",
            "--set",
            "perceptual=none",
            "--set",
            "batch_size=8",
        ]
    )
    assert (tmp_path / "cli" / "model" / "rae_config.json").exists()
    for argv, msg in [
        (
            ["rae", "train-decoder", "--latents", str(tmp_path / "nope"), "--out", str(tmp_path / "x")],
            "not a latent cache",
        ),
        (
            ["rae", "train-decoder", "--latents", str(cache_dir), "--decoder", "huge", "--out", str(tmp_path / "x")],
            "--decoder: expected one of 'tiny', 'S', 'B', 'L', 'XL', got 'huge'",
        ),
        (["rae", "reconstruct", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "y")], "no RAE found"),
        (["rae", "cache-latents", "--encoder", "dino", "--out", str(tmp_path / "z")], "unknown encoder 'dino'"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and msg in err and err.count("\n") == 1, err


def test_bad_config_values_are_rejected(cache_dir):
    with pytest.raises(UserError, match="max_steps must be positive"):
        train_decoder(_cfg(cache_dir, max_steps=0), "/tmp/never")


def test_gan_and_perceptual_terms_run_and_are_logged(cache_dir, tmp_path):
    cfg = _cfg(
        cache_dir,
        max_steps=2,
        batch_size=2,
        log_every=1,
        checkpoint_every=2,
        perceptual="effnet",
        gan=True,
        disc_start_epoch=0.0,
        gan_start_epoch=0.0,
    )
    train_decoder(cfg, tmp_path / "gan")
    last = json.loads((tmp_path / "gan" / "train_log.jsonl").read_text().splitlines()[-1])
    assert {"effnet-perceptual", "g_loss", "gan_lambda", "d_loss"} <= set(last)
    assert 0 <= last["gan_lambda"] <= 1e4
    ck = load_file(str(tmp_path / "gan" / "checkpoints" / "step-00000002.safetensors"))
    assert any(k.startswith("model.disc.heads") for k in ck) and any(k.startswith("optim.disc.") for k in ck)


def _torchrun(*args):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "GENREP_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True)


@pytest.mark.slow  # torchrun, 2 processes
def test_latent_stats_merge_exactly_across_two_gloo_ranks(tmp_path):
    from pathlib import Path

    script = Path(__file__).parent / "scripts_stats_ddp.py"
    proc = _torchrun(str(script), str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["count"] == 37 and r["err_mean"] < 1e-12 and r["err_var"] < 1e-12


@pytest.mark.slow  # torchrun, 2 processes
def test_train_decoder_runs_data_parallel_under_torchrun(cache_dir, tmp_path):
    proc = _torchrun(
        "-m",
        "genrep",
        "rae",
        "train-decoder",
        "--latents",
        str(cache_dir),
        "--max-steps",
        "4",
        "--batch-size",
        "8",
        "--set",
        "perceptual=none",
        "--set",
        "log_every=2",
        "--set",
        "device=cpu",
        "--out",
        str(tmp_path / "ddp"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "ddp" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]  # rank 0 writes the log once, not once per rank
    assert (tmp_path / "ddp" / "model" / "rae.safetensors").exists()


def test_resume_with_the_gan_on_equals_an_uninterrupted_run(cache_dir, tmp_path, monkeypatch):
    """D's weights, optimizer and its own LR schedule (stepped per D update), the DiffAug draws and the
    fresh 8-bit D input all continue exactly."""
    kw = dict(
        max_steps=6,
        batch_size=2,
        log_every=1,
        checkpoint_every=3,
        gan=True,
        disc_start_epoch=1 / 128,  # 256 items / 2 = 128 steps per epoch: D from step 1, G from step 2
        gan_start_epoch=2 / 128,
        warmup_steps=2,
        decay_end_steps=6,
    )
    train_decoder(_cfg(cache_dir, **kw), tmp_path / "full")
    import genrep.rae.train_decoder as td

    calls = {"n": 0}
    real_noise = td.add_latent_noise

    def crash_at_step_5(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated crash")
        return real_noise(*args, **kwargs)

    monkeypatch.setattr(td, "add_latent_noise", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train_decoder(_cfg(cache_dir, **kw), tmp_path / "parts")
    monkeypatch.setattr(td, "add_latent_noise", real_noise)
    train_decoder(_cfg(cache_dir, **kw), tmp_path / "parts", resume=True)
    a = load_file(str(tmp_path / "full" / "checkpoints" / "step-00000006.safetensors"))
    b = load_file(str(tmp_path / "parts" / "checkpoints" / "step-00000006.safetensors"))
    keys = [k for k in a if not k.startswith("rng.")]
    assert any(k.startswith("model.disc.heads") for k in keys) and all(torch.equal(a[k], b[k]) for k in keys)
    rows = [json.loads(line) for line in (tmp_path / "full" / "train_log.jsonl").read_text().splitlines()]
    assert "d_loss" not in rows[0] and "d_loss" in rows[1] and "g_loss" not in rows[1] and "g_loss" in rows[2]
    # D's schedule counts its own updates: warm-up from zero over 2 D steps, from step 1 on
    d_lrs = [r["d_lr"] for r in rows[1:]]
    assert d_lrs[0] == pytest.approx(2e-4 * 0.5) and d_lrs[1] == pytest.approx(2e-4)
    assert [r["lr"] for r in rows[:2]] == pytest.approx([1e-3 * 0.5, 1e-3])  # the decoder's from step 0
    rows_b = [json.loads(line) for line in (tmp_path / "parts" / "train_log.jsonl").read_text().splitlines()]
    assert [r["d_loss"] for r in rows_b[1:]] == [r["d_loss"] for r in rows[1:]]
