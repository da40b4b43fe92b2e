"""Reference stage-1 files -> a genrep :class:`~genrep.rae.autoencoder.RAE`.

bytetriper/RAE ships a stage-1 model as a YAML block (``stage_1.params`` of
configs/stage1/pretrained/*.yaml, the arguments of src/stage1/rae.py:18-33), a decoder config
(configs/decoder/ViT*/config.json, a transformers ViTMAEConfig), the decoder weights
(``model.pt``: ``torch.save`` of GeneralDecoder's state dict, src/extract_decoder.py) and the
latent statistics (``stat.pt``: ``{"mean", "var"}``, src/calculate_stat.py). This module reads
them into genrep's decoder and RAE; the encoder is only named (its weights stay at their hub id
or directory and load on the first ``encode``).

The weight mapping is strict: every tensor of the checkpoint is mapped, every tensor genrep needs
is present, every shape is checked; anything else is a one-line UserError naming the file and
the key. Reference key -> genrep key:

====================================================  ==========================
``decoder_embed.{weight,bias}``                        ``embed.*``
``trainable_cls_token``                                ``cls_token``
``decoder_pos_embed``                                  ``pos_embed`` (kept as is)
``decoder_layers.i.layernorm_before.*``                ``blocks.i.norm1.*``
``decoder_layers.i.attention.attention.{query,key,value}.*``  ``blocks.i.qkv.*`` (stacked q, k, v)
``decoder_layers.i.attention.output.dense.*``          ``blocks.i.proj.*``
``decoder_layers.i.layernorm_after.*``                 ``blocks.i.norm2.*``
``decoder_layers.i.intermediate.dense.*``              ``blocks.i.fc1.*``
``decoder_layers.i.output.dense.*``                    ``blocks.i.fc2.*``
``decoder_norm.*``                                     ``norm.*``
``decoder_pred.*``                                     ``head.*``
====================================================  ==========================
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from genrep.core.errors import UserError
from genrep.rae.autoencoder import RAE
from genrep.rae.decoder import DECODER_SIZES, DecoderConfig, ViTDecoder, decoder_positions
from genrep.rae.encoders import ENCODERS
from genrep.rae.stats import EPS, stats_from_reference

# genrep name of each one-to-one tensor, reference name -> genrep name (per block: the suffixes)
_TOP = {
    "decoder_embed.weight": "embed.weight",
    "decoder_embed.bias": "embed.bias",
    "trainable_cls_token": "cls_token",
    "decoder_pos_embed": "pos_embed",
    "decoder_norm.weight": "norm.weight",
    "decoder_norm.bias": "norm.bias",
    "decoder_pred.weight": "head.weight",
    "decoder_pred.bias": "head.bias",
}
_BLOCK = {
    "layernorm_before": "norm1",
    "attention.output.dense": "proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "fc1",
    "output.dense": "fc2",
}
_QKV = ("query", "key", "value")

# configs/decoder/*/config.json keys genrep needs to know (the rest describe the MAE encoder that the
# reference replaces, or are overwritten by RAE.__init__: hidden_size, patch_size, image_size)
_DIMS = ("decoder_hidden_size", "decoder_num_hidden_layers", "decoder_num_attention_heads", "decoder_intermediate_size")

# stage_1.params: required keys, and the optional ones with the reference's defaults (rae.py:18-33)
_REQUIRED = (
    "encoder_cls",
    "encoder_config_path",
    "encoder_input_size",
    "encoder_params",
    "decoder_config_path",
    "pretrained_decoder_path",
    "normalization_stat_path",
)
_OPTIONAL = {"decoder_patch_size": 16, "noise_tau": 0.8, "reshape_to_2d": True, "eps": EPS}

# reference encoder class -> (genrep kind, the encoder_params key holding the weights' path or hub id,
# the encoder_params keys it accepts); src/stage1/encoders/*.py
_ENCODER_CLASSES = {
    "Dinov2withNorm": ("dinov2", "dinov2_path", ("dinov2_path", "normalize")),
    "SigLIP2wNorm": ("siglip", "model_name", ("model_name", "num_tokens")),
    "MAEwNorm": ("mae", "model_name", ("model_name",)),
}
# the released encoders, for when their config is not on disk: hub id -> (hidden size, patch size)
_KNOWN_ENCODERS = {
    "facebook/dinov2-with-registers-small": (384, 14),
    "facebook/dinov2-with-registers-base": (768, 14),
    "facebook/dinov2-with-registers-large": (1024, 14),
    "google/siglip2-base-patch16-256": (768, 16),
    "facebook/vit-mae-base": (768, 16),
}


# --------------------------------------------------------------------------------------------
# The decoder
# --------------------------------------------------------------------------------------------


def decoder_config_from_reference(
    config_json: dict, latent_channels: int, grid: int, patch: int, where: str
) -> DecoderConfig:
    """A decoder config.json of the reference (a ViTMAEConfig) -> genrep's :class:`DecoderConfig`.

    As RAE.__init__ (rae.py:50-54) does, the latent width, the grid and the patch come from the
    encoder and the YAML, not from the JSON. Keys absent from the JSON take ViTMAEConfig's defaults
    (layer_norm_eps 1e-12, qkv_bias true, hidden_act gelu, num_channels 3) except the four decoder
    dimensions, which must be there. Dimensions of one of genrep's sizes (the released B, L, XL) give
    that size; others a ``size="custom"`` config.
    """
    if not isinstance(config_json, dict):
        raise UserError(f"{where}: not a decoder config (expected a JSON object)")
    for key in _DIMS:
        if not isinstance(config_json.get(key), int) or isinstance(config_json.get(key), bool):
            raise UserError(f"{where}: '{key}' is missing or not an integer")
    width, depth, heads, mlp = (config_json[k] for k in _DIMS)
    size = next(
        (n for n, d in DECODER_SIZES.items() if (d.width, d.depth, d.heads, d.mlp) == (width, depth, heads, mlp)),
        None,
    )
    if min(width, depth, heads, mlp) < 1 or width % heads or width % 4:
        raise UserError(
            f"{where}: decoder_hidden_size {width} must be positive and a multiple of 4 and of "
            f"decoder_num_attention_heads {heads} (depth and intermediate size positive too)"
        )
    custom = {} if size is not None else {"width": width, "depth": depth, "heads": heads, "mlp": mlp}
    act = config_json.get("hidden_act", "gelu")
    if act != "gelu":
        raise UserError(f"{where}: 'hidden_act' is {act!r}; genrep's decoder has the exact (erf) 'gelu' only")
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if float(config_json.get(key, 0.0)) != 0.0:
            raise UserError(f"{where}: '{key}' is {config_json[key]}; genrep's decoder has no dropout")
    eps = config_json.get("layer_norm_eps", 1e-12)
    qkv_bias = config_json.get("qkv_bias", True)
    channels = config_json.get("num_channels", 3)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps <= 0:
        raise UserError(f"{where}: 'layer_norm_eps' must be a positive number, got {eps!r}")
    if not isinstance(qkv_bias, bool):
        raise UserError(f"{where}: 'qkv_bias' must be true or false, got {qkv_bias!r}")
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise UserError(f"{where}: 'num_channels' must be a positive integer, got {channels!r}")
    return DecoderConfig(
        latent_channels=int(latent_channels),
        grid=int(grid),
        patch=int(patch),
        size=size or "custom",
        out_channels=channels,
        layer_norm_eps=float(eps),
        qkv_bias=qkv_bias,
        **custom,
    )


def reference_decoder_shapes(cfg: DecoderConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in the state dict of the reference GeneralDecoder that ``cfg``
    describes (decoder.py:542-567), in its order."""
    d, c = cfg.dims, cfg.latent_channels
    shapes: dict[str, tuple[int, ...]] = {
        "decoder_pos_embed": (1, cfg.grid**2 + 1, d.width),
        "trainable_cls_token": (1, 1, d.width),
        "decoder_embed.weight": (d.width, c),
        "decoder_embed.bias": (d.width,),
    }
    for i in range(d.depth):
        p = f"decoder_layers.{i}."
        for name in _QKV:
            shapes[f"{p}attention.attention.{name}.weight"] = (d.width, d.width)
            if cfg.qkv_bias:
                shapes[f"{p}attention.attention.{name}.bias"] = (d.width,)
        shapes[f"{p}attention.output.dense.weight"] = (d.width, d.width)
        shapes[f"{p}attention.output.dense.bias"] = (d.width,)
        shapes[f"{p}intermediate.dense.weight"] = (d.mlp, d.width)
        shapes[f"{p}intermediate.dense.bias"] = (d.mlp,)
        shapes[f"{p}output.dense.weight"] = (d.width, d.mlp)
        shapes[f"{p}output.dense.bias"] = (d.width,)
        for ln in ("layernorm_before", "layernorm_after"):
            shapes[f"{p}{ln}.weight"] = (d.width,)
            shapes[f"{p}{ln}.bias"] = (d.width,)
    out = cfg.patch**2 * cfg.out_channels
    shapes.update(
        {
            "decoder_norm.weight": (d.width,),
            "decoder_norm.bias": (d.width,),
            "decoder_pred.weight": (out, d.width),
            "decoder_pred.bias": (out,),
        }
    )
    return shapes


def decoder_state_from_reference(state: dict[str, Tensor], cfg: DecoderConfig, where: str) -> dict[str, Tensor]:
    """The reference decoder's state dict -> the state dict of ``ViTDecoder(cfg)`` (float32).

    Strict: a key the reference decoder of ``cfg`` does not have, a key it has that ``state``
    lacks, a tensor of another shape or a non-float value is a UserError naming ``where`` and the
    first such key.
    """
    if not isinstance(state, dict):
        raise UserError(f"{where}: not a decoder state dict (got {type(state).__name__})")
    if "model" in state or "ema" in state:
        raise UserError(
            f"{where}: a training checkpoint ('model'/'ema'), not a decoder state dict; "
            "extract the decoder first (the reference's src/extract_decoder.py --use-ema)"
        )
    expected = reference_decoder_shapes(cfg)
    for key in state:
        if key not in expected:
            raise UserError(f"{where}: unexpected key '{key}' (not a tensor of the {cfg.size} decoder)")
    for key, shape in expected.items():
        if key not in state:
            raise UserError(f"{where}: missing key '{key}'")
        value = state[key]
        if not isinstance(value, Tensor) or not value.is_floating_point():
            raise UserError(f"{where}: '{key}' is not a floating-point tensor")
        if tuple(value.shape) != shape:
            raise UserError(f"{where}: '{key}' has shape {list(value.shape)}, expected {list(shape)}")
    ref = {k: v.detach().to(torch.float32) for k, v in state.items()}
    out = {genrep: ref[name] for name, genrep in _TOP.items()}
    for i in range(cfg.dims.depth):
        p, g = f"decoder_layers.{i}.", f"blocks.{i}."
        for name, mine in _BLOCK.items():
            out[f"{g}{mine}.weight"] = ref[f"{p}{name}.weight"]
            out[f"{g}{mine}.bias"] = ref[f"{p}{name}.bias"]
        out[f"{g}qkv.weight"] = torch.cat([ref[f"{p}attention.attention.{n}.weight"] for n in _QKV])
        if cfg.qkv_bias:
            out[f"{g}qkv.bias"] = torch.cat([ref[f"{p}attention.attention.{n}.bias"] for n in _QKV])
    return {k: v.contiguous() for k, v in out.items()}


def decoder_state_to_reference(state: dict[str, Tensor], cfg: DecoderConfig) -> dict[str, Tensor]:
    """The inverse of :func:`decoder_state_from_reference`: a ``ViTDecoder(cfg)`` state dict -> the
    reference GeneralDecoder's, keys in its order. A genrep state dict without ``pos_embed`` (written
    before genrep saved the table) gets the fixed table."""
    width = cfg.dims.width
    mine = dict(state)
    if "pos_embed" not in mine:
        mine["pos_embed"] = decoder_positions(cfg)
    out: dict[str, Tensor] = {}
    for name in reference_decoder_shapes(cfg):
        if name in _TOP:
            out[name] = mine[_TOP[name]]
            continue
        _, i, rest = name.split(".", 2)
        g = f"blocks.{i}."
        if rest.startswith("attention.attention."):
            which, kind = rest[len("attention.attention.") :].split(".")
            k = _QKV.index(which)
            out[name] = mine[f"{g}qkv.{kind}"][k * width : (k + 1) * width]
        else:
            module, kind = rest.rsplit(".", 1)
            out[name] = mine[f"{g}{_BLOCK[module]}.{kind}"]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def load_reference_checkpoint(path: Path) -> Any:
    """``torch.load`` of a reference ``.pt`` file (tensors only, on the CPU); one line on failure."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a broken or non-tensor pickle is the user's to fix
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise UserError(f"{path}: cannot read as a torch checkpoint ({first})") from None


# --------------------------------------------------------------------------------------------
# The whole stage 1
# --------------------------------------------------------------------------------------------


def _resolve(root: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else root / p


def _local_or_hub(root: Path, value: str) -> str:
    """A relative path that exists under ``root`` becomes that path; anything else is a hub id."""
    p = _resolve(root, value)
    return str(p) if p.exists() else value


def _read_json_dir(directory: Path, name: str, where: str, key: str) -> dict:
    from genrep.core.files import read_json

    path = directory / name
    if not path.is_file():
        raise UserError(f"{where}: '{key}' is {directory}, which has no {name}")
    data = read_json(path, name)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def _encoder_geometry(source: str, config_path: str, where: str) -> tuple[int, int]:
    """(hidden size, patch size) of the encoder: its config.json on disk, else the released ones."""
    for candidate, key in ((config_path, "encoder_config_path"), (source, "encoder_params")):
        directory = Path(candidate)
        if directory.is_dir():
            cfg = _read_json_dir(directory, "config.json", where, key)
            cfg = cfg.get("vision_config", cfg)  # a SiglipModel config nests the vision tower's
            hidden, patch = cfg.get("hidden_size"), cfg.get("patch_size")
            if not isinstance(hidden, int) or not isinstance(patch, int):
                raise UserError(f"{directory / 'config.json'}: 'hidden_size' or 'patch_size' is missing")
            return hidden, patch
    for candidate in (source, config_path):
        if candidate in _KNOWN_ENCODERS:
            return _KNOWN_ENCODERS[candidate]
    raise UserError(
        f"{where}: encoder '{source}' is neither a directory with a config.json nor one of the released "
        f"encoders ({', '.join(_KNOWN_ENCODERS)})"
    )


def _encoder_pixels(config_path: str, kind: str) -> tuple[list[float], list[float]]:
    """The mean/std RAE.__init__ reads from ``AutoImageProcessor(encoder_config_path)`` (rae.py:38-40):
    from the preprocessor_config.json of a local directory, else the family's values (those of the
    released encoders' processors: ImageNet for DINOv2 and MAE, 0.5 for SigLIP2)."""
    directory = Path(config_path)
    if directory.is_dir():
        cfg = _read_json_dir(directory, "preprocessor_config.json", config_path, "encoder_config_path")
        mean, std = cfg.get("image_mean"), cfg.get("image_std")
        if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 3):
            raise UserError(
                f"{directory / 'preprocessor_config.json'}: 'image_mean'/'image_std' must be 3 numbers each"
            )
        return [float(v) for v in mean], [float(v) for v in std]
    name = next(n for n, e in ENCODERS.items() if e["kind"] == kind)
    return list(ENCODERS[name]["pixel_mean"]), list(ENCODERS[name]["pixel_std"])


def _genrep_encoder_name(kind: str, hidden: int) -> str:
    """A registered genrep name of the family; the spec's ``source`` names the weights, so for a
    DINOv2 of another width (a local test model) the name is only the family's."""
    if kind == "dinov2":
        return {384: "dinov2-reg-s", 1024: "dinov2-reg-l"}.get(hidden, "dinov2-reg-b")
    return "siglip2-b" if kind == "siglip" else "mae-b"


def rae_from_reference(stage1_params: dict, root: Path, where: str) -> RAE:
    """The ``stage_1.params`` block of a reference YAML -> a genrep RAE (decoder weights and statistics
    loaded; the encoder named by its spec and built on the first ``encode``).

    Relative paths are resolved against ``root`` (the reference resolves them against the working
    directory, its repository root). ``pretrained_decoder_path: null`` gives the reference's
    randomly initialised decoder; ``normalization_stat_path: null`` no normalisation (rae.py:64-72).
    ``noise_tau`` is read and checked but not kept: genrep applies noise in train-decoder only.
    """
    if not isinstance(stage1_params, dict):
        raise UserError(f"{where}: stage_1.params must be a mapping")
    for key in _REQUIRED:
        if key not in stage1_params:
            raise UserError(f"{where}: stage_1.params.{key} is missing")
    unknown = sorted(set(stage1_params) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise UserError(f"{where}: stage_1.params.{unknown[0]} is not a parameter of the reference RAE")
    p = {**_OPTIONAL, **stage1_params}

    def need(key: str, types: type | tuple[type, ...], nullable: bool = False) -> Any:
        value = p[key]
        if value is None and nullable:
            return None
        if isinstance(value, bool) != (types is bool) or not isinstance(value, types):
            raise UserError(f"{where}: stage_1.params.{key} has the wrong type ({type(value).__name__})")
        return value

    cls = need("encoder_cls", str)
    if cls not in _ENCODER_CLASSES:
        raise UserError(
            f"{where}: stage_1.params.encoder_cls '{cls}' is not a reference encoder ({', '.join(_ENCODER_CLASSES)})"
        )
    kind, source_key, allowed = _ENCODER_CLASSES[cls]
    enc_params = need("encoder_params", dict)
    extra = sorted(set(enc_params) - set(allowed))
    if extra:
        raise UserError(f"{where}: stage_1.params.encoder_params.{extra[0]} is not a parameter of {cls}")
    if source_key not in enc_params or not isinstance(enc_params[source_key], str):
        raise UserError(f"{where}: stage_1.params.encoder_params.{source_key} is missing")
    if enc_params.get("normalize", True) is not True:
        raise UserError(
            f"{where}: stage_1.params.encoder_params.normalize is not true; genrep's encoders always "
            "drop the final LayerNorm affine"
        )
    if p["reshape_to_2d"] is not True:
        raise UserError(f"{where}: stage_1.params.reshape_to_2d must be true (genrep's latents are 2D grids)")
    tau = need("noise_tau", (int, float))
    eps = need("eps", (int, float))
    if tau < 0 or eps < 0:
        raise UserError(f"{where}: stage_1.params.{'noise_tau' if tau < 0 else 'eps'} must be >= 0")
    input_size = need("encoder_input_size", int)
    patch = need("decoder_patch_size", int)
    if input_size < 1 or patch < 1:
        raise UserError(f"{where}: stage_1.params.encoder_input_size and decoder_patch_size must be positive")

    source = _local_or_hub(root, enc_params[source_key])
    config_path = _local_or_hub(root, need("encoder_config_path", str))
    hidden, enc_patch = _encoder_geometry(source, config_path, where)
    if input_size % enc_patch:
        raise UserError(
            f"{where}: stage_1.params.encoder_input_size {input_size} is not a multiple of the encoder patch {enc_patch}"
        )
    grid = input_size // enc_patch
    mean, std = _encoder_pixels(config_path, kind)
    name = _genrep_encoder_name(kind, hidden)
    spec = {"name": name, "source": source, "input_size": input_size, "pixel_mean": mean, "pixel_std": std}

    dec_dir = _resolve(root, need("decoder_config_path", str))
    if not dec_dir.is_dir():
        raise UserError(f"{where}: stage_1.params.decoder_config_path: {dec_dir} is not a directory")
    dec_json = dec_dir / "config.json"
    cfg = decoder_config_from_reference(
        _read_json_dir(dec_dir, "config.json", where, "decoder_config_path"), hidden, grid, patch, str(dec_json)
    )
    decoder = ViTDecoder(cfg)
    weights = need("pretrained_decoder_path", str, nullable=True)
    if weights is not None:
        path = _resolve(root, weights)
        decoder.load_state_dict(decoder_state_from_reference(load_reference_checkpoint(path), cfg, str(path)))

    stat_path = need("normalization_stat_path", str, nullable=True)
    payload = None
    if stat_path is not None:
        path = _resolve(root, stat_path)
        payload = load_reference_checkpoint(path)
        stats = stats_from_reference(payload, (hidden, grid, grid), str(path))
        stats.eps = float(eps)
    else:
        stats = stats_from_reference(None, (hidden, grid, grid), where)
    return RAE(spec, stats, decoder).eval()
