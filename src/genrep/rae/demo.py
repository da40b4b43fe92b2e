"""The RAE sections of ``genrep demo``: train a small decoder on the bundled encoder and show
reconstructions (stage 1), then train a DiT^DH in its latent and show class-conditional samples (stage 2).

Every number the section prints is measured in the run; the text says what the budget can and cannot
show. ``class_accuracy`` of the generated images is set beside the same classifier's accuracy on the
decoder's *reconstructions* of real test images: what the decoder's blur leaves recognisable of real
latents. Guided samples are their classes' typical members, so they can score somewhat above it; far
below it, the DiT is what limits them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from genrep.core.report import Report
from genrep.core.rundir import RunDir

if TYPE_CHECKING:
    from genrep.rae.dit import DiTPreset


@dataclass(frozen=True)
class RAEDemoProfile:
    encoder_layer: str  # the effnet-lite0 layer whose tokens are the latent (genrep.rae.encoders.EFFNET_LAYERS)
    encoder_size: int  # the encoder's input resolution (the 28-px images are resized to it)
    train_images: int  # Fashion-MNIST training images encoded once (the latent cache)
    decoder_steps: int
    decoder_batch: int
    decoder_lr: float
    test_images: int  # held-out images reconstructed
    dit_model: DiTPreset  # a DiT preset (genrep.rae.dit.DIT_PRESETS)
    dit_steps: int
    dit_batch: int
    dit_lr: float
    generated: int  # class-balanced samples
    sample_steps: int  # grid points of the sampler (the reference's num_steps): sample_steps - 1 Euler steps
    cfg_scale: float
    real_images: int  # real test images for fd_effnet / precision / recall (2x training images for the classifier)


# fast: block11 at 64 px (112 x 4 x 4) rather than block16 at 128 px (320 x 4 x 4): encoding is 4x cheaper, the
# tiny decoder's reconstructions are more recognisable at equal steps, and a DiT^DH wider than the 112-d token
# learns to use the class label within ~25k samples (docs/rae.md, "The demo's stage 2")
PROFILES = {
    "smoke": RAEDemoProfile("block11", 64, 256, 20, 16, 1e-3, 32, "ditdh-micro", 6, 8, 5e-4, 20, 4, 2.0, 40),
    "fast": RAEDemoProfile("block11", 64, 3000, 500, 64, 3e-3, 100, "ditdh-micro", 900, 32, 4e-3, 200, 20, 4.0, 150),
    "full": RAEDemoProfile(
        "block16", 128, 20000, 4000, 64, 1e-3, 1000, "ditdh-tiny", 3000, 64, 5e-4, 500, 50, 3.0, 1000
    ),
}


def add_demo_section(report: Report, cfg, run: RunDir) -> dict:
    from genrep.rae.encoders import build_encoder
    from genrep.rae.latents import cache_latents
    from genrep.rae.reconstruct import ReconstructConfig, reconstruct
    from genrep.rae.train_decoder import TrainDecoderConfig, train_decoder

    p = PROFILES[cfg.profile]
    base = run.path / "rae"
    encoder = build_encoder("effnet-lite0", input_size=p.encoder_size, layer=p.encoder_layer)
    cache_latents(encoder, "fashion-mnist", base / "latents", limit=p.train_images, batch_size=128)
    train_cfg = TrainDecoderConfig(
        latents=base / "latents",
        decoder="tiny",
        max_steps=p.decoder_steps,
        batch_size=p.decoder_batch,
        lr=p.decoder_lr,
        # laptop choices (the reference recipe is in configs/rae/paper-decoder-xl.yaml): warm-up over the first
        # quarter, cosine to the end of this short run, EMA warm-up, the GAN off (it would start at epoch 6)
        warmup_steps=min(100, p.decoder_steps // 4),
        decay_end_steps=p.decoder_steps,
        ema_warmup=True,
        gan=False,
        grad_clip=1.0,
        perceptual="none",
        noise_tau=0.8,
        log_every=max(1, p.decoder_steps // 20),
        checkpoint_every=p.decoder_steps,
        seed=cfg.seed,
    )
    tm = train_decoder(train_cfg, base / "decoder", fresh=True)  # a demo re-run replaces the last one
    m = reconstruct(ReconstructConfig(model=base / "decoder", limit=p.test_images, seed=cfg.seed), base / "reconstruct")
    sec = report.section("RAE stage 1: a representation autoencoder on Fashion-MNIST")
    sec.text(
        f"The frozen bundled encoder (EfficientNet-Lite0 at {p.encoder_size} px, layer {p.encoder_layer}: latent "
        f"{tuple(encoder.latent_shape)} per image, "
        f"tokens layer-normalised without affine) encoded {p.train_images} training images once; a ViT decoder "
        f"(size tiny, {tm['decoder_params'] / 1e6:.1f}M parameters) was trained for {p.decoder_steps} steps of batch "
        f"{p.decoder_batch} with L1 loss and noise-augmented latents (sigma ~ 0.8 U(0, 1), the reference code's draw). Reconstructions of "
        "held-out test images (top row originals, bottom row reconstructions):"
    )
    sec.image(
        base / "reconstruct" / "figures" / "reconstructions.png",
        "Fashion-MNIST test images and their RAE reconstructions",
        "rae_reconstructions.png",
    )
    sec.table(
        [
            {
                "images": m["num_images"],
                "PSNR (dB)": round(m["psnr"], 2),
                "SSIM": round(m["ssim"], 4),
                "rfd_effnet": round(m["rfd_effnet"], 3),
                "rFID (Inception)": m["rfid"] if m["rfid"] is not None else m["rfid_status"],
            }
        ]
    )
    sec.text(
        "rfd_effnet is a Frechet distance in the bundled encoder's pooled feature space, not FID. "
        "`genrep rae cache-latents`, `train-decoder` and `reconstruct` run the same steps at any scale."
    )
    sec.image(base / "decoder" / "figures" / "loss.png", "decoder training loss", "rae_loss.png")
    result = {"psnr": m["psnr"], "ssim": m["ssim"], "rfd_effnet": m["rfd_effnet"], "decoder_steps": p.decoder_steps}
    result.update(_stage2(report, cfg, p, base))
    return {"rae": result}


def reconstruction_class_accuracy(rae_dir, n: int, eval_cfg, features, offset: int = 5000) -> float:
    """The class-accuracy classifier of :func:`genrep.rae.evaluate.score_images` on the RAE's
    reconstructions of ``n`` real test images (from index ``offset``, away from the images the
    evaluation's real statistics use): how recognisable the decoder leaves real latents."""
    import torch

    from genrep.core import assets
    from genrep.rae.autoencoder import RAE
    from genrep.rae.evaluate import score_images
    from genrep.rae.latents import as_numpy_images
    from genrep.rae.reconstruct import resolve_model_dir

    rae = RAE.from_pretrained(resolve_model_dir(rae_dir))
    ds = assets.load("fashion-mnist", split="test")
    idx = np.arange(offset, offset + n) % len(ds.labels)
    x = torch.from_numpy(ds.images[idx]).float().div(255)
    x = x[:, None].repeat(1, 3, 1, 1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    with torch.no_grad():
        recon = rae(x).clamp(0, 1)
    return float(score_images(as_numpy_images(recon), ds.labels[idx], eval_cfg, features)["class_accuracy"])


def _train_dit(cfg, p: RAEDemoProfile, base) -> dict:
    """Stage 2's training run (``base / "dit"``); its metrics."""
    from genrep.rae.train_dit import TrainDiTConfig, train_dit

    return train_dit(
        TrainDiTConfig(
            rae=base / "decoder",
            model=p.dit_model,
            max_steps=p.dit_steps,
            batch_size=p.dit_batch,
            lr=p.dit_lr,
            # laptop choices (the reference recipe: configs/rae/paper-ditdh-xl-256.yaml): constant LR after a short
            # warm-up, EMA warm-up, no flips (they re-encode half of every batch)
            warmup_steps=min(30, p.dit_steps // 4),
            warmup_from_zero=True,
            warmup_epochs=None,
            decay_end_epoch=None,
            final_lr=None,
            ema_warmup=True,
            hflip=0.0,
            log_every=max(1, p.dit_steps // 20),
            checkpoint_every=p.dit_steps,
            seed=cfg.seed,
            precision="auto",
        ),
        base / "dit",
        fresh=True,
    )


def _sample_and_score(cfg, p: RAEDemoProfile, base) -> tuple[dict, dict, float]:
    """Class-balanced CFG samples of the trained DiT, their evaluation, and the reconstructions' class accuracy."""
    from genrep.rae.evaluate import EvalConfig, evaluate
    from genrep.rae.metrics import EffNetFeatures
    from genrep.rae.sample import SampleConfig, sample

    sm = sample(
        SampleConfig(
            dit=base / "dit",
            num=p.generated,
            steps=p.sample_steps,
            guidance="cfg",
            scale=p.cfg_scale,
            interval=(0.0, 1.0),
            per_class=p.generated // 10,
            seed=cfg.seed,
        ),
        base / "samples",
    )
    ecfg = EvalConfig(samples=base / "samples", real_limit=p.real_images, classifier_train=2 * p.real_images)
    em = evaluate(ecfg, base / "eval")
    recon_acc = reconstruction_class_accuracy(base / "decoder", p.generated, ecfg, EffNetFeatures())
    return sm, em, recon_acc


def _stage2(report: Report, cfg, p: RAEDemoProfile, base) -> dict:
    from genrep.rae.dit import DIT_PRESETS

    tm = _train_dit(cfg, p, base)
    sm, em, recon_acc = _sample_and_score(cfg, p, base)
    d = DIT_PRESETS[p.dit_model]
    sec = report.section("RAE stage 2: class-conditional generation in the encoder's latent")
    sec.text(
        f"A DiT^DH (preset {p.dit_model}: backbone {d['width']} wide x {d['depth']}, DDT head {d['head_width']} wide "
        f"x {d['head_depth']}; {tm['params'] / 1e6:.1f}M "
        f"parameters) was trained with flow matching in the normalised latent {tuple(tm['latent_shape'])} for "
        f"{p.dit_steps} steps of batch {p.dit_batch} (schedule shift alpha = sqrt(m / 4096) = {tm['shift_alpha']:.3f}; "
        f"precision {tm['precision']['chosen']}: {tm['precision']['reason']}). Samples: {p.sample_steps - 1} Euler steps on the reference grid ({p.sample_steps} points from t = 1 to shift(0.001)), "
        f"classifier-free guidance {p.cfg_scale} at every t, decoded by the stage-1 decoder; one row per class ("
        + ", ".join(sm["class_names"] or [])
        + ")."
    )
    sec.image(
        base / "samples" / "figures" / "grid.png", "generated Fashion-MNIST, one row per class", "rae_generated.png"
    )
    se = float(np.sqrt(max(em["class_accuracy"] * (1 - em["class_accuracy"]), 1e-12) / em["num_fake"]))
    sec.table(
        [
            {
                "generated": em["num_fake"],
                "fd_effnet": round(em["fd_effnet"], 2),
                "precision": round(em["precision"], 3),
                "recall": round(em["recall"], 3),
                "class_accuracy": f"{em['class_accuracy']:.3f} +- {se:.3f}",
                "same classifier on reconstructions": round(recon_acc, 3),
                "on real images": round(em["classifier_real_accuracy"], 3),
            }
        ]
    )
    faithful = em["class_accuracy"] >= 0.5
    seen = p.dit_steps * p.dit_batch
    sec.text(
        "class_accuracy: the share of generated images that a linear classifier on real EfficientNet features "
        f"assigns to the class they were generated for (chance 0.1; +- one binomial standard error). The same "
        f"classifier recognises {recon_acc:.0%} of the decoder's reconstructions of real test images: what the "
        "decoder's blur leaves recognisable of real latents (guided samples, each its class's typical member, can "
        "score above it). fd_effnet is not FID. "
        + (
            f"The rows hold their classes: a DiT^DH that has seen {seen:,} latents uses the label, and guidance "
            "makes each row its class's typical garment; the blur is the small decoder's (its reconstructions above). "
            if faithful
            else f"At this budget ({p.dit_steps} DiT steps, {p.decoder_steps} decoder steps) the generated rows are "
            f"{'above chance but ' if em['class_accuracy'] - 2 * se > 0.1 else ''}not class-faithful; what limits "
            f"them is measured above: the decoder's blur (its reconstructions are {recon_acc:.0%} recognisable) and a "
            f"DiT that has seen {seen:,} latents (a DiT^DH starts using the label after ~25k). "
        )
        + "docs/rae.md has longer runs and the paper's four stage-2 findings; `genrep rae train-dit`, `sample` and "
        "`eval` run the same steps at any scale."
    )
    return {
        "dit_steps": p.dit_steps,
        "fd_effnet": em["fd_effnet"],
        "class_accuracy": em["class_accuracy"],
        "class_accuracy_se": se,
        "reconstruction_class_accuracy": recon_acc,
        "dit_precision": tm["precision"],
    }
