"""Cached latents: the frozen encoder runs once per image, training reads from disk.

Because the RAE encoder is frozen, its latents can be computed once. ``cache_latents`` encodes a
data set in shards of ``shard_size`` images and writes, per shard, ``shard-XXXXX.safetensors``
holding the raw latents [n, C, h, w] (float32), the labels and the target images (uint8
[n, S, S, 3] at the decoder's resolution). A shard is written atomically; a re-run skips the
shards already there, so an interrupted job resumes where it stopped. Under torchrun each rank
encodes every world_size-th shard. Afterwards the per-element latent statistics are computed
from all shards (exact, independent of batch size and process count) and saved as
``stats.safetensors``; ``meta.json`` records the encoder spec, data set and counts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Subset

from genrep.core.distributed import barrier, current
from genrep.core.errors import UserError
from genrep.core.files import read_json
from genrep.core.progress import progress_bar
from genrep.core.rundir import atomic_write_json
from genrep.rae.data import Skipped, collate_skip, load_images
from genrep.rae.encoders import FrozenEncoder
from genrep.rae.stats import LatentStats, RunningStats

META = "meta.json"
STATS = "stats.safetensors"


def _shard_path(out: Path, i: int) -> Path:
    return out / f"shard-{i:05d}.safetensors"


def cache_latents(
    encoder: FrozenEncoder,
    dataset: str,
    out: str | Path,
    *,
    split: str = "train",
    image_size: int = 28,
    limit: int | None = None,
    batch_size: int = 128,
    shard_size: int = 10000,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
) -> dict:
    """Encode ``dataset`` into ``out``; returns the meta dict (also written to ``meta.json``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_images(dataset, split, image_size, limit)
    n_shards = (len(ds) + shard_size - 1) // shard_size
    info = current()
    encoder = encoder.to(device)
    skipped_total = 0
    mine = [i for i in range(n_shards) if i % info.world_size == info.rank and not _shard_path(out, i).exists()]
    with progress_bar(sum(min(shard_size, len(ds) - i * shard_size) for i in mine), f"encoding {dataset}") as bar:
        for i in mine:
            idx = range(i * shard_size, min(len(ds), (i + 1) * shard_size))
            skipped = Skipped()
            loader = DataLoader(
                Subset(ds, idx), batch_size=batch_size, num_workers=num_workers, collate_fn=collate_skip(skipped)
            )
            lat, lab, img = [], [], []
            for batch in loader:
                if batch is None:
                    continue
                x, y = batch
                lat.append(encoder.encode(x.to(device)).float().cpu())
                lab.append(y)
                img.append((x * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1))
                bar.advance(len(y))
            skipped_total += skipped.count
            if not lat:
                lat = [torch.zeros((0, *encoder.latent_shape))]
                lab = [torch.zeros(0, dtype=torch.long)]
                img = [torch.zeros((0, image_size, image_size, 3), dtype=torch.uint8)]
            tensors = {"latents": torch.cat(lat), "labels": torch.cat(lab), "images": torch.cat(img)}
            path = _shard_path(out, i)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            save_file(tensors, str(tmp), metadata={"skipped": str(skipped.count)})
            tmp.replace(path)
    barrier()
    meta: dict = {}
    if info.is_main:
        running = RunningStats(tuple(encoder.latent_shape))
        n_items, n_skipped = 0, 0
        for i in range(n_shards):
            with safe_open(str(_shard_path(out, i)), framework="pt") as f:
                z = f.get_tensor("latents")
                n_skipped += int(f.metadata().get("skipped", "0"))
            running.update(z)
            n_items += z.shape[0]
        stats = running.result()
        save_file({"mean": stats.mean, "var": stats.var}, str(out / STATS))
        class_names = list(getattr(ds, "class_names", ()))
        meta = {
            "encoder": encoder.spec(),
            "dataset": dataset,
            "split": split,
            "image_size": image_size,
            "latent_shape": list(encoder.latent_shape),
            "num_items": n_items,
            "num_skipped": n_skipped,
            "num_shards": n_shards,
            "class_names": class_names,
        }
        atomic_write_json(out / META, meta)
    barrier()
    return meta if meta else json.loads((out / META).read_text())


@dataclass
class CachedLatents:
    """All shards of a latent cache in memory: latents (float32), labels, target images (uint8)."""

    latents: torch.Tensor
    labels: torch.Tensor
    images: torch.Tensor  # uint8 [N, S, S, 3]
    stats: LatentStats
    meta: dict

    def __len__(self) -> int:
        return self.latents.shape[0]

    def target(self, idx: torch.Tensor) -> torch.Tensor:
        """Target images for indices, float [B, 3, S, S] in [0, 1]."""
        return self.images[idx].permute(0, 3, 1, 2).float().div_(255.0)


def load_cache(directory: str | Path) -> CachedLatents:
    directory = Path(directory)
    meta_path = directory / META
    if not meta_path.is_file():
        raise UserError(f"{directory}: not a latent cache (no {META}; run 'genrep rae cache-latents')")
    meta = read_json(meta_path, "latent cache metadata")
    if not isinstance(meta, dict) or "num_shards" not in meta:
        raise UserError(f"{meta_path}: not latent cache metadata (expected an object with 'num_shards')")
    parts = [load_file(str(_shard_path(directory, i))) for i in range(meta["num_shards"])]
    st = load_file(str(directory / STATS))
    return CachedLatents(
        latents=torch.cat([p["latents"] for p in parts]),
        labels=torch.cat([p["labels"] for p in parts]),
        images=torch.cat([p["images"] for p in parts]),
        stats=LatentStats(st["mean"], st["var"]),
        meta=meta,
    )


def as_numpy_images(images: torch.Tensor, rounding: str = "round") -> np.ndarray:
    """float [B, 3, S, S] in [0, 1] -> uint8 [B, S, S, 3]: to the nearest level (``"round"``) or
    truncated (``"floor"``: ``clamp(0, 1) * 255`` cast to uint8, as the reference's ``sample_ddp.py``)."""
    if rounding not in ("round", "floor"):
        raise ValueError(f"rounding must be round or floor, got {rounding!r}")
    scaled = images.clamp(0, 1) * 255.0 + (0.5 if rounding == "round" else 0.0)
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
