"""The layout of a diffusers ``AutoencoderRAE`` directory, as diffusers 0.42.1 reads and writes it.

Its file names and ``config.json`` fields (:func:`read_config` checks one), the encoder diffusers
builds from them (a transformers model whose final LayerNorm affine RAE drops), and the names and
shapes of the tensors in ``diffusion_pytorch_model.safetensors``, with the mapping between
diffusers' decoder tensors (separate q/k/v) and genrep's :class:`~genrep.rae.decoder.ViTDecoder`
state (fused q/k/v).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from genrep.core.errors import UserError
from genrep.core.files import read_json
from genrep.rae.decoder import DECODER_SIZES, DecoderConfig
from genrep.rae.encoders import ENCODERS

DIFFUSERS_CLASS = "AutoencoderRAE"
DIFFUSERS_VERSION = "0.42.1"  # the version whose layout this module reads and writes
DIFFUSERS_CONFIG = "config.json"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"

LAYER_NORM_EPS = 1e-12  # diffusers' decoder layer norms (not a config field)
HEAD_DIM = 64  # diffusers builds every encoder with hidden_size // 64 attention heads

# diffusers' encoder_type <-> genrep's encoder kind
KIND_OF_TYPE = {"dinov2": "dinov2", "siglip2": "siglip", "mae": "mae"}
TYPE_OF_KIND = {kind: etype for etype, kind in KIND_OF_TYPE.items()}
# the transformers class diffusers builds and the image size it gives it, per kind
ENCODER_CLASS = {"dinov2": "Dinov2WithRegistersModel", "siglip": "SiglipVisionModel", "mae": "ViTMAEModel"}
_ENCODER_CONFIG = {"dinov2": "Dinov2WithRegistersConfig", "siglip": "SiglipVisionConfig", "mae": "ViTMAEConfig"}
_ENCODER_IMAGE_SIZE = {"dinov2": 518, "siglip": 256, "mae": 224}
# the attribute path of the final LayerNorm whose affine RAE drops
_FINAL_NORM = {"dinov2": "layernorm", "siglip": "post_layernorm", "mae": "layernorm"}
# config attributes that must agree for a genrep encoder to be rebuilt as diffusers builds it
ARCH_ATTRS = {
    "dinov2": (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "patch_size",
        "num_channels",
        "image_size",
        "mlp_ratio",
        "num_register_tokens",
        "hidden_act",
        "layer_norm_eps",
        "qkv_bias",
        "layerscale_value",
        "use_swiglu_ffn",
    ),
    "siglip": (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "patch_size",
        "num_channels",
        "image_size",
        "intermediate_size",
        "hidden_act",
        "layer_norm_eps",
    ),
    "mae": (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "patch_size",
        "num_channels",
        "image_size",
        "intermediate_size",
        "hidden_act",
        "layer_norm_eps",
        "qkv_bias",
    ),
}
# (kind, hidden, layers, patch) of the released encoders -> genrep's registered name
_RELEASED = {
    ("dinov2", 384, 12, 14): "dinov2-reg-s",
    ("dinov2", 768, 12, 14): "dinov2-reg-b",
    ("dinov2", 1024, 24, 14): "dinov2-reg-l",
    ("siglip", 768, 12, 16): "siglip2-b",
    ("mae", 768, 12, 16): "mae-b",
}
_FAMILY_NAME = {"dinov2": "dinov2-reg-b", "siglip": "siglip2-b", "mae": "mae-b"}

_INT_FIELDS = (
    "encoder_hidden_size",
    "encoder_patch_size",
    "encoder_num_hidden_layers",
    "encoder_input_size",
    "decoder_hidden_size",
    "decoder_num_hidden_layers",
    "decoder_num_attention_heads",
    "decoder_intermediate_size",
    "patch_size",
    "num_channels",
)
_REQUIRED_FIELDS = ("encoder_type", *_INT_FIELDS)
# fields diffusers gives a default; absent means that default
_OPTIONAL_FIELDS = {
    "image_size": None,
    "encoder_norm_mean": None,
    "encoder_norm_std": None,
    "latents_mean": None,
    "latents_std": None,
    "noise_tau": 0.0,
    "reshape_to_2d": True,
    "use_encoder_loss": False,
    "scaling_factor": 1.0,
}


# --------------------------------------------------------------------------------------------
# The encoder as diffusers builds it
# --------------------------------------------------------------------------------------------


def encoder_model(kind: str, hidden: int, patch: int, layers: int, where: str, meta: bool = False) -> nn.Module:
    """The transformers model diffusers builds for this encoder (random weights; ``meta``: no storage)."""
    import transformers

    heads = hidden // HEAD_DIM
    if heads < 1 or hidden % heads:
        raise UserError(f"{where}: encoder_hidden_size {hidden} does not split into {HEAD_DIM}-wide attention heads")
    kwargs: dict[str, Any] = {
        "hidden_size": hidden,
        "patch_size": patch,
        "image_size": _ENCODER_IMAGE_SIZE[kind],
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
    }
    if kind == "mae":
        kwargs["mask_ratio"] = 0.0
    config = getattr(transformers, _ENCODER_CONFIG[kind])(**kwargs)
    cls = getattr(transformers, ENCODER_CLASS[kind])
    if meta:
        with torch.device("meta"):
            return cls(config)
    return cls(config)


def final_norm_keys(model: nn.Module, kind: str) -> set[str]:
    """State-dict keys of the final LayerNorm's affine (RAE drops it, so diffusers stores none)."""
    attr = _FINAL_NORM[kind]
    target = getattr(model, attr, None)
    if target is None and hasattr(model, "vision_model"):  # SiglipVisionModel in transformers 4
        target = getattr(model.vision_model, attr)
    names = {name for name, module in model.named_modules() if module is target}
    return {f"{name}.{p}" for name in names for p in ("weight", "bias")}


def encoder_shapes(model: nn.Module, kind: str) -> dict[str, tuple[int, ...]]:
    drop = final_norm_keys(model, kind)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in drop}


def encoder_name(kind: str, hidden: int, layers: int, patch: int) -> tuple[str, str | None]:
    """genrep's registered encoder name and hub source for a diffusers encoder; the source is None
    when the architecture is not one of the released checkpoints."""
    name = _RELEASED.get((kind, hidden, layers, patch))
    if name is not None:
        return name, ENCODERS[name]["source"]
    return _FAMILY_NAME[kind], None


# --------------------------------------------------------------------------------------------
# The config and the tensors
# --------------------------------------------------------------------------------------------


def read_config(path: Path) -> dict[str, Any]:
    raw = read_json(path, "diffusers config")
    if not isinstance(raw, dict):
        raise UserError(f"{path}: not a diffusers config (expected a JSON object)")
    if raw.get("_class_name") != DIFFUSERS_CLASS:
        raise UserError(f"{path}: _class_name is {raw.get('_class_name')!r}, expected {DIFFUSERS_CLASS!r}")
    known = set(_REQUIRED_FIELDS) | set(_OPTIONAL_FIELDS)
    for key in raw:
        if not key.startswith("_") and key not in known:
            raise UserError(f"{path}: unknown key '{key}' (this converter reads diffusers {DIFFUSERS_VERSION})")
    for key in _REQUIRED_FIELDS:
        if key not in raw:
            raise UserError(f"{path}: missing key '{key}'")
    cfg = {**_OPTIONAL_FIELDS, **{k: v for k, v in raw.items() if not k.startswith("_")}}
    if cfg["encoder_type"] not in KIND_OF_TYPE:
        raise UserError(f"{path}: encoder_type {cfg['encoder_type']!r} is not one of {', '.join(sorted(KIND_OF_TYPE))}")
    for key in _INT_FIELDS:
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{path}: '{key}' must be a positive integer, got {value!r}")
    if cfg["image_size"] is not None and (
        isinstance(cfg["image_size"], bool) or not isinstance(cfg["image_size"], int)
    ):
        raise UserError(f"{path}: 'image_size' must be an integer or null, got {cfg['image_size']!r}")
    for key in ("reshape_to_2d", "use_encoder_loss"):
        if not isinstance(cfg[key], bool):
            raise UserError(f"{path}: '{key}' must be true or false, got {cfg[key]!r}")
    for key in ("scaling_factor", "noise_tau"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"{path}: '{key}' must be a number, got {value!r}")
    if cfg["scaling_factor"] <= 0:
        raise UserError(f"{path}: 'scaling_factor' must be positive, got {cfg['scaling_factor']!r}")
    return cfg


def list_shape(value: Any, path: Path, key: str) -> tuple[int, ...]:
    """The shape of a (nested) list of numbers from the config, as diffusers turns it into a tensor."""
    try:
        return tuple(torch.tensor(value, dtype=torch.float32).shape)
    except (TypeError, ValueError, RuntimeError):
        raise UserError(f"{path}: '{key}' is not a (nested) list of numbers of one shape") from None


def decoder_size(cfg: dict[str, Any]) -> dict[str, Any]:
    """DecoderConfig size fields for diffusers' decoder dimensions: a named genrep size when one
    matches, else ``size="custom"`` with the four dimensions."""
    dims = (
        cfg["decoder_hidden_size"],
        cfg["decoder_num_hidden_layers"],
        cfg["decoder_num_attention_heads"],
        cfg["decoder_intermediate_size"],
    )
    for name, size in DECODER_SIZES.items():
        if (size.width, size.depth, size.heads, size.mlp) == dims:
            return {"size": name}
    return {"size": "custom", **dict(zip(("width", "depth", "heads", "mlp"), dims))}


def decoder_shapes(width: int, depth: int, mlp: int, latent: int, out: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {
        "decoder.trainable_cls_token": (1, 1, width),
        "decoder.decoder_embed.weight": (width, latent),
        "decoder.decoder_embed.bias": (width,),
        "decoder.decoder_norm.weight": (width,),
        "decoder.decoder_norm.bias": (width,),
        "decoder.decoder_pred.weight": (out, width),
        "decoder.decoder_pred.bias": (out,),
    }
    for i in range(depth):
        p = f"decoder.decoder_layers.{i}."
        for name in ("attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0"):
            shapes[p + name + ".weight"] = (width, width)
            shapes[p + name + ".bias"] = (width,)
        for name in ("layernorm_before", "layernorm_after"):
            shapes[p + name + ".weight"] = (width,)
            shapes[p + name + ".bias"] = (width,)
        shapes[p + "intermediate.dense.weight"] = (mlp, width)
        shapes[p + "intermediate.dense.bias"] = (mlp,)
        shapes[p + "output.dense.weight"] = (width, mlp)
        shapes[p + "output.dense.bias"] = (width,)
    return shapes


# genrep block name -> diffusers layer name, for the 1:1 parts
_BLOCK_NAMES = {
    "norm1": "layernorm_before",
    "proj": "attention.to_out.0",
    "norm2": "layernorm_after",
    "fc1": "intermediate.dense",
    "fc2": "output.dense",
}
_TOP_NAMES = {
    "cls_token": "trainable_cls_token",
    "embed.weight": "decoder_embed.weight",
    "embed.bias": "decoder_embed.bias",
    "norm.weight": "decoder_norm.weight",
    "norm.bias": "decoder_norm.bias",
    "head.weight": "decoder_pred.weight",
    "head.bias": "decoder_pred.bias",
}


def decoder_state_from_diffusers(tensors: dict[str, Tensor], depth: int) -> dict[str, Tensor]:
    """diffusers' ``decoder.*`` tensors -> genrep ViTDecoder state (without the position table)."""
    out = {ours: tensors[f"decoder.{theirs}"] for ours, theirs in _TOP_NAMES.items()}
    for i in range(depth):
        p = f"decoder.decoder_layers.{i}."
        for ours, theirs in _BLOCK_NAMES.items():
            for part in ("weight", "bias"):
                out[f"blocks.{i}.{ours}.{part}"] = tensors[f"{p}{theirs}.{part}"]
        for part in ("weight", "bias"):
            out[f"blocks.{i}.qkv.{part}"] = torch.cat([tensors[f"{p}attention.to_{x}.{part}"] for x in "qkv"])
    return out


def decoder_state_to_diffusers(state: dict[str, Tensor], depth: int) -> dict[str, Tensor]:
    """genrep ViTDecoder state -> diffusers' ``decoder.*`` tensors (the position table is not stored)."""
    out = {f"decoder.{theirs}": state[ours] for ours, theirs in _TOP_NAMES.items()}
    for i in range(depth):
        p = f"decoder.decoder_layers.{i}."
        for ours, theirs in _BLOCK_NAMES.items():
            for part in ("weight", "bias"):
                out[f"{p}{theirs}.{part}"] = state[f"blocks.{i}.{ours}.{part}"]
        for part in ("weight", "bias"):
            for x, chunk in zip("qkv", state[f"blocks.{i}.qkv.{part}"].chunk(3, dim=0)):
                out[f"{p}attention.to_{x}.{part}"] = chunk
    return out


def decoder_mismatch(cfg: DecoderConfig) -> str | None:
    """Why a genrep decoder of this config does not compute diffusers' decoder, or None."""
    if cfg.layer_norm_eps != LAYER_NORM_EPS:
        return f"its layer norms use eps {cfg.layer_norm_eps}, diffusers' use {LAYER_NORM_EPS}"
    if not cfg.qkv_bias:
        return "it has no q/k/v biases, diffusers' decoder has them"
    if cfg.out_channels != 3:
        return f"it predicts {cfg.out_channels} channels, diffusers de-normalises 3"
    return None


def check_tensors(tensors: dict[str, Tensor], expected: dict[str, tuple[int, ...]], path: Path) -> None:
    for key in sorted(expected):
        if key not in tensors:
            raise UserError(f"{path}: missing tensor '{key}'")
    for key in sorted(tensors):
        if key not in expected:
            raise UserError(f"{path}: unexpected tensor '{key}' (no counterpart in {DIFFUSERS_CLASS})")
    for key in sorted(expected):
        if tuple(tensors[key].shape) != expected[key]:
            raise UserError(
                f"{path}: tensor '{key}' has shape {list(tensors[key].shape)}, the config gives {list(expected[key])}"
            )


def align_siglip_prefix(tensors: dict[str, Tensor], enc_shapes: dict[str, tuple[int, ...]]) -> dict[str, Tensor]:
    """Rename ``encoder.vision_model.X`` <-> ``encoder.X`` when only the other spelling is expected."""
    prefix = "encoder.vision_model."
    wants_prefix = any(k.startswith("vision_model.") for k in enc_shapes)
    has_prefix = any(k.startswith(prefix) for k in tensors)
    if has_prefix and not wants_prefix:
        return {("encoder." + k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in tensors.items()}
    if wants_prefix and not has_prefix:
        return {(prefix + k[len("encoder.") :] if k.startswith("encoder.") else k): v for k, v in tensors.items()}
    return tensors
