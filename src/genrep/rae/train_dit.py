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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import torch

from genrep.core.config import Count, Fraction, NonNeg, NonNegInt, Positive, read_yaml, require_positive
from genrep.core.ema import EMA
from genrep.core.errors import UserError
from genrep.core.jsonl import append_jsonl, read_log
from genrep.core.progress import progress_bar
from genrep.core.resume import RUN_CONTROL
from genrep.core.rundir import RunDir, atomic_write_bytes
from genrep.core.runtime import resolve_precision, step_generator
from genrep.rae.autoencoder import RAE
from genrep.rae.data import EpochBatches
from genrep.rae.dit import DiT, DiTPreset, dit_config
from genrep.rae.dit_io import save_dit
from genrep.rae.flow import class_balanced_labels, flow_matching_loss, shift_alpha
from genrep.rae.latents import META as LATENT_META
from genrep.rae.latents import CachedLatents, as_numpy_images, load_cache
from genrep.rae.reconstruct import resolve_model_dir
from genrep.rae.sample import SampleConfig, class_grid_png, generate
from genrep.rae.schedule import ScheduleType, build_scheduler, schedule_of
from genrep.rae.trainer_common import (
    Throughput,
    TrainerStart,
    draw_indices,
    epoch_batches,
    final_row,
    log_due,
    maybe_checkpoint,
    restore_checkpoint,
    save_final_checkpoint,
    schedule_steps,
    start_trainer,
    wrap_ddp,
    write_log_row,
)
from genrep.rae.trainer_common import process_batch as process_batch  # re-exported: its home was here

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
    rae_dir, latents_dir = _check(cfg)
    ts = start_trainer(
        "train-dit",
        cfg,
        out,
        resume=resume,
        fresh=fresh,
        may_differ=RESUME_MAY_DIFFER,
        logs=("train_log.jsonl", "eval_log.jsonl"),
    )
    precision, precision_info = _agreed_precision(cfg.precision, ts.device, ts.info)
    if ts.info.is_main:
        print(f"train-dit: precision {precision} ({precision_info['reason']})", file=sys.stderr, flush=True)
    r = _build(cfg, ts, rae_dir, latents_dir)
    restore_checkpoint(ts, r.state)
    monitor = _Monitor(cfg, ts.run, r.rae, r.alpha, r.cache.meta, len(r.class_names), ts.device)
    last = _train_loop(cfg, ts, r, monitor, precision)
    return _finish(cfg, ts, r, monitor, last, precision_info)


def _check(cfg: TrainDiTConfig) -> tuple[Path, Path]:
    """The RAE directory and the latent cache to train on; a wrong --rae or --latents fails here,
    before anything is written."""
    if cfg.rae is None:
        raise UserError("train-dit: --rae DIR is required (a trained RAE or train-decoder --out)")
    require_positive(cfg, ("max_steps", "batch_size", "log_every", "checkpoint_every"), "train-dit")
    rae_dir = resolve_model_dir(cfg.rae)
    latents_dir = cfg.latents or _latent_cache_of(rae_dir)
    if not (Path(latents_dir) / LATENT_META).is_file():
        raise UserError(f"{latents_dir}: not a latent cache (no {LATENT_META}; run 'genrep rae cache-latents')")
    return rae_dir, latents_dir


@dataclass
class _DiTRun:
    """The data, model, optimiser and LR schedule of one train-dit run (:func:`_build`)."""

    rae_dir: Path
    rae: RAE
    cache: CachedLatents
    latents: torch.Tensor  # normalised with the RAE's statistics
    labels: torch.Tensor
    class_names: list[str]
    model: DiT
    batches: Optional[EpochBatches]
    per_epoch: int
    flipper: Optional[_Flipper]
    alpha: float
    ema: EMA
    net: torch.nn.Module  # the model, in DDP under torchrun
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    state: dict  # what a checkpoint holds: model=, optimizer=, ema=, scheduler=


def _build(cfg: TrainDiTConfig, ts: TrainerStart, rae_dir: Path, latents_dir: Path) -> _DiTRun:
    """The RAE, the cache, the DiT (its EMA and DDP wrapper), the sampler, the flip, AdamW and the LR
    schedule, built in the order that fixes the RNG draws."""
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
    model = DiT(model_cfg).to(ts.device)
    batches, per_epoch = epoch_batches(len(latents), ts.batch, cfg.sampling, cfg.seed, ts.info)
    flipper = _Flipper(rae, cache, ts.device) if cfg.hflip > 0 else None
    alpha = shift_alpha(rae.latent_shape, cfg.shift_base) if cfg.shift else 1.0
    ema = EMA(model, cfg.ema_decay, warmup=cfg.ema_warmup)
    net = wrap_ddp(model, ts.info, ts.device)
    # fused: one kernel per step for all parameters (as the decoder's); 1.04-1.08x on the demo's DiT^DH-micro step
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=True)
    lr_sched = schedule_of(cfg)
    sched = build_scheduler(opt, lr_sched, cfg.lr, schedule_steps(per_epoch, lr_sched, "train-dit"))
    return _DiTRun(
        rae_dir=rae_dir,
        rae=rae,
        cache=cache,
        latents=latents,
        labels=labels,
        class_names=class_names,
        model=model,
        batches=batches,
        per_epoch=per_epoch,
        flipper=flipper,
        alpha=alpha,
        ema=ema,
        net=net,
        opt=opt,
        sched=sched,
        state=dict(model=model, optimizer=opt, ema=ema, scheduler=sched),
    )


def _train_loop(cfg: TrainDiTConfig, ts: TrainerStart, r: _DiTRun, monitor: _Monitor, precision: str) -> dict:
    """Steps ``begin.step .. max_steps``, with log rows, checkpoints and the periodic sample grids and
    evaluations; returns the last log row."""
    start, info = ts.begin.step, ts.info
    meter = Throughput(info.world_size, 3 * r.model.flops_per_sample())
    last: dict = {}
    with progress_bar(cfg.max_steps - start, f"train {cfg.model}", disable=not info.is_main) as bar:
        for step in range(start, cfg.max_steps):
            loss, grad_norm, lr_now = _optimise_step(cfg, ts, r, step, precision)
            meter.add(ts.batch)
            bar.advance()
            if log_due(step, cfg):
                last = {
                    "step": step + 1,
                    "epoch": round((step + 1) / r.per_epoch, 4) if r.per_epoch else None,
                    "loss": loss.item(),
                    "grad_norm": grad_norm,
                    "lr": lr_now,
                    **meter.rates("samples_per_s"),
                    "precision": precision,
                }
                write_log_row(ts, bar, last)
            maybe_checkpoint(ts, step, cfg, r.state)
            if info.is_main and step + 1 < cfg.max_steps:
                _periodic_monitor(cfg, monitor, r.ema.module, step + 1)
    return last


def _optimise_step(
    cfg: TrainDiTConfig, ts: TrainerStart, r: _DiTRun, step: int, precision: str
) -> tuple[torch.Tensor, float, float]:
    """Draw step ``step``'s batch (flipped with ``hflip``), :func:`train_step` on it, then the LR
    schedule and the EMA. Returns (loss, grad norm, the LR the step used); a non-finite loss is a
    UserError naming the last good checkpoint."""
    gen = step_generator(cfg.seed, ts.info.rank, step)
    idx = draw_indices(r.batches, step, len(r.latents), ts.batch, gen)
    x, y = r.latents[idx].to(ts.device), r.labels[idx].to(ts.device)
    if r.flipper is not None:
        x = r.flipper(x, idx, cfg.hflip, gen)
    lr_now = r.opt.param_groups[0]["lr"]
    try:
        loss, grad_norm = train_step(r.net, r.model, r.opt, x, y, r.alpha, gen, cfg.grad_clip, precision)
    except FloatingPointError as e:
        raise UserError(
            f"train-dit: {e} at step {step} ({precision}); "
            f"stopped; last good checkpoint: {ts.begin.checkpointer.latest() or 'none'}"
        ) from None
    r.sched.step()
    r.ema.update(r.model)
    return loss, grad_norm, lr_now


def _periodic_monitor(cfg: TrainDiTConfig, monitor: _Monitor, ema_model: torch.nn.Module, step: int) -> None:
    """A sample grid every ``sample_every`` and an evaluation every ``eval_every`` steps (rank 0, not
    at the last step: :func:`_finish` does those)."""
    if cfg.sample_every and step % cfg.sample_every == 0:
        monitor.grid(ema_model, step)
    if cfg.eval_every and step % cfg.eval_every == 0:
        monitor.evaluate(ema_model, step)


def _finish(
    cfg: TrainDiTConfig, ts: TrainerStart, r: _DiTRun, monitor: _Monitor, last: dict, precision_info: dict
) -> dict:
    """The final checkpoint, model/ (the EMA DiT), the last sample grid and evaluation, metrics.json."""
    metrics = {
        "steps": cfg.max_steps,
        "model": cfg.model,
        "params": sum(p.numel() for p in r.model.parameters()),
        "latent_shape": list(r.rae.latent_shape),
        "shift_alpha": r.alpha,
        "precision": precision_info,
        "final": final_row(ts, last),
    }
    if ts.info.is_main:
        save_final_checkpoint(ts, cfg, r.state)
        save_dit(ts.run / "model", r.model, r.ema.module.state_dict(), r.rae_dir, r.alpha, list(r.class_names))
        monitor.grid(r.ema.module, cfg.max_steps)
        if cfg.eval_every:
            done = [row for row in read_log(ts.run / "eval_log.jsonl") if row.get("step") == cfg.max_steps]
            metrics["eval"] = done[-1] if done else monitor.evaluate(r.ema.module, cfg.max_steps)
        metrics.update(ts.begin.metrics())
        ts.run.write_metrics(metrics)
    return metrics
