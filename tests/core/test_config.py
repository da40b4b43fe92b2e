from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest

from genrep.core.config import Count, Fraction, Positive, dump_yaml, from_dict, load_config, parse_override
from genrep.core.errors import ConfigError


@dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)


@dataclass
class Train:
    name: str = "run"
    steps: int = 10
    mode: Literal["fast", "full"] = "fast"
    seed: Optional[int] = None
    layers: list[int] = field(default_factory=lambda: [1, 2])
    out: Path = Path("runs/x")
    ema: bool = True
    optim: Optim = field(default_factory=Optim)


def test_defaults_file_flags_overrides_in_order(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: 5\noptim:\n  lr: 1e-4\nmode: full\n")
    cfg = load_config(Train, f, ["optim.betas=[0.8, 0.99]", "steps=7"], flags={"steps": 6, "name": "cli"})
    assert cfg.steps == 7  # override beats flag beats file
    assert cfg.name == "cli"
    assert cfg.optim.lr == pytest.approx(1e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.optim.betas == (0.8, 0.99)
    assert cfg.mode == "full"
    assert cfg.out == Path("runs/x")


def test_round_trip_through_yaml(tmp_path):
    cfg = Train(seed=3, layers=[4], optim=Optim(lr=0.5))
    f = tmp_path / "c.yaml"
    f.write_text(dump_yaml(cfg))
    assert load_config(Train, f) == cfg


@pytest.mark.parametrize(
    "data, message",
    [
        ({"stepz": 1}, "c.yaml: unknown key 'stepz'"),
        ({"optim": {"lrr": 1}}, "c.yaml: unknown key 'optim.lrr'"),
        ({"steps": "ten"}, "c.yaml: steps: expected an integer, got 'ten'"),
        ({"steps": True}, "c.yaml: steps: expected an integer"),
        ({"mode": "slow"}, "c.yaml: mode: expected one of 'fast', 'full'"),
        ({"optim": {"lr": "fast"}}, "c.yaml: optim.lr: expected a number"),
        ({"optim": {"betas": [0.9]}}, "c.yaml: optim.betas: expected 2 items"),
        ({"layers": [1, "x"]}, "c.yaml: layers[1]: expected an integer"),
        ({"ema": "yes"}, "c.yaml: ema: expected true or false"),
        ({"optim": 3}, "c.yaml: optim: expected a mapping for Optim"),
    ],
)
def test_errors_name_file_and_key(data, message):
    with pytest.raises(ConfigError) as err:
        from_dict(Train, data, source="c.yaml")
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(Train, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML \(line"):
        load_config(Train, bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_config(Train, top)


def test_override_parsing():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("x=hello world") == (["x"], "hello world")
    assert parse_override("x=[1, 2]") == (["x"], [1, 2])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("novalue")
    with pytest.raises(ConfigError, match="unknown key 'optim.nope'"):
        load_config(Train, None, ["optim.nope=1"])


# -- numeric bounds and finite floats ------------------------------------------------------------


@dataclass
class _Bounded:
    limit: Optional[Count] = None
    lr: Positive = 1e-3
    decay: Fraction = 0.9
    scale: float = 1.0
    betas: tuple[Fraction, Fraction] = (0.9, 0.95)


@pytest.mark.parametrize(
    "override, message",
    [
        ("limit=0", "--set limit: must be >= 1, got 0"),
        ("limit=-2", "--set limit: must be >= 1, got -2"),
        ("lr=0", "--set lr: must be > 0, got 0"),
        ("decay=1.5", "--set decay: must be <= 1, got 1.5"),
        ("scale=nan", "--set scale: must be a finite number"),
        ("scale=.inf", "--set scale: must be a finite number"),
        ("lr=-inf", "--set lr: must be a finite number"),
        ("betas=[0.9, 2]", "--set betas[1]: must be <= 1, got 2"),
    ],
)
def test_bounds_refuse_bad_numbers_naming_the_option(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(_Bounded, overrides=[override])
    assert message in str(err.value)


def test_bounds_name_the_cli_flag_and_the_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^--limit: must be >= 1, got -4$"):
        load_config(_Bounded, flags={"limit": -4})
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.0\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: lr: must be > 0, got 0.0$"):
        load_config(_Bounded, path)


def test_bounds_accept_values_inside_and_none():
    cfg = load_config(_Bounded, overrides=["limit=1", "lr=1e-5", "decay=1", "scale=-3", "betas=[0, 1]"])
    assert (cfg.limit, cfg.lr, cfg.decay, cfg.scale, cfg.betas) == (1, 1e-5, 1.0, -3.0, (0.0, 1.0))
    assert load_config(_Bounded, overrides=["limit=null"]).limit is None
