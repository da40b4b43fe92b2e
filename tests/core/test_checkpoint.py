import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from genrep.core.checkpoint import Checkpointer, load_checkpoint, load_model_weights, save_checkpoint
from genrep.core.ema import EMA
from genrep.core.errors import UserError
from genrep.core.lr_schedule import WarmupCosine, warmup_cosine

SCRIPT = Path(__file__).parent / "scripts" / "train_loop.py"


def _objects(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = warmup_cosine(opt, 2, 10)
    ema = EMA(model, 0.5)
    return model, opt, sched, ema


def _step(model, opt, sched, ema):
    loss = model(torch.randn(3, 4)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    ema.update(model)


def test_round_trip_restores_everything(tmp_path):
    model, opt, sched, ema = _objects()
    for _ in range(3):
        _step(model, opt, sched, ema)
    path = save_checkpoint(
        tmp_path / "c.safetensors", step=3, model=model, optimizer=opt, ema=ema, scheduler=sched, extra={"note": "x"}
    )
    expected_next = torch.randn(5)
    expected_np = np.random.rand(3)

    m2, o2, s2, e2 = _objects(seed=1)
    meta = load_checkpoint(path, model=m2, optimizer=o2, ema=e2, scheduler=s2)
    assert meta["step"] == 3 and meta["extra"] == {"note": "x"}
    assert torch.equal(torch.randn(5), expected_next)  # RNG restored
    assert np.array_equal(np.random.rand(3), expected_np)
    for a, b in zip(model.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(ema.module.state_dict().values(), e2.module.state_dict().values()):
        assert torch.equal(a, b)
    assert e2.num_updates == 3
    assert s2.last_epoch == sched.last_epoch and s2.get_last_lr() == sched.get_last_lr()
    assert (
        o2.state_dict()["param_groups"][0]["betas"] == list(opt.state_dict()["param_groups"][0]["betas"])
        or tuple(o2.state_dict()["param_groups"][0]["betas"]) == opt.state_dict()["param_groups"][0]["betas"]
    )
    # the same next step on both copies gives identical parameters
    torch.manual_seed(7)
    _step(model, opt, sched, ema)
    torch.manual_seed(7)
    _step(m2, o2, s2, e2)
    for a, b in zip(model.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    assert set(load_model_weights(path, "ema")) == set(model.state_dict())
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_tied_weights_are_saved(tmp_path):
    emb = torch.nn.Embedding(5, 3)
    head = torch.nn.Linear(3, 5, bias=False)
    head.weight = emb.weight
    model = torch.nn.ModuleDict({"emb": emb, "head": head})
    save_checkpoint(tmp_path / "t.safetensors", step=0, model=model)
    m2 = torch.nn.ModuleDict({"emb": torch.nn.Embedding(5, 3), "head": torch.nn.Linear(3, 5, bias=False)})
    load_checkpoint(tmp_path / "t.safetensors", model=m2, restore_rng=False)
    assert torch.equal(m2["emb"].weight, emb.weight)


def test_checkpointer_keeps_last_and_finds_latest(tmp_path):
    model, opt, sched, ema = _objects()
    ck = Checkpointer(tmp_path, keep_last=2)
    assert ck.latest() is None and ck.resume(model=model) is None
    for step in (5, 10, 15):
        ck.save(step, model=model)
    assert [s for s, _ in ck.all()] == [10, 15]
    assert ck.latest().name == "step-00000015.safetensors"


def test_bad_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "none.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="not a genrep checkpoint"):
        load_checkpoint(junk)


def test_warmup_cosine_values():
    f = WarmupCosine(warmup=4, total=12, final_ratio=0.1)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0)
    assert f(8) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert f(12) == pytest.approx(0.1) and f(100) == pytest.approx(0.1)


def test_ema_update_formula():
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.9)
    before = ema.module.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.module.weight, 0.9 * before + 0.1 * model.weight)
    assert not any(p.requires_grad for p in ema.module.parameters())


def _run(out, steps, *extra):
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(out), str(steps), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    steps = 40
    ref = _run(tmp_path / "ref", steps)
    assert ref.wait() == 0, ref.stderr.read()

    # The victim stops before step 18 (between checkpoints 15 and 20) and waits there, so the kill
    # lands after checkpoint 15 and before the end however slow the machine is.
    victim = _run(tmp_path / "crash", steps, "--slow", "0.05", "--stall-at", "18")
    ck = Checkpointer(tmp_path / "crash" / "checkpoints")
    try:
        while ck.latest() is None or ck.all()[-1][0] < 15:
            assert victim.poll() is None, victim.stderr.read()
            time.sleep(0.02)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    assert victim.returncode == -signal.SIGKILL
    killed_at = ck.all()[-1][0]
    assert killed_at < steps and not (tmp_path / "crash" / "final.safetensors").exists()

    resumed = _run(tmp_path / "crash", steps, "--resume")
    assert resumed.wait() == 0, resumed.stderr.read()
    a = load_file(str(tmp_path / "ref" / "final.safetensors"))
    b = load_file(str(tmp_path / "crash" / "final.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bitwise


def test_several_named_optimizers_and_schedulers(tmp_path):
    g, g_opt, g_sched, _ = _objects(0)
    d, d_opt, d_sched, _ = _objects(1)
    for _ in range(2):
        _step(g, g_opt, g_sched, EMA(g))
        _step(d, d_opt, d_sched, EMA(d))
    model = torch.nn.ModuleDict({"g": g, "d": d})
    save_checkpoint(
        tmp_path / "gd.safetensors",
        step=2,
        model=model,
        optimizer={"g": g_opt, "d": d_opt},
        scheduler={"g": g_sched, "d": d_sched},
    )
    g2, g2_opt, g2_sched, _ = _objects(5)
    d2, d2_opt, d2_sched, _ = _objects(6)
    load_checkpoint(
        tmp_path / "gd.safetensors",
        model=torch.nn.ModuleDict({"g": g2, "d": d2}),
        optimizer={"g": g2_opt, "d": d2_opt},
        scheduler={"g": g2_sched, "d": d2_sched},
    )
    for a, b in ((g_opt, g2_opt), (d_opt, d2_opt)):
        sa, sb = a.state_dict()["state"], b.state_dict()["state"]
        assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    assert d2_sched.last_epoch == 2
    with pytest.raises(UserError, match="no state for optimizer 'main'"):
        load_checkpoint(tmp_path / "gd.safetensors", optimizer=g2_opt)


def test_ema_warmup_ramps_the_decay():
    model = torch.nn.Linear(1, 1, bias=False)
    ema = EMA(model, decay=0.99, warmup=True)
    assert ema.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    with torch.no_grad():
        model.weight.fill_(1.0)
        ema.module.weight.fill_(0.0)
    ema.update(model)
    assert float(ema.module.weight) == pytest.approx(0.9)
    for _ in range(2000):
        ema.update(model)
    assert ema.current_decay() == 0.99
    assert EMA(model, 0.99).current_decay() == 0.99
