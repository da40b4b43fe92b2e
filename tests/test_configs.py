from pathlib import Path

import pytest

from genrep.core.config import load_config
from genrep.demo import DemoConfig
from genrep.rae.train_decoder import TrainDecoderConfig
from genrep.rae.train_dit import TrainDiTConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_shipped_configs_load_into_their_dataclasses():
    assert load_config(DemoConfig, CONFIGS / "demo.yaml") == DemoConfig()
    assert load_config(TrainDecoderConfig, CONFIGS / "rae" / "train_decoder.yaml") == TrainDecoderConfig()
    # the shipped stage-2 recipe is the paper's (fp32); the dataclass default measures (precision: auto)
    assert load_config(TrainDiTConfig, CONFIGS / "rae" / "train_dit.yaml") == TrainDiTConfig(precision="fp32")
    assert TrainDiTConfig().precision == "auto"


def test_shipped_lco_configs_are_the_defaults():
    from genrep.lco.evaluate import EvalConfig
    from genrep.lco.train import TrainConfig

    assert load_config(TrainConfig, CONFIGS / "lco" / "train.yaml") == TrainConfig()
    assert load_config(EvalConfig, CONFIGS / "lco" / "eval.yaml") == EvalConfig()


def test_shipped_tiny_vlm_configs_are_the_defaults():
    from genrep.lco.grsl_experiment import GRSLExperimentConfig
    from genrep.lco.pretrain_vlm import PretrainConfig

    assert load_config(PretrainConfig, CONFIGS / "lco" / "pretrain_vlm.yaml") == PretrainConfig()
    assert load_config(GRSLExperimentConfig, CONFIGS / "lco" / "grsl_experiment.yaml") == GRSLExperimentConfig()


def test_closed_option_sets_are_literal_types_that_match_their_tables():
    import typing

    from genrep.lco.loss import GATHER_MODES, GatherMode
    from genrep.lco.train import DTYPES, TrainConfig
    from genrep.rae.decoder import DECODER_SIZES, DecoderSizeName
    from genrep.rae.dit import DIT_PRESETS, DiTPreset

    assert typing.get_args(DecoderSizeName) == tuple(DECODER_SIZES)
    assert typing.get_args(DiTPreset) == tuple(DIT_PRESETS)
    assert typing.get_args(GatherMode) == GATHER_MODES
    hints = typing.get_type_hints(TrainConfig)
    assert typing.get_args(hints["dtype"]) == tuple(DTYPES)
    assert typing.get_args(hints["method"]) == ("lora", "full", "head")


@pytest.mark.parametrize(
    "cls_path, override, choices",
    [
        ("genrep.lco.train:TrainConfig", "method=qlora", "'lora', 'full', 'head'"),
        ("genrep.lco.train:TrainConfig", "gather=all", "'none', 'local', 'full'"),
        ("genrep.rae.train_decoder:TrainDecoderConfig", "decoder=M", "'tiny', 'S', 'B', 'L', 'XL'"),
        ("genrep.rae.train_dit:TrainDiTConfig", "model=dit-M", "'dit-tiny'"),
    ],
)
def test_unknown_choices_are_one_line_naming_value_and_choices(cls_path, override, choices):
    import importlib

    from genrep.core.config import load_config
    from genrep.core.errors import ConfigError

    module, name = cls_path.split(":")
    cls = getattr(importlib.import_module(module), name)
    with pytest.raises(ConfigError) as err:
        load_config(cls, overrides=[override])
    key, value = override.split("=")
    assert str(err.value).startswith(f"--set {key}: expected one of ") and choices in str(err.value)
    assert repr(value) in str(err.value)
