"""``genrep rae sample``: trained DiT + RAE decoder -> images.

Class-balanced labels, noise ``eps ~ N(0, I)`` in the normalised latent, the probability-flow ODE
from t = 1 to ``shift(t_end)`` on the reference's time grid (:func:`~genrep.rae.flow.reference_grid`:
``steps`` points, Euler or Heun), optional classifier-free guidance
(with an interval) or AutoGuidance (with a guide DiT), then the RAE decoder. Writes
``samples.npz`` (``arr_0``: uint8 [N, H, W, 3] as ADM's evaluator reads; ``labels``),
``figures/grid.png`` (one row per class) and ``metrics.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch

from genrep.core.config import Count, Fraction, NonNeg, require_positive
from genrep.core.errors import UserError
from genrep.core.images import image_grid, png_bytes
from genrep.core.rundir import RunDir, atomic_write_bytes
from genrep.core.runtime import pick_device
from genrep.rae.autoencoder import RAE
from genrep.rae.dit_io import load_dit, read_dit
from genrep.rae.flow import class_balanced_labels, euler_sample, heun_sample, make_guided_velocity, reference_grid
from genrep.rae.latents import as_numpy_images
from genrep.rae.reconstruct import resolve_model_dir


@dataclass
class SampleConfig:
    """``genrep rae sample``."""

    dit: Optional[Path] = None
    num: Count = 100
    steps: Count = 50  # grid points, as the reference's num_steps: steps - 1 solver steps
    t_end: NonNeg = 1e-3  # the uniform grid ends here before the shift (reference: 1/1000; 0 = data)
    quantize: Literal["floor", "round"] = "floor"  # samples.npz uint8: truncated as sample_ddp.py, or rounded
    sampler: Literal["euler", "heun"] = "euler"
    guidance: Literal["none", "cfg", "autoguidance"] = "none"
    scale: float = 1.0
    interval: tuple[Fraction, Fraction] = (0.0, 1.0)
    guide: Optional[Path] = None  # the guide DiT for autoguidance (smaller or earlier)
    rae: Optional[Path] = None  # decode with this stage-1 decoder instead of the DiT's (same encoder)
    batch_size: Count = 100
    per_class: Count = 10  # images per class row in the grid
    seed: int = 0
    device: str = "auto"


@torch.no_grad()
def generate(
    model,
    rae: RAE,
    labels: torch.Tensor,
    alpha: float,
    cfg: SampleConfig,
    guide=None,
    generator: torch.Generator | None = None,
    device="cpu",
) -> torch.Tensor:
    """Images [N, 3, H, W] in [0, 1] for ``labels`` (batched)."""
    out = []
    for chunk in torch.split(labels, cfg.batch_size):
        y = chunk.to(device)
        noise = torch.randn((len(y), *rae.latent_shape), generator=generator).to(device)
        z = sample_latents(model, y, noise, alpha, cfg, guide)
        out.append(rae.decode(z).clamp(0, 1).cpu())
    return torch.cat(out)


@torch.no_grad()
def sample_latents(
    model, y: torch.Tensor, noise: torch.Tensor, alpha: float, cfg: SampleConfig, guide=None
) -> torch.Tensor:
    """Normalised latents for labels ``y`` from ``noise`` (t = 1): the ODE on :func:`reference_grid` with the
    solver and guidance of ``cfg``, as the reference's ``sample.py`` integrates it."""
    grid = reference_grid(cfg.steps, alpha, cfg.t_end).to(noise.device)
    integrate = euler_sample if cfg.sampler == "euler" else heun_sample
    velocity = make_guided_velocity(
        model,
        y,
        guidance=cfg.guidance,
        scale=cfg.scale,
        interval=cfg.interval,
        guide_model=guide,
        null_class=model.cfg.num_classes,
    )
    return integrate(velocity, noise, grid)


def class_grid_png(arr: np.ndarray, labels: np.ndarray, num_classes: int, per_class: int) -> bytes:
    """A PNG grid of uint8 images ``[N, H, W, 3]``: one row per class, ``per_class`` columns (white padding)."""
    rows = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)[:per_class]
        if len(idx):
            rows.append(np.concatenate([arr[idx], np.full((per_class - len(idx), *arr.shape[1:]), 255, np.uint8)]))
    return png_bytes(image_grid(np.concatenate(rows), nrow=per_class), scale=3 if arr.shape[1] <= 64 else 1)


def swap_decoder(trained: RAE, other: RAE, where) -> RAE:
    """``other``'s decoder behind ``trained``'s latent statistics.

    The DiT generates latents normalised with the statistics of the RAE it was trained on; any decoder
    of the same encoder (e.g. a plain or a noise-augmented one) decodes them after de-normalising with
    those statistics.
    """
    if other.encoder_spec != trained.encoder_spec:  # specs, so that no encoder is built (decoding needs none)
        raise UserError(f"{where}: its encoder {other.encoder_spec} differs from the DiT's {trained.encoder_spec}")
    other.stats = trained.stats
    return other


def sample(cfg: SampleConfig, out: str | Path) -> dict:
    if cfg.dit is None:
        raise UserError("sample: --dit DIR is required")
    require_positive(cfg, ("num", "steps", "batch_size", "per_class"), "sample")
    if cfg.steps < 2:
        raise UserError(
            f"sample: --steps counts grid points (the reference's num_steps) and must be >= 2, got {cfg.steps}"
        )
    if not cfg.t_end < 1.0:
        raise UserError(f"sample: t_end must be in [0, 1), got {cfg.t_end}")
    if cfg.guidance == "autoguidance" and cfg.guide is None:
        raise UserError("sample: --guidance autoguidance needs a guide model (--set guide=DIR)")
    run = RunDir(out)
    run.write_config(cfg)
    device = pick_device(cfg.device)
    model, meta = read_dit(cfg.dit)
    model = model.to(device)
    guide = load_dit(cfg.guide).to(device) if cfg.guide is not None else None
    if meta.get("rae") is None:  # converted without its stage 1
        if cfg.rae is None:
            raise UserError(f"sample: the DiT in {cfg.dit} has no RAE; give one with --set rae=DIR")
        rae = RAE.from_pretrained(resolve_model_dir(cfg.rae))
    else:
        rae = RAE.from_pretrained(resolve_model_dir(Path(meta["rae"])))
        if cfg.rae is not None:
            rae = swap_decoder(rae, RAE.from_pretrained(resolve_model_dir(cfg.rae)), cfg.rae)
    rae = rae.to(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    labels = class_balanced_labels(cfg.num, model.cfg.num_classes, generator=gen)
    start = time.perf_counter()
    images = generate(model, rae, labels, meta["shift_alpha"], cfg, guide, gen, device)
    seconds = time.perf_counter() - start
    arr = as_numpy_images(images, cfg.quantize)
    buf = run / "samples.npz"
    np.savez(buf, arr_0=arr, labels=labels.numpy())
    atomic_write_bytes(
        run.figures / "grid.png", class_grid_png(arr, labels.numpy(), model.cfg.num_classes, cfg.per_class)
    )
    metrics = {
        "num": int(len(arr)),
        "steps": cfg.steps,
        "sampler": cfg.sampler,
        "guidance": cfg.guidance,
        "scale": cfg.scale,
        "seconds": round(seconds, 2),
        "images_per_s": len(arr) / max(seconds, 1e-9),
        "class_names": meta.get("class_names"),
    }
    run.write_metrics(metrics)
    return metrics
