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

Batches, images, audio and video become EmbeddingModel inputs in :mod:`genrep.lco.mteb_inputs` (:func:`to_pil`,
:func:`to_audio`, :func:`to_frames`); the ModelMeta and its revision are built in :mod:`genrep.lco.mteb_meta`
(:func:`build_meta`, :func:`files_revision`). Queries get the query-side suffix prompt and documents the
document side (the same by default, as in the paper).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from genrep.core.errors import UserError
from genrep.lco.embedding import EmbeddingModel, PromptConfig, Side
from genrep.lco.mteb_inputs import AUDIO_RATE, VIDEO_FRAMES, _side, to_audio, to_frames, to_images, to_items, to_pil
from genrep.lco.mteb_meta import (
    INSTALL,
    MODALITIES,
    NAME_PREFIX,
    REVISION_LENGTH,
    _base_revision,
    _settings,
    _trained_files,
    build_meta,
    files_revision,
    import_mteb,
    meta_name,
    weights_revision,
)

__all__ = [
    "AUDIO_RATE",
    "INSTALL",
    "MODALITIES",
    "NAME_PREFIX",
    "REVISION_LENGTH",
    "VIDEO_FRAMES",
    "MTEBEncoder",
    "build_meta",
    "check_task",
    "default_model_name",
    "evaluate",
    "files_revision",
    "import_mteb",
    "load",
    "meta_name",
    "model_meta",
    "mteb_loader",
    "to_audio",
    "to_frames",
    "to_pil",
    "weights_revision",
]


# ---------------------------------------------------------------------------------------------------- tasks
def _task_metadata_owner(task: Any) -> Any:
    """An mteb task object: ``task`` itself, or the task a name stands for (``mteb.get_task``)."""
    if not isinstance(task, str):
        return task
    try:
        return import_mteb().get_task(task)
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
    mteb = import_mteb()
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
        items = to_items(inputs, self._convert)
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
        items = list(texts) if isinstance(texts, (list, tuple)) else to_items(texts, self._convert)
        return self._encode(items, side=_side(prompt_type), batch_size=batch_size, description="texts", torch_out=True)

    def get_image_embeddings(
        self, images: Any, *, batch_size: int | None = None, prompt_type: Any = None, **kwargs: Any
    ) -> Any:
        """Embeddings of images (torch ``[N, d]``): PIL images, arrays or tensors, in a list or a DataLoader."""
        items = to_images(images)
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
        imgs = to_images(images)
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


def default_model_name(spec: str, root: Path | None) -> str:
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

    import_mteb()  # no mteb: say so before loading anything
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
    full_name = meta_name(name) if name else default_model_name(model, root)
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
