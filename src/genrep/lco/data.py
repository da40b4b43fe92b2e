"""Contrastive training data: JSONL triplets and the bundled HSK zh<->en pairs.

One JSON object per line with ``anchor``, ``positive`` and optionally ``negative``. Each side is an
object with any of ``text``, ``image`` (a path, relative to the JSONL file), ``audio`` (a .wav/.npy
path) and ``video`` (a directory of frames or a list of frame paths); a plain string is a text.

The reference's own format (``Training/README.md``, read by ``Training/train_VL_any2any.py``) is read
as is: sides like ``{"text": "...", "image_path": ""}``, where an empty string means "absent" (a side
with only an image has ``"text": ""``) and ``image_path`` is absolute or relative to the directory the
training runs in (as the reference resolves it; a path that only exists relative to the JSONL file is
accepted too). Errors name the file, the line and the field; a missing image fails before training.
Images, audio and video are loaded lazily, when a batch is embedded; training images are shrunk to the
reference's 700 px thumbnail (``load_media(thumbnail=...)``).

Offline data: the 4,354 HSK example sentences (package ``hsk-sentences-audio``) as zh<->en pairs,
cleaned (placeholder translations dropped) and split train/test so that no Chinese or English
sentence occurs in both splits (duplicates are grouped before splitting).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from genrep.core.errors import UserError
from genrep.core.jsonl import iter_jsonl

SIDES = ("anchor", "positive", "negative")
FIELDS = ("text", "image", "audio", "video")
REFERENCE_IMAGE = "image_path"  # the reference format's image field (cwd-relative, "" = none)


@dataclass
class Triplet:
    anchor: dict
    positive: dict
    negative: dict | None = None


def _resolve(p: str, key: str, base: Path | None) -> Path:
    """A media path: absolute as is; ``image_path`` relative to the working directory first (the reference),
    every other field (and an ``image_path`` only found there) relative to the JSONL file's directory."""
    path = Path(p)
    if path.is_absolute() or base is None:
        return path
    if key == REFERENCE_IMAGE and path.exists():
        return path
    return base / path


def _side(value: Any, where: str, base: Path | None) -> dict:
    if isinstance(value, str):
        if not value.strip():
            raise UserError(f"{where}: empty text")
        return {"text": value}
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected an object with text/image/audio/video or a string")
    allowed = (*FIELDS, REFERENCE_IMAGE)
    unknown = set(value) - set(allowed)
    if unknown:
        raise UserError(f"{where}: unknown field(s) {sorted(unknown)} (allowed: {', '.join(allowed)})")
    if value.get("image") and value.get(REFERENCE_IMAGE):
        raise UserError(f"{where}: both 'image' and 'image_path' are given; use one")
    out: dict = {}
    for key in (*FIELDS, REFERENCE_IMAGE):
        v = value.get(key)
        if v is None or v == "":  # the reference format writes "" for an absent text or image
            continue
        if key == "text":
            if not isinstance(v, str):
                raise UserError(f"{where}.text: expected a string")
            out["text"] = v
            continue
        paths = v if isinstance(v, list) else [v]
        if not paths or not all(isinstance(p, str) and p for p in paths):
            raise UserError(f"{where}.{key}: expected a path (or a list of paths for video)")
        resolved = [str(_resolve(p, key, base)) for p in paths]
        for p in resolved:
            if not Path(p).exists():
                raise UserError(f"{where}.{key}: file not found: {p}")
        out["image" if key == REFERENCE_IMAGE else key] = resolved if isinstance(v, list) else resolved[0]
    if not out:
        raise UserError(f"{where}: needs at least one of {', '.join(FIELDS)} (or image_path) that is not empty")
    return out


def json_lines(path: str | Path, what: str) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of a JSONL file; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} file not found")
    for n, obj in iter_jsonl(path, f"{what} file"):
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{n}: expected a JSON object")
        yield n, obj


def read_triplets(path: str | Path) -> list[Triplet]:
    """Read and validate a triplet JSONL file (see module docstring)."""
    path = Path(path)
    rows: list[Triplet] = []
    for n, obj in json_lines(path, "training data"):
        for side in ("anchor", "positive"):
            if side not in obj:
                raise UserError(f"{path}:{n}: missing field '{side}'")
        extra = set(obj) - set(SIDES) - {"id"}
        if extra:
            raise UserError(f"{path}:{n}: unknown field(s) {sorted(extra)} (allowed: anchor, positive, negative)")
        sides = {s: _side(obj[s], f"{path}:{n}: {s}", path.parent) for s in SIDES if obj.get(s) is not None}
        rows.append(Triplet(sides["anchor"], sides["positive"], sides.get("negative")))
    if not rows:
        raise UserError(f"{path}: no training rows")
    negs = {r.negative is None for r in rows}
    if len(negs) > 1:
        raise UserError(f"{path}: either every row has a 'negative' or none has")
    return rows


def write_triplets(path: str | Path, rows: list[Triplet]) -> None:
    from genrep.core.rundir import atomic_write_text

    lines = []
    for r in rows:
        obj = {"anchor": r.anchor, "positive": r.positive}
        if r.negative is not None:
            obj["negative"] = r.negative
        lines.append(json.dumps(obj, ensure_ascii=False))
    atomic_write_text(path, "\n".join(lines) + "\n")


def load_media(side: dict, thumbnail: int = 0) -> dict:
    """Replace paths by loaded media: PIL images, float audio arrays (16 kHz mono), frame lists.

    ``thumbnail > 0`` shrinks an image (never enlarges it) to fit in a ``thumbnail`` x ``thumbnail`` square,
    keeping its aspect ratio, with PIL's ``Image.thumbnail`` as the reference trainer does (700 px)."""
    out = dict(side)
    if "image" in out and isinstance(out["image"], str):
        from PIL import Image

        image = Image.open(out["image"]).convert("RGB")
        if thumbnail > 0:
            image.thumbnail((thumbnail, thumbnail))
        out["image"] = image
    if "audio" in out and isinstance(out["audio"], str):
        out["audio"] = _load_audio(out["audio"])
    if "video" in out and isinstance(out["video"], (str, list)):
        from PIL import Image

        frames = out["video"]
        if isinstance(frames, str):
            frames = sorted(str(p) for p in Path(frames).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        out["video"] = [Image.open(p).convert("RGB") for p in frames]
    return out


def _load_audio(path: str):
    import numpy as np

    if path.endswith(".npy"):
        return np.load(path).astype("float32")
    from scipy.io import wavfile

    rate, data = wavfile.read(path)
    data = data.astype("float32")
    if data.ndim > 1:
        data = data.mean(axis=1)
    if np.abs(data).max() > 1.5:  # integer PCM
        data = data / 32768.0
    if rate != 16000:
        from scipy.signal import resample_poly

        data = resample_poly(data, 16000, rate).astype("float32")
    return data


# --------------------------------------------------------------------------- HSK zh<->en pairs


@dataclass
class HSKSplit:
    train: list[dict]
    test: list[dict]


def hsk_pairs_split(test_size: int = 500, seed: int = 0) -> HSKSplit:
    """The HSK pairs (cleaned), split so that no zh or en sentence is in both splits.

    Pairs sharing a Chinese or an English sentence form one group (union-find); whole groups go to
    one split. The test split keeps one pair per group, so every query has exactly one relevant
    document and every document is a distinct string.
    """
    from genrep.core.assets import load

    pairs = [
        p for p in load("hsk-zh-en") if p["en"].strip() and p["en"].strip().lower() != "placeholder" and p["zh"].strip()
    ]
    parent = list(range(len(pairs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, p in enumerate(pairs):
        for key in ("zh:" + p["zh"].strip(), "en:" + p["en"].strip()):
            if key in first:
                parent[find(i)] = find(first[key])
            else:
                first[key] = i
    groups: dict[int, list[int]] = {}
    for i in range(len(pairs)):
        groups.setdefault(find(i), []).append(i)
    roots = sorted(groups)
    random.Random(seed).shuffle(roots)
    if not 0 < test_size < len(roots):
        raise UserError(f"test_size must be between 1 and {len(roots) - 1} (got {test_size})")
    test = [pairs[groups[r][0]] for r in roots[:test_size]]
    train = [pairs[i] for r in roots[test_size:] for i in groups[r]]
    return HSKSplit(train=train, test=test)


def hsk_triplets(pairs: list[dict], seed: int = 0, both_directions: bool = True) -> list[Triplet]:
    """Training triplets from HSK pairs: zh anchor -> en positive, with a hard negative: the English
    of another pair on the same topic (the same HSK level when the topic has no other pair); with
    ``both_directions`` the en -> zh triplets too (interleaved)."""
    rng = random.Random(seed)
    by_topic: dict[str, list[int]] = {}
    by_level: dict[Any, list[int]] = {}
    for i, p in enumerate(pairs):
        by_topic.setdefault(p.get("topic") or "", []).append(i)
        by_level.setdefault(p.get("level"), []).append(i)

    def negative_of(i: int) -> int:
        pool: Sequence[int] = by_topic.get(pairs[i].get("topic") or "", [])
        if len(pool) < 2:
            pool = by_level.get(pairs[i].get("level"), [])
        if len(pool) < 2:
            pool = range(len(pairs))
        while True:
            j = rng.choice(pool)
            if j != i and pairs[j]["en"] != pairs[i]["en"] and pairs[j]["zh"] != pairs[i]["zh"]:
                return j

    rows = []
    for i, p in enumerate(pairs):
        j = negative_of(i)
        rows.append(Triplet({"text": p["zh"]}, {"text": p["en"]}, {"text": pairs[j]["en"]}))
        if both_directions:
            rows.append(Triplet({"text": p["en"]}, {"text": p["zh"]}, {"text": pairs[j]["zh"]}))
    return rows
