"""The learning-rate schedules against their definitions (and the linear one against transformers')."""

from __future__ import annotations

import math

import pytest
import torch

from genrep.core.lr_schedule import WarmupCosine, warmup_cosine, warmup_linear


def _lrs(make, steps: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = make(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_linear_schedule_is_the_hf_trainers():
    transformers = pytest.importorskip("transformers")
    for warmup, total in ((0, 7), (3, 10), (100, 240), (5, 5)):
        ours = _lrs(lambda o: warmup_linear(o, warmup, total), total + 2)
        theirs = _lrs(lambda o: transformers.get_linear_schedule_with_warmup(o, warmup, total), total + 2)
        assert ours == pytest.approx(theirs, abs=1e-15)


def test_linear_schedule_by_hand():
    lrs = _lrs(lambda o: warmup_linear(o, 4, 12), 13)
    assert lrs[:5] == pytest.approx([0.0, 0.125, 0.25, 0.375, 0.5])  # the first update has lr 0
    assert lrs[8] == pytest.approx(0.5 * 4 / 8) and lrs[12] == 0.0


def test_cosine_schedule_by_hand():
    f = WarmupCosine(2, 10, 0.1)
    assert f(0) == 0.5 and f(1) == 1.0 and f(2) == pytest.approx(1.0)
    assert f(6) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert _lrs(lambda o: warmup_cosine(o, 2, 10), 1) == [0.25]
