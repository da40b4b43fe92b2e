"""Reference stage-2 files -> genrep: the DiT configs, checkpoints and sampling settings of
bytetriper/RAE's YAML files (``stage_2``, ``guidance``, ``sampler``, ``misc`` blocks).

The mapping is strict: every tensor of a reference checkpoint lands on one genrep tensor (with
the shape genrep expects) or is a fixed table that genrep recomputes and checks (the sin-cos
positions, the RoPE tables); anything else is an error naming the key and the file.

Reference names -> genrep names (``DDT.py`` ``DiTwDDTHead``; ``lightningDiT.py`` ``LightningDiT``):

=====================================  =========================================
reference                              genrep
=====================================  =========================================
``s_embedder.proj`` (DDT) /            ``x_embed`` (both a Conv2d of kernel =
``x_embedder.proj`` (LightningDiT)     stride = patch)
``x_embedder.proj`` (DDT)              ``head_x_embed``
``s_projector``                        ``head_cond`` (absent when the widths agree)
``t_embedder.W``, ``t_embedder.mlp``   ``t_embed.W``, ``t_embed.mlp``
``y_embedder.embedding_table``         ``y_embed.table``
``blocks.i`` (i < depth[0])            ``blocks.i``
``blocks.i`` (i >= depth[0], DDT)      ``head_blocks.(i - depth[0])``
``*.adaLN_modulation.1``               ``*.adaLN.1``
``final_layer.norm_final``             ``final_layer.norm``
``pos_embed``, ``*feat_rope.freqs_*``  recomputed by genrep, checked equal
=====================================  =========================================
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from genrep.core.errors import UserError
from genrep.rae.dit import DiT, DiTConfig, grid_angles, position_table

DDT_TARGET = "stage2.models.DDT.DiTwDDTHead"
LIGHTNING_TARGET = "stage2.models.lightningDiT.LightningDiT"

# constructor defaults of the reference classes (DDT.py / lightningDiT.py); the shape-defining
# fields have no usable default there and are required here
_DDT_DEFAULTS: dict[str, Any] = dict(
    patch_size=1,
    mlp_ratio=4.0,
    class_dropout_prob=0.1,
    use_qknorm=False,
    use_swiglu=True,
    use_rope=True,
    use_rmsnorm=True,
    wo_shift=False,
    use_pos_embed=True,
)
_LIGHTNING_DEFAULTS: dict[str, Any] = dict(
    patch_size=1,
    mlp_ratio=4.0,
    class_dropout_prob=0.1,
    learn_sigma=False,
    use_qknorm=False,
    use_swiglu=True,
    use_rope=True,
    use_rmsnorm=True,
    wo_shift=False,
    use_gembed=True,
)
_REQUIRED = ("input_size", "in_channels", "hidden_size", "depth", "num_heads", "num_classes")


def _pair(value: Any, key: str, where: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise UserError(f"{where}: {key} must be an integer or a list of two integers, got {value!r}")


def dit_config_from_reference(target: str, params: dict, where: str) -> DiTConfig:
    """The genrep :class:`DiTConfig` of a reference ``stage_2`` (or ``guidance_model``) block.

    ``target`` is the block's class path (``DiTwDDTHead`` or ``LightningDiT``), ``params`` its
    ``params``; ``where`` names the YAML block in errors. Options the reference has but never uses in
    its configs and that do not run there (``wo_shift: true`` fails in both models' modulate;
    ``DiTwDDTHead`` with ``patch_size > 1`` builds a patch embedding for ``C * p * p`` input channels)
    or that genrep does not implement (``use_swiglu: false``, ``use_rmsnorm: false``) are errors."""
    if not isinstance(params, dict):
        raise UserError(f"{where}: params must be a mapping")
    is_ddt = target.endswith("DiTwDDTHead")
    if not is_ddt and not target.endswith("LightningDiT"):
        raise UserError(f"{where}: target {target!r} is not {DDT_TARGET} or {LIGHTNING_TARGET}")
    defaults = _DDT_DEFAULTS if is_ddt else _LIGHTNING_DEFAULTS
    unknown = sorted(set(params) - set(defaults) - set(_REQUIRED))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r} for {target}")
    missing = [k for k in _REQUIRED if k not in params]
    if missing:
        raise UserError(f"{where}: missing key {missing[0]!r}")
    p = {**defaults, **params}
    for key, ok in (("use_swiglu", True), ("use_rmsnorm", True), ("wo_shift", False)):
        if bool(p[key]) != ok:
            raise UserError(f"{where}: {key}: {p[key]} is not supported (every reference config uses {ok})")
    if not is_ddt and not p["use_gembed"]:
        raise UserError(f"{where}: use_gembed: false is not supported")
    common = dict(
        in_channels=int(p["in_channels"]),
        grid=int(p["input_size"]),
        num_classes=int(p["num_classes"]),
        mlp_ratio=float(p["mlp_ratio"]),
        qk_norm=bool(p["use_qknorm"]),
        rope=bool(p["use_rope"]),
        class_dropout=float(p["class_dropout_prob"]),
        time_embed="fourier",
        norm_gain=True,
        linear_init="auto",
    )
    try:
        if is_ddt:
            s_patch, x_patch = _pair(p["patch_size"], "patch_size", where)
            if (s_patch, x_patch) != (1, 1):
                raise UserError(f"{where}: patch_size {p['patch_size']!r} is not supported for DiTwDDTHead (only 1)")
            width, head_width = _pair(p["hidden_size"], "hidden_size", where)
            depth, head_depth = _pair(p["depth"], "depth", where)
            heads, head_heads = _pair(p["num_heads"], "num_heads", where)
            return DiTConfig(
                width=width,
                depth=depth,
                heads=heads,
                head_width=head_width,
                head_depth=head_depth,
                head_heads=head_heads,
                patch=1,
                pos_embed=bool(p["use_pos_embed"]),
                **common,  # type: ignore[arg-type]
            )
        for key in ("hidden_size", "depth", "num_heads", "patch_size"):
            if not isinstance(p[key], int):
                raise UserError(f"{where}: {key} must be an integer for LightningDiT, got {p[key]!r}")
        return DiTConfig(
            width=p["hidden_size"],
            depth=p["depth"],
            heads=p["num_heads"],
            patch=p["patch_size"],
            learn_sigma=bool(p["learn_sigma"]),
            **common,  # type: ignore[arg-type]
        )
    except UserError as exc:
        msg = str(exc)
        raise UserError(msg if msg.startswith(where) else f"{where}: {msg}") from None


_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")
_FIXED = re.compile(r"(pos_embed|(enc_|dec_)?feat_rope\.freqs_(cos|sin))$")


def _renames(cfg: DiTConfig) -> list[tuple[str, str]]:
    """(reference prefix, genrep prefix) of every tensor outside the blocks (the module table)."""
    renames = [
        ("y_embedder.embedding_table.", "y_embed.table."),
        ("t_embedder.", "t_embed."),
        ("final_layer.norm_final.", "final_layer.norm."),
        ("final_layer.adaLN_modulation.", "final_layer.adaLN."),
        ("final_layer.linear.", "final_layer.linear."),
    ]
    if cfg.has_head:
        return renames + [
            ("s_embedder.proj.", "x_embed."),
            ("x_embedder.proj.", "head_x_embed."),
            ("s_projector.", "head_cond."),
        ]
    return renames + [("x_embedder.proj.", "x_embed.")]


def _genrep_name(key: str, cfg: DiTConfig) -> str | None:
    """The genrep name of a reference tensor, or None for a fixed table (checked separately)."""
    if _FIXED.match(key):
        return None
    m = _BLOCK.fullmatch(key)
    if m:
        i, rest = int(m.group(1)), m.group(2).replace("adaLN_modulation.", "adaLN.")
        if cfg.has_head and i >= cfg.depth:
            return f"head_blocks.{i - cfg.depth}.{rest}"
        return f"blocks.{i}.{rest}"
    for old, new in _renames(cfg):
        if key.startswith(old):
            return new + key[len(old) :]
    return key  # unknown: reported as unmapped by the caller


def fixed_tables(cfg: DiTConfig) -> dict[str, Tensor]:
    """What the reference stores as fixed tables for ``cfg``, computed by genrep in the reference's
    layout: ``pos_embed`` [1, N, width] and the RoPE ``freqs_cos`` / ``freqs_sin`` [N, head_dim]
    (each angle repeated for the pair it rotates)."""
    side = cfg.grid // cfg.patch
    tables: dict[str, Tensor] = {}
    if cfg.pos_embed:
        tables["pos_embed"] = position_table(cfg.width, side)[None]
    if cfg.rope:
        heads = [("enc_feat_rope" if cfg.has_head else "feat_rope", cfg.width // cfg.heads)]
        if cfg.has_head:
            heads.append(("dec_feat_rope", cfg.head_width // cfg.head_heads))
        for name, head_dim in heads:
            doubled = grid_angles(side, head_dim).repeat_interleave(2, dim=-1)
            tables[f"{name}.freqs_cos"], tables[f"{name}.freqs_sin"] = doubled.cos(), doubled.sin()
    return tables


def dit_state_from_reference(state: dict[str, Tensor], cfg: DiTConfig, where: str) -> dict[str, Tensor]:
    """Map a reference DiT state dict onto genrep's names for ``cfg`` (strict; see the module table).

    Fixed tables are compared with genrep's (max abs diff 1e-5): a checkpoint whose positions do not
    match was made for another latent size. ``where`` (the file) is named in every error."""
    model_state = _expected_state(cfg)
    tables = fixed_tables(cfg)
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, Tensor):
            raise UserError(f"{where}: entry {key!r} is not a tensor")
        name = _genrep_name(key, cfg)
        if name is None:
            if key not in tables:
                raise UserError(f"{where}: unexpected tensor {key!r} for this config")
            ref = tables[key].reshape(value.shape) if tables[key].numel() == value.numel() else None
            if ref is None or float((ref - value.float()).abs().max()) > 1e-5:
                raise UserError(f"{where}: {key} does not match the fixed table for this config (another latent size?)")
            continue
        if name not in model_state:
            raise UserError(f"{where}: unmapped tensor {key!r} (no genrep counterpart for this config)")
        value = value.detach().float()
        expected = tuple(model_state[name].shape)
        if tuple(value.shape) != expected:
            raise UserError(f"{where}: {key} has shape {tuple(value.shape)}, expected {expected} for this config")
        out[name] = value.contiguous()
    for name in model_state:
        if name not in out:
            raise UserError(f"{where}: missing tensor {_reference_name(name, cfg)!r}")
    return out


def _reference_name(name: str, cfg: DiTConfig) -> str:
    """genrep name -> reference name (for error messages): :func:`_genrep_name` backwards."""
    m = re.fullmatch(r"(head_)?blocks\.(\d+)\.(.+)", name)
    if m:
        i = int(m.group(2)) + (cfg.depth if m.group(1) else 0)
        return f"blocks.{i}.{m.group(3).replace('adaLN.', 'adaLN_modulation.')}"
    for old, new in _renames(cfg):
        if name.startswith(new):
            return old + name[len(new) :]
    return name


def _expected_state(cfg: DiTConfig) -> dict[str, Tensor]:
    with torch.device("meta"):
        return DiT(cfg).state_dict()


def read_reference_checkpoint(path: Path, where: str) -> dict[str, Tensor]:
    """The weights of a reference stage-2 checkpoint as the reference's ``instantiate_from_config``
    picks them: the ``ema`` entry of a training checkpoint, else the file itself as a state dict
    (a training checkpoint with ``model`` but no ``ema`` is refused there, and here)."""
    if not path.is_file():
        raise UserError(f"{where}: checkpoint {path} not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is the file's
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a loadable tensor checkpoint ({first})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a state dict or a training checkpoint with 'ema', got {type(obj).__name__}")
    if "ema" in obj:
        obj = obj["ema"]
    elif "model" in obj:
        raise UserError(f"{path}: a training checkpoint without 'ema' weights (the reference refuses it too)")
    if not isinstance(obj, dict):
        raise UserError(f"{path}: 'ema' is not a state dict")
    return obj


def load_reference_dit(block: dict, root: Path, where: str) -> tuple[DiT, Path]:
    """A ``stage_2`` / ``guidance_model`` block (``target``, ``params``, ``ckpt``) -> the genrep DiT with
    the checkpoint's weights (``ckpt`` relative to ``root``) and the checkpoint path."""
    if not isinstance(block, dict):
        raise UserError(f"{where}: must be a mapping with target, params and ckpt")
    for key in ("target", "params", "ckpt"):
        if key not in block:
            raise UserError(f"{where}: missing key {key!r}")
    cfg = dit_config_from_reference(str(block["target"]), block["params"], f"{where}.params")
    ckpt = Path(str(block["ckpt"]))
    ckpt = ckpt if ckpt.is_absolute() else root / ckpt
    state = dit_state_from_reference(read_reference_checkpoint(ckpt, f"{where}.ckpt"), cfg, str(ckpt))
    model = DiT(cfg)
    model.load_state_dict(state, strict=True)
    return model.eval(), ckpt


def shift_from_misc(misc: dict, where: str) -> float:
    """``alpha = sqrt(time_dist_shift_dim / time_dist_shift_base)`` with sample.py's defaults
    (768 * 16 * 16 and 4096)."""
    dim = misc.get("time_dist_shift_dim", 768 * 16 * 16)
    base = misc.get("time_dist_shift_base", 4096)
    try:
        alpha = math.sqrt(float(dim) / float(base))
    except (TypeError, ValueError, ZeroDivisionError):
        raise UserError(f"{where}: time_dist_shift_dim / time_dist_shift_base must be positive numbers") from None
    if alpha < 1.0:
        raise UserError(f"{where}: the shift sqrt({dim}/{base}) = {alpha:.4f} is below 1 (the reference asserts >= 1)")
    return alpha


def sampling_from_reference(doc: dict, where: str) -> dict[str, Any]:
    """``sampler`` + ``guidance`` blocks -> genrep ``rae sample`` settings, read as the reference's
    ``sample_ddp.py`` reads them: guidance only when ``scale > 1``; ``t_min`` / ``t_max`` (or the
    dashed spelling of the released AutoGuidance files) default to 0 and 1; an ODE with a fixed-grid
    Euler or Heun (torchdiffeq ``heun2``) solver over ``num_steps`` grid points."""
    sampler = doc.get("sampler")
    if not isinstance(sampler, dict):
        raise UserError(f"{where}: missing block 'sampler'")
    if sampler.get("mode") != "ODE":
        raise UserError(f"{where}: sampler.mode {sampler.get('mode')!r} is not supported (only ODE)")
    params = sampler.get("params") or {}
    method = params.get("sampling_method", "dopri5")
    solvers = {"euler": "euler", "heun2": "heun"}
    if method not in solvers:
        raise UserError(f"{where}: sampler.params.sampling_method {method!r} is not supported (euler, heun2)")
    if params.get("reverse", False):
        raise UserError(f"{where}: sampler.params.reverse: true is not supported")
    steps = params.get("num_steps", 50)
    if not isinstance(steps, int) or steps < 2:
        raise UserError(f"{where}: sampler.params.num_steps must be an integer >= 2, got {steps!r}")
    guidance = doc.get("guidance") or {}

    def value(key: str, default: float) -> float:
        raw = guidance.get(key, guidance.get(key.replace("_", "-"), default))
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise UserError(f"{where}: guidance.{key} must be a number, got {raw!r}") from None

    scale = value("scale", 1.0)
    method_g = guidance.get("method", "cfg")
    if method_g not in ("cfg", "autoguidance"):
        raise UserError(f"{where}: guidance.method {method_g!r} is not supported (cfg, autoguidance)")
    return {
        "steps": steps,
        "t_end": 1e-3,  # the reference's check_interval: the uniform grid ends at 1 - 0.999
        "sampler": solvers[method],
        "guidance": method_g if scale > 1.0 else "none",
        "scale": scale,
        "interval": [value("t_min", 0.0), value("t_max", 1.0)],
    }
