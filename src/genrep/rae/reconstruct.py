"""Stage-1 evaluation: reconstruct held-out images and score them.

PSNR and SSIM per image (averaged); ``rfd_effnet``, the Frechet distance between real and
reconstructed images in the pooled EfficientNet-Lite0 feature space (offline; *not* rFID);
``rfid``, the standard Inception rFID through torch-fidelity when its weights are on disk,
otherwise ``None`` with the reason. ``latent_noise`` adds Gaussian noise of a fixed sigma to the
encoder latent before decoding, to measure robustness to imperfect (e.g. generated) latents.
A PNG grid shows originals above their reconstructions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from genrep.core.config import Count, NonNeg
from genrep.core.errors import UserError
from genrep.core.images import image_grid, png_bytes
from genrep.core.progress import progress_bar
from genrep.core.rundir import RunDir, atomic_write_bytes, model_dir
from genrep.core.runtime import pick_device, seed_everything
from genrep.rae import metrics as M
from genrep.rae.autoencoder import CONFIG_NAME, RAE
from genrep.rae.data import Skipped, collate_skip, load_images
from genrep.rae.latents import as_numpy_images


@dataclass
class ReconstructConfig:
    """``genrep rae reconstruct``."""

    model: Path | None = None  # an RAE directory, or a train-decoder --out directory
    dataset: str = "fashion-mnist"
    split: str = "test"
    limit: Count = 1000
    batch_size: Count = 100
    latent_noise: NonNeg = 0.0  # fixed sigma of Gaussian noise added to the raw latent
    grid_images: Count = 16
    seed: int = 0
    device: str = "auto"


def resolve_model_dir(path: Path) -> Path:
    """Accept the RAE directory itself or a training run's ``--out`` (which holds ``model/``)."""
    found = model_dir(path, CONFIG_NAME)
    if (found / CONFIG_NAME).is_file():
        return found
    path = Path(path)
    raise UserError(f"{path}: no RAE found (expected {CONFIG_NAME} there or in {path}/model)")


@torch.no_grad()
def reconstruct_batches(rae: RAE, loader, latent_noise: float, device, generator: torch.Generator, total: int):
    """Yield (originals, reconstructions) as float [B, 3, S, S] in [0, 1] on the CPU."""
    with progress_bar(total, "reconstructing") as bar:
        for batch in loader:
            if batch is None:
                continue
            x, _ = batch
            x = x.to(device)
            z = rae.encoder.encode(x)
            if latent_noise > 0:
                z = z + latent_noise * torch.randn(z.shape, generator=generator).to(z.device)
            y = rae.decode_raw(z).clamp(0, 1)
            bar.advance(len(x))
            yield x.cpu(), y.cpu()


def reconstruct(cfg: ReconstructConfig, out: str | Path) -> dict:
    if cfg.model is None:
        raise UserError("reconstruct: --model DIR is required")
    if cfg.latent_noise < 0:
        raise UserError(f"reconstruct: latent_noise must be >= 0, got {cfg.latent_noise}")
    run = RunDir(out)
    run.write_config(cfg)
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    rae = RAE.from_pretrained(resolve_model_dir(cfg.model)).to(device)
    ds = load_images(cfg.dataset, cfg.split, rae.image_size, cfg.limit)
    skipped = Skipped()
    loader = DataLoader(ds, batch_size=cfg.batch_size, collate_fn=collate_skip(skipped))
    gen = torch.Generator().manual_seed(cfg.seed)

    psnr, ssim, real_u8, fake_u8 = [], [], [], []
    for x, y in reconstruct_batches(rae, loader, cfg.latent_noise, device, gen, len(ds)):
        psnr.append(M.psnr(y, x))
        ssim.append(M.ssim(y, x))
        real_u8.append(as_numpy_images(x))
        fake_u8.append(as_numpy_images(y))
    if not real_u8:
        raise UserError(f"reconstruct: no readable images in {cfg.dataset} ({skipped.count} skipped)")
    real, fake = np.concatenate(real_u8), np.concatenate(fake_u8)
    psnr_all, ssim_all = torch.cat(psnr), torch.cat(ssim)
    finite = torch.isfinite(psnr_all)

    features = M.EffNetFeatures(device=device)
    rfd = M.fd_effnet(real, fake, features, method="eigh")
    fid = M.fid_inception(real, fake)

    k = min(cfg.grid_images, len(real))
    grid = image_grid(np.concatenate([real[:k], fake[:k]]), nrow=k)
    atomic_write_bytes(run.figures / "reconstructions.png", png_bytes(grid, scale=3 if rae.image_size <= 64 else 1))

    metrics = {
        "psnr": float(psnr_all[finite].mean()),
        "ssim": float(ssim_all.mean()),
        "rfd_effnet": rfd,
        "rfid": fid.get("fid"),
        "rfid_status": fid.get("status", "ok"),
        "num_images": int(len(real)),
        "num_skipped": skipped.count,
        "latent_noise": cfg.latent_noise,
        "dataset": cfg.dataset,
        "split": cfg.split,
        "image_size": rae.image_size,
        "encoder": rae.encoder.spec(),
        "feature_space": M.metric_signature(),
    }
    run.write_metrics(metrics)
    return metrics
