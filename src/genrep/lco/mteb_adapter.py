"""``mteb`` / MIEB models over :class:`EmbeddingModel`: MTEB and MIEB tasks run on genrep embedders unchanged.

The paper reports MIEB(-Lite) (docs/papers.md s2.10); users ask for MTEB/MIEB integration (s2.12). ``mteb``
is an optional extra (``pip install genrep[mteb]``), imported only inside the functions that need it.

:func:`load` turns ``base:NAME`` (an untuned backbone) or a trained model directory (or the ``--out`` of
the run that trained it) into an :class:`MTEBEncoder` whose ``mteb_model_meta`` is a real
``mteb.ModelMeta``: a name of the form ``genrep/<name>`` and a revision that is a hash of the model's
files (see :func:`files_revision`), so results land in the model's own cache folder and two different
models never share cached scores. The meta's ``loader`` is :func:`mteb_loader`, so ``meta.load_model()``
rebuilds the encoder. Usage::

    import mteb
    from genrep.lco import mteb_adapter
    model = mteb_adapter.load("runs/lco")               # or "base:smollm2-135m"
    mteb_adapter.evaluate(model, mteb.get_tasks(tasks=["STS12"]))   # mteb.evaluate + a modality check

The encoder speaks both encoder protocols:

- mteb 2.x: ``encode(dataloader, task_metadata=..., hf_split=..., hf_subset=..., prompt_type=...)``; the
  dataloader yields column batches (``text``, ``image``, ``audio``, ``video`` lists); each row becomes one
  item, so a row with text and an image is one interleaved input.
- mteb 1.x: ``encode(sentences, task_name=..., prompt_type=...)`` and MIEB's ``get_text_embeddings`` /
  ``get_image_embeddings`` / ``get_fused_embeddings`` / ``calculate_probs``.

Images arrive as PIL images, numpy arrays or torch tensors (CHW or HWC, uint8 or float in [0, 1]) and are
turned into RGB PIL images by :func:`to_pil`; audio into 1-D float arrays at the processor's rate
(:func:`to_audio`); video into a list of PIL frames (:func:`to_frames`). Queries get the query-side
suffix prompt and documents the document side (the same by default, as in the paper).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from genrep.core.errors import UserError
from genrep.lco.embedding import EmbeddingModel, PromptConfig, Side

INSTALL = "pip install genrep[mteb]"
MODALITIES = ("text", "image", "audio", "video")  # mteb's modality names, which are genrep's
NAME_PREFIX = "genrep"
REVISION_LENGTH = 12  # hex digits of sha256
AUDIO_RATE = 16_000  # what EmbeddingModel expects when the processor does not say
VIDEO_FRAMES = 8  # frames sampled from a decoded video
# Files of a model directory that are documentation, not model: never hashed.
_NOT_HASHED = {"README.md", "training_args.bin"}


# ---------------------------------------------------------------------------------------------------- mteb
def _mteb() -> Any:
    """The ``mteb`` module, or a one-line UserError saying how to install it."""
    try:
        import mteb
    except ImportError:
        raise UserError(f"MTEB / MIEB evaluation needs the mteb package: {INSTALL}") from None
    return mteb


def _mteb_model_meta() -> Any:
    """``mteb.ModelMeta`` (mteb 2.x: ``mteb.ModelMeta`` / ``mteb.models``; mteb 1.x: ``mteb.model_meta``)."""
    import importlib

    mteb = _mteb()
    if hasattr(mteb, "ModelMeta"):
        return mteb.ModelMeta
    for module in ("mteb.models", "mteb.model_meta"):
        try:
            return importlib.import_module(module).ModelMeta
        except (ImportError, AttributeError):
            continue
    raise UserError(f"the installed mteb ({getattr(mteb, '__version__', '?')}) has no ModelMeta; {INSTALL}")


@functools.cache
def _model_meta_class() -> Any:
    """The ModelMeta class genrep's metas are made of: a subclass of ``mteb.ModelMeta`` whose ``load_model``
    skips mteb's per-modality package check (mteb 2.x wants torchvision for any image model and torchcodec
    for any video model before it calls the loader; genrep converts images itself and needs neither; a
    missing package of genrep's own is still reported when the model loads)."""
    base = _mteb_model_meta()
    if not hasattr(base, "_check_requirements"):  # mteb 1.x and early 2.x have no such check
        return base

    class GenrepModelMeta(base):  # type: ignore[misc, valid-type]
        """An ``mteb.ModelMeta`` of a genrep model (see :func:`genrep.lco.mteb_adapter.build_meta`)."""

        def _check_requirements(self) -> None:
            return None

    GenrepModelMeta.__qualname__ = "GenrepModelMeta"
    return GenrepModelMeta


def _meta_fields(cls: Any) -> dict[str, Any]:
    """The fields a ModelMeta class declares (pydantic v2 ``model_fields``, v1 ``__fields__``)."""
    return dict(getattr(cls, "model_fields", None) or getattr(cls, "__fields__", {}))


def _required(info: Any) -> bool:
    is_required = getattr(info, "is_required", None)
    if callable(is_required):
        return bool(is_required())
    return bool(getattr(info, "required", False))


def _literal_strings(annotation: Any) -> set[str]:
    """The string values of the Literal types inside a type annotation (``list[Literal["text", ...]]``)."""
    import typing

    found: set[str] = set()
    for arg in typing.get_args(annotation):
        if isinstance(arg, str):
            found.add(arg)
        else:
            found |= _literal_strings(arg)
    return found


def _meta_modalities(fields: Mapping[str, Any], modalities: Iterable[str]) -> list[str]:
    """The model's modalities that the installed ModelMeta can name (mteb 1.x knows only text and image)."""
    info = fields.get("modalities")
    allowed = _literal_strings(getattr(info, "annotation", None)) or set(MODALITIES)
    return sorted(m for m in modalities if m in MODALITIES and m in allowed)


def meta_name(name: str) -> str:
    """An mteb model name: mteb 2.x wants ``org/name``; a bare ``name`` becomes ``genrep/name``."""
    name = name.strip()
    if not name:
        raise UserError("mteb model name: empty")
    return name if "/" in name else f"{NAME_PREFIX}/{name}"


def build_meta(
    emb: EmbeddingModel,
    *,
    name: str,
    revision: str | None,
    loader: Any = None,
    loader_kwargs: dict[str, Any] | None = None,
    adapted_from: str | None = None,
    dtype: str = "float32",
    overrides: Mapping[str, Any] | None = None,
) -> Any:
    """The ``mteb.ModelMeta`` of an embedding model: what mteb stores with its results and keys its cache on.

    Every field the installed mteb declares and genrep knows is filled (name, revision, modalities, embed_dim,
    max_tokens, n_parameters, ...); required fields genrep cannot know (release date, languages, license) are
    None; ``overrides`` replaces any field (e.g. ``{"license": "mit", "languages": ["eng-Latn"]}``)."""
    cls = _model_meta_class()
    fields = _meta_fields(cls)
    params = list(emb.model.parameters()) + (list(emb.head.parameters()) if emb.head is not None else [])
    head_out = getattr(emb.head, "out_features", None)
    input_embeddings: Any = getattr(emb.model, "get_input_embeddings", None)
    embedding_weight: Any = getattr(input_embeddings() if callable(input_embeddings) else None, "weight", None)
    values: dict[str, Any] = {
        "name": meta_name(name),
        "revision": revision,
        "release_date": None,
        "languages": None,
        "n_parameters": int(sum(p.numel() for p in params)),
        "n_embedding_parameters": int(embedding_weight.numel()) if embedding_weight is not None else None,
        "memory_usage_mb": round(sum(p.numel() * p.element_size() for p in params) / 2**20, 1),
        "max_tokens": emb.max_length,
        "embed_dim": int(head_out) if head_out else emb.hidden_size(),
        "license": None,
        "open_weights": True,  # the weights are files the user holds
        "public_training_code": None,
        "public_training_data": None,
        "framework": ["PyTorch"],
        "reference": None,
        "similarity_fn_name": "cosine",
        "use_instructions": True,  # every input is wrapped in the chat template and a suffix prompt
        "training_datasets": None,
        "adapted_from": adapted_from,
        "modalities": _meta_modalities(fields, emb.backbone.modalities),
        "model_type": ["dense"],
    }
    if dtype in ("bfloat16", "float16"):  # mteb: weights loaded in lower precision are declared here
        values["output_dtypes"] = dtype
    if "loader_kwargs" in fields:  # mteb 2.x: loader(name, revision=..., **loader_kwargs)
        values["loader"] = loader
        values["loader_kwargs"] = dict(loader_kwargs or {})
    elif loader is not None:  # mteb 1.x: loader(**kwargs)
        values["loader"] = functools.partial(loader, meta_name(name), revision, **(loader_kwargs or {}))
    else:
        values["loader"] = None
    unknown = sorted(set(overrides or {}) - set(fields))
    if unknown:
        raise UserError(f"mteb ModelMeta: unknown field(s) {unknown} (this mteb has {', '.join(sorted(fields))})")
    values.update(overrides or {})
    if overrides and "name" in overrides:
        values["name"] = meta_name(str(overrides["name"]))
    kwargs = {k: v for k, v in values.items() if k in fields}
    for field, info in fields.items():  # a field this mteb requires and genrep does not know: None
        if field not in kwargs and _required(info):
            kwargs[field] = None
    try:
        return cls(**kwargs)
    except Exception as err:  # pydantic's ValidationError: a bad override or name
        first = str(err).splitlines()
        raise UserError(f"mteb ModelMeta for '{values['name']}': {' '.join(first[:3])}") from None


# ---------------------------------------------------------------------------------------------------- revision
def _file_digest(path: Path) -> str:
    """sha256 of a file's bytes; a Hugging Face cache link into ``blobs/`` is named by its content hash already."""
    if path.is_symlink():
        target = path.resolve()
        if target.parent.name == "blobs":
            return target.name
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _model_files(root: Path) -> list[Path]:
    """The files that make up a model directory, in a fixed order: all of them but docs and hidden files."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.name not in _NOT_HASHED
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _trained_files(root: Path) -> list[Path]:
    """What a trained model consists of: ``lco_model.json`` and the adapter / merged / head weights."""
    from genrep.lco.adapters import MODEL_FILE

    files = [root / MODEL_FILE]
    if (root / "head.safetensors").is_file():
        files.append(root / "head.safetensors")
    for sub in ("adapter", "model"):
        if (root / sub).is_dir():
            files.extend(_model_files(root / sub))
    return files


def _settings(emb: EmbeddingModel, dtype: str) -> dict[str, Any]:
    """What besides the weights changes an embedding: prompts, layer, truncation, normalisation, dtype."""
    return {
        "kind": emb.backbone.kind,
        "layer": emb.layer,
        "max_length": emb.max_length,
        "normalize": emb.normalize,
        "prompts": dataclasses.asdict(emb.prompts),
        "dtype": dtype,
    }


def files_revision(root: str | Path, files: Sequence[Path], settings: Mapping[str, Any]) -> str:
    """A short hash (12 hex digits of sha256) of files (their paths relative to ``root`` and their contents)
    and the embedding settings: the same files give the same revision wherever they are copied; any changed
    byte, renamed file or changed setting gives another."""
    root = Path(root)
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + _file_digest(f).encode() + b"\n")
    h.update(json.dumps(dict(settings), sort_keys=True, default=str).encode())
    return h.hexdigest()[:REVISION_LENGTH]


def weights_revision(emb: EmbeddingModel, dtype: str = "float32") -> str:
    """A short hash of the weights in memory (backbone and head) and the embedding settings, for an
    :class:`MTEBEncoder` built around a model that has no files of its own."""
    h = hashlib.sha256()
    modules: list[tuple[str, Any]] = [("backbone", emb.model)]
    if emb.head is not None:
        modules.append(("head", emb.head))
    for prefix, module in modules:
        for key, tensor in sorted(module.state_dict().items()):
            t = tensor.detach().to("cpu").contiguous().reshape(-1)
            h.update(f"{prefix}.{key}:{t.dtype}:{tuple(tensor.shape)}\0".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
    h.update(json.dumps(_settings(emb, dtype), sort_keys=True, default=str).encode())
    return h.hexdigest()[:REVISION_LENGTH]


def _base_revision(name: str, emb: EmbeddingModel, dtype: str) -> str:
    """Revision of an untuned backbone: a hash of its directory's files (a bundled name's materialised
    directory, a local directory, or the hub cache snapshot via its content-named blobs); for a hub model
    whose files cannot be found, its hub commit (or, failing that, its name and config) with the settings."""
    from genrep.core.bundled.lm import resolve_lm_path

    path = Path(resolve_lm_path(name))
    if path.is_dir():
        return files_revision(path, _model_files(path), _settings(emb, dtype))
    config: Any = getattr(emb.model, "config", None)
    commit = getattr(config, "_commit_hash", None)
    fallback = config.to_json_string() if commit is None and hasattr(config, "to_json_string") else ""
    settings = {**_settings(emb, dtype), "backbone": name, "commit": commit, "config": fallback}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:REVISION_LENGTH]


# ---------------------------------------------------------------------------------------------------- inputs
def to_pil(x: Any) -> Any:
    """An RGB PIL image from a PIL image, a path, encoded bytes, a datasets ``{"bytes", "path"}`` dict, or a
    numpy array / torch tensor (HW, HWC or CHW; uint8, or float in [0, 1] or [0, 255]). No torchvision."""
    from PIL import Image

    if isinstance(x, Image.Image):
        return x if x.mode == "RGB" else x.convert("RGB")
    if isinstance(x, (str, Path)):
        with Image.open(x) as im:
            return im.convert("RGB")
    if isinstance(x, (bytes, bytearray)):
        with Image.open(io.BytesIO(x)) as im:
            return im.convert("RGB")
    if isinstance(x, Mapping) and (x.get("bytes") or x.get("path")):
        return to_pil(x.get("bytes") or x["path"])
    channels_first = False
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor: CHW is torch's image layout
        x = x.detach().cpu()
        x = x.float().numpy() if x.is_floating_point() else x.numpy()
        channels_first = x.ndim == 3 and x.shape[0] in (1, 3, 4)
    arr = np.asarray(x)
    if arr.ndim == 3 and not channels_first:
        channels_first = arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4)
    if arr.ndim == 3 and channels_first:
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)) or arr.size == 0:
        raise UserError(f"image input: cannot read an array of shape {tuple(arr.shape)} as an image")
    if arr.dtype != np.uint8:
        was_float = arr.dtype.kind == "f"
        arr = arr.astype(np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 255:
            raise UserError(
                f"image input: values in [{lo:.3g}, {hi:.3g}] (expected uint8, or float in [0, 1] or [0, 255]; "
                "pass un-normalised images)"
            )
        if hi <= 1.0 and was_float:  # float in [0, 1]; integers are 0..255 already
            arr = arr * 255.0
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return Image.fromarray(arr).convert("RGB")


def _resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling (scipy) of a 1-D signal from ``rate`` to ``target`` Hz."""
    if rate == target:
        return audio
    from scipy.signal import resample_poly

    g = math.gcd(int(rate), int(target))
    return resample_poly(audio, target // g, int(rate) // g).astype(np.float32)


def to_audio(x: Any, rate: int = AUDIO_RATE) -> np.ndarray:
    """A 1-D float32 waveform at ``rate`` Hz from an mteb / datasets audio value: ``{"array", "sampling_rate"}``
    (a dict or a datasets AudioDecoder), a torchcodec-style decoder with ``get_all_samples()``, or a bare
    array / tensor (taken to be at ``rate`` already). Several channels are averaged to mono."""
    source_rate: int | None = None
    if hasattr(x, "get_all_samples"):
        samples = x.get_all_samples()
        x, source_rate = samples.data, int(samples.sample_rate)
    elif isinstance(x, Mapping) or (hasattr(x, "__getitem__") and hasattr(x, "keys")):
        try:
            source_rate = int(x["sampling_rate"])
            x = x["array"]
        except (KeyError, TypeError):
            raise UserError("audio input: expected 'array' and 'sampling_rate'") from None
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().float().numpy()
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 2:  # channels x samples or samples x channels: average the shorter axis
        arr = arr.mean(axis=0 if arr.shape[0] <= arr.shape[1] else 1)
    if arr.ndim != 1 or arr.size == 0:
        raise UserError(f"audio input: cannot read an array of shape {tuple(arr.shape)} as a waveform")
    return _resample(arr, source_rate or rate, rate)


def to_frames(x: Any, max_frames: int = VIDEO_FRAMES) -> list:
    """Video frames as a list of RGB PIL images: from a list of images / arrays, a ``[T, C, H, W]`` or
    ``[T, H, W, C]`` tensor or array (mteb's frame collators give uint8 ``[T, C, H, W]``), or a torchcodec
    VideoDecoder (``max_frames`` evenly spaced frames are decoded)."""
    if hasattr(x, "get_frames_at") and hasattr(x, "metadata"):
        n = int(getattr(x.metadata, "num_frames", 0) or 0)
        if n < 1:
            raise UserError("video input: the decoder reports no frames")
        idx = sorted({int(i) for i in np.linspace(0, n - 1, min(n, max_frames)).round()})
        x = x.get_frames_at(idx).data
    if isinstance(x, (list, tuple)):
        frames = list(x)
    else:
        if hasattr(x, "detach"):
            x = x.detach().cpu()
        if getattr(x, "ndim", 0) != 4:
            raise UserError(f"video input: expected frames [T, C, H, W], got shape {tuple(getattr(x, 'shape', ()))}")
        frames = [x[i] for i in range(x.shape[0])]
    if not frames:
        raise UserError("video input: no frames")
    return [to_pil(f) for f in frames]


# ---------------------------------------------------------------------------------------------------- tasks
def _task_metadata_owner(task: Any) -> Any:
    """An mteb task object: ``task`` itself, or the task a name stands for (``mteb.get_task``)."""
    if not isinstance(task, str):
        return task
    try:
        return _mteb().get_task(task)
    except (KeyError, ValueError) as err:
        raise UserError(f"mteb task '{task}': {str(err).splitlines()[0]}") from None


def _task_metadata(task: Any) -> Any:
    """A task's metadata: an mteb task object, its ``TaskMetadata``, or a task name (looked up in mteb)."""
    task = _task_metadata_owner(task)
    return getattr(task, "metadata", task)


def _model_modalities(model: Any) -> tuple[str, ...]:
    """What a model embeds: an MTEBEncoder, an EmbeddingModel, an object with ``mteb_model_meta``, or names."""
    if isinstance(model, MTEBEncoder):
        return model.modalities
    if isinstance(model, EmbeddingModel):
        return tuple(model.backbone.modalities)
    meta = getattr(model, "mteb_model_meta", model)
    if hasattr(meta, "modalities"):
        return tuple(meta.modalities or ("text",))
    return tuple(model)


def _model_label(model: Any) -> str:
    if isinstance(model, MTEBEncoder):
        return f"'{model.name}' ({model.model.backbone.kind})"
    if isinstance(model, EmbeddingModel):
        return f"'{model.backbone.name}' ({model.backbone.kind})"
    meta = getattr(model, "mteb_model_meta", model)
    return f"'{getattr(meta, 'name', None) or 'model'}'"


def check_task(task: Any, model: Any) -> None:
    """A one-line UserError, before anything is encoded, when an mteb task needs an input modality the
    model cannot embed. ``task``: an mteb task, its metadata or its name; ``model``: an MTEBEncoder, an
    EmbeddingModel, an mteb ModelMeta (or anything with ``mteb_model_meta``), or modality names."""
    meta = _task_metadata(task)
    needed = list(getattr(meta, "modalities", None) or ["text"])
    supported = _model_modalities(model)
    missing = [m for m in needed if m not in supported]
    if missing:
        name = getattr(meta, "name", None) or str(task)
        raise UserError(
            f"mteb task '{name}' needs {' and '.join(missing)} input, but model {_model_label(model)} "
            f"embeds {', '.join(supported)} only"
        )


def _task_list(tasks: Any) -> list:
    """mteb tasks as a list: one task, an iterable of tasks, or a benchmark (its ``tasks``)."""
    if hasattr(tasks, "metadata") or isinstance(tasks, str):
        return [tasks]
    if hasattr(tasks, "tasks") and not isinstance(tasks, (list, tuple)):
        return list(tasks.tasks)
    return list(tasks)


def evaluate(model: Any, tasks: Any, **kwargs: Any) -> Any:
    """``mteb.evaluate(model, tasks, **kwargs)`` (mteb 2.x) after :func:`check_task` on every task, so a
    modality the model lacks is a one-line error before any encoding. ``model``: an MTEBEncoder or a
    model spec for :func:`load`. Returns mteb's ModelResult."""
    mteb = _mteb()
    if not hasattr(mteb, "evaluate"):
        raise UserError(f"genrep.lco.mteb_adapter.evaluate needs mteb 2.x (installed: {mteb.__version__})")
    encoder = load(model) if isinstance(model, str) else model
    listed = _task_list(tasks)
    if any(isinstance(t, str) for t in listed):  # task names: mteb's task objects
        tasks = listed = [_task_metadata_owner(t) for t in listed]
    for task in listed:
        check_task(task, encoder)
    return mteb.evaluate(encoder, tasks, **kwargs)


# ---------------------------------------------------------------------------------------------------- encoder
def _side(prompt_type: Any) -> Side:
    """mteb's PromptType (query / document in 2.x, query / passage in 1.x) -> the suffix side."""
    value = getattr(prompt_type, "value", prompt_type)
    return "query" if str(value).lower().endswith("query") else "document"


def _is_column_batch(x: Any) -> bool:
    """Whether ``x`` is an mteb 2.x batch (a list of values per modality) rather than one item dict (where
    only an image list, several images, or a video, a list of frames, can be a list)."""
    if not isinstance(x, Mapping):
        return False
    for key in ("text", "audio"):
        if isinstance(x.get(key), (list, tuple)):
            return True
    video = x.get("video")
    return isinstance(video, (list, tuple)) and bool(video) and not hasattr(video[0], "convert")


class MTEBEncoder:
    """An mteb encoder (2.x and 1.x protocols, MIEB image/fused embeddings) over an :class:`EmbeddingModel`.

    ``mteb_model_meta`` is an ``mteb.ModelMeta``: the one :func:`load` made, or, for an encoder built
    directly around a model in memory, one made on first use with :func:`weights_revision` as revision
    (a hash of the weights, so two different models never share mteb's cache). mteb may assign its own
    copy of the meta (``ModelMeta.load_model`` does)."""

    def __init__(
        self,
        model: EmbeddingModel,
        batch_size: int | None = None,
        name: str = "lco",
        *,
        meta: Any = None,
        video_frames: int = VIDEO_FRAMES,
    ):
        self.model = model
        self.batch_size = batch_size
        self.name = meta_name(getattr(meta, "name", None) or name)
        self.video_frames = video_frames
        self._meta = meta

    @property
    def mteb_model_meta(self) -> Any:
        """The ``mteb.ModelMeta`` of this model (made on first use when none was given)."""
        if self._meta is None:
            self._meta = build_meta(self.model, name=self.name, revision=weights_revision(self.model))
        return self._meta

    @mteb_model_meta.setter
    def mteb_model_meta(self, value: Any) -> None:
        self._meta = value

    @property
    def modalities(self) -> tuple[str, ...]:
        """The input modalities the backbone embeds (mteb's names)."""
        return tuple(m for m in self.model.backbone.modalities if m in MODALITIES)

    def __repr__(self) -> str:
        return f"MTEBEncoder({self.name}, {self.model.backbone.kind}, modalities={list(self.modalities)})"

    # ------------------------------------------------------------------ inputs
    @property
    def _audio_rate(self) -> int:
        extractor = getattr(self.model.backbone.processor, "feature_extractor", None)
        return int(getattr(extractor, "sampling_rate", None) or AUDIO_RATE)

    def _convert(self, modality: str, value: Any) -> Any:
        """One column value as EmbeddingModel takes it (text str, PIL image(s), waveform, frame list)."""
        if modality == "text":
            return value if isinstance(value, str) else str(value)
        if modality == "image":
            return [to_pil(v) for v in value] if isinstance(value, (list, tuple)) else to_pil(value)
        if modality == "audio":
            return to_audio(value, self._audio_rate)
        return to_frames(value, self.video_frames)

    def _item(self, x: Any) -> Any:
        """One input for EmbeddingModel: an item dict's fields converted; a str / PIL image / array as is."""
        if isinstance(x, Mapping):
            return {k: self._convert(k, v) for k, v in x.items() if k in MODALITIES and v is not None}
        return x

    def _rows(self, batch: Mapping) -> list[dict]:
        """The rows of an mteb 2.x column batch as item dicts (text + image in a row: one interleaved item)."""
        columns = {k: batch[k] for k in MODALITIES if k in batch and batch[k] is not None}
        if not columns:
            raise UserError(f"mteb batch: no text, image, audio or video column (got {sorted(batch)})")
        n = len(next(iter(columns.values())))
        return [{k: self._convert(k, col[i]) for k, col in columns.items() if col[i] is not None} for i in range(n)]

    def _items(self, inputs: Any) -> list:
        """A list of inputs (texts, images, item dicts), an iterable of mteb 2.x column batches (a DataLoader),
        or an iterable of lists (a 1.x DataLoader), flattened into one list of items in order."""
        if isinstance(inputs, (list, tuple)) and not (inputs and _is_column_batch(inputs[0])):
            return [self._item(x) for x in inputs]
        items: list = []
        for batch in inputs:
            if isinstance(batch, Mapping):
                items.extend(self._rows(batch))
            elif isinstance(batch, (list, tuple)):
                items.extend(self._item(x) for x in batch)
            else:
                items.append(self._item(batch))
        return items

    def _images(self, images: Any) -> list:
        """MIEB (1.x) images as PIL: a list of images, or a DataLoader of batches (lists, ``[B, C, H, W]``
        tensors, or dicts with an ``image`` column)."""
        out: list = []
        for batch in images:
            if isinstance(batch, Mapping):
                batch = batch.get("image", [])
            if isinstance(batch, (list, tuple)) or getattr(batch, "ndim", 0) == 4:
                out.extend(to_pil(batch[i]) for i in range(len(batch)))
            else:
                out.append(to_pil(batch))
        return out

    def _encode(
        self,
        items: list,
        *,
        side: Side,
        batch_size: int | None,
        description: str,
        show: bool = True,
        torch_out: bool = False,
    ) -> Any:
        return self.model.encode(
            items,
            batch_size=self.batch_size or batch_size or 16,
            side=side,
            description=description,
            show_progress=show,
            convert_to="torch" if torch_out else "numpy",
        )

    # ------------------------------------------------------------------ MTEB (2.x batches and 1.x sentence lists)
    def encode(
        self,
        inputs: Any,
        *,
        task_metadata: Any = None,
        hf_split: str | None = None,
        hf_subset: str | None = None,
        prompt_type: Any = None,
        task_name: str | None = None,
        batch_size: int | None = None,
        show_progress_bar: bool = True,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embeddings ``[N, d]`` (numpy float32, L2-normalised) of an mteb 2.x DataLoader or a 1.x list of
        sentences; a task (``task_metadata``) whose modality the model lacks is refused before encoding."""
        if task_metadata is not None:
            check_task(task_metadata, self)
        name = getattr(task_metadata, "name", None) or task_name or "mteb"
        items = self._items(inputs)
        return self._encode(
            items, side=_side(prompt_type), batch_size=batch_size, description=name, show=show_progress_bar
        )

    def similarity(self, a: Any, b: Any) -> Any:
        """Cosine similarity matrix ``[len(a), len(b)]`` as a float32 torch tensor (what mteb's evaluators
        index and ``topk``; numpy reads it too)."""
        a, b = _tensor(a), _tensor(b)
        return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T

    def similarity_pairwise(self, a: Any, b: Any) -> Any:
        """Cosine similarity of each pair ``(a[i], b[i])`` (a float32 torch tensor)."""
        return (F.normalize(_tensor(a), dim=-1) * F.normalize(_tensor(b), dim=-1)).sum(-1)

    # ------------------------------------------------------------------ MIEB (mteb 1.x image API: torch out)
    def get_text_embeddings(
        self, texts: Iterable[str], *, batch_size: int | None = None, prompt_type: Any = None, **kwargs: Any
    ) -> Any:
        """Embeddings of texts (torch ``[N, d]``), on the side ``prompt_type`` says (document by default)."""
        items = list(texts) if isinstance(texts, (list, tuple)) else self._items(texts)
        return self._encode(items, side=_side(prompt_type), batch_size=batch_size, description="texts", torch_out=True)

    def get_image_embeddings(
        self, images: Any, *, batch_size: int | None = None, prompt_type: Any = None, **kwargs: Any
    ) -> Any:
        """Embeddings of images (torch ``[N, d]``): PIL images, arrays or tensors, in a list or a DataLoader."""
        items = self._images(images)
        return self._encode(items, side=_side(prompt_type), batch_size=batch_size, description="images", torch_out=True)

    def get_fused_embeddings(
        self,
        texts: Sequence[str] | None = None,
        images: Any = None,
        *,
        batch_size: int | None = None,
        prompt_type: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Embeddings (torch ``[N, d]``) of interleaved items, image + text in one prompt (the paper's
        interleaved input); of the texts or the images alone when only one is given."""
        if texts is None:
            return self.get_image_embeddings(
                images if images is not None else [], batch_size=batch_size, prompt_type=prompt_type
            )
        if images is None:
            return self.get_text_embeddings(texts, batch_size=batch_size, prompt_type=prompt_type)
        imgs = self._images(images)
        if len(imgs) != len(texts):
            raise UserError(f"fused embeddings: {len(texts)} texts but {len(imgs)} images")
        items = [{"text": t, "image": im} for t, im in zip(texts, imgs)]
        return self._encode(items, side=_side(prompt_type), batch_size=batch_size, description="fused", torch_out=True)

    def calculate_probs(self, text_embeddings: Any, image_embeddings: Any) -> Any:
        """Zero-shot class probabilities ``[images, texts]`` (torch): softmax over texts of 100 x the image-text
        cosine, as the reference's MIEB wrapper (``LCO_Embedding.py``, ``calculate_probs``; CLIP's logit scale)."""
        return torch.softmax(self.similarity(image_embeddings, text_embeddings) * 100.0, dim=-1)


def _tensor(x: Any) -> Any:
    """A float32 CPU torch tensor of embeddings given as numpy or torch."""
    if torch.is_tensor(x):
        return x.detach().float().cpu()
    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


# ---------------------------------------------------------------------------------------------------- loading
def _dtype(dtype: Any) -> tuple[Any, str]:
    """``(torch.dtype, its short name)`` from a name such as ``bfloat16`` or a torch dtype."""
    name = str(dtype).removeprefix("torch.")
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise UserError(f"dtype: unknown '{dtype}' (float32, bfloat16, float16)")
    return value, name


def _prompts(prompts: PromptConfig | Mapping[str, Any] | None) -> PromptConfig | None:
    if prompts is None or isinstance(prompts, PromptConfig):
        return prompts
    try:
        return PromptConfig(**dict(prompts))
    except TypeError as err:
        raise UserError(f"prompts: {err}") from None


def _default_name(spec: str, root: Path | None) -> str:
    """``genrep/<base name>`` for ``base:NAME``; ``genrep/<run dir name>`` for a trained model (the run
    directory's name also when given its ``model/`` folder)."""
    if root is None:
        base = spec[len("base:") :].rstrip("/\\")
        return meta_name(Path(base).name or base)
    root = root.resolve()
    label = root.parent.name if root.name == "model" and root.parent.name else root.name
    return meta_name(label)


def load(
    model: str,
    *,
    name: str | None = None,
    revision: str | None = None,
    device: str = "auto",
    dtype: Any = "float32",
    batch_size: int | None = None,
    prompts: PromptConfig | Mapping[str, Any] | None = None,
    merge: bool = True,
    video_frames: int = VIDEO_FRAMES,
    meta: Mapping[str, Any] | None = None,
) -> MTEBEncoder:
    """An :class:`MTEBEncoder` for ``base:NAME`` (an untuned backbone: bundled name, directory or hub id) or a
    trained model directory (or the ``--out`` of its training run), with a real ``mteb.ModelMeta``.

    ``name`` defaults to ``genrep/<directory or base name>``; ``revision`` to a hash of the model's files
    and embedding settings (:func:`files_revision`); ``meta`` overrides any ModelMeta field. Without mteb
    installed: a one-line UserError."""
    from genrep.core.rundir import model_dir
    from genrep.core.runtime import pick_device
    from genrep.lco.adapters import MODEL_FILE, load_model, read_spec

    _mteb()  # no mteb: say so before loading anything
    torch_dtype, dtype_name = _dtype(dtype)
    prompt_config = _prompts(prompts)
    if not isinstance(model, str) or not model:
        raise UserError(f"mteb model: expected base:NAME or a trained model directory, got {model!r}")
    root: Path | None = None
    if model.startswith("base:"):
        base = model[len("base:") :]
        spec = f"base:{Path(base).resolve()}" if Path(base).exists() else model
    else:
        root = model_dir(model, MODEL_FILE)
        spec = str(root.resolve())
    emb = load_model(spec, device=pick_device(device), dtype=torch_dtype, merge=merge, prompts=prompt_config)
    if revision is None and meta and meta.get("revision"):
        revision = str(meta["revision"])
    given_revision = revision is not None
    if revision is None:
        if root is None:
            revision = _base_revision(spec[len("base:") :], emb, dtype_name)
        else:
            revision = files_revision(root, _trained_files(root), _settings(emb, dtype_name))
    adapted_from = None
    if root is not None:
        info = read_spec(root)
        adapted_from = info.get("base_backbone") or info.get("backbone")
        adapted_from = None if adapted_from == "model" else adapted_from
    loader_kwargs: dict[str, Any] = {"model": spec, "dtype": dtype_name, "merge": merge, "video_frames": video_frames}
    if batch_size is not None:
        loader_kwargs["batch_size"] = batch_size
    if prompt_config is not None:
        loader_kwargs["prompts"] = dataclasses.asdict(prompt_config)
    if meta:
        loader_kwargs["meta"] = dict(meta)
    if given_revision:  # the user's revision: the loader keeps it rather than checking the files against it
        loader_kwargs["trust_revision"] = True
    full_name = meta_name(name) if name else _default_name(model, root)
    model_meta = build_meta(
        emb,
        name=full_name,
        revision=revision,
        loader=mteb_loader,
        loader_kwargs=loader_kwargs,
        adapted_from=adapted_from if isinstance(adapted_from, str) else None,
        dtype=dtype_name,
        overrides=meta,
    )
    return MTEBEncoder(emb, batch_size, full_name, meta=model_meta, video_frames=video_frames)


def mteb_loader(
    model_name: str | None = None,
    revision: str | None = None,
    *,
    model: str,
    trust_revision: bool = False,
    **kwargs: Any,
) -> MTEBEncoder:
    """The ``ModelMeta.loader`` of genrep models, callable the way mteb calls loaders:
    ``loader(name, revision=..., model=SPEC, device=..., ...)``. Builds the encoder with :func:`load` and
    refuses (one-line UserError) when the files changed since the meta was made (another revision), so
    mteb never files new scores under an old revision; ``trust_revision`` (a revision the user chose)
    keeps ``revision`` as given."""
    if kwargs.get("device") is None:
        kwargs.pop("device", None)
    if trust_revision:
        return load(model, name=model_name, revision=revision, **kwargs)
    encoder = load(model, name=model_name, **kwargs)
    now = encoder.mteb_model_meta.revision
    if revision is not None and now != revision:
        raise UserError(
            f"mteb model '{encoder.name}': {model} is now revision {now}, not {revision} (its files or settings "
            "changed); make a new meta with genrep.lco.mteb_adapter.model_meta()"
        )
    return encoder


def model_meta(model: str, **kwargs: Any) -> Any:
    """The ``mteb.ModelMeta`` of a genrep model (``base:NAME`` or a trained model directory), whose
    ``load_model()`` builds the encoder again; takes :func:`load`'s keyword arguments. The model is loaded
    once to read its size and dimensions."""
    return load(model, **kwargs).mteb_model_meta
