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
from genrep.rae.autoencoder import CONFIG_NAME, RAE
from genrep.rae.decoder import DecoderConfig, ViTDecoder
from genrep.rae.diffusers_layout import (
    ARCH_ATTRS,
    DIFFUSERS_CLASS,
    DIFFUSERS_CONFIG,
    DIFFUSERS_VERSION,
    DIFFUSERS_WEIGHTS,
    ENCODER_CLASS,
    KIND_OF_TYPE,
    LAYER_NORM_EPS,
    TYPE_OF_KIND,
    align_siglip_prefix,
    check_tensors,
    decoder_mismatch,
    decoder_shapes,
    decoder_size,
    decoder_state_from_diffusers,
    decoder_state_to_diffusers,
    encoder_model,
    encoder_name,
    encoder_shapes,
    final_norm_keys,
    list_shape,
    read_config,
)
from genrep.rae.diffusers_numerics import STD_OFFSET, diffusers_positions, std_for_scale, var_for_scale
from genrep.rae.encoders import FrozenEncoder, HFEncoder
from genrep.rae.stats import LatentStats

# --------------------------------------------------------------------------------------------
# diffusers -> genrep
# --------------------------------------------------------------------------------------------


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
    cfg, cfg_path, w_path, tensors = _read_directory(Path(directory))
    dec_cfg = _decoder_config(cfg, cfg_path)
    tensors, loaded = _checked_tensors(cfg, cfg_path, w_path, tensors, dec_cfg)
    encoder = _encoder_from_file(cfg, cfg_path, tensors, loaded, encoder_source, load_encoder)
    stats = _stats_from_file(cfg, w_path, tensors, (cfg["encoder_hidden_size"], dec_cfg.grid, dec_cfg.grid))
    d = dec_cfg.dims
    decoder = ViTDecoder(dec_cfg)
    state = decoder_state_from_diffusers(tensors, d.depth)
    state["pos_embed"] = diffusers_positions(d.width, dec_cfg.grid)  # the table diffusers computes, kept exactly
    decoder.load_state_dict(state)
    return RAE(encoder, stats, decoder).eval()


def _read_directory(directory: Path) -> tuple[dict[str, Any], Path, Path, dict[str, Tensor]]:
    """(checked config, config path, weights path, the weights file's tensors) of a diffusers directory."""
    cfg_path, w_path = directory / DIFFUSERS_CONFIG, directory / DIFFUSERS_WEIGHTS
    if not directory.is_dir():
        raise UserError(f"{directory}: not a directory")
    if not cfg_path.is_file():
        raise UserError(f"{directory}: not a diffusers model directory (no {DIFFUSERS_CONFIG})")
    cfg = read_config(cfg_path)
    if not w_path.is_file():
        raise UserError(f"{w_path}: not found (sharded and .bin checkpoints are not read)")
    try:
        tensors = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{w_path}: not a readable safetensors file ({exc})") from None
    return cfg, cfg_path, w_path, tensors


def _decoder_config(cfg: dict[str, Any], cfg_path: Path) -> DecoderConfig:
    """The genrep decoder config computing diffusers' decoder for this diffusers config."""
    patch = cfg["encoder_patch_size"]
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
    return DecoderConfig(
        latent_channels=cfg["encoder_hidden_size"],
        grid=grid,
        patch=dec_patch,
        **decoder_size(cfg),
        out_channels=3,
        layer_norm_eps=LAYER_NORM_EPS,
        qkv_bias=True,
        pos_order="col-row",
    )


def _checked_tensors(
    cfg: dict[str, Any], cfg_path: Path, w_path: Path, tensors: dict[str, Tensor], dec_cfg: DecoderConfig
) -> tuple[dict[str, Tensor], nn.Module | None]:
    """The file's tensors under this transformers version's encoder names, each checked against the
    shape the config gives (float32), and the encoder when transformers had to load it to rename them."""
    kind = KIND_OF_TYPE[cfg["encoder_type"]]
    hidden, patch, layers = cfg["encoder_hidden_size"], cfg["encoder_patch_size"], cfg["encoder_num_hidden_layers"]
    model = encoder_model(kind, hidden, patch, layers, str(cfg_path), meta=True)
    enc_shapes = encoder_shapes(model, kind)
    if kind == "siglip":  # files written under transformers 4 keep the SigLIP tower under vision_model.
        tensors = align_siglip_prefix(tensors, enc_shapes)
    loaded: nn.Module | None = None
    enc_file = {k[len("encoder.") :]: v for k, v in tensors.items() if k.startswith("encoder.")}
    if set(enc_file) != set(enc_shapes):  # another transformers version's names: let transformers translate
        loaded = _encoder_via_transformers(kind, model.config, enc_file, w_path)
        drop = final_norm_keys(loaded, kind)
        tensors = {k: v for k, v in tensors.items() if not k.startswith("encoder.")}
        tensors.update({f"encoder.{k}": v for k, v in loaded.state_dict().items() if k not in drop})
    stat_shapes = {}
    for key, field in (("_latents_mean", "latents_mean"), ("_latents_std", "latents_std")):
        value = cfg[field]
        stat_shapes[key] = (1,) if value is None else list_shape(value, cfg_path, field)
    d = dec_cfg.dims
    expected = {
        **{f"encoder.{k}": s for k, s in enc_shapes.items()},
        "encoder_mean": (1, 3, 1, 1),
        "encoder_std": (1, 3, 1, 1),
        **stat_shapes,
        **decoder_shapes(d.width, d.depth, d.mlp, hidden, dec_cfg.patch * dec_cfg.patch * 3),
    }
    tensors.pop("decoder.decoder_pos_embed", None)  # diffusers ignores a stored table and recomputes it
    check_tensors(tensors, expected, w_path)
    return {k: v.float() for k, v in tensors.items()}, loaded


def _encoder_from_file(
    cfg: dict[str, Any],
    cfg_path: Path,
    tensors: dict[str, Tensor],
    loaded: nn.Module | None,
    encoder_source: str | None,
    load_encoder: bool,
) -> FrozenEncoder | dict[str, Any]:
    """The RAE's encoder: a spec, or with ``load_encoder`` the encoder with the file's weights."""
    kind = KIND_OF_TYPE[cfg["encoder_type"]]
    hidden, patch, layers = cfg["encoder_hidden_size"], cfg["encoder_patch_size"], cfg["encoder_num_hidden_layers"]
    size_in = cfg["encoder_input_size"]
    name, source = encoder_name(kind, hidden, layers, patch)
    mean, std = _short_floats(tensors["encoder_mean"]), _short_floats(tensors["encoder_std"])
    if not load_encoder:
        return {
            "name": name,
            "source": encoder_source or source,
            "input_size": size_in,
            "pixel_mean": mean,
            "pixel_std": std,
        }
    if loaded is None:
        loaded = encoder_model(kind, hidden, patch, layers, str(cfg_path))
        drop = final_norm_keys(loaded, kind)
        enc_state = {k[len("encoder.") :]: v for k, v in tensors.items() if k.startswith("encoder.")}
        loaded.load_state_dict({**enc_state, **{k: v for k, v in loaded.state_dict().items() if k in drop}})
    return HFEncoder(name, loaded, size_in, mean, std, source=encoder_source or source)


def _stats_from_file(
    cfg: dict[str, Any], w_path: Path, tensors: dict[str, Tensor], latent_shape: tuple[int, int, int]
) -> LatentStats:
    """genrep's latent statistics de-normalising as diffusers' ``_latents_mean`` / ``_latents_std`` do."""
    lat_mean = _broadcast_stat(tensors["_latents_mean"], latent_shape, w_path, "_latents_mean")
    lat_std = _broadcast_stat(tensors["_latents_std"], latent_shape, w_path, "_latents_std")
    scale = lat_std + STD_OFFSET  # float32, as diffusers computes it
    if not bool((scale > 0).all()):
        raise UserError(f"{w_path}: tensor '_latents_std' has values <= -1e-5 (no positive latent scale)")
    if cfg["scaling_factor"] != 1.0:
        scale = (scale.double() / cfg["scaling_factor"]).float()
    var, eps = var_for_scale(scale)
    return LatentStats(lat_mean, var, eps=eps)


def _broadcast_stat(value: Tensor, shape: tuple[int, int, int], path: Path, key: str) -> Tensor:
    c, h, w = shape
    try:
        fits = torch.broadcast_shapes(tuple(value.shape), (1, c, h, w)) == (1, c, h, w)
    except RuntimeError:
        fits = False
    if not fits:
        raise UserError(f"{path}: tensor '{key}' of shape {list(value.shape)} does not fit the latent [{c}, {h}, {w}]")
    return value.float().expand(1, c, h, w)[0].contiguous()


def _encoder_via_transformers(kind: str, config: Any, tensors: dict[str, Tensor], path: Path) -> nn.Module:
    """The encoder loaded by transformers' own ``from_pretrained`` from ``tensors``, which carry the
    weight names of another transformers version (transformers renames its legacy names on load).
    Strict: only the final LayerNorm's affine (which RAE drops) may be missing."""
    import transformers

    cls = getattr(transformers, ENCODER_CLASS[kind])
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
    missing = sorted(set(info["missing_keys"]) - final_norm_keys(net, kind))
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
    enc, (kind, hidden, patch, layers), tensors = _encoder_tensors(rae.encoder, where)
    tensors.update(_decoder_tensors(rae, where))
    c, h, w = rae.latent_shape
    scale = torch.sqrt(rae.stats.var + rae.stats.eps)  # float32, as genrep computes it
    lat_mean = rae.stats.mean.detach().float().clone()
    lat_std = std_for_scale(scale.detach())
    tensors["_latents_mean"] = lat_mean
    tensors["_latents_std"] = lat_std
    tensors["encoder_mean"] = torch.tensor(enc.pixel_mean, dtype=torch.float32).view(1, 3, 1, 1)
    tensors["encoder_std"] = torch.tensor(enc.pixel_std, dtype=torch.float32).view(1, 3, 1, 1)
    tensors = {k: v.detach().cpu().float().contiguous().clone() for k, v in tensors.items()}
    config = _diffusers_config(rae, enc, (kind, hidden, patch, layers), tensors)
    if (c, h, w) != tuple(lat_mean.shape):
        raise UserError(f"{where}: statistics of shape {list(lat_mean.shape)} do not fit the latent [{c}, {h}, {w}]")
    return config, tensors


def _encoder_tensors(enc: FrozenEncoder, where: str) -> tuple[HFEncoder, tuple[str, int, int, int], dict[str, Tensor]]:
    """The encoder as an HFEncoder diffusers builds alike, its (kind, hidden size, patch, layers) and
    its ``encoder.*`` tensors under the names of the model diffusers builds."""
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
    target = encoder_model(kind, hidden, patch, layers, where, meta=True)
    target_cfg: Any = target.config
    for attr in ARCH_ATTRS[kind]:
        ours, theirs = getattr(net_cfg, attr, None), getattr(target_cfg, attr, None)
        if ours != theirs:
            raise UserError(
                f"{where}: encoder '{enc.name}' has {attr} = {ours!r}; diffusers builds this encoder with {theirs!r}"
            )
    enc_shapes = encoder_shapes(target, kind)
    ours_state = {k: v for k, v in enc.net.state_dict().items()}
    if set(ours_state) != set(enc_shapes):  # a SigLIP tower taken out of SiglipModel lacks the vision_model. level
        prefixed = {f"vision_model.{k}": v for k, v in ours_state.items()}
        if set(prefixed) == set(enc_shapes):
            ours_state = prefixed
    for key in sorted(set(enc_shapes) | set(ours_state)):
        if key not in ours_state or key not in enc_shapes or tuple(ours_state[key].shape) != enc_shapes[key]:
            raise UserError(f"{where}: encoder '{enc.name}' weight '{key}' does not fit the encoder diffusers builds")
    return enc, (kind, hidden, patch, layers), {f"encoder.{k}": v for k, v in ours_state.items()}


def _decoder_tensors(rae: RAE, where: str) -> dict[str, Tensor]:
    """The decoder's ``decoder.*`` tensors, after checking that diffusers' decoder computes the same."""
    dec_cfg = rae.decoder.cfg
    why = decoder_mismatch(dec_cfg)
    if why is not None:
        raise UserError(f"{where}: the decoder cannot be expressed in diffusers: {why}")
    d = dec_cfg.dims
    table = diffusers_positions(d.width, dec_cfg.grid)
    if not torch.allclose(rae.decoder.pos_embed.detach().cpu().float(), table, rtol=0, atol=1e-6):
        raise UserError(
            f"{where}: the decoder's position table differs from the one diffusers computes for a "
            f"{dec_cfg.grid}x{dec_cfg.grid} grid (they agree only for 16x16 grids, column-first)"
        )
    return decoder_state_to_diffusers(rae.decoder.state_dict(), d.depth)


def _diffusers_config(
    rae: RAE, enc: HFEncoder, encoder_dims: tuple[str, int, int, int], tensors: dict[str, Tensor]
) -> dict[str, Any]:
    """config.json for ``rae`` whose tensors are ``tensors`` (the latent statistics are repeated there)."""
    kind, hidden, patch, layers = encoder_dims
    dec_cfg = rae.decoder.cfg
    d = dec_cfg.dims
    return {
        "_class_name": DIFFUSERS_CLASS,
        "_diffusers_version": DIFFUSERS_VERSION,
        "encoder_type": TYPE_OF_KIND[kind],
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
