"""mteb's batch values as :class:`EmbeddingModel` takes them, for :mod:`genrep.lco.mteb_adapter`.

Images arrive as PIL images, numpy arrays or torch tensors (CHW or HWC, uint8 or float in [0, 1]) and are
turned into RGB PIL images by :func:`to_pil`; audio into 1-D float arrays at the processor's rate
(:func:`to_audio`); video into a list of PIL frames (:func:`to_frames`). :func:`to_items` flattens a list
of inputs or a DataLoader of mteb 2.x column batches into items (a row with text and an image is one
interleaved item); :func:`to_images` reads MIEB's image batches. mteb's prompt type picks the side of the
suffix prompt (:func:`_side`): queries get the query side, documents the document side.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from genrep.core.errors import UserError
from genrep.lco.embedding import Side
from genrep.lco.mteb_meta import MODALITIES

AUDIO_RATE = 16_000  # what EmbeddingModel expects when the processor does not say
VIDEO_FRAMES = 8  # frames sampled from a decoded video
Convert = Callable[[str, Any], Any]  # (modality, one column value) -> the value EmbeddingModel takes


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


def _item(x: Any, convert: Convert) -> Any:
    """One input for EmbeddingModel: an item dict's fields converted; a str / PIL image / array as is."""
    if isinstance(x, Mapping):
        return {k: convert(k, v) for k, v in x.items() if k in MODALITIES and v is not None}
    return x


def _rows(batch: Mapping, convert: Convert) -> list[dict]:
    """The rows of an mteb 2.x column batch as item dicts (text + image in a row: one interleaved item)."""
    columns = {k: batch[k] for k in MODALITIES if k in batch and batch[k] is not None}
    if not columns:
        raise UserError(f"mteb batch: no text, image, audio or video column (got {sorted(batch)})")
    n = len(next(iter(columns.values())))
    return [{k: convert(k, col[i]) for k, col in columns.items() if col[i] is not None} for i in range(n)]


def to_items(inputs: Any, convert: Convert) -> list:
    """A list of inputs (texts, images, item dicts), an iterable of mteb 2.x column batches (a DataLoader),
    or an iterable of lists (a 1.x DataLoader), flattened into one list of items in order."""
    if isinstance(inputs, (list, tuple)) and not (inputs and _is_column_batch(inputs[0])):
        return [_item(x, convert) for x in inputs]
    items: list = []
    for batch in inputs:
        if isinstance(batch, Mapping):
            items.extend(_rows(batch, convert))
        elif isinstance(batch, (list, tuple)):
            items.extend(_item(x, convert) for x in batch)
        else:
            items.append(_item(batch, convert))
    return items


def to_images(images: Any) -> list:
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
