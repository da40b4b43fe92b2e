"""The frozen representation encoders of RAE stage 1 (docs/papers.md s1.2), behind one interface.

RAE replaces the SD-VAE with a *frozen pretrained representation encoder*: DINOv2-B with
registers, SigLIP2-B or MAE-B, each with its final LayerNorm stripped of its affine and each fed
pixels normalised with its own mean/std. Every encoder here maps RGB images in [0, 1],
``[B, 3, H, W]``, to a latent grid ``[B, C, h, w]`` (channels first, row-major patch order):

==================  ==========================================  =====  ==============
name                network                                     input  latent (C,h,w)
==================  ==========================================  =====  ==============
``effnet-lite0``    bundled EfficientNet-Lite0 (offline)        128    (320, 4, 4)
``dinov2-reg-s``    facebook/dinov2-with-registers-small        224    (384, 16, 16)
``dinov2-reg-b``    facebook/dinov2-with-registers-base         224    (768, 16, 16)
``dinov2-reg-l``    facebook/dinov2-with-registers-large        224    (1024, 16, 16)
``siglip2-b``       google/siglip2-base-patch16-256             256    (768, 16, 16)
``mae-b``           facebook/vit-mae-base                       256    (768, 16, 16)
==================  ==========================================  =====  ==============

:func:`build_encoder` builds one by name; :func:`hf_encoder_from_model` wraps a transformers
model that is already built (a custom checkpoint, or a tiny random one in tests). Hub weights
are only ever fetched by ``from_pretrained``; offline, a missing model is a one-line UserError.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genrep.core.bundled import effnet as _effnet
from genrep.core.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)

ResizeMode = Literal["bicubic", "bicubic-antialias-clamp"]
EFFNET_LAYERS = {"block16": 16, "block11": 11, "head": None}  # layer name -> ``upto`` of EfficientNetLite0.features

# Known names and their defaults. ``kind`` picks the loader and the token rule; ``source`` is the
# hub id (or "bundled"); ``input_size`` the square resolution fed to the network.
ENCODERS: dict[str, dict[str, Any]] = {
    "effnet-lite0": {
        "kind": "effnet",
        "source": "bundled",
        "input_size": 128,
        "pixel_mean": _effnet.MEAN,
        "pixel_std": _effnet.STD,
        "options": {"layer": "block16", "token_norm": True},
    },
    "dinov2-reg-s": {
        "kind": "dinov2",
        "source": "facebook/dinov2-with-registers-small",
        "input_size": 224,
        "pixel_mean": IMAGENET_MEAN,
        "pixel_std": IMAGENET_STD,
        "options": {},
    },
    "dinov2-reg-b": {
        "kind": "dinov2",
        "source": "facebook/dinov2-with-registers-base",
        "input_size": 224,
        "pixel_mean": IMAGENET_MEAN,
        "pixel_std": IMAGENET_STD,
        "options": {},
    },
    "dinov2-reg-l": {
        "kind": "dinov2",
        "source": "facebook/dinov2-with-registers-large",
        "input_size": 224,
        "pixel_mean": IMAGENET_MEAN,
        "pixel_std": IMAGENET_STD,
        "options": {},
    },
    "siglip2-b": {
        "kind": "siglip",
        "source": "google/siglip2-base-patch16-256",
        "input_size": 256,
        "pixel_mean": SIGLIP_MEAN,
        "pixel_std": SIGLIP_STD,
        "options": {},
    },
    "mae-b": {
        "kind": "mae",
        "source": "facebook/vit-mae-base",
        "input_size": 256,
        "pixel_mean": IMAGENET_MEAN,
        "pixel_std": IMAGENET_STD,
        "options": {},
    },
}


# --------------------------------------------------------------------------------------------
# Tokens <-> grid
# --------------------------------------------------------------------------------------------


def tokens_to_grid(tokens: Tensor) -> Tensor:
    """Patch tokens ``[B, N, C]`` in row-major order -> grid ``[B, C, h, w]`` with h = w = sqrt(N)."""
    b, n, c = tokens.shape
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{n} tokens do not form a square grid")
    return tokens.transpose(1, 2).reshape(b, c, side, side)


def grid_to_tokens(grid: Tensor) -> Tensor:
    """Grid ``[B, C, h, w]`` -> patch tokens ``[B, h*w, C]`` (row-major); inverse of tokens_to_grid."""
    return grid.flatten(2).transpose(1, 2)


# --------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------


def _rgb(values: Sequence[float], what: str) -> tuple[float, float, float]:
    vals = tuple(float(v) for v in values)
    if len(vals) != 3:
        raise UserError(f"{what} needs 3 values (R, G, B), got {len(vals)}")
    return vals


class FrozenEncoder(nn.Module):
    """A frozen encoder: always in eval mode, no parameter requires grad, encode() runs without grad.

    ``preprocess`` is the reference's (bytetriper/RAE src/stage1/rae.py:80-83): only when the image
    is not ``input_size`` x ``input_size``, a bicubic resize (align_corners=False, no antialiasing,
    no clamping); then ``(x - pixel_mean) / pixel_std`` with the encoder's own mean and std
    (docs/papers.md s1.2); a decoder de-normalises its output with the same numbers.
    ``resize="bicubic-antialias-clamp"`` antialiases when downsampling and clamps the resized
    image back to [0, 1] (genrep's earlier behaviour).
    """

    _mean: Tensor  # buffers registered in __init__
    _std: Tensor

    def __init__(
        self,
        net: nn.Module,
        name: str,
        input_size: int,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        source: str | None = None,
        resize: ResizeMode = "bicubic",
    ):
        super().__init__()
        if resize not in get_args(ResizeMode):
            raise UserError(f"encoder '{name}': unknown resize '{resize}' (known: {', '.join(get_args(ResizeMode))})")
        self.resize_mode: ResizeMode = resize
        if int(input_size) < 1:
            raise UserError(f"encoder '{name}': input_size must be positive, got {input_size}")
        self.net = net
        self.name = name
        self.source = source
        self.input_size = int(input_size)
        self.pixel_mean = _rgb(pixel_mean, "pixel_mean")
        self.pixel_std = _rgb(pixel_std, "pixel_std")
        self.register_buffer("_mean", torch.tensor(self.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.pixel_std).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.train(False)
        self.latent_shape: tuple[int, int, int] = (0, 0, 0)  # set by the subclass

    def train(self, mode: bool = True) -> FrozenEncoder:
        """Frozen: ignores ``mode``; this module and all submodules stay in eval (BatchNorm, dropout)."""
        return super().train(False)

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        p = next(self.net.parameters(), None)
        return (p.device, p.dtype) if p is not None else (self._mean.device, torch.float32)

    def resize(self, images: Tensor) -> Tensor:
        """RGB ``[B, 3, H, W]`` in [0, 1] (``[B, 1, H, W]`` is repeated to RGB) -> ``[B, 3, S, S]``."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise UserError(f"encoder '{self.name}' expects images [B, 3, H, W], got {list(images.shape)}")
        x = images.to(device=self._mean.device, dtype=torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h, w = x.shape[-2:]
        s = self.input_size
        if (h, w) != (s, s):
            if self.resize_mode == "bicubic":
                x = F.interpolate(x, size=(s, s), mode="bicubic", align_corners=False)
            else:  # bicubic overshoots; keep the pixel range the network was trained on
                x = F.interpolate(x, size=(s, s), mode="bicubic", align_corners=False, antialias=h > s or w > s)
                x = x.clamp(0.0, 1.0)
        return x

    def preprocess(self, images: Tensor) -> Tensor:
        """Images in [0, 1], any H, W -> network input: resized to input_size, then (x - mean) / std."""
        return (self.resize(images) - self._mean) / self._std

    def _latent(self, pixels: Tensor) -> Tensor:
        """Preprocessed pixels -> latent grid [B, C, h, w]; each encoder defines it."""
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images ``[B, 3, H, W]`` in [0, 1] -> latent ``[B, C, h, w]`` (float32, no grad)."""
        _, dtype = self._device_dtype()
        return self._latent(self.preprocess(images).to(dtype)).float()

    def forward(self, images: Tensor) -> Tensor:
        return self.encode(images)

    def spec(self) -> dict[str, Any]:
        """JSON-serialisable; ``build_encoder(**spec)`` rebuilds the same encoder (``resize`` only when
        it is not the default, so specs written before the option existed stay equal)."""
        spec: dict[str, Any] = {"name": self.name, "source": self.source, "input_size": self.input_size}
        if self.resize_mode != "bicubic":
            spec["resize"] = self.resize_mode
        return spec

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_size={self.input_size}, latent_shape={self.latent_shape}"


# --------------------------------------------------------------------------------------------
# effnet-lite0: the bundled offline stand-in
# --------------------------------------------------------------------------------------------


class EffNetEncoder(FrozenEncoder):
    """Bundled EfficientNet-Lite0 feature map as the latent: the offline stand-in for DINOv2.

    Why these defaults: RAE's latents are high-dimensional per token (DINOv2-B: 768 channels on a
    16x16 grid). The CPU-scale analogue keeps >= 320 channels on a >= 4x4 grid: ``layer="block16"``
    (default) is the output of the last MBConv block, 320 channels at stride 32, so input 128 gives
    (320, 4, 4), m = 5120 — a latent per token wider than the small CPU DiTs, yet cheap to
    diffuse. ``layer="block11"`` is the last stride-16 block (112 channels): less abstract, easier to
    decode (at input 64 a (112, 4, 4) latent; docs/rae.md compares it). ``layer="head"`` is the 1280-channel head conv: (1280, 4, 4); input_size 224 gives
    7x7 grids (the network's native resolution). EfficientNet's ``features()`` normalises
    internally with the TF-Lite mean/std (127/255, 128/255), which are exactly this encoder's
    ``pixel_mean``/``pixel_std``, so encode() feeds it resized pixels and never normalises twice.

    ``token_norm`` (default on) ends the encoder like the paper's ViT encoders: a LayerNorm
    without affine over the channels of each token, so every token has mean 0 and variance 1
    across channels (DINOv2/SigLIP2/MAE latents after their affine-free final LayerNorm). Without
    it the block-16 features have a per-element std of about 3 on Fashion-MNIST, which would make
    the noise-augmentation tau (0.8, set for unit-scale tokens) mean something else.
    """

    net: _effnet.EfficientNetLite0

    def __init__(
        self, input_size: int = 128, layer: str = "block16", token_norm: bool = True, resize: ResizeMode = "bicubic"
    ):
        if layer not in EFFNET_LAYERS:
            raise UserError(f"effnet-lite0: unknown layer '{layer}' (known: {', '.join(EFFNET_LAYERS)})")
        net = _effnet.load_efficientnet_lite0()
        super().__init__(net, "effnet-lite0", input_size, _effnet.MEAN, _effnet.STD, source="bundled", resize=resize)
        self.layer = layer
        self.token_norm = bool(token_norm)
        self.upto = EFFNET_LAYERS[layer]
        c, h, w = self.encode(torch.zeros(1, 3, self.input_size, self.input_size)).shape[1:]
        self.latent_shape = (c, h, w)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        z = self.net.features(self.resize(images), upto=self.upto).float()
        if self.token_norm:  # affine-free LayerNorm over each token's channels
            z = F.layer_norm(z.permute(0, 2, 3, 1), (z.shape[1],), eps=1e-6).permute(0, 3, 1, 2).contiguous()
        return z

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "layer": self.layer, "token_norm": self.token_norm}


# --------------------------------------------------------------------------------------------
# transformers ViTs: DINOv2 with registers, SigLIP(2), MAE
# --------------------------------------------------------------------------------------------


def _dinov2_tokens(model: nn.Module, pixels: Tensor) -> Tensor:
    """DINOv2-reg: sequence is [CLS, R registers, patches]; CLS and the R registers are dropped
    (docs/papers.md s1.2). R = ``config.num_register_tokens``: 4 in the released models, where this
    drops exactly the 5 tokens the reference's Dinov2withNorm drops (bytetriper/RAE
    src/stage1/encoders/dinov2.py:29-33, a fixed 5); 0 for plain DINOv2."""
    r = getattr(model.config, "num_register_tokens", 0)
    return model(pixel_values=pixels).last_hidden_state[:, 1 + r :]


def _siglip_tokens(model: nn.Module, pixels: Tensor) -> Tensor:
    """SigLIP: no CLS token, every output token is a patch (256 at 256 px, patch 16)."""
    return model(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state


def _mae_tokens(model: nn.Module, pixels: Tensor) -> Tensor:
    """MAE with mask ratio 0 (docs/papers.md s1.2). ViTMAE's random_masking keeps
    ``argsort(noise)[:, :len_keep]``; with ``config.mask_ratio = 0`` len_keep = N and with
    ``noise = arange(N)`` argsort is the identity, so every patch is kept in row-major order.
    The CLS token (prepended after masking) is dropped."""
    config: Any = model.config  # a transformers config
    p = config.patch_size
    n = (pixels.shape[-2] // p) * (pixels.shape[-1] // p)
    noise = torch.arange(n, device=pixels.device, dtype=torch.float32).expand(pixels.shape[0], n)
    return model(pixel_values=pixels, noise=noise, interpolate_pos_encoding=True).last_hidden_state[:, 1:]


# kind -> (transformers class name used by from_pretrained, final LayerNorm attribute, token rule)
_HF_KINDS: dict[str, tuple[str, str, Callable[[nn.Module, Tensor], Tensor]]] = {
    "dinov2": ("Dinov2WithRegistersModel", "layernorm", _dinov2_tokens),
    "siglip": ("SiglipVisionModel", "post_layernorm", _siglip_tokens),
    "mae": ("ViTMAEModel", "layernorm", _mae_tokens),
}

_DEFAULT_PIXELS = {
    "dinov2": (IMAGENET_MEAN, IMAGENET_STD),
    "siglip": (SIGLIP_MEAN, SIGLIP_STD),
    "mae": (IMAGENET_MEAN, IMAGENET_STD),
}


def _drop_layernorm_affine(ln: nn.LayerNorm) -> None:
    """docs/papers.md s1.2: the last LayerNorm without its learned scale and shift — a plain per-token normalisation
    (mean 0, variance 1 over channels); done in place as the reference does (dinov2.py:22-25, siglip2.py, mae.py)."""
    ln.elementwise_affine = False
    ln.weight = None  # type: ignore[assignment]
    ln.bias = None  # type: ignore[assignment]


def _hf_base_model(model: nn.Module) -> tuple[str, nn.Module]:
    """(kind, the bare vision transformer) of a transformers model, unwrapping known heads."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in ("dinov2_with_registers", "dinov2"):
        for head_attr in ("dinov2_with_registers", "dinov2"):  # *ForImageClassification wrappers
            if isinstance(getattr(model, head_attr, None), nn.Module):
                return "dinov2", getattr(model, head_attr)
        return "dinov2", model
    if model_type == "siglip":  # SiglipModel (vision + text): its vision tower
        return "siglip", model.vision_model  # type: ignore[return-value]
    if model_type == "siglip_vision_model":
        return "siglip", model
    if model_type == "vit_mae":  # ViTMAEModel, or ViTMAEForPreTraining whose encoder is .vit
        return "mae", getattr(model, "vit", model)
    if model_type and model_type.startswith("siglip2"):
        raise UserError(
            "Siglip2Model/Siglip2VisionModel (NaFlex) are not supported; load the fixed-resolution "
            "google/siglip2-*-patch16-256 checkpoints with SiglipModel / SiglipVisionModel"
        )
    raise UserError(
        f"cannot wrap a '{model_type}' model as an encoder "
        "(supported: dinov2_with_registers, dinov2, siglip, siglip_vision_model, vit_mae)"
    )


class HFEncoder(FrozenEncoder):
    """A transformers ViT as a frozen RAE encoder: patch tokens of the last layer after the final
    LayerNorm without affine, special tokens dropped, reshaped to a (hidden, h, w) grid."""

    def __init__(
        self,
        name: str,
        model: nn.Module,
        input_size: int,
        pixel_mean: Sequence[float] | None = None,
        pixel_std: Sequence[float] | None = None,
        source: str | None = None,
        resize: ResizeMode = "bicubic",
    ):
        kind, model = _hf_base_model(model)
        default_mean, default_std = _DEFAULT_PIXELS[kind]
        mean = default_mean if pixel_mean is None else pixel_mean
        std = default_std if pixel_std is None else pixel_std
        super().__init__(model, name, input_size, mean, std, source=source, resize=resize)
        self.kind = kind
        _, ln_attr, self._tokens = _HF_KINDS[kind]
        _drop_layernorm_affine(getattr(model, ln_attr))
        config: Any = model.config  # a transformers config
        if kind == "mae":
            config.mask_ratio = 0.0
        patch = config.patch_size
        patch = patch[0] if isinstance(patch, (tuple, list)) else patch
        if self.input_size % patch:
            raise UserError(f"encoder '{name}': input_size {self.input_size} is not a multiple of patch {patch}")
        side = self.input_size // patch
        self.latent_shape = (int(config.hidden_size), side, side)

    def _latent(self, pixels: Tensor) -> Tensor:
        return tokens_to_grid(self._tokens(self.net, pixels))

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "pixel_mean": list(self.pixel_mean), "pixel_std": list(self.pixel_std)}


def hf_encoder_from_model(
    name: str,
    model: nn.Module,
    input_size: int,
    pixel_mean: Sequence[float] | None = None,
    pixel_std: Sequence[float] | None = None,
    resize: ResizeMode = "bicubic",
) -> FrozenEncoder:
    """Wrap an already-built transformers model (Dinov2WithRegistersModel / Dinov2Model,
    SiglipVisionModel / SiglipModel, ViTMAEModel / ViTMAEForPreTraining) as a frozen encoder.

    The model is frozen and modified in place (final LayerNorm loses its affine; MAE mask ratio
    set to 0). Mean/std default to the encoder family's (ImageNet; 0.5 for SigLIP). spec() names
    ``config._name_or_path`` as source, so it rebuilds only for a registered name and a loadable source.
    """
    source = getattr(getattr(model, "config", None), "_name_or_path", None) or None
    return HFEncoder(name, model, input_size, pixel_mean, pixel_std, source=source, resize=resize)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def _processor_pixels(source: str) -> tuple[Any, Any] | None:
    """image_mean/image_std of the image processor config at ``source``, if one is found there
    (local directory or hub cache); None otherwise."""
    try:
        from transformers.utils import cached_file

        path = cached_file(
            source,
            "preprocessor_config.json",
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    except (OSError, ValueError):  # no processor config reachable (offline, not a hub id): family defaults
        return None
    if not path:
        return None
    from genrep.core.files import read_json

    cfg = read_json(path, "image processor config")  # present but broken: the user's to fix, one line
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: not an image processor config (expected a JSON object)")
    mean, std = cfg.get("image_mean"), cfg.get("image_std")
    return (mean, std) if mean and std else None


def _load_hf(name: str, kind: str, source: str) -> nn.Module:
    """``<class>.from_pretrained(source)``; any failure is one line naming the encoder and source.

    SigLIP2-B: google/siglip2-base-patch16-256 is a fixed-resolution checkpoint with the SigLIP
    architecture, so it loads as ``SiglipVisionModel`` (vision tower only; the reference code takes
    ``SiglipModel.from_pretrained(...).vision_model``, the same weights) and runs with
    interpolate_pos_encoding=True. ``Siglip2VisionModel`` is the NaFlex variant (pixel_attention_mask,
    spatial_shapes) and is not used. MAE-B loads as ``ViTMAEModel`` (the encoder of ViTMAEForPreTraining).
    """
    try:
        import transformers

        cls = getattr(transformers, _HF_KINDS[kind][0])
        return cls.from_pretrained(source)
    except Exception as exc:  # noqa: BLE001 - any load failure (offline, missing, bad config) is the user's to fix
        raise UserError(f"cannot load encoder '{name}' from '{source}': {_first_line(exc)}") from None


def build_encoder(name: str, source: str | None = None, input_size: int | None = None, **options: Any) -> FrozenEncoder:
    """Build a registered encoder (see ENCODERS). ``source`` overrides the hub id with another id or
    a local directory; ``input_size`` the square input resolution. Options: ``layer`` for
    effnet-lite0 ("block16" | "block11" | "head"); ``pixel_mean``/``pixel_std`` for the transformers encoders
    (default: the image processor config at source if found, else the family's values); ``resize``
    for all (see :class:`FrozenEncoder`)."""
    if name not in ENCODERS:
        raise UserError(f"unknown encoder '{name}' (known: {', '.join(ENCODERS)})")
    entry = ENCODERS[name]
    size = int(input_size) if input_size is not None else entry["input_size"]
    kind = entry["kind"]
    allowed = {"resize", *entry["options"]} if kind == "effnet" else {"pixel_mean", "pixel_std", "resize"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise UserError(
            f"encoder '{name}': unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(allowed))})"
        )
    if kind == "effnet":
        if source not in (None, "bundled"):
            raise UserError(f"encoder '{name}' is bundled; source must be 'bundled', got '{source}'")
        return EffNetEncoder(size, **{**entry["options"], **options})
    src = source or entry["source"]
    mean, std = options.get("pixel_mean"), options.get("pixel_std")
    if mean is None or std is None:
        found = _processor_pixels(src)
        pmean, pstd = found if found else (entry["pixel_mean"], entry["pixel_std"])
        mean, std = mean if mean is not None else pmean, std if std is not None else pstd
    resize = options.get("resize", "bicubic")
    return HFEncoder(name, _load_hf(name, kind, src), size, mean, std, source=src, resize=resize)
