"""Stage-2 training: a DiT / DiT^DH flow-matching model in the RAE latent (PAPERS.md s1).

The latents (cached by ``cache-latents``) are normalised with the RAE's statistics; each step
draws a batch, times ``t ~ logit-normal(0, 1)`` mapped through the dimension-dependent shift
``t' = alpha t / (1 + (alpha - 1) t)`` with ``alpha = sqrt(m / 4096)``, noise, and regresses the
velocity ``eps - x`` (MSE). AdamW (0.9, 0.95), no weight decay, EMA 0.9995, gradient clipping at
1.0, label dropout 0.1 for guidance, fp32 by default (bf16 autocast optional: a non-finite loss
stops the run with a clear message and keeps the last good checkpoint), DDP under torchrun,
checkpoints and ``--resume``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch

from genrep.core.checkpoint import Checkpointer
from genrep.core.config import require_positive
from genrep.core.distributed import init_distributed
from genrep.core.ema import EMA
from genrep.core.errors import UserError
from genrep.core.progress import progress_bar
from genrep.core.rundir import RunDir, atomic_write_json, truncate_log
from genrep.core.runtime import pick_device, seed_everything, step_generator
from genrep.rae.dit import DiT, dit_config
from genrep.rae.flow import flow_matching_loss, shift_alpha
from genrep.rae.latents import load_cache
from genrep.rae.reconstruct import resolve_model_dir

DIT_CONFIG = "dit_config.json"
DIT_WEIGHTS = "dit.safetensors"


@dataclass
class TrainDiTConfig:
    """``genrep rae train-dit`` (configs/rae/train_dit.yaml)."""

    rae: Optional[Path] = None  # an RAE directory (or a train-decoder --out)
    latents: Optional[Path] = None  # latent cache; default: the one the RAE's decoder was trained on
    model: str = "ditdh-tiny"
    max_steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-4
    warmup_steps: int = 0
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.9995
    ema_warmup: bool = True
    class_dropout: float = 0.1
    shift: bool = True
    shift_base: int = 4096
    precision: Literal["fp32", "bf16"] = "fp32"
    log_every: int = 25
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    seed: int = 0
    device: str = "auto"


def _latent_cache_of(rae_dir: Path) -> Path:
    """The cache a train-decoder run used (its config.yaml), if the RAE came from one."""
    import yaml

    for cfg_path in (rae_dir.parent / "config.yaml", rae_dir / "config.yaml"):
        if cfg_path.is_file():
            latents = (yaml.safe_load(cfg_path.read_text()) or {}).get("latents")
            if latents:
                return Path(latents)
    raise UserError(f"{rae_dir}: cannot tell which latent cache to train on; pass --latents DIR")


def save_dit(directory: Path, model: DiT, state: dict, rae_dir: Path, alpha: float, class_names: list[str]) -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{DIT_WEIGHTS}.tmp"
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, str(tmp))
    tmp.replace(directory / DIT_WEIGHTS)
    atomic_write_json(directory / DIT_CONFIG, {"dit": model.cfg.__dict__, "rae": str(Path(rae_dir).resolve()),
                                              "shift_alpha": alpha, "class_names": class_names})


def load_dit(directory: str | Path) -> tuple[DiT, dict]:
    """A trained DiT (EMA weights) and its metadata (``rae`` path, ``shift_alpha``, ``class_names``)."""
    from safetensors.torch import load_file

    from genrep.rae.dit import DiTConfig

    directory = Path(directory)
    if not (directory / DIT_CONFIG).is_file() and (directory / "model" / DIT_CONFIG).is_file():
        directory = directory / "model"
    if not (directory / DIT_CONFIG).is_file():
        raise UserError(f"{directory}: no trained DiT found (expected {DIT_CONFIG} there or in {directory}/model)")
    meta = json.loads((directory / DIT_CONFIG).read_text())
    model = DiT(DiTConfig(**meta["dit"]))
    model.load_state_dict(load_file(str(directory / DIT_WEIGHTS)))
    return model.eval(), meta


def train_dit(cfg: TrainDiTConfig, out: str | Path, resume: bool = False) -> dict:
    if cfg.rae is None:
        raise UserError("train-dit: --rae DIR is required (a trained RAE or train-decoder --out)")
    require_positive(cfg, ("max_steps", "batch_size", "log_every", "checkpoint_every"), "train-dit")
    info = init_distributed()
    device = pick_device(cfg.device)
    run = RunDir(out)
    if info.is_main:
        run.write_config(cfg)
    seed_everything(cfg.seed + info.rank)

    rae_dir = resolve_model_dir(cfg.rae)
    from genrep.rae.autoencoder import RAE

    rae = RAE.from_pretrained(rae_dir)
    cache = load_cache(cfg.latents or _latent_cache_of(rae_dir))
    if tuple(cache.meta["latent_shape"]) != tuple(rae.latent_shape):
        raise UserError(f"latent cache shape {tuple(cache.meta['latent_shape'])} != RAE latent {rae.latent_shape}")
    latents = rae.stats.normalize(cache.latents)  # the diffusion model works in the normalised space
    labels = cache.labels
    class_names = cache.meta.get("class_names") or [str(i) for i in range(int(labels.max()) + 1)]
    c, g, _ = rae.latent_shape
    model_cfg = dit_config(cfg.model, in_channels=c, grid=g, num_classes=len(class_names), class_dropout=cfg.class_dropout)
    model = DiT(model_cfg).to(device)
    alpha = shift_alpha(rae.latent_shape, cfg.shift_base) if cfg.shift else 1.0
    ema = EMA(model, cfg.ema_decay, warmup=cfg.ema_warmup)
    net = model
    if info.enabled:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0)
    ckpt = Checkpointer(run.checkpoints, keep_last=cfg.keep_checkpoints)
    start = 0
    if resume:
        meta = ckpt.resume(model=model, optimizer=opt, ema=ema, scheduler=sched)
        if meta is not None:
            start = meta["step"]
    log_path = run / "train_log.jsonl"
    if info.is_main:
        truncate_log(log_path, start)

    n, t0, seen, last = len(latents), time.perf_counter(), 0, {}
    flops = 3 * model.flops_per_sample()
    with progress_bar(cfg.max_steps - start, f"train {cfg.model}", disable=not info.is_main) as bar:
        for step in range(start, cfg.max_steps):
            gen = step_generator(cfg.seed, info.rank, step)
            idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
            x, y = latents[idx].to(device), labels[idx].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                loss = flow_matching_loss(lambda xt, t, yy: net(xt, t, yy, generator=gen), x, y, alpha, generator=gen)
            if not torch.isfinite(loss):
                raise UserError(f"train-dit: loss became {loss.item()} at step {step} ({cfg.precision}); "
                                f"stopped; last good checkpoint: {ckpt.latest() or 'none'}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)) if cfg.grad_clip > 0 else 0.0
            opt.step()
            sched.step()
            ema.update(model)
            seen += cfg.batch_size
            bar.advance()
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.max_steps:
                elapsed = time.perf_counter() - t0
                last = {"step": step + 1, "loss": loss.item(), "grad_norm": grad_norm,
                        "samples_per_s": seen * info.world_size / elapsed, "gflops_per_s": seen * flops / elapsed / 1e9}
                bar.status(f"loss {last['loss']:.4f}")
                if info.is_main:
                    with log_path.open("a") as f:
                        f.write(json.dumps(last) + "\n")
            if (step + 1) % cfg.checkpoint_every == 0 and info.is_main:
                ckpt.save(step + 1, model=model, optimizer=opt, ema=ema, scheduler=sched)

    metrics = {"steps": cfg.max_steps, "model": cfg.model, "params": sum(p.numel() for p in model.parameters()),
               "latent_shape": list(rae.latent_shape), "shift_alpha": alpha, "final": last}
    if info.is_main:
        if cfg.max_steps % cfg.checkpoint_every:
            ckpt.save(cfg.max_steps, model=model, optimizer=opt, ema=ema, scheduler=sched)
        save_dit(run / "model", model, ema.module.state_dict(), rae_dir, alpha, list(class_names))
        run.write_metrics(metrics)
    return metrics
