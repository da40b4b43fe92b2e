"""genrep's LR schedule against the reference's LambdaLR (tests/fixtures/rae_reference_schedule.py)."""

import json
import math
from pathlib import Path

import pytest
import torch

from genrep.rae.schedule import LRSchedule, build_scheduler, resolve, steps_per_epoch, uses_epochs

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rae_reference" / "schedule"
CASES = sorted(p.stem for p in FIXTURES.glob("*.json"))


def _schedule(section: dict) -> LRSchedule:
    return LRSchedule(**{k: v for k, v in section.items() if k != "base_lr"})


def test_the_fixture_covers_both_types_and_units():
    assert {"stage2_paper", "stage1_paper", "cosine_steps", "linear_epochs_small"} <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_schedule_equals_the_reference_lambda_lr(case):
    rec = json.loads((FIXTURES / f"{case}.json").read_text())
    sched, lr = _schedule(rec["scheduler"]), rec["lr"]
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr)
    lambda_lr = build_scheduler(opt, sched, lr, rec["steps_per_epoch"])
    got = []
    for _ in rec["lrs"]:
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        lambda_lr.step()
    for g, want in zip(got, rec["lrs"]):
        assert g == pytest.approx(want, rel=1e-12, abs=0)
    fn = resolve(sched, lr, rec["steps_per_epoch"])
    for step, want in rec["probes"].items():
        assert fn(int(step)) == pytest.approx(want, rel=1e-12, abs=0)


def test_paper_stage2_shape_by_hand():
    fn = resolve(LRSchedule("linear", warmup_epochs=40, decay_end_epoch=800, final_lr=2e-5), 2e-4, 1251)
    assert (fn.warmup, fn.decay_end) == (50040, 1000800)
    assert fn(0) == fn(50039) == 1.0  # constant base LR during the warm-up
    mid = (50040 + 1000800) // 2
    assert fn(mid) == pytest.approx(1 - 0.9 * (mid - 50040) / (1000800 - 50040), rel=1e-12)
    assert fn(1000800) == fn(2_000_000) == pytest.approx(0.1)


def test_cosine_from_zero_by_hand():
    fn = resolve(LRSchedule("cosine", warmup_steps=4, decay_end_steps=12, final_lr=0.0, warmup_from_zero=True), 1.0, 1)
    assert [fn(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert fn(8) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert fn(12) == 0.0


def test_defaults_are_a_constant_lr():
    fn = resolve(LRSchedule(), 3e-4, 10)
    assert [fn(s) for s in (0, 1, 100, 10**6)] == [1.0] * 4


def test_steps_per_epoch_is_the_reference_loader_length():
    # DistributedSampler pads to world * ceil(N / world); each rank drops its last partial batch
    assert steps_per_epoch(1_281_167, 1024) == 1251
    assert steps_per_epoch(1_281_167, 128, world_size=8) == 1251
    assert steps_per_epoch(1_281_167, 64, world_size=8) == 2502
    assert steps_per_epoch(10, 4, world_size=3) == 1
    assert steps_per_epoch(3, 4) == 0


def test_steps_win_over_epochs_as_in_the_reference():
    fn = resolve(LRSchedule(warmup_epochs=1, warmup_steps=3, decay_end_epoch=2, decay_end_steps=7), 1.0, 100)
    assert (fn.warmup, fn.decay_end) == (3, 7)
    assert uses_epochs(LRSchedule(warmup_epochs=1)) and not uses_epochs(LRSchedule(warmup_epochs=1, warmup_steps=2))
    assert not uses_epochs(LRSchedule())


def test_the_multiplier_round_trips_through_a_scheduler_state_dict():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    a = build_scheduler(opt, LRSchedule("cosine", warmup_steps=3, decay_end_steps=9, final_lr=0.1), 1.0, 1)
    for _ in range(5):
        opt.step()
        a.step()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    b = build_scheduler(opt2, LRSchedule("cosine", warmup_steps=3, decay_end_steps=9, final_lr=0.1), 1.0, 1)
    b.load_state_dict(a.state_dict())
    assert b.get_last_lr() == a.get_last_lr()
