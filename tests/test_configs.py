from pathlib import Path

import pytest

from genrep.core.config import load_config
from genrep.demo import DemoConfig
from genrep.rae.train_decoder import TrainDecoderConfig
from genrep.rae.train_dit import TrainDiTConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_shipped_configs_load_into_their_dataclasses():
    assert load_config(DemoConfig, CONFIGS / "demo.yaml") == DemoConfig()
    # the laptop recipes: the reference's schedule shapes in steps over max_steps, genrep's EMA warm-up (a short
    # run's plain EMA would keep much of the initial weights), no GAN in a 1000-step decoder run
    steps = dict(warmup_epochs=None, decay_end_epoch=None, ema_warmup=True)
    assert load_config(TrainDecoderConfig, CONFIGS / "rae" / "train_decoder.yaml") == TrainDecoderConfig(
        **steps, warmup_steps=62, decay_end_steps=1000, gan=False
    )
    # the shipped stage-2 recipe is the paper's (fp32); the dataclass default measures (precision: auto)
    assert load_config(TrainDiTConfig, CONFIGS / "rae" / "train_dit.yaml") == TrainDiTConfig(
        **steps, warmup_steps=57, decay_end_steps=1143, precision="fp32"
    )
    assert TrainDiTConfig().precision == "auto"


def test_paper_configs_carry_the_reference_training_values():
    """configs/rae/paper-*.yaml against bytetriper/RAE configs/stage{1,2}/training (see docs/rae.md)."""
    from genrep.rae.schedule import resolve, schedule_of, steps_per_epoch

    dit = load_config(TrainDiTConfig, CONFIGS / "rae" / "paper-ditdh-xl-256.yaml")
    assert (dit.model, dit.global_batch_size, dit.lr, dit.betas, dit.weight_decay) == (
        "ditdh-XL",
        1024,
        2e-4,
        (0.9, 0.95),
        0.0,
    )
    assert (dit.grad_clip, dit.ema_decay, dit.ema_warmup, dit.hflip, dit.precision, dit.seed) == (
        1.0,
        0.9995,
        False,
        0.5,
        "fp32",
        42,
    )
    spe = steps_per_epoch(1_281_167, 1024)
    assert dit.max_steps == 1400 * spe
    fn = resolve(schedule_of(dit), dit.lr, spe)
    assert (fn.type, fn.warmup, fn.decay_end, fn.warmup_from_zero) == ("linear", 40 * spe, 800 * spe, False)
    dec = load_config(TrainDecoderConfig, CONFIGS / "rae" / "paper-decoder-xl.yaml")
    spe = steps_per_epoch(1_281_167, 512)
    assert (dec.decoder, dec.global_batch_size, dec.max_steps, dec.ema_decay, dec.grad_clip) == (
        "XL",
        512,
        16 * spe,
        0.9978,
        0.0,
    )
    assert (dec.gan, dec.gan_weight, dec.disc_start_epoch, dec.gan_start_epoch, dec.perceptual_start_epoch) == (
        True,
        0.75,
        6.0,
        8.0,
        0.0,
    )
    assert (dec.noise_tau, dec.noise_dist, dec.diffaug_prob, dec.diffaug_cutout, dec.gen_loss) == (
        0.8,
        "uniform",
        1.0,
        0.0,
        "hinge",
    )
    fn = resolve(schedule_of(dec), dec.lr, spe)
    assert (fn.type, fn.warmup, fn.decay_end, fn.warmup_from_zero) == ("cosine", spe, 16 * spe, True)


def test_lco_paper_configs_carry_the_reference_training_values():
    """configs/lco/paper-*.yaml against LCO-Embedding/LCO-Embedding Training/train_VL.sh + train_VL_any2any.py
    (with Hugging Face Trainer's defaults); see docs/lco.md, "Mapping to the reference code"."""
    from genrep.lco.train import TrainConfig

    mm = load_config(TrainConfig, CONFIGS / "lco" / "paper-multimodal.yaml")
    assert (mm.batch_size, mm.epochs, mm.lr, mm.warmup_steps, mm.schedule, mm.weight_decay, mm.grad_clip) == (
        1056,
        2.0,
        4e-4,
        100,
        "linear",
        0.0,
        1.0,
    )
    assert (mm.lora.r, mm.lora.alpha, mm.lora.dropout, mm.lora.scope, mm.lora.targets) == (
        64,
        128.0,
        0.05,
        "reference",
        [],
    )
    assert (mm.max_length, mm.thumbnail, mm.eval_max_length, mm.eval_max_pixels) == (650, 700, 300, 1280 * 28 * 28)
    assert (mm.temperature, mm.gather, mm.dtype, mm.quantize, mm.seed, mm.grad_checkpointing) == (
        0.03,
        "global",
        "bfloat16",
        "nf4",
        42,
        True,
    )
    assert (mm.method, mm.backbone, mm.checkpoint_every, mm.log_every) == (
        "lora",
        "Qwen/Qwen2.5-VL-7B-Instruct",
        200,
        5,
    )
    text = load_config(TrainConfig, CONFIGS / "lco" / "paper-text-only.yaml")
    assert text.batch_size == 768  # the paper's text-only global batch; everything else is the script's
    assert {k: v for k, v in vars(text).items() if k not in ("batch_size", "data", "chunk_size")} == {
        k: v for k, v in vars(mm).items() if k not in ("batch_size", "data", "chunk_size")
    }


def test_shipped_lco_configs_are_the_defaults():
    from genrep.lco.evaluate import EvalConfig
    from genrep.lco.train import TrainConfig

    # the laptop config: the reference recipe (the dataclass defaults) with a shorter content budget
    assert load_config(TrainConfig, CONFIGS / "lco" / "train.yaml") == TrainConfig(max_length=128)
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
        ("genrep.lco.train:TrainConfig", "gather=all", "'global', 'full', 'local', 'none'"),
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


def test_diting_paper_configs_are_the_reference_agenteval_runs():
    """configs/diting/agenteval*-paper.yaml against WHUNextGen/DITING code/Agent-ans.py and single_baseline.py."""
    from genrep.diting.agenteval import AgentEvalConfig, check_config

    multi = load_config(AgentEvalConfig, CONFIGS / "diting" / "agenteval-paper.yaml")
    single = load_config(AgentEvalConfig, CONFIGS / "diting" / "agenteval-single-paper.yaml")
    for cfg in (multi, single):
        assert (cfg.backend, cfg.protocol, cfg.lang, cfg.json_mode) == (
            "deepseek:deepseek-reasoner",
            "reference",
            "zh",
            "none",
        )
        assert cfg.enforce_rules is False
        check_config(AgentEvalConfig(**{**cfg.__dict__, "translations": "t.jsonl"}))
    assert (multi.mode, multi.max_rounds, multi.zero_failures()) == ("multi", 4, False)
    assert (single.mode, single.zero_failures()) == ("single", True)
