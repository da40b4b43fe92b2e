"""Image data for RAE: the bundled Fashion-MNIST and any image-folder tree (ImageNet layout).

Every item is an RGB float image in [0, 1], shape [3, S, S] at the requested resolution, with an
integer class label. Grey images are replicated to three channels. Image folders are read with
PIL, resized on the short side and centre-cropped (ADM / DiT preprocessing); an unreadable or
corrupt file yields ``None``, which :func:`collate_skip` drops and counts, so it never stops a run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from genrep.core.bundled.data import load_fashion_mnist
from genrep.core.errors import UserError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
log = logging.getLogger("genrep.rae.data")


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W] or [H, W, 3] -> float [3, H, W] in [0, 1]."""
    t = torch.tensor(np.asarray(image), dtype=torch.float32).div_(255.0)
    if t.dim() == 2:
        t = t.unsqueeze(0).expand(3, -1, -1)
    else:
        t = t.permute(2, 0, 1)
    return t.contiguous()


def center_crop_resize(img: Image.Image, size: int) -> Image.Image:
    """Resize the short side to ``size`` (BOX halving, then bicubic) and centre-crop a square."""
    while min(img.size) >= 2 * size:
        w, h = img.size
        img = img.resize((w // 2, h // 2), resample=Image.Resampling.BOX)
    scale = size / min(img.size)
    w, h = img.size
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), resample=Image.Resampling.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return img.crop((left, top, left + size, top + size))


class ArrayImages(Dataset):
    """Images held in memory as uint8 [N, H, W(, 3)] (Fashion-MNIST)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], size: int):
        self.images, self.labels, self.class_names, self.size = images, labels, class_names, size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = to_tensor(self.images[i])
        if x.shape[-1] != self.size:
            x = torch.nn.functional.interpolate(
                x[None], size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
            )[0].clamp(0, 1)
        return x, int(self.labels[i])


@dataclass
class ImageFolder(Dataset):
    """``root/<class>/<image>`` (class sub-folders, sorted -> label ids), or a flat folder (label 0)."""

    root: Path
    size: int
    files: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    class_names: tuple[str, ...] = ()

    def __post_init__(self):
        self.root = Path(self.root)
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"{self.root}: is a file; expected an image folder (or the name fashion-mnist)")
        if not self.root.is_dir():
            raise UserError(f"{self.root}: image folder not found")
        classes = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        groups = [(i, self.root / c) for i, c in enumerate(classes)] if classes else [(0, self.root)]
        self.class_names = tuple(classes) if classes else (self.root.name,)
        for label, folder in groups:
            for f in sorted(folder.rglob("*")):
                if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file():
                    self.files.append(f)
                    self.labels.append(label)
        if not self.files:
            raise UserError(f"{self.root}: no images found (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            with Image.open(self.files[i]) as img:
                img = center_crop_resize(img.convert("RGB"), self.size)
                return to_tensor(np.asarray(img)), self.labels[i]
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
            log.warning("skipping unreadable image %s (%s)", self.files[i], type(err).__name__)
            return None


class Skipped:
    """Counts items dropped by :func:`collate_skip` (shared by a loader's batches)."""

    def __init__(self):
        self.count = 0


def collate_skip(skipped: Skipped):
    """A collate function that drops ``None`` items (corrupt images) and counts them."""

    def collate(items):
        kept = [it for it in items if it is not None]
        skipped.count += len(items) - len(kept)
        if not kept:
            return None
        return torch.stack([x for x, _ in kept]), torch.tensor([y for _, y in kept], dtype=torch.long)

    return collate


def load_images(
    dataset: str, split: str = "train", size: int = 28, limit: int | None = None
) -> ArrayImages | ImageFolder:
    """``fashion-mnist`` (bundled; split train/test) or a path to an image folder.

    For an image folder, ``split`` names a sub-folder when one exists (``root/train``, ``root/val``).
    ``limit`` keeps the first N items (a fixed, reproducible subset).
    """
    if dataset == "fashion-mnist":
        fm = load_fashion_mnist(split)
        n = len(fm) if limit is None else min(limit, len(fm))
        return ArrayImages(fm.images[:n], fm.labels[:n], fm.class_names, size)
    root = Path(dataset)
    if (root / split).is_dir():
        root = root / split
    ds = ImageFolder(root, size)
    if limit is not None:
        ds.files, ds.labels = ds.files[:limit], ds.labels[:limit]
    return ds


# --- the reference's training data order and augmentations ------------------------------------------


def epoch_order(num_items: int, epoch: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """This rank's item order for ``epoch``, as ``torch.utils.data.DistributedSampler(shuffle=True,
    seed=seed)`` gives it after ``set_epoch(epoch)`` (what the reference's ``prepare_dataloader``,
    src/utils/train_utils.py:63-81, samples with; its seed is left at 0): a permutation drawn from
    ``seed + epoch``, padded by repeating its head to ``world_size * ceil(N / world_size)``, then
    every ``world_size``-th item from ``rank``."""
    g = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(num_items, generator=g)
    total = -(-num_items // world_size) * world_size
    pad = total - num_items
    if pad:
        reps = -(-pad // num_items)
        order = torch.cat([order, order.repeat(reps)[:pad]])
    return order[rank:total:world_size]


class EpochBatches:
    """Batches of item indices in the reference's order: each epoch a fresh :func:`epoch_order`,
    cut into ``steps_per_epoch`` batches of ``batch_size`` with the last partial batch dropped (the
    loader's ``drop_last=True``). ``batch(step)`` depends on the step only, so a resumed run draws
    exactly the batches the interrupted one would have."""

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.num_items, self.batch_size = num_items, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.steps_per_epoch = (-(-num_items // world_size)) // batch_size
        if self.steps_per_epoch < 1:
            raise UserError(
                f"batch size {batch_size} per process is larger than the {-(-num_items // world_size)} items "
                f"each of {world_size} process(es) gets per epoch; lower batch_size or use more data"
            )
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def batch(self, step: int) -> torch.Tensor:
        epoch, pos = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = epoch_order(self.num_items, epoch, self.seed, self.rank, self.world_size)
        return self._order[pos * self.batch_size : (pos + 1) * self.batch_size]
