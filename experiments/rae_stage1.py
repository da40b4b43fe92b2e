"""RAE stage-1 experiments at laptop scale (results in docs/rae.md).

1. Reconstruction quality against decoder size (tiny vs S), same data, steps and batch.
2. Noise-augmented (tau = 0.8, sigma ~ |N(0, tau^2)|) against plain (tau = 0) decoders:
   PSNR / SSIM / rfd_effnet when decoding clean latents and latents with added Gaussian noise of
   sigma in {0, 0.2, 0.5, 0.8}.

Everything runs through genrep's own API on the bundled encoder (EfficientNet-Lite0, block-16
latent 320 x 4 x 4) and Fashion-MNIST. L1 loss only (the perceptual loss and GAN cost more than
the decoder itself on a CPU; see docs/rae.md).

usage: python experiments/rae_stage1.py --out runs/exp_rae_stage1 [--train N] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("GENREP_NO_PROGRESS", "1")

SIGMAS = (0.0, 0.2, 0.5, 0.8)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("runs/exp_rae_stage1"))
    ap.add_argument("--train", type=int, default=10000, help="training images to cache")
    ap.add_argument("--test", type=int, default=500, help="test images to evaluate")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--sizes", nargs="+", default=["tiny", "S"])
    args = ap.parse_args()

    from genrep.rae.encoders import build_encoder
    from genrep.rae.latents import cache_latents
    from genrep.rae.reconstruct import ReconstructConfig, reconstruct
    from genrep.rae.train_decoder import TrainDecoderConfig, train_decoder

    out = args.out
    cache = out / "latents"
    cache_latents(build_encoder("effnet-lite0"), "fashion-mnist", cache, limit=args.train, batch_size=128)
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": {}}
    runs = [(size, 0.8) for size in args.sizes] + [("tiny", 0.0)]
    for size, tau in runs:
        name = f"{size}_tau{tau}"
        run_dir = out / name
        if not (run_dir / "model" / "rae_config.json").exists():
            cfg = TrainDecoderConfig(
                latents=cache,
                decoder=size,
                max_steps=args.steps,
                batch_size=args.batch,
                lr=args.lr,
                warmup_steps=100,
                decay_end_steps=args.steps,  # laptop recipe: cosine over this run, EMA warm-up, no GAN
                ema_warmup=True,
                gan=False,
                noise_tau=tau,
                perceptual="none",
                log_every=50,
                checkpoint_every=500,
                device="cpu",
            )
            train_decoder(cfg, run_dir, resume=True)
        sigmas = SIGMAS if size == "tiny" else (0.0,)
        evals = {}
        for sigma in sigmas:
            m = reconstruct(
                ReconstructConfig(model=run_dir, limit=args.test, latent_noise=sigma, device="cpu"),
                out / f"eval_{name}_sigma{sigma}",
            )
            evals[str(sigma)] = {k: m[k] for k in ("psnr", "ssim", "rfd_effnet")}
            print(name, sigma, evals[str(sigma)], flush=True)
        train_metrics = json.loads((run_dir / "metrics.json").read_text())
        results["runs"][name] = {
            "size": size,
            "tau": tau,
            "params": train_metrics["decoder_params"],
            "final_train": train_metrics["final"],
            "eval": evals,
        }
        (out / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, out)


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, label in (("tiny_tau0.8", "noise-augmented (tau 0.8)"), ("tiny_tau0.0", "plain (tau 0)")):
        ev = results["runs"][name]["eval"]
        xs = [float(s) for s in ev]
        axes[0].plot(xs, [ev[s]["psnr"] for s in ev], marker="o", label=label)
        axes[1].plot(xs, [ev[s]["rfd_effnet"] for s in ev], marker="o", label=label)
    axes[0].set(xlabel="sigma of noise added to the latent", ylabel="PSNR (dB)", title="PSNR")
    axes[1].set(
        xlabel="sigma of noise added to the latent", ylabel="rfd_effnet", title="Frechet distance (EffNet space)"
    )
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "noise_robustness.png", dpi=110)
    print("wrote", out / "noise_robustness.png")


if __name__ == "__main__":
    main()
