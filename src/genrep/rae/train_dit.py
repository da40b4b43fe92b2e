"""Stage-2 training: a DiT / DiT^DH flow-matching model in the RAE latent (docs/papers.md s1.10, s1.13).

The recipe is the reference code's (bytetriper/RAE src/train.py:102-518 with
configs/stage2/training/ImageNet256/DiTDH-XL_DINOv2-B.yaml) unless a field says otherwise:

- data: the cached latents (``cache-latents``), normalised with the RAE's statistics, drawn in
  epochs like the reference's ``DistributedSampler`` + ``drop_last`` loader (``sampling: epoch``;
  ``with-replacement`` draws each batch independently, genrep's earlier order);
- ``hflip`` (reference ``RandomHorizontalFlip()``, p = 0.5, on the centre crop before encoding):
  a sample drawn for flipping is re-encoded from its cached image mirrored left-right with the
  frozen encoder; the others read the cache, which holds the encoder's output for the unflipped
  image; so every latent is what the reference would encode, without a second cache;
- times ``t ~ logit-normal(0, 1)`` mapped through ``t' = alpha t / (1 + (alpha - 1) t)``,
  ``alpha = sqrt(m / 4096)``, noise, and the velocity ``eps - x`` regressed (MSE);
- AdamW (lr 2e-4, betas (0.9, 0.95), no weight decay), the reference LR schedule
  (:mod:`genrep.rae.schedule`; paper: constant for 40 epochs, linear to 2e-5 at epoch 800),
  gradient clipping at 1.0, label dropout 0.1 for guidance;
- EMA 0.9995 updated after every optimizer step from the first on, no warm-up (``ema_warmup``
  turns genrep's warm-up on);
- fp32 by default in the shipped configs (bf16 autocast optional: a non-finite loss stops the
  run with a clear message and keeps the last good checkpoint), DDP under torchrun, checkpoints
  and ``--resume`` (``genrep.core.resume``: only the fields in :data:`RESUME_MAY_DIFFER` may
  change on resume).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import torch

from genrep.core.config import Count, Fraction, NonNeg, NonNegInt, Positive, read_yaml, require_positive
from genrep.core.distributed import init_distributed
from genrep.core.ema import EMA
from genrep.core.errors import UserError
from genrep.core.jsonl import append_jsonl, read_log
from genrep.core.progress import progress_bar
from genrep.core.resume import RUN_CONTROL, start_run
from genrep.core.rundir import RunDir, atomic_write_bytes
from genrep.core.runtime import pick_device, resolve_precision, seed_everything, step_generator
from genrep.rae.autoencoder import RAE
from genrep.rae.data import EpochBatches
from genrep.rae.dit import DiT, DiTPreset, dit_config
from genrep.rae.dit_io import save_dit
from genrep.rae.flow import class_balanced_labels, flow_matching_loss, shift_alpha
from genrep.rae.latents import META as LATENT_META
from genrep.rae.latents import as_numpy_images, load_cache
from genrep.rae.reconstruct import resolve_model_dir
from genrep.rae.sample import SampleConfig, class_grid_png, generate
from genrep.rae.schedule import LRSchedule, ScheduleType, build_scheduler, schedule_of, steps_per_epoch, uses_epochs

# run-control fields that --resume accepts changed: the step budget, logging, checkpointing, the device, and the
# periodic sample grids / evaluations (they draw from their own generators and never touch training)
RESUME_MAY_DIFFER = (*RUN_CONTROL, "sample_every", "eval_every", "eval_num", "eval_real", "eval_steps")


@dataclass
class TrainDiTConfig:
    """``genrep rae train-dit`` (configs/rae/train_dit.yaml)."""

    rae: Optional[Path] = None  # an RAE directory (or a train-decoder --out)
    latents: Optional[Path] = None  # latent cache; default: the one the RAE's decoder was trained on
    model: DiTPreset = "ditdh-tiny"
    model_args: dict[str, int] = field(default_factory=dict)  # DiTConfig fields over the preset (width, depth, ...)
    max_steps: Count = 2000
    batch_size: Count = 64  # per process
    global_batch_size: Optional[Count] = None  # reference training.global_batch_size: batch_size = this / processes
    sampling: Literal["epoch", "with-replacement"] = "epoch"
    hflip: Fraction = 0.5  # reference RandomHorizontalFlip(p=0.5); 0: off
    lr: Positive = 2e-4
    # the LR schedule (genrep.rae.schedule; the reference's scheduler keys): constant for 40 epochs, then linear
    # to final_lr at epoch 800; a value in steps wins over the one in epochs
    lr_schedule: ScheduleType = "linear"
    warmup_epochs: Optional[NonNeg] = 40.0
    warmup_steps: Optional[NonNegInt] = None
    decay_end_epoch: Optional[NonNeg] = 800.0
    decay_end_steps: Optional[NonNegInt] = None
    final_lr: Optional[NonNeg] = 2e-5  # None: lr (no decay)
    warmup_from_zero: bool = False
    betas: tuple[Fraction, Fraction] = (0.9, 0.95)
    weight_decay: NonNeg = 0.0
    grad_clip: NonNeg = 1.0
    ema_decay: Fraction = 0.9995
    ema_warmup: bool = False  # True: d_t = min(decay, (1+t)/(10+t)) (genrep's option; not the reference)
    class_dropout: Fraction = 0.1
    shift: bool = True
    shift_base: Count = 4096
    # auto: bf16 autocast only where a matmul probe measures it >= 1.5x faster than fp32 on this device
    # (core.runtime.resolve_precision); the paper's recipe (configs/rae/train_dit.yaml) is fp32
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    log_every: Count = 25
    checkpoint_every: Count = 500
    sample_every: NonNegInt = 0  # a grid of EMA samples (figures/samples-step-N.png) every N steps; 0: only at the end
    eval_every: NonNegInt = (
        0  # fd_effnet / class_accuracy of eval_num EMA samples every N steps (eval_log.jsonl); 0: off
    )
    eval_num: Count = 200
    eval_real: Count = 1000  # real test images (and 2x training images for the class-accuracy classifier)
    eval_steps: Count = 50  # sampler grid points (Euler steps + 1) for periodic samples and evaluations
    keep_checkpoints: NonNegInt = 2
    seed: int = 0
    device: str = "auto"


def _latent_cache_of(rae_dir: Path) -> Path:
    """The cache a train-decoder run used (its config.yaml), if the RAE came from one."""

    for cfg_path in (rae_dir.parent / "config.yaml", rae_dir / "config.yaml"):
        if cfg_path.is_file():
            latents = read_yaml(cfg_path).get("latents")
            if latents:
                return Path(latents)
    raise UserError(f"{rae_dir}: cannot tell which latent cache to train on; pass --latents DIR")


class _Monitor:
    """Periodic EMA sample grids and evaluations during training (main process only)."""

    def __init__(self, cfg: TrainDiTConfig, run: RunDir, rae, alpha: float, cache_meta: dict, num_classes: int, device):
        self.cfg, self.run, self.rae, self.alpha, self.device = cfg, run, rae, alpha, device
        self.meta, self.num_classes, self.features = cache_meta, num_classes, None

    def _generate(self, model, num: int, seed: int):
        gen = torch.Generator().manual_seed(seed)
        labels = class_balanced_labels(num, self.num_classes, generator=gen)
        was_training = model.training
        model.eval()
        images = generate(
            model,
            self.rae.to(self.device),
            labels,
            self.alpha,
            SampleConfig(steps=self.cfg.eval_steps, batch_size=100),
            generator=gen,
            device=self.device,
        )
        model.train(was_training)
        return as_numpy_images(images), labels.numpy()

    def grid(self, model, step: int) -> None:
        arr, labels = self._generate(model, 8 * self.num_classes, self.cfg.seed)  # same noise at every step
        atomic_write_bytes(
            self.run.figures / f"samples-step-{step:08d}.png", class_grid_png(arr, labels, self.num_classes, 8)
        )

    def evaluate(self, model, step: int) -> dict:
        from genrep.rae.evaluate import EvalConfig, score_images
        from genrep.rae.metrics import EffNetFeatures

        dataset = self.meta.get("dataset", "fashion-mnist")
        arr, labels = self._generate(model, self.cfg.eval_num, self.cfg.seed + 1)
        self.features = self.features or EffNetFeatures(device=self.device)  # type: ignore[assignment]
        m = score_images(
            arr,
            labels,
            EvalConfig(dataset=dataset, real_limit=self.cfg.eval_real, classifier_train=2 * self.cfg.eval_real),
            self.features,
        )
        row = {"step": step, **{k: m[k] for k in ("fd_effnet", "precision", "recall", "class_accuracy") if k in m}}
        append_jsonl(self.run / "eval_log.jsonl", row, fsync=False)
        return row


def _agreed_precision(requested: str, device: torch.device, info) -> tuple[str, dict]:
    """:func:`resolve_precision`; under DDP with ``auto`` the main process probes and every rank takes its choice."""
    if not info.enabled or requested != "auto":
        return resolve_precision(requested, device)
    choice = [resolve_precision(requested, device) if info.is_main else None]
    torch.distributed.broadcast_object_list(choice, src=0)
    return choice[0]  # type: ignore[return-value]  # set on every rank by the broadcast


def process_batch(batch_size: int, global_batch_size: int | None, world_size: int, command: str) -> int:
    """The per-process batch: ``global_batch_size / world_size`` when the global one is given
    (reference src/train.py:150-156 asserts divisibility), else ``batch_size``."""
    if global_batch_size is None:
        return batch_size
    if global_batch_size % world_size:
        raise UserError(
            f"{command}: global_batch_size {global_batch_size} is not divisible by the {world_size} processes"
        )
    return global_batch_size // world_size


def schedule_steps(per_epoch: int, sched: LRSchedule, command: str) -> int:
    """``steps_per_epoch`` for the LR schedule; a schedule in epochs needs at least one step per epoch."""
    if uses_epochs(sched) and per_epoch < 1:
        raise UserError(f"{command}: lr_schedule is given in epochs but an epoch has no full batch")
    return per_epoch


class _Flipper:
    """The reference's random horizontal flip on latents (module docstring): a flipped sample's
    latent is the encoder's output for its cached image mirrored, normalised like the cache."""

    def __init__(self, rae: RAE, cache, device: torch.device):
        if rae.encoder.spec() != cache.meta.get("encoder"):
            from genrep.rae.encoders import build_encoder

            encoder = build_encoder(**cache.meta["encoder"])
        else:
            encoder = rae.encoder
        self.encoder, self.stats, self.cache = encoder.to(device), rae.stats, cache
        self.device = device

    def __call__(self, x: torch.Tensor, idx: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
        flip = torch.rand(idx.shape[0], generator=gen) < p
        if not flip.any():
            return x
        mirrored = self.cache.target(idx[flip]).flip(-1).to(self.device)
        x = x.clone()
        z = self.encoder.encode(mirrored)
        x[flip.to(x.device)] = self.stats.normalize(z.to(self.stats.mean.device)).to(x.device, x.dtype)
        return x


def train_step(
    net,
    model: DiT,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    alpha: float,
    gen: torch.Generator | None,
    grad_clip: float = 1.0,
    precision: str = "fp32",
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, float]:
    """One optimisation step: flow-matching loss on ``(x, y)``, backward (DDP averages the gradients
    across ranks when ``net`` is wrapped), clip to ``grad_clip``, AdamW step. Returns (loss, grad norm).

    A non-finite loss raises ``FloatingPointError`` before any parameter changes.
    """
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = flow_matching_loss(
            lambda xt, tt, yy: net(xt, tt, yy, generator=gen), x, y, alpha, generator=gen, t=t, noise=noise
        )
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss became {loss.item()}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)) if grad_clip > 0 else 0.0
    opt.step()
    return loss, grad_norm


def train_dit(cfg: TrainDiTConfig, out: str | Path, resume: bool = False, fresh: bool = False) -> dict:
    """Train; writes config.yaml, checkpoints/, train_log.jsonl (eval_log.jsonl), figures/, model/ and
    metrics.json. ``resume`` and ``fresh`` as in :func:`genrep.rae.train_decoder.train_decoder`."""
    if cfg.rae is None:
        raise UserError("train-dit: --rae DIR is required (a trained RAE or train-decoder --out)")
    require_positive(cfg, ("max_steps", "batch_size", "log_every", "checkpoint_every"), "train-dit")
    rae_dir = resolve_model_dir(cfg.rae)  # a wrong --rae or --latents fails before anything is written
    latents_dir = cfg.latents or _latent_cache_of(rae_dir)
    if not (Path(latents_dir) / LATENT_META).is_file():
        raise UserError(f"{latents_dir}: not a latent cache (no {LATENT_META}; run 'genrep rae cache-latents')")
    info = init_distributed()
    batch = process_batch(cfg.batch_size, cfg.global_batch_size, info.world_size, "train-dit")
    device = pick_device(cfg.device)
    run = RunDir(out)
    begin = start_run(
        "train-dit",
        cfg,
        run.path,
        resume=resume,
        fresh=fresh,
        may_differ=RESUME_MAY_DIFFER,
        keep_last=cfg.keep_checkpoints,
        logs=("train_log.jsonl", "eval_log.jsonl"),
        is_main=info.is_main,
        lr_follows_steps=False,
    )
    if info.is_main:
        run.write_config(cfg)
    seed_everything(cfg.seed + info.rank)
    precision, precision_info = _agreed_precision(cfg.precision, device, info)
    if info.is_main:
        print(f"train-dit: precision {precision} ({precision_info['reason']})", file=sys.stderr, flush=True)

    rae = RAE.from_pretrained(rae_dir)
    cache = load_cache(latents_dir)
    if tuple(cache.meta["latent_shape"]) != tuple(rae.latent_shape):
        raise UserError(f"latent cache shape {tuple(cache.meta['latent_shape'])} != RAE latent {rae.latent_shape}")
    latents = rae.stats.normalize(cache.latents)  # the diffusion model works in the normalised space
    labels = cache.labels
    class_names = cache.meta.get("class_names") or [str(i) for i in range(int(labels.max()) + 1)]
    c, g, _ = rae.latent_shape
    model_cfg = dit_config(
        cfg.model,
        in_channels=c,
        grid=g,
        num_classes=len(class_names),
        class_dropout=cfg.class_dropout,
        **cfg.model_args,
    )
    model = DiT(model_cfg).to(device)
    n = len(latents)
    batches = EpochBatches(n, batch, cfg.seed, info.rank, info.world_size) if cfg.sampling == "epoch" else None
    per_epoch = steps_per_epoch(n, batch, info.world_size)
    flipper = _Flipper(rae, cache, device) if cfg.hflip > 0 else None
    alpha = shift_alpha(rae.latent_shape, cfg.shift_base) if cfg.shift else 1.0
    ema = EMA(model, cfg.ema_decay, warmup=cfg.ema_warmup)
    net: torch.nn.Module = model
    if info.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    lr_sched = schedule_of(cfg)
    sched = build_scheduler(opt, lr_sched, cfg.lr, schedule_steps(per_epoch, lr_sched, "train-dit"))
    ckpt = begin.checkpointer
    if begin.resumed:
        begin.load(model=model, optimizer=opt, ema=ema, scheduler=sched)
    start = begin.step
    log_path = run / "train_log.jsonl"

    monitor = _Monitor(cfg, run, rae, alpha, cache.meta, len(class_names), device)
    t0, seen, last = time.perf_counter(), 0, {}
    flops = 3 * model.flops_per_sample()
    with progress_bar(cfg.max_steps - start, f"train {cfg.model}", disable=not info.is_main) as bar:
        for step in range(start, cfg.max_steps):
            gen = step_generator(cfg.seed, info.rank, step)
            idx = batches.batch(step) if batches is not None else torch.randint(0, n, (batch,), generator=gen)
            x, y = latents[idx].to(device), labels[idx].to(device)
            if flipper is not None:
                x = flipper(x, idx, cfg.hflip, gen)
            lr_now = opt.param_groups[0]["lr"]
            try:
                loss, grad_norm = train_step(net, model, opt, x, y, alpha, gen, cfg.grad_clip, precision)
            except FloatingPointError as e:
                raise UserError(
                    f"train-dit: {e} at step {step} ({precision}); "
                    f"stopped; last good checkpoint: {ckpt.latest() or 'none'}"
                ) from None
            sched.step()
            ema.update(model)
            seen += batch
            bar.advance()
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.max_steps:
                elapsed = time.perf_counter() - t0
                last = {
                    "step": step + 1,
                    "epoch": round((step + 1) / per_epoch, 4) if per_epoch else None,
                    "loss": loss.item(),
                    "grad_norm": grad_norm,
                    "lr": lr_now,
                    "samples_per_s": seen * info.world_size / elapsed,
                    "gflops_per_s": seen * flops / elapsed / 1e9,
                    "precision": precision,
                }
                bar.status(f"loss {last['loss']:.4f}")
                if info.is_main:
                    append_jsonl(log_path, last, fsync=False)
            if (step + 1) % cfg.checkpoint_every == 0 and info.is_main:
                begin.save(step + 1, model=model, optimizer=opt, ema=ema, scheduler=sched)
            if info.is_main and step + 1 < cfg.max_steps:
                if cfg.sample_every and (step + 1) % cfg.sample_every == 0:
                    monitor.grid(ema.module, step + 1)
                if cfg.eval_every and (step + 1) % cfg.eval_every == 0:
                    monitor.evaluate(ema.module, step + 1)

    if begin.nothing_to_train:  # model/ and metrics.json are re-made from the checkpoint and its log
        last = begin.final_row() if info.is_main else {"step": start}
    metrics = {
        "steps": cfg.max_steps,
        "model": cfg.model,
        "params": sum(p.numel() for p in model.parameters()),
        "latent_shape": list(rae.latent_shape),
        "shift_alpha": alpha,
        "precision": precision_info,
        "final": last,
    }
    if info.is_main:
        if cfg.max_steps % cfg.checkpoint_every and not begin.nothing_to_train:
            begin.save(cfg.max_steps, model=model, optimizer=opt, ema=ema, scheduler=sched)
        save_dit(run / "model", model, ema.module.state_dict(), rae_dir, alpha, list(class_names))
        monitor.grid(ema.module, cfg.max_steps)
        if cfg.eval_every:
            done = [r for r in read_log(run / "eval_log.jsonl") if r.get("step") == cfg.max_steps]
            metrics["eval"] = done[-1] if done else monitor.evaluate(ema.module, cfg.max_steps)
        metrics.update(begin.metrics())
        run.write_metrics(metrics)
    return metrics
