"""The RAE section of ``genrep demo``: train a small decoder on the bundled encoder, show reconstructions."""

from __future__ import annotations

from genrep.core.report import Report
from genrep.core.rundir import RunDir

# (training images, decoder steps, batch, test images) per demo profile
PROFILES = {"smoke": (256, 20, 16, 32), "fast": (3000, 600, 64, 200), "full": (20000, 4000, 64, 1000)}


def add_demo_section(report: Report, cfg, run: RunDir) -> dict:
    from genrep.rae.encoders import build_encoder
    from genrep.rae.latents import cache_latents
    from genrep.rae.reconstruct import ReconstructConfig, reconstruct
    from genrep.rae.train_decoder import TrainDecoderConfig, train_decoder

    n_train, steps, batch, n_test = PROFILES[cfg.profile]
    base = run.path / "rae"
    encoder = build_encoder("effnet-lite0")
    cache_latents(encoder, "fashion-mnist", base / "latents", limit=n_train, batch_size=128)
    train_cfg = TrainDecoderConfig(latents=base / "latents", decoder="tiny", max_steps=steps, batch_size=batch,
                                   lr=1e-3, warmup_steps=min(100, steps // 4), perceptual="none", noise_tau=0.8,
                                   log_every=max(1, steps // 20), checkpoint_every=steps, seed=cfg.seed)
    tm = train_decoder(train_cfg, base / "decoder")
    m = reconstruct(ReconstructConfig(model=base / "decoder", limit=n_test, seed=cfg.seed), base / "reconstruct")
    sec = report.section("RAE stage 1: a representation autoencoder on Fashion-MNIST")
    sec.text(
        f"The frozen bundled encoder (EfficientNet-Lite0, latent {tuple(encoder.latent_shape)} per image, "
        f"tokens layer-normalised without affine) encoded {n_train} training images once; a ViT decoder "
        f"(size tiny, {tm['decoder_params'] / 1e6:.1f}M parameters) was trained for {steps} steps of batch {batch} "
        "with L1 loss and noise-augmented latents (sigma ~ |N(0, 0.8^2)|). Reconstructions of held-out test "
        "images (top row originals, bottom row reconstructions):"
    )
    sec.image(base / "reconstruct" / "figures" / "reconstructions.png", "Fashion-MNIST test images and their RAE reconstructions", "rae_reconstructions.png")
    sec.table([{"images": m["num_images"], "PSNR (dB)": round(m["psnr"], 2), "SSIM": round(m["ssim"], 4),
                "rfd_effnet": round(m["rfd_effnet"], 3), "rFID (Inception)": m["rfid"] if m["rfid"] is not None else m["rfid_status"]}])
    sec.text("rfd_effnet is a Frechet distance in the bundled encoder's pooled feature space, not FID. "
             "`genrep rae cache-latents`, `train-decoder` and `reconstruct` run the same steps at any scale.")
    sec.image(base / "decoder" / "figures" / "loss.png", "decoder training loss", "rae_loss.png")
    return {"rae": {"psnr": m["psnr"], "ssim": m["ssim"], "rfd_effnet": m["rfd_effnet"], "decoder_steps": steps}}
