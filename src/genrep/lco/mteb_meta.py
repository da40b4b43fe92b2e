"""The ``mteb.ModelMeta`` of a genrep model and its revision, for :mod:`genrep.lco.mteb_adapter`.

``mteb`` is an optional extra (``pip install genrep[mteb]``), imported only inside the functions that need it
(:func:`import_mteb`). :func:`build_meta` fills every field the installed mteb declares and genrep knows; the name
has the form ``genrep/<name>`` (:func:`meta_name`) and the revision is a hash of the model's files and
embedding settings (:func:`files_revision`; :func:`weights_revision` for a model in memory), so results land
in the model's own cache folder and two different models never share cached scores.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from genrep.core.errors import UserError
from genrep.core.files import hash_files
from genrep.lco.embedding import EmbeddingModel

INSTALL = "pip install genrep[mteb]"
MODALITIES = ("text", "image", "audio", "video")  # mteb's modality names, which are genrep's
NAME_PREFIX = "genrep"
REVISION_LENGTH = 12  # hex digits of sha256
# Files of a model directory that are documentation, not model: never hashed.
_NOT_HASHED = {"README.md", "training_args.bin"}


# ---------------------------------------------------------------------------------------------------- mteb
def import_mteb() -> Any:
    """The ``mteb`` module, or a one-line UserError saying how to install it."""
    try:
        import mteb
    except ImportError:
        raise UserError(f"MTEB / MIEB evaluation needs the mteb package: {INSTALL}") from None
    return mteb


def _mteb_model_meta() -> Any:
    """``mteb.ModelMeta`` (mteb 2.x: ``mteb.ModelMeta`` / ``mteb.models``; mteb 1.x: ``mteb.model_meta``)."""
    import importlib

    mteb = import_mteb()
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
        """An ``mteb.ModelMeta`` of a genrep model (see :func:`genrep.lco.mteb_meta.build_meta`)."""

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
    hash_files(h, root, files)
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
