import pytest
import torch

from genrep.core.errors import UserError
from genrep.core.runtime import BF16_MIN_SPEEDUP, probe_bf16_speedup, resolve_precision


def _probe(speedup):
    return lambda device: {"size": 8, "fp32_ms": 1.0, "bf16_ms": 1.0 / speedup, "speedup": speedup}


@pytest.mark.parametrize(
    "speedup, chosen",
    [(0.05, "fp32"), (1.0, "fp32"), (BF16_MIN_SPEEDUP - 0.01, "fp32"), (BF16_MIN_SPEEDUP, "bf16"), (2.7, "bf16")],
)
def test_auto_picks_bf16_only_when_the_probe_measures_it_1_5x_faster(speedup, chosen):
    got, info = resolve_precision("auto", torch.device("cpu"), probe=_probe(speedup))
    assert got == chosen and info["chosen"] == chosen and info["requested"] == "auto"
    assert info["speedup"] == speedup and chosen in info["reason"]


def test_an_explicit_choice_is_kept_without_probing():
    def fail(device):
        raise AssertionError("probed")

    for p in ("fp32", "bf16"):
        assert resolve_precision(p, torch.device("cpu"), probe=fail)[0] == p
    with pytest.raises(UserError, match="precision 'fp16'"):
        resolve_precision("fp16", torch.device("cpu"), probe=fail)


def test_the_real_probe_measures_both_dtypes_on_this_machine():
    r = probe_bf16_speedup(torch.device("cpu"), size=64, reps=1)
    assert r["size"] == 64 and r["fp32_ms"] > 0 and r["bf16_ms"] > 0
    assert r["speedup"] == pytest.approx(r["fp32_ms"] / r["bf16_ms"], rel=2e-3)  # all kept to 4 significant digits
