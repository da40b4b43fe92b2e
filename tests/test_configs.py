from pathlib import Path

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
