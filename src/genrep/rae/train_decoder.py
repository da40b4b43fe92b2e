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

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional

import torch

from genrep.core.config import Bounds, Count, Fraction, NonNeg, NonNegInt, Positive, require_positive
from genrep.core.distributed import init_distributed
from genrep.core.ema import EMA
from genrep.core.errors import UserError
from genrep.core.jsonl import append_jsonl
from genrep.core.progress import progress_bar
from genrep.core.resume import RUN_CONTROL, RunStart, start_run
from genrep.core.rundir import RunDir, atomic_write_bytes
from genrep.core.runtime import pick_device, seed_everything, step_generator
from genrep.rae.autoencoder import RAE
from genrep.rae.data import EpochBatches
from genrep.rae.decoder import DECODER_SIZES, DecoderConfig, DecoderSizeName, ViTDecoder
from genrep.rae.diffaug import reference_diff_augment
from genrep.rae.encoders import build_encoder
from genrep.rae.gan import FeatureDiscriminator, GenLoss, adaptive_weight, generator_loss, reference_d_loss
from genrep.rae.latents import CachedLatents, load_cache
from genrep.rae.losses import build_perceptual_loss, l1_loss
from genrep.rae.noise import add_latent_noise
from genrep.rae.schedule import ScheduleType, build_scheduler, schedule_of, steps_per_epoch
from genrep.rae.train_dit import process_batch, schedule_steps
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
    info = init_distributed()
    batch = process_batch(cfg.batch_size, cfg.global_batch_size, info.world_size, "train-decoder")
    device = pick_device(cfg.device)
    run = RunDir(out)
    begin = start_run(
        "train-decoder",
        cfg,
        run.path,
        resume=resume,
        fresh=fresh,
        may_differ=RESUME_MAY_DIFFER,
        keep_last=cfg.keep_checkpoints,
        is_main=info.is_main,
        lr_follows_steps=False,
    )
    if info.is_main:
        run.write_config(cfg)
    seed_everything(cfg.seed + info.rank)

    assert cfg.latents is not None  # _check
    cache = load_cache(cfg.latents)
    encoder = build_encoder(**cache.meta["encoder"])
    decoder = build_decoder(cache, cfg.decoder, cfg.patch).to(device)
    rae = RAE(encoder, cache.stats, decoder).to(device)
    ema = EMA(decoder, cfg.ema_decay, warmup=cfg.ema_warmup)
    model: torch.nn.Module = decoder
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            decoder, device_ids=[device.index] if device.type == "cuda" else None
        )

    n = len(cache)
    batches = EpochBatches(n, batch, cfg.seed, info.rank, info.world_size) if cfg.sampling == "epoch" else None
    per_epoch = steps_per_epoch(n, batch, info.world_size)
    lr_sched = schedule_of(cfg)
    sched_steps = schedule_steps(per_epoch, lr_sched, "train-decoder")
    opt = torch.optim.AdamW(decoder.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=True)
    sched = build_scheduler(opt, lr_sched, cfg.lr, sched_steps)
    perceptual = None
    if cfg.perceptual != "none" and cfg.perceptual_weight > 0:
        perceptual = build_perceptual_loss(cfg.perceptual, cfg.perceptual_resolution).to(device)

    disc = d_opt = None
    schedulers = {"decoder": sched}
    if cfg.gan:
        disc = FeatureDiscriminator(diffaug=False).to(device)  # augmented here, as the reference
        d_opt = torch.optim.AdamW(
            disc.trainable_parameters(), lr=cfg.disc_lr, betas=cfg.betas, weight_decay=cfg.disc_weight_decay, fused=True
        )
        # the same settings, stepped once per D update (reference src/train_stage1.py:288-289, 458-459)
        schedulers["disc"] = build_scheduler(d_opt, lr_sched, cfg.disc_lr, sched_steps)
    # epochs -> steps as the reference (src/train_stage1.py:347-349); with-replacement sampling counts an epoch
    # as N / world batch steps
    spe = per_epoch if per_epoch else max(1, n // (batch * info.world_size))
    disc_step, gan_step = int(cfg.disc_start_epoch * spe), int(cfg.gan_start_epoch * spe)
    perceptual_step = int(cfg.perceptual_start_epoch * spe)

    def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return reference_diff_augment(x, cfg.diffaug_prob, cfg.diffaug_cutout, generator=gen)

    modules = torch.nn.ModuleDict({"decoder": decoder, **({"disc": disc} if disc is not None else {})})
    optimizers = {"decoder": opt, **({"disc": d_opt} if d_opt is not None else {})}
    ckpt = begin.checkpointer
    if begin.resumed:
        begin.load(model=modules, optimizer=optimizers, ema=ema, scheduler=schedulers)
    start = begin.step
    log_path = run / "train_log.jsonl"

    trainable = num_params(decoder)
    flops_fb = 3 * decoder.flops_per_image()  # forward + backward ~ 3x forward
    t0, seen, last = time.perf_counter(), 0, {}
    with progress_bar(cfg.max_steps - start, f"train decoder {cfg.decoder}", disable=not info.is_main) as bar:
        for step in range(start, cfg.max_steps):
            gen = step_generator(cfg.seed, info.rank, step)
            idx = batches.batch(step) if batches is not None else torch.randint(0, n, (batch,), generator=gen)
            target = cache.target(idx).to(device)
            if cfg.on_the_fly:
                z_clean = encoder.encode(target)
            else:
                z_clean = cache.latents[idx].to(device)
            z = add_latent_noise(z_clean, cfg.noise_tau, cfg.noise_dist, generator=gen)
            lr_now = opt.param_groups[0]["lr"]
            recon = model(z) * rae.pixel_std + rae.pixel_mean
            rec_l1 = l1_loss(recon, target)
            loss = rec_l1
            logs = {"l1": rec_l1.item()}
            if perceptual is not None and step >= perceptual_step:
                p_loss = perceptual(recon, target)
                loss = loss + cfg.perceptual_weight * p_loss
                logs[perceptual.name] = p_loss.item()
            epoch = step / spe
            use_g = disc is not None and cfg.gan_weight > 0 and step >= gan_step
            train_d = disc is not None and cfg.gan_weight > 0 and step >= disc_step
            if use_g:
                assert disc is not None  # use_g needs disc
                disc.eval()
                fake = (augment(recon * 2.0 - 1.0, gen) + 1.0) / 2.0
                g_loss = generator_loss(cfg.gen_loss, disc(fake))
                lam = adaptive_weight(loss, g_loss, decoder.last_layer)
                loss = loss + cfg.gan_weight * lam * g_loss
                logs.update(g_loss=g_loss.item(), gan_lambda=float(lam))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(decoder.parameters(), cfg.grad_clip))
            if not torch.isfinite(loss):
                raise UserError(
                    f"train-decoder: loss became {loss.item()} at step {step}; last good checkpoint: {ckpt.latest()}"
                )
            opt.step()
            sched.step()
            ema.update(decoder)
            if train_d:  # after the decoder step, on a fresh decode with the updated weights
                assert disc is not None and d_opt is not None  # train_d needs disc
                decoder.eval()
                with torch.no_grad():
                    recon_d = decoder(z_clean) * rae.pixel_std + rae.pixel_mean
                decoder.train()
                disc.train()
                d_loss, d_acc = reference_d_loss(disc, target, recon_d, lambda x: augment(x, gen))
                logs.update(d_loss=d_loss.item(), d_accuracy=d_acc.item(), d_lr=d_opt.param_groups[0]["lr"])
                d_opt.zero_grad(set_to_none=True)
                d_loss.backward()
                d_opt.step()
                schedulers["disc"].step()
                disc.eval()
            seen += batch
            bar.advance()
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.max_steps:
                elapsed = time.perf_counter() - t0
                last = {
                    "step": step + 1,
                    "epoch": round(epoch, 4),
                    "loss": loss.item(),
                    **logs,
                    "lr": lr_now,
                    "images_per_s": seen * info.world_size / elapsed,
                    "gflops_per_s": seen * flops_fb / elapsed / 1e9,
                }
                bar.status(f"loss {last['loss']:.4f}")
                if info.is_main:
                    append_jsonl(log_path, last, fsync=False)
            if (step + 1) % cfg.checkpoint_every == 0 and info.is_main:
                begin.save(step + 1, model=modules, optimizer=optimizers, ema=ema, scheduler=schedulers)

    if begin.nothing_to_train:  # model/ and metrics.json are re-made from the checkpoint and its log
        last = begin.final_row() if info.is_main else {"step": start}
    metrics = {
        "steps": cfg.max_steps,
        "decoder": cfg.decoder,
        "decoder_params": trainable,
        "latent_shape": cache.meta["latent_shape"],
        "image_size": decoder.cfg.image_size,
        "perceptual": perceptual.name if perceptual is not None else "none",
        "final": last,
    }
    if info.is_main:
        if cfg.max_steps % cfg.checkpoint_every and not begin.nothing_to_train:
            begin.save(cfg.max_steps, model=modules, optimizer=optimizers, ema=ema, scheduler=schedulers)
        rae.save_pretrained(run / "model", decoder_state=ema.module.state_dict())
        _plot_loss(run, begin)
        metrics.update(begin.metrics())
        run.write_metrics(metrics)
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
