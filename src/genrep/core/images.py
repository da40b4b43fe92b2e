"""Pictures from arrays: image grids and PNG encoding (PIL only)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] (or uint8 already) -> uint8, clipping out-of-range values."""
    if images.dtype == np.uint8:
        return images
    return (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def image_grid(images: np.ndarray, nrow: int, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile [N, H, W] or [N, H, W, C] images into one image with ``nrow`` images per row."""
    images = to_uint8(np.asarray(images))
    if images.ndim == 3:
        images = images[..., None]
    n, h, w, c = images.shape
    ncol = nrow
    rows = (n + ncol - 1) // ncol
    grid = np.full((rows * (h + pad) + pad, ncol * (w + pad) + pad, c), pad_value, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + k * (w + pad)
        grid[y : y + h, x : x + w] = images[i]
    return grid[..., 0] if c == 1 else grid


def png_bytes(image: np.ndarray, scale: int = 1) -> bytes:
    """Encode a uint8 [H, W] or [H, W, 3] array as PNG, optionally upscaled (nearest)."""
    img = Image.fromarray(to_uint8(np.asarray(image)))
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
