"""Stage-1 training: the RAE's ViT decoder on a frozen encoder's latents (docs/papers.md s1.5, s1.6).

The recipe is the reference code's (bytetriper/RAE src/train_stage1.py:147-579 with
configs/stage1/training/DINOv2-B_decXL.yaml) unless a field says otherwise:

- loss ``L = L1 + w_p * perceptual + w_g * lambda * L_G`` (w_p = 1 with LPIPS from epoch 0,
  w_g = 0.75 from epoch 8, lambda the adaptive weight from the decoder's last layer, eps 1e-6,
  capped at 1e4), ``L_G = -mean(D(aug(x_hat)))`` over per-token logits;
- the latent is noise-augmented during training, ``sigma = tau * U(0, 1)`` (the reference's
  ``noising``; ``noise_dist: abs-normal`` is the paper's ``|N(0, tau^2)|``), tau = 0.8;
- AdamW (2e-4, betas (0.9, 0.95), no weight decay), the reference LR schedule
  (:mod:`genrep.rae.schedule`; paper: linear warm-up from 0 over 1 epoch, cosine to 2e-5 at
  epoch 16), no gradient clipping (``clip_grad: 0.0``), EMA 0.9978 of the decoder updated after
  every step from the first (``ema_warmup`` is genrep's warm-up option);
- the discriminator trains from epoch 6 after each decoder step, on a fresh eval-mode decode of
  the clean latent (no noise) with the updated weights, quantised to 8 bits, real and fake
  DiffAug-ed separately (translation, colour, no cutout), hinge loss on per-token logits, AdamW
  (2e-4, (0.9, 0.95), no weight decay) with the same schedule settings counted in its own
  updates (the reference steps its scheduler only when D trains);
- batches in epochs like the reference's ``DistributedSampler`` + ``drop_last`` loader.

Stand-ins (offline): the discriminator's backbone (EfficientNet-Lite0 for DINO-S/8, see
:mod:`genrep.rae.gan`) and, unless LPIPS' weights are on the machine, the perceptual term
(:mod:`genrep.rae.losses`). The reference's images are resized to 384 and randomly cropped to
256 each step; genrep trains on the cache's centre crops (docs/rae.md). DDP under torchrun,
checkpoints every ``checkpoint_every`` steps and ``--resume`` (``genrep.core.resume``: only the
fields in :data:`RESUME_MAY_DIFFER` may change on resume).

Latents come from a cache (``genrep rae cache-latents``) or, with ``on_the_fly``, from running
the frozen encoder on each batch; both draw the same indices, so they train the same model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional

import torch

from genrep.core.config import Bounds, Count, Fraction, NonNeg, NonNegInt, Positive, require_positive
from genrep.core.distributed import DistInfo
from genrep.core.ema import EMA
from genrep.core.errors import UserError
from genrep.core.progress import progress_bar
from genrep.core.resume import RUN_CONTROL, RunStart
from genrep.core.rundir import RunDir, atomic_write_bytes
from genrep.core.runtime import step_generator
from genrep.rae.autoencoder import RAE
from genrep.rae.data import EpochBatches
from genrep.rae.decoder import DECODER_SIZES, DecoderConfig, DecoderSizeName, ViTDecoder
from genrep.rae.diffaug import reference_diff_augment
from genrep.rae.encoders import FrozenEncoder, build_encoder
from genrep.rae.gan import FeatureDiscriminator, GenLoss, adaptive_weight, generator_loss, reference_d_loss
from genrep.rae.latents import CachedLatents, load_cache
from genrep.rae.losses import PerceptualLoss, build_perceptual_loss, l1_loss
from genrep.rae.noise import add_latent_noise
from genrep.rae.schedule import LRSchedule, ScheduleType, build_scheduler, schedule_of
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
from genrep.rae.vit_parts import num_params


@dataclass
class TrainDecoderConfig:
    """``genrep rae train-decoder`` (configs/rae/train_decoder.yaml)."""

    latents: Optional[Path] = None  # a cache from cache-latents
    decoder: DecoderSizeName = "tiny"
    patch: Optional[Count] = None  # default: image_size // grid
    max_steps: Count = 1000
    batch_size: Count = 64  # per process
    global_batch_size: Optional[Count] = None  # reference training.global_batch_size: batch_size = this / processes
    sampling: Literal["epoch", "with-replacement"] = "epoch"
    lr: Positive = 2e-4
    # the LR schedule (genrep.rae.schedule; the reference's scheduler keys): warm-up from 0 over 1 epoch, cosine
    # to final_lr at epoch 16; a value in steps wins over the one in epochs
    lr_schedule: ScheduleType = "cosine"
    warmup_epochs: Optional[NonNeg] = 1.0
    warmup_steps: Optional[NonNegInt] = None
    decay_end_epoch: Optional[NonNeg] = 16.0
    decay_end_steps: Optional[NonNegInt] = None
    final_lr: Optional[NonNeg] = 2e-5  # None: lr (no decay)
    warmup_from_zero: bool = True
    betas: tuple[Fraction, Fraction] = (0.9, 0.95)
    weight_decay: NonNeg = 0.0
    grad_clip: NonNeg = 0.0  # the reference's clip_grad 0.0: no clipping
    ema_decay: Fraction = 0.9978
    ema_warmup: bool = False  # True: d_t = min(decay, (1+t)/(10+t)) (genrep's option for short runs)
    noise_tau: NonNeg = 0.8
    noise_dist: Literal["uniform", "abs-normal"] = "uniform"  # sigma = tau U(0,1) as the reference code (rae.py:73-76)
    perceptual: Literal["auto", "lpips", "effnet", "none"] = "auto"
    perceptual_weight: NonNeg = 1.0
    perceptual_start_epoch: NonNeg = 0.0
    perceptual_resolution: Annotated[int, Bounds(ge=32)] = (
        128  # effnet distance only: images resized to this short side (>= 32)
    )
    gan: bool = True
    gan_weight: NonNeg = 0.75
    disc_start_epoch: NonNeg = 6.0  # the reference's disc_upd_start
    gan_start_epoch: NonNeg = 8.0  # the reference's disc_start
    gen_loss: GenLoss = "hinge"  # hinge: -mean(D(G)) (the reference's); non-saturating: softplus(-D(G))
    disc_lr: Positive = 2e-4
    disc_weight_decay: NonNeg = 0.0
    diffaug_prob: Fraction = 1.0
    diffaug_cutout: Fraction = 0.0
    on_the_fly: bool = False  # encode each batch instead of reading the cache (benchmarks)
    log_every: Count = 25
    checkpoint_every: Count = 500
    keep_checkpoints: NonNegInt = 2
    seed: int = 0
    device: str = "auto"


# run-control fields that --resume accepts changed; on_the_fly draws the same indices and encodes the same
# images (module docstring), it only trades the cache read for encoder time
RESUME_MAY_DIFFER = (*RUN_CONTROL, "on_the_fly")


def _check(cfg: TrainDecoderConfig) -> None:
    if cfg.latents is None:
        raise UserError("train-decoder: --latents DIR is required (a cache from 'genrep rae cache-latents')")
    if cfg.decoder not in DECODER_SIZES:
        raise UserError(f"train-decoder: unknown decoder size '{cfg.decoder}' (sizes: {', '.join(DECODER_SIZES)})")
    require_positive(cfg, ("max_steps", "batch_size", "log_every", "checkpoint_every"), "train-decoder")
    if cfg.noise_tau < 0:
        raise UserError(f"train-decoder: noise_tau must be >= 0, got {cfg.noise_tau}")


def build_decoder(cache: CachedLatents, size: str, patch: int | None) -> ViTDecoder:
    c, g, _ = cache.meta["latent_shape"]
    image_size = cache.meta["image_size"]
    if patch is None:
        if image_size % g:
            raise UserError(f"image size {image_size} is not a multiple of the latent grid {g}; pass --patch")
        patch = image_size // g
    elif patch * g != image_size:
        raise UserError(f"patch {patch} x grid {g} = {patch * g} != cached image size {image_size}")
    return ViTDecoder(DecoderConfig(latent_channels=c, grid=g, patch=patch, size=size))


def train_decoder(cfg: TrainDecoderConfig, out: str | Path, resume: bool = False, fresh: bool = False) -> dict:
    """Train; writes config.yaml, checkpoints/, train_log.jsonl, model/ (the RAE) and metrics.json.

    ``resume`` continues the run in ``out`` from its latest checkpoint; ``fresh`` deletes that run's
    checkpoints and logs and starts over (without either, ``out`` must not hold checkpoints).
    """
    _check(cfg)
    ts = start_trainer("train-decoder", cfg, out, resume=resume, fresh=fresh, may_differ=RESUME_MAY_DIFFER)
    r = _build(cfg, ts)
    restore_checkpoint(ts, r.state)
    last = _train_loop(cfg, ts, r)
    return _finish(cfg, ts, r, last)


@dataclass
class _DecoderRun:
    """The data, models, optimisers and LR schedules of one train-decoder run (:func:`_build`)."""

    cache: CachedLatents
    encoder: FrozenEncoder
    decoder: ViTDecoder
    rae: RAE
    ema: EMA
    model: torch.nn.Module  # the decoder, in DDP under torchrun
    batches: Optional[EpochBatches]
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    perceptual: Optional[PerceptualLoss]
    disc: Optional[FeatureDiscriminator]
    d_opt: Optional[torch.optim.Optimizer]
    schedulers: dict[str, torch.optim.lr_scheduler.LambdaLR]
    spe: int  # steps per epoch for the epoch-counted starts below
    disc_step: int
    gan_step: int
    perceptual_step: int
    state: dict  # what a checkpoint holds: model=, optimizer=, ema=, scheduler=


def _build_models(cfg: TrainDecoderConfig, device: torch.device, info: DistInfo):
    """The cache, the frozen encoder, the decoder (and its RAE, EMA and DDP wrapper)."""
    assert cfg.latents is not None  # _check
    cache = load_cache(cfg.latents)
    encoder = build_encoder(**cache.meta["encoder"])
    decoder = build_decoder(cache, cfg.decoder, cfg.patch).to(device)
    rae = RAE(encoder, cache.stats, decoder).to(device)
    ema = EMA(decoder, cfg.ema_decay, warmup=cfg.ema_warmup)
    return cache, encoder, decoder, rae, ema, wrap_ddp(decoder, info, device)


def _build_gan(cfg: TrainDecoderConfig, device: torch.device, lr_sched: LRSchedule, sched_steps: int):
    """The discriminator, its AdamW and its LR schedule (all None without ``gan``)."""
    if not cfg.gan:
        return None, None, None
    disc = FeatureDiscriminator(diffaug=False).to(device)  # augmented here, as the reference
    d_opt = torch.optim.AdamW(
        disc.trainable_parameters(), lr=cfg.disc_lr, betas=cfg.betas, weight_decay=cfg.disc_weight_decay, fused=True
    )
    # the same settings, stepped once per D update (reference src/train_stage1.py:288-289, 458-459)
    return disc, d_opt, build_scheduler(d_opt, lr_sched, cfg.disc_lr, sched_steps)


def _build(cfg: TrainDecoderConfig, ts: TrainerStart) -> _DecoderRun:
    """Models, sampler, optimisers, schedules and loss terms, built in the order that fixes the RNG draws."""
    cache, encoder, decoder, rae, ema, model = _build_models(cfg, ts.device, ts.info)
    n, batch, world = len(cache), ts.batch, ts.info.world_size
    batches, per_epoch = epoch_batches(n, batch, cfg.sampling, cfg.seed, ts.info)
    lr_sched = schedule_of(cfg)
    sched_steps = schedule_steps(per_epoch, lr_sched, "train-decoder")
    opt = torch.optim.AdamW(decoder.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=True)
    sched = build_scheduler(opt, lr_sched, cfg.lr, sched_steps)
    perceptual = None
    if cfg.perceptual != "none" and cfg.perceptual_weight > 0:
        perceptual = build_perceptual_loss(cfg.perceptual, cfg.perceptual_resolution).to(ts.device)
    disc, d_opt, d_sched = _build_gan(cfg, ts.device, lr_sched, sched_steps)
    schedulers = {"decoder": sched, **({"disc": d_sched} if d_sched is not None else {})}
    # epochs -> steps as the reference (src/train_stage1.py:347-349); with-replacement sampling counts an epoch
    # as N / world batch steps
    spe = per_epoch if per_epoch else max(1, n // (batch * world))
    modules = torch.nn.ModuleDict({"decoder": decoder, **({"disc": disc} if disc is not None else {})})
    optimizers = {"decoder": opt, **({"disc": d_opt} if d_opt is not None else {})}
    return _DecoderRun(
        cache=cache,
        encoder=encoder,
        decoder=decoder,
        rae=rae,
        ema=ema,
        model=model,
        batches=batches,
        opt=opt,
        sched=sched,
        perceptual=perceptual,
        disc=disc,
        d_opt=d_opt,
        schedulers=schedulers,
        spe=spe,
        disc_step=int(cfg.disc_start_epoch * spe),
        gan_step=int(cfg.gan_start_epoch * spe),
        perceptual_step=int(cfg.perceptual_start_epoch * spe),
        state=dict(model=modules, optimizer=optimizers, ema=ema, scheduler=schedulers),
    )


def _augment(cfg: TrainDecoderConfig, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return reference_diff_augment(x, cfg.diffaug_prob, cfg.diffaug_cutout, generator=gen)


def _train_loop(cfg: TrainDecoderConfig, ts: TrainerStart, r: _DecoderRun) -> dict:
    """Steps ``begin.step .. max_steps``, with log rows and checkpoints; returns the last log row."""
    start, info = ts.begin.step, ts.info
    meter = Throughput(info.world_size, 3 * r.decoder.flops_per_image())  # forward + backward ~ 3x forward
    last: dict = {}
    with progress_bar(cfg.max_steps - start, f"train decoder {cfg.decoder}", disable=not info.is_main) as bar:
        for step in range(start, cfg.max_steps):
            gen = step_generator(cfg.seed, info.rank, step)
            idx = draw_indices(r.batches, step, len(r.cache), ts.batch, gen)
            loss, logs, lr_now = _train_step(cfg, ts, r, step, idx, gen)
            meter.add(ts.batch)
            bar.advance()
            if log_due(step, cfg):
                last = {
                    "step": step + 1,
                    "epoch": round(step / r.spe, 4),
                    "loss": loss.item(),
                    **logs,
                    "lr": lr_now,
                    **meter.rates("images_per_s"),
                }
                write_log_row(ts, bar, last)
            maybe_checkpoint(ts, step, cfg, r.state)
    return last


def _train_step(
    cfg: TrainDecoderConfig, ts: TrainerStart, r: _DecoderRun, step: int, idx: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, dict, float]:
    """One decoder step on the samples ``idx`` (then one discriminator step once it trains).

    Returns (loss, the step's log terms, the LR the step used). A non-finite loss raises UserError
    before any parameter changes.
    """
    target = r.cache.target(idx).to(ts.device)
    if cfg.on_the_fly:
        z_clean = r.encoder.encode(target)
    else:
        z_clean = r.cache.latents[idx].to(ts.device)
    z = add_latent_noise(z_clean, cfg.noise_tau, cfg.noise_dist, generator=gen)
    lr_now = r.opt.param_groups[0]["lr"]
    recon = r.model(z) * r.rae.pixel_std + r.rae.pixel_mean
    loss, logs = _decoder_loss(cfg, r, step, recon, target, gen)
    r.opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(r.decoder.parameters(), cfg.grad_clip))
    if not torch.isfinite(loss):
        raise UserError(
            f"train-decoder: loss became {loss.item()} at step {step}; "
            f"last good checkpoint: {ts.begin.checkpointer.latest()}"
        )
    r.opt.step()
    r.sched.step()
    r.ema.update(r.decoder)
    if r.disc is not None and cfg.gan_weight > 0 and step >= r.disc_step:
        _disc_step(cfg, r, z_clean, target, gen, logs)
    return loss, logs, lr_now


def _decoder_loss(
    cfg: TrainDecoderConfig, r: _DecoderRun, step: int, recon: torch.Tensor, target: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, dict]:
    """``L1 + w_p * perceptual + w_g * lambda * L_G`` with each term from its start step; and its log terms."""
    rec_l1 = l1_loss(recon, target)
    loss = rec_l1
    logs = {"l1": rec_l1.item()}
    if r.perceptual is not None and step >= r.perceptual_step:
        p_loss = r.perceptual(recon, target)
        loss = loss + cfg.perceptual_weight * p_loss
        logs[r.perceptual.name] = p_loss.item()
    if r.disc is not None and cfg.gan_weight > 0 and step >= r.gan_step:
        r.disc.eval()
        fake = (_augment(cfg, recon * 2.0 - 1.0, gen) + 1.0) / 2.0
        g_loss = generator_loss(cfg.gen_loss, r.disc(fake))
        lam = adaptive_weight(loss, g_loss, r.decoder.last_layer)
        loss = loss + cfg.gan_weight * lam * g_loss
        logs.update(g_loss=g_loss.item(), gan_lambda=float(lam))
    return loss, logs


def _disc_step(
    cfg: TrainDecoderConfig,
    r: _DecoderRun,
    z_clean: torch.Tensor,
    target: torch.Tensor,
    gen: torch.Generator,
    logs: dict,
) -> None:
    """One discriminator step, after the decoder step, on a fresh decode with the updated weights."""
    assert r.disc is not None and r.d_opt is not None  # only called with the GAN on
    r.decoder.eval()
    with torch.no_grad():
        recon_d = r.decoder(z_clean) * r.rae.pixel_std + r.rae.pixel_mean
    r.decoder.train()
    r.disc.train()
    d_loss, d_acc = reference_d_loss(r.disc, target, recon_d, lambda x: _augment(cfg, x, gen))
    logs.update(d_loss=d_loss.item(), d_accuracy=d_acc.item(), d_lr=r.d_opt.param_groups[0]["lr"])
    r.d_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    r.d_opt.step()
    r.schedulers["disc"].step()
    r.disc.eval()


def _finish(cfg: TrainDecoderConfig, ts: TrainerStart, r: _DecoderRun, last: dict) -> dict:
    """The final checkpoint, model/ (the RAE with the EMA decoder), figures/loss.png and metrics.json."""
    metrics = {
        "steps": cfg.max_steps,
        "decoder": cfg.decoder,
        "decoder_params": num_params(r.decoder),
        "latent_shape": r.cache.meta["latent_shape"],
        "image_size": r.decoder.cfg.image_size,
        "perceptual": r.perceptual.name if r.perceptual is not None else "none",
        "final": final_row(ts, last),
    }
    if ts.info.is_main:
        save_final_checkpoint(ts, cfg, r.state)
        r.rae.save_pretrained(ts.run / "model", decoder_state=r.ema.module.state_dict())
        _plot_loss(ts.run, ts.begin)
        metrics.update(ts.begin.metrics())
        ts.run.write_metrics(metrics)
    return metrics


def _plot_loss(run: RunDir, begin: RunStart) -> None:
    rows = begin.log_rows()
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genrep.core.images import figure_png

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["step"] for r in rows], [r["l1"] for r in rows], label="L1")
    for key in ("effnet-perceptual", "lpips"):
        if key in rows[0]:
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=key)
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("decoder training loss")
    atomic_write_bytes(run.figures / "loss.png", figure_png(fig))
