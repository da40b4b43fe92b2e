"""Convert between a genrep RAE directory and a diffusers ``AutoencoderRAE`` directory.

diffusers (tested with 0.42.1) keeps an RAE as ``config.json`` plus
``diffusion_pytorch_model.safetensors``. That file holds the whole model: the frozen encoder's
weights (``encoder.*``), its pixel mean/std (``encoder_mean``/``encoder_std``), the latent
statistics (``_latents_mean``/``_latents_std``) and the ViT decoder (``decoder.*``). genrep keeps the
decoder and the statistics in ``rae.safetensors`` and names the encoder by a spec.

:func:`rae_from_diffusers` reads such a directory with plain JSON and safetensors (diffusers need
not be installed) and :func:`rae_to_diffusers` writes one that ``AutoencoderRAE.from_pretrained``
loads offline. Where the two libraries differ, the conversion keeps what the model computes:

* Latent statistics. diffusers de-normalises with ``z * (std + 1e-5) + mean`` (and first divides
  by ``scaling_factor``); genrep with ``z * sqrt(var + eps) + mean``. The conversion picks float32
  values for which the two scales are the same float32 numbers, so the same normalised latent is
  de-normalised identically in both (float32 ``sqrt`` cannot give every float32 number: for the
  few scales it skips, genrep's is one float32 step away).
* Position table. diffusers recomputes the decoder's sin-cos table (it never loads one) with the
  grid coordinates scaled to a 16-token side and the column coordinate in the first half. genrep's
  decoder is given that exact table; a genrep decoder whose table differs from it (any grid side
  other than 16) cannot be expressed in diffusers.
* Decoder blocks. diffusers has separate q/k/v projections and layer-norm eps 1e-12; genrep fuses
  q/k/v into one linear layer (concatenated q, k, v rows).

Not carried: diffusers' ``noise_tau`` and ``use_encoder_loss`` (training only); genrep's
EfficientNet encoder (``effnet-lite0``: diffusers builds only DINOv2-with-registers, SigLIP and MAE).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from genrep.core.errors import UserError
from genrep.core.files import read_json
from genrep.rae.autoencoder import CONFIG_NAME, RAE
from genrep.rae.decoder import DECODER_SIZES, DecoderConfig, ViTDecoder
from genrep.rae.encoders import ENCODERS, FrozenEncoder, HFEncoder
from genrep.rae.stats import EPS, LatentStats

DIFFUSERS_CLASS = "AutoencoderRAE"
DIFFUSERS_VERSION = "0.42.1"  # the version whose layout this module reads and writes
DIFFUSERS_CONFIG = "config.json"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"

STD_OFFSET = 1e-5  # diffusers de-normalises latents with (latents_std + 1e-5)
LAYER_NORM_EPS = 1e-12  # diffusers' decoder layer norms (not a config field)
POSITION_BASE = 16  # diffusers scales the decoder's grid coordinates to a 16-token side
HEAD_DIM = 64  # diffusers builds every encoder with hidden_size // 64 attention heads

# diffusers' encoder_type <-> genrep's encoder kind
_KIND_OF_TYPE = {"dinov2": "dinov2", "siglip2": "siglip", "mae": "mae"}
_TYPE_OF_KIND = {kind: etype for etype, kind in _KIND_OF_TYPE.items()}
# the transformers class diffusers builds and the image size it gives it, per kind
_ENCODER_CLASS = {"dinov2": "Dinov2WithRegistersModel", "siglip": "SiglipVisionModel", "mae": "ViTMAEModel"}
_ENCODER_CONFIG = {"dinov2": "Dinov2WithRegistersConfig", "siglip": "SiglipVisionConfig", "mae": "ViTMAEConfig"}
_ENCODER_IMAGE_SIZE = {"dinov2": 518, "siglip": 256, "mae": 224}
# the attribute path of the final LayerNorm whose affine RAE drops
_FINAL_NORM = {"dinov2": "layernorm", "siglip": "post_layernorm", "mae": "layernorm"}
# config attributes that must agree for a genrep encoder to be rebuilt as diffusers builds it
_ARCH_ATTRS = {
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
# What the two libraries compute the same way
# --------------------------------------------------------------------------------------------


def diffusers_positions(width: int, grid: int) -> Tensor:
    """The decoder position table diffusers computes, ``[1, 1 + grid^2, width]``: a zero row for the
    CLS slot, then sin-cos of the column coordinate in the first half and of the row in the second,
    coordinates scaled by ``16 / grid`` (equal to the reference's table when grid is 16)."""
    if width % 4:
        raise ValueError(f"sin-cos table needs a width divisible by 4, got {width}")
    coords = torch.arange(grid, dtype=torch.float32) / (grid / POSITION_BASE)
    cols = coords[None, :].expand(grid, grid).reshape(-1)
    rows = coords[:, None].expand(grid, grid).reshape(-1)
    quarter = width // 4
    freq = torch.arange(quarter, dtype=torch.float64)
    freq /= quarter
    freq = 1.0 / 10000**freq

    def waves(pos: Tensor) -> Tensor:
        angles = torch.outer(pos.double(), freq)
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    table = torch.cat([waves(cols), waves(rows)], dim=1)
    return torch.cat([torch.zeros(1, width, dtype=torch.float64), table]).float()[None]


def _nudge(values: Tensor, image: Any, target: Tensor, steps: int = 16) -> Tensor:
    """Move float32 ``values`` by whole ulps until ``image(values) == target`` where that can be
    reached (``image`` must be non-decreasing); elsewhere the last value is kept."""
    up = torch.full_like(values, math.inf)
    down = torch.full_like(values, -math.inf)
    for _ in range(steps):
        got = image(values)
        low, high = got < target, got > target
        if not bool((low | high).any()):
            break
        values = torch.where(low, torch.nextafter(values, up), torch.where(high, torch.nextafter(values, down), values))
    return values


def std_for_scale(scale: Tensor) -> Tensor:
    """diffusers' ``latents_std`` whose float32 ``std + 1e-5`` equals ``scale``."""
    scale = scale.float()
    return _nudge((scale.double() - STD_OFFSET).float(), lambda s: s + STD_OFFSET, scale)


def var_for_scale(scale: Tensor) -> tuple[Tensor, float]:
    """genrep's ``(var, eps)`` whose float32 ``sqrt(var + eps)`` equals ``scale`` (one float32 step
    off for the rare scales float32 sqrt never gives): eps is genrep's 1e-5 unless some scale is
    below sqrt(1e-5) (a near-zero diffusers std), then 0."""
    scale = scale.float()
    eps = EPS if float((scale.double() ** 2).min()) >= EPS * (1 - 1e-6) else 0.0
    var = (scale.double() ** 2 - eps).clamp_min(0.0).float()
    var = _nudge(var, lambda v: torch.sqrt(v.clamp_min(0.0) + eps), scale).clamp_min(0.0)
    return var, eps


# --------------------------------------------------------------------------------------------
# The encoder as diffusers builds it
# --------------------------------------------------------------------------------------------


def _encoder_model(kind: str, hidden: int, patch: int, layers: int, where: str, meta: bool = False) -> nn.Module:
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
    cls = getattr(transformers, _ENCODER_CLASS[kind])
    if meta:
        with torch.device("meta"):
            return cls(config)
    return cls(config)


def _final_norm_keys(model: nn.Module, kind: str) -> set[str]:
    """State-dict keys of the final LayerNorm's affine (RAE drops it, so diffusers stores none)."""
    attr = _FINAL_NORM[kind]
    target = getattr(model, attr, None)
    if target is None and hasattr(model, "vision_model"):  # SiglipVisionModel in transformers 4
        target = getattr(model.vision_model, attr)
    names = {name for name, module in model.named_modules() if module is target}
    return {f"{name}.{p}" for name in names for p in ("weight", "bias")}


def _encoder_shapes(model: nn.Module, kind: str) -> dict[str, tuple[int, ...]]:
    drop = _final_norm_keys(model, kind)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in drop}


def _encoder_name(kind: str, hidden: int, layers: int, patch: int) -> tuple[str, str | None]:
    """genrep's registered encoder name and hub source for a diffusers encoder; the source is None
    when the architecture is not one of the released checkpoints."""
    name = _RELEASED.get((kind, hidden, layers, patch))
    if name is not None:
        return name, ENCODERS[name]["source"]
    return _FAMILY_NAME[kind], None


# --------------------------------------------------------------------------------------------
# diffusers -> genrep
# --------------------------------------------------------------------------------------------


def _read_config(path: Path) -> dict[str, Any]:
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
    if cfg["encoder_type"] not in _KIND_OF_TYPE:
        raise UserError(
            f"{path}: encoder_type {cfg['encoder_type']!r} is not one of {', '.join(sorted(_KIND_OF_TYPE))}"
        )
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


def _list_shape(value: Any, path: Path, key: str) -> tuple[int, ...]:
    """The shape of a (nested) list of numbers from the config, as diffusers turns it into a tensor."""
    try:
        return tuple(torch.tensor(value, dtype=torch.float32).shape)
    except (TypeError, ValueError, RuntimeError):
        raise UserError(f"{path}: '{key}' is not a (nested) list of numbers of one shape") from None


def _decoder_size(cfg: dict[str, Any]) -> dict[str, Any]:
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


def _decoder_shapes(width: int, depth: int, mlp: int, latent: int, out: int) -> dict[str, tuple[int, ...]]:
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


def _decoder_mismatch(cfg: DecoderConfig) -> str | None:
    """Why a genrep decoder of this config does not compute diffusers' decoder, or None."""
    if cfg.layer_norm_eps != LAYER_NORM_EPS:
        return f"its layer norms use eps {cfg.layer_norm_eps}, diffusers' use {LAYER_NORM_EPS}"
    if not cfg.qkv_bias:
        return "it has no q/k/v biases, diffusers' decoder has them"
    if cfg.out_channels != 3:
        return f"it predicts {cfg.out_channels} channels, diffusers de-normalises 3"
    return None


def _check_tensors(tensors: dict[str, Tensor], expected: dict[str, tuple[int, ...]], path: Path) -> None:
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


def _broadcast_stat(value: Tensor, shape: tuple[int, int, int], path: Path, key: str) -> Tensor:
    c, h, w = shape
    try:
        fits = torch.broadcast_shapes(tuple(value.shape), (1, c, h, w)) == (1, c, h, w)
    except RuntimeError:
        fits = False
    if not fits:
        raise UserError(f"{path}: tensor '{key}' of shape {list(value.shape)} does not fit the latent [{c}, {h}, {w}]")
    return value.float().expand(1, c, h, w)[0].contiguous()


def rae_from_diffusers(directory: str | Path, encoder_source: str | None = None, load_encoder: bool = False) -> RAE:
    """Read a diffusers ``AutoencoderRAE`` directory as a genrep :class:`RAE` (diffusers not needed).

    Every tensor of ``diffusion_pytorch_model.safetensors`` must be one the config implies, with its
    shape; the first that is missing, unexpected or misshapen is a one-line UserError. The encoder
    becomes a spec: the registered genrep encoder of that family with, for the released
    architectures, its hub id as source (``encoder_source`` overrides it, e.g. a local copy; for
    other architectures it is None). Decoding needs no encoder weights. ``load_encoder=True``
    instead builds the encoder as diffusers does and gives it the file's encoder weights, so
    ``encode`` works at once and offline.
    """
    directory = Path(directory)
    cfg_path, w_path = directory / DIFFUSERS_CONFIG, directory / DIFFUSERS_WEIGHTS
    if not directory.is_dir():
        raise UserError(f"{directory}: not a directory")
    if not cfg_path.is_file():
        raise UserError(f"{directory}: not a diffusers model directory (no {DIFFUSERS_CONFIG})")
    cfg = _read_config(cfg_path)
    if not w_path.is_file():
        raise UserError(f"{w_path}: not found (sharded and .bin checkpoints are not read)")
    try:
        tensors = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{w_path}: not a readable safetensors file ({exc})") from None

    kind = _KIND_OF_TYPE[cfg["encoder_type"]]
    hidden, patch, layers = cfg["encoder_hidden_size"], cfg["encoder_patch_size"], cfg["encoder_num_hidden_layers"]
    size_in = cfg["encoder_input_size"]
    if size_in % patch:
        raise UserError(f"{cfg_path}: encoder_input_size {size_in} is not a multiple of encoder_patch_size {patch}")
    grid = size_in // patch
    dec_patch = cfg["patch_size"]
    if cfg["image_size"] is not None and cfg["image_size"] != grid * dec_patch:
        raise UserError(f"{cfg_path}: image_size {cfg['image_size']} is not patch_size x grid = {grid * dec_patch}")
    if cfg["num_channels"] != 3:
        raise UserError(f"{cfg_path}: num_channels is {cfg['num_channels']}; genrep decodes RGB (3)")
    if not cfg["reshape_to_2d"]:
        raise UserError(f"{cfg_path}: reshape_to_2d is false; genrep's latents are 2D grids")
    dec_width, dec_heads = cfg["decoder_hidden_size"], cfg["decoder_num_attention_heads"]
    if dec_width % dec_heads or dec_width % 4:
        raise UserError(
            f"{cfg_path}: decoder_hidden_size {dec_width} must be a multiple of 4 and of decoder_num_attention_heads {dec_heads}"
        )
    dec_cfg = DecoderConfig(
        latent_channels=hidden,
        grid=grid,
        patch=dec_patch,
        **_decoder_size(cfg),
        out_channels=3,
        layer_norm_eps=LAYER_NORM_EPS,
        qkv_bias=True,
        pos_order="col-row",
    )

    model = _encoder_model(kind, hidden, patch, layers, str(cfg_path), meta=True)
    enc_shapes = _encoder_shapes(model, kind)
    if kind == "siglip":  # files written under transformers 4 keep the SigLIP tower under vision_model.
        tensors = _align_siglip_prefix(tensors, enc_shapes)
    loaded: nn.Module | None = None
    enc_file = {k[len("encoder.") :]: v for k, v in tensors.items() if k.startswith("encoder.")}
    if set(enc_file) != set(enc_shapes):  # another transformers version's names: let transformers translate
        loaded = _encoder_via_transformers(kind, model.config, enc_file, w_path)
        drop = _final_norm_keys(loaded, kind)
        tensors = {k: v for k, v in tensors.items() if not k.startswith("encoder.")}
        tensors.update({f"encoder.{k}": v for k, v in loaded.state_dict().items() if k not in drop})
    stat_shapes = {}
    for key, field in (("_latents_mean", "latents_mean"), ("_latents_std", "latents_std")):
        value = cfg[field]
        stat_shapes[key] = (1,) if value is None else _list_shape(value, cfg_path, field)
    d = dec_cfg.dims
    expected = {
        **{f"encoder.{k}": s for k, s in enc_shapes.items()},
        "encoder_mean": (1, 3, 1, 1),
        "encoder_std": (1, 3, 1, 1),
        **stat_shapes,
        **_decoder_shapes(d.width, d.depth, d.mlp, hidden, dec_patch * dec_patch * 3),
    }
    tensors.pop("decoder.decoder_pos_embed", None)  # diffusers ignores a stored table and recomputes it
    _check_tensors(tensors, expected, w_path)
    tensors = {k: v.float() for k, v in tensors.items()}

    name, source = _encoder_name(kind, hidden, layers, patch)
    mean, std = _short_floats(tensors["encoder_mean"]), _short_floats(tensors["encoder_std"])
    encoder: FrozenEncoder | dict[str, Any]
    if load_encoder:
        if loaded is None:
            loaded = _encoder_model(kind, hidden, patch, layers, str(cfg_path))
            drop = _final_norm_keys(loaded, kind)
            enc_state = {k[len("encoder.") :]: v for k, v in tensors.items() if k.startswith("encoder.")}
            loaded.load_state_dict({**enc_state, **{k: v for k, v in loaded.state_dict().items() if k in drop}})
        encoder = HFEncoder(name, loaded, size_in, mean, std, source=encoder_source or source)
    else:
        encoder = {
            "name": name,
            "source": encoder_source or source,
            "input_size": size_in,
            "pixel_mean": mean,
            "pixel_std": std,
        }

    latent_shape = (hidden, grid, grid)
    lat_mean = _broadcast_stat(tensors["_latents_mean"], latent_shape, w_path, "_latents_mean")
    lat_std = _broadcast_stat(tensors["_latents_std"], latent_shape, w_path, "_latents_std")
    scale = lat_std + STD_OFFSET  # float32, as diffusers computes it
    if not bool((scale > 0).all()):
        raise UserError(f"{w_path}: tensor '_latents_std' has values <= -1e-5 (no positive latent scale)")
    if cfg["scaling_factor"] != 1.0:
        scale = (scale.double() / cfg["scaling_factor"]).float()
    var, eps = var_for_scale(scale)
    stats = LatentStats(lat_mean, var, eps=eps)

    decoder = ViTDecoder(dec_cfg)
    state = decoder_state_from_diffusers(tensors, d.depth)
    state["pos_embed"] = diffusers_positions(d.width, grid)  # the table diffusers computes, kept exactly
    decoder.load_state_dict(state)
    return RAE(encoder, stats, decoder).eval()


def _encoder_via_transformers(kind: str, config: Any, tensors: dict[str, Tensor], path: Path) -> nn.Module:
    """The encoder loaded by transformers' own ``from_pretrained`` from ``tensors``, which carry the
    weight names of another transformers version (transformers renames its legacy names on load).
    Strict: only the final LayerNorm's affine (which RAE drops) may be missing."""
    import transformers

    cls = getattr(transformers, _ENCODER_CLASS[kind])
    with tempfile.TemporaryDirectory() as tmp:
        config.save_pretrained(tmp)
        save_file(
            {k: v.contiguous() for k, v in tensors.items()}, os.path.join(tmp, "model.safetensors"), {"format": "pt"}
        )
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # its load report would list the LayerNorm RAE drops
        try:
            net, info = cls.from_pretrained(tmp, output_loading_info=True)
        except Exception as exc:  # noqa: BLE001 - any load failure is the file's to fix, in one line
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            raise UserError(
                f"{path}: the encoder.* tensors do not load as {cls.__name__} ({lines[0] if lines else type(exc).__name__})"
            ) from None
        finally:
            transformers.logging.set_verbosity(verbosity)
    missing = sorted(set(info["missing_keys"]) - _final_norm_keys(net, kind))
    if missing:
        raise UserError(f"{path}: missing tensor 'encoder.{missing[0]}'")
    for what in ("unexpected_keys", "mismatched_keys"):
        bad = sorted(str(k if isinstance(k, str) else k[0]) for k in info.get(what, ()))
        if bad:
            raise UserError(f"{path}: {what.split('_')[0]} tensor 'encoder.{bad[0]}'")
    return net.float().eval()


def _short_floats(values: Tensor) -> list[float]:
    """float32 values as the shortest decimals that round back to them (0.485, not 0.48500001430511475),
    so a spec read from diffusers equals the one the encoder's own processor config gives."""
    return [float(str(v)) for v in values.flatten().numpy().astype(np.float32)]


def _align_siglip_prefix(tensors: dict[str, Tensor], enc_shapes: dict[str, tuple[int, ...]]) -> dict[str, Tensor]:
    """Rename ``encoder.vision_model.X`` <-> ``encoder.X`` when only the other spelling is expected."""
    prefix = "encoder.vision_model."
    wants_prefix = any(k.startswith("vision_model.") for k in enc_shapes)
    has_prefix = any(k.startswith(prefix) for k in tensors)
    if has_prefix and not wants_prefix:
        return {("encoder." + k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in tensors.items()}
    if wants_prefix and not has_prefix:
        return {(prefix + k[len("encoder.") :] if k.startswith("encoder.") else k): v for k, v in tensors.items()}
    return tensors


# --------------------------------------------------------------------------------------------
# genrep -> diffusers
# --------------------------------------------------------------------------------------------


def diffusers_state(rae: RAE, where: str = "RAE") -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(config.json contents, safetensors tensors) of the diffusers ``AutoencoderRAE`` equal to ``rae``.

    ``where`` names the source in errors. Raises UserError for what diffusers cannot express: a
    non-transformers encoder (effnet-lite0), an encoder architecture diffusers does not build
    (other head count, MLP width, eps, ...), a decoder without diffusers' layer-norm eps or
    position table.
    """
    enc = rae.encoder
    if not isinstance(enc, HFEncoder):
        raise UserError(
            f"{where}: encoder '{enc.name}' has no diffusers counterpart ({DIFFUSERS_CLASS} builds DINOv2 with "
            "registers, SigLIP or MAE)"
        )
    kind = enc.kind
    if enc.resize_mode != "bicubic":
        raise UserError(
            f"{where}: encoder '{enc.name}' resizes with '{enc.resize_mode}'; diffusers resizes with plain bicubic"
        )
    net_cfg: Any = enc.net.config
    if kind == "dinov2" and getattr(net_cfg, "model_type", None) != "dinov2_with_registers":
        raise UserError(
            f"{where}: encoder '{enc.name}' is DINOv2 without registers; diffusers builds it with registers"
        )
    patch = net_cfg.patch_size
    patch = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
    hidden, layers = int(net_cfg.hidden_size), int(net_cfg.num_hidden_layers)
    target = _encoder_model(kind, hidden, patch, layers, where, meta=True)
    target_cfg: Any = target.config
    for attr in _ARCH_ATTRS[kind]:
        ours, theirs = getattr(net_cfg, attr, None), getattr(target_cfg, attr, None)
        if ours != theirs:
            raise UserError(
                f"{where}: encoder '{enc.name}' has {attr} = {ours!r}; diffusers builds this encoder with {theirs!r}"
            )
    enc_shapes = _encoder_shapes(target, kind)
    ours_state = {k: v for k, v in enc.net.state_dict().items()}
    if set(ours_state) != set(enc_shapes):  # a SigLIP tower taken out of SiglipModel lacks the vision_model. level
        prefixed = {f"vision_model.{k}": v for k, v in ours_state.items()}
        if set(prefixed) == set(enc_shapes):
            ours_state = prefixed
    for key in sorted(set(enc_shapes) | set(ours_state)):
        if key not in ours_state or key not in enc_shapes or tuple(ours_state[key].shape) != enc_shapes[key]:
            raise UserError(f"{where}: encoder '{enc.name}' weight '{key}' does not fit the encoder diffusers builds")
    tensors: dict[str, Tensor] = {f"encoder.{k}": v for k, v in ours_state.items()}

    dec_cfg = rae.decoder.cfg
    why = _decoder_mismatch(dec_cfg)
    if why is not None:
        raise UserError(f"{where}: the decoder cannot be expressed in diffusers: {why}")
    d = dec_cfg.dims
    table = diffusers_positions(d.width, dec_cfg.grid)
    if not torch.allclose(rae.decoder.pos_embed.detach().cpu().float(), table, rtol=0, atol=1e-6):
        raise UserError(
            f"{where}: the decoder's position table differs from the one diffusers computes for a "
            f"{dec_cfg.grid}x{dec_cfg.grid} grid (they agree only for 16x16 grids, column-first)"
        )
    tensors.update(decoder_state_to_diffusers(rae.decoder.state_dict(), d.depth))

    c, h, w = rae.latent_shape
    scale = torch.sqrt(rae.stats.var + rae.stats.eps)  # float32, as genrep computes it
    lat_mean = rae.stats.mean.detach().float().clone()
    lat_std = std_for_scale(scale.detach())
    tensors["_latents_mean"] = lat_mean
    tensors["_latents_std"] = lat_std
    tensors["encoder_mean"] = torch.tensor(enc.pixel_mean, dtype=torch.float32).view(1, 3, 1, 1)
    tensors["encoder_std"] = torch.tensor(enc.pixel_std, dtype=torch.float32).view(1, 3, 1, 1)
    tensors = {k: v.detach().cpu().float().contiguous().clone() for k, v in tensors.items()}

    config: dict[str, Any] = {
        "_class_name": DIFFUSERS_CLASS,
        "_diffusers_version": DIFFUSERS_VERSION,
        "encoder_type": _TYPE_OF_KIND[kind],
        "encoder_hidden_size": hidden,
        "encoder_patch_size": patch,
        "encoder_num_hidden_layers": layers,
        "encoder_input_size": enc.input_size,
        "decoder_hidden_size": d.width,
        "decoder_num_hidden_layers": d.depth,
        "decoder_num_attention_heads": d.heads,
        "decoder_intermediate_size": d.mlp,
        "patch_size": dec_cfg.patch,
        "image_size": dec_cfg.image_size,
        "num_channels": 3,
        "encoder_norm_mean": list(enc.pixel_mean),
        "encoder_norm_std": list(enc.pixel_std),
        "latents_mean": tensors["_latents_mean"].tolist(),
        "latents_std": tensors["_latents_std"].tolist(),
        "noise_tau": 0.0,
        "reshape_to_2d": True,
        "use_encoder_loss": False,
        "scaling_factor": 1.0,
    }
    if (c, h, w) != tuple(lat_mean.shape):
        raise UserError(f"{where}: statistics of shape {list(lat_mean.shape)} do not fit the latent [{c}, {h}, {w}]")
    return config, tensors


def rae_to_diffusers(rae_dir: str | Path, out: str | Path, encoder: FrozenEncoder | None = None) -> Path:
    """Write the genrep RAE at ``rae_dir`` as a diffusers ``AutoencoderRAE`` directory ``out``.

    diffusers keeps the encoder's weights in its file, so the encoder is built from the RAE's spec
    (its source must be loadable) unless ``encoder`` is given. ``out`` must not exist; it appears
    complete or not at all (written in a temporary sibling directory, then renamed).
    """
    rae_dir, out = Path(rae_dir), Path(out)
    if out.exists() or out.is_symlink():
        raise UserError(f"{out}: already exists (the diffusers directory is written new)")
    rae = RAE.from_pretrained(rae_dir, encoder=encoder)
    config, tensors = diffusers_state(rae, where=str(rae_dir / CONFIG_NAME))
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    new_parents = [p for p in out.absolute().parents if not p.exists()]  # removed again on failure
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        save_file(tensors, str(tmp / DIFFUSERS_WEIGHTS), metadata={"format": "pt"})
        (tmp / DIFFUSERS_CONFIG).write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o777 & ~_umask())
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for parent in new_parents:  # innermost first
            try:
                parent.rmdir()
            except OSError:
                break
        raise
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
