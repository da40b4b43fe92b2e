"""RAE stage-2 experiments at laptop scale (results in docs/rae.md): the paper's four findings.

  width    (a) overfit ONE latent with plain DiTs of widths below and at/above the latent channel
               count (320); final loss against the information floor max(0, 1 - width / channels).
  shift    (b) the dimension-dependent schedule shift on against off at equal training, on a latent
               with a shift far from 1 (block-16 at 256 px: 320 x 8 x 8, alpha = sqrt(20480/4096) = 2.24).
  head     (c) DiT against DiT^DH at about equal FLOPs per sample, equal steps and batch.
  decoder  (d) noise-augmented (tau 0.8) against plain decoder: the same generated latents decoded by
               each, FD of the generated images.

Everything runs through genrep's API on the bundled encoder and Fashion-MNIST; each part skips the
runs whose outputs exist, so re-running continues.

usage: python experiments/rae_stage2.py PART [PART ...] --out runs/exp_rae_stage2
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("GENREP_NO_PROGRESS", "1")

STAGE1 = Path("runs/exp_rae_stage1")  # experiments/rae_stage1.py: latents (10k, 128 px) and decoders
FIGURES = Path("docs/figures/rae")


# laptop recipe for the short runs here (the reference's is configs/rae/paper-ditdh-xl-256.yaml): constant LR
# after genrep's default warm-up, EMA warm-up, no flips (each would re-encode half of every batch)
LAPTOP_DIT = dict(warmup_epochs=None, decay_end_epoch=None, final_lr=None, ema_warmup=True, hflip=0.0)


def _save(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


def _sample_eval(dit: Path, out: Path, num: int, rae: Path | None = None) -> dict:
    from genrep.rae.evaluate import EvalConfig, evaluate
    from genrep.rae.sample import SampleConfig, sample

    if not (out / "eval" / "metrics.json").exists():
        sample(SampleConfig(dit=dit, num=num, steps=50, rae=rae, device="cpu"), out / "samples")
        evaluate(
            EvalConfig(samples=out / "samples", real_limit=1000, classifier_train=2000, device="cpu"), out / "eval"
        )
    m = json.loads((out / "eval" / "metrics.json").read_text())
    return {k: m[k] for k in ("fd_effnet", "precision", "recall", "class_accuracy", "classifier_real_accuracy")}


def _train(
    rae: Path, out: Path, model: str, steps: int, batch: int, lr: float, latents: Path | None = None, **kw
) -> dict:
    from genrep.rae.train_dit import TrainDiTConfig, train_dit

    if not (out / "metrics.json").exists():
        cfg = TrainDiTConfig(
            rae=rae,
            latents=latents,
            model=model,
            max_steps=steps,
            batch_size=batch,
            lr=lr,
            log_every=25,
            checkpoint_every=200,
            device="cpu",
            **{**LAPTOP_DIT, **kw},
        )
        train_dit(cfg, out, resume=True)
    return json.loads((out / "metrics.json").read_text())


def _loss_curve(run: Path) -> tuple[list[int], list[float]]:
    rows = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows], [r["loss"] for r in rows]


def exp_width(args) -> dict:
    """(a) docs/papers.md s1.8: the single-sample loss reaches ~0 only when width >= channels."""
    import torch

    from genrep.core.progress import track
    from genrep.rae.dit import DiT, dit_config
    from genrep.rae.flow import flow_matching_loss, shift_alpha
    from genrep.rae.latents import load_cache

    cache = load_cache(STAGE1 / "latents")
    x0 = cache.stats.normalize(cache.latents[:1])  # one training latent, 320 x 4 x 4
    c, g = x0.shape[1], x0.shape[2]
    alpha = shift_alpha(tuple(x0.shape[1:]))
    y0 = cache.labels[:1]
    results = {}
    for width in args.widths:
        torch.manual_seed(0)
        cfg = dit_config(
            "dit-tiny",
            in_channels=c,
            grid=g,
            num_classes=10,
            class_dropout=0.0,
            width=width,
            depth=args.width_depth,
            heads=max(1, width // 64),
        )
        model = DiT(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=args.width_lr, betas=(0.9, 0.95), weight_decay=0.0)
        gen = torch.Generator().manual_seed(1)
        x, y = x0.expand(args.width_batch, -1, -1, -1), y0.expand(args.width_batch)
        curve = []
        for step in track(range(args.width_steps), f"overfit width {width}"):
            loss = flow_matching_loss(model, x, y, alpha, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            curve.append(loss.item())
        model.eval()
        with torch.no_grad():  # the converged loss on 1024 fresh (t, eps) draws
            g_eval = torch.Generator().manual_seed(123)
            final = (
                sum(
                    flow_matching_loss(
                        model, x0.expand(256, -1, -1, -1), y0.expand(256), alpha, generator=g_eval
                    ).item()
                    for _ in range(4)
                )
                / 4
            )
        results[width] = {
            "final_loss": final,
            "floor": max(0.0, 1.0 - width / c),
            "params": sum(p.numel() for p in model.parameters()),
            "curve": curve,
        }
        print(f"width {width}: final loss {final:.4f} (floor {max(0.0, 1 - width / c):.3f})", flush=True)
    _plot_width(results, c, FIGURES / "stage2_width.png")
    return {
        "channels": c,
        "tokens": g * g,
        "depth": args.width_depth,
        "steps": args.width_steps,
        "batch": args.width_batch,
        "lr": args.width_lr,
        "runs": {str(w): {k: v for k, v in r.items() if k != "curve"} for w, r in results.items()},
    }


def _plot_width(results: dict, channels: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for w, r in results.items():
        curve = np.convolve(r["curve"], np.ones(25) / 25, mode="valid")
        ax1.plot(curve, label=f"width {w}" + (" (< channels)" if w < channels else ""))
    ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_ylabel("flow-matching loss (25-step mean)")
    ax1.set_title("overfitting one latent (320 x 4 x 4)")
    ax1.legend(fontsize=8)
    ws = sorted(results)
    ax2.plot(ws, [results[w]["final_loss"] for w in ws], "o-", label="final loss")
    grid = np.linspace(min(ws), max(ws), 200)
    ax2.plot(grid, np.maximum(0, 1 - grid / channels), "--", label="floor max(0, 1 - width/channels)")
    ax2.axvline(channels, color="grey", lw=0.8)
    ax2.set_xlabel("DiT width")
    ax2.set_ylabel("loss")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def exp_shift(args) -> dict:
    """(b) the schedule shift on a latent with alpha = 2.24 (Table: w/o shift gFID 23.08, with 4.81)."""
    from genrep.rae.encoders import build_encoder
    from genrep.rae.latents import cache_latents
    from genrep.rae.train_decoder import TrainDecoderConfig, train_decoder

    base = args.out / "shift"
    cache = base / "latents_256px"
    # target images at 32 px: the decoder's output grid (8 x 8 tokens) must divide the image size
    cache_latents(
        build_encoder("effnet-lite0", input_size=256),
        "fashion-mnist",
        cache,
        limit=args.shift_train,
        batch_size=64,
        image_size=32,
    )
    rae = base / "rae_256px"
    if not (rae / "model" / "rae_config.json").exists():
        train_decoder(
            TrainDecoderConfig(
                latents=cache,
                decoder="tiny",
                max_steps=args.shift_decoder_steps,
                batch_size=32,
                lr=1e-3,
                warmup_steps=50,
                decay_end_steps=args.shift_decoder_steps,  # laptop recipe: cosine over this run, EMA warm-up, no GAN
                ema_warmup=True,
                gan=False,
                noise_tau=0.8,
                perceptual="none",
                log_every=50,
                checkpoint_every=200,
                device="cpu",
            ),
            rae,
            resume=True,
        )
    runs = {}
    for shift in (True, False):
        name = "shift_on" if shift else "shift_off"
        m = _train(rae, base / name, args.model, args.shift_steps, args.shift_batch, args.lr, shift=shift)
        runs[name] = {
            "shift_alpha": m["shift_alpha"],
            "final_loss": m["final"]["loss"],
            **_sample_eval(base / name, base / f"gen_{name}", args.num),
        }
        print(name, runs[name], flush=True)
    _plot_curves(
        {k: base / k for k in runs}, base / "loss.png", "schedule shift (320 x 8 x 8)"
    )  # not comparable across runs
    return {
        "latent": "effnet-lite0 block16 at 256 px: 320 x 8 x 8",
        "model": args.model,
        "steps": args.shift_steps,
        "batch": args.shift_batch,
        "runs": runs,
    }


def _plot_curves(runs: dict[str, Path], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, run in runs.items():
        ax.plot(*_loss_curve(run), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (own time distribution)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def exp_head(args) -> dict:
    """(c) DiT vs DiT^DH at about equal forward FLOPs per sample."""
    from genrep.rae.dit import DiT, dit_config

    rae = STAGE1 / "S_tau0.8"
    base = args.out / "head"
    runs = {}
    specs = {"ditdh-tiny": ("ditdh-tiny", {}), f"dit-{args.dit_width}x{args.dit_depth}": ("dit-tiny", {})}
    for name, (preset, _) in specs.items():
        extra = (
            {} if name == "ditdh-tiny" else dict(width=args.dit_width, depth=args.dit_depth, heads=args.dit_width // 64)
        )
        flops = DiT(dit_config(preset, in_channels=320, grid=4, num_classes=10, **extra)).flops_per_sample()
        m = _train(rae, base / name, preset, args.head_steps, args.head_batch, args.lr, model_args=extra)
        runs[name] = {
            "gflops_per_sample": flops / 1e9,
            "params": m["params"],
            "final_loss": m["final"]["loss"],
            **_sample_eval(base / name, base / f"gen_{name}", args.num),
        }
        print(name, runs[name], flush=True)
    _plot_curves({k: base / k for k in runs}, FIGURES / "stage2_head_loss.png", "DiT vs DiT^DH (320 x 4 x 4)")
    return {"steps": args.head_steps, "batch": args.head_batch, "runs": runs}


def exp_decoder(args) -> dict:
    """(d) decode the same generated latents with the plain and the noise-augmented decoder."""
    runs = {}
    for name in ("tiny_tau0.0", "tiny_tau0.8"):
        runs[name] = _sample_eval(args.dit, args.out / "decoder" / name, args.num, rae=STAGE1 / name)
        print(name, runs[name], flush=True)
    return {"dit": str(args.dit), "runs": runs}


PARTS = {"width": exp_width, "shift": exp_shift, "head": exp_head, "decoder": exp_decoder}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("parts", nargs="+", choices=list(PARTS))
    ap.add_argument("--out", type=Path, default=Path("runs/exp_rae_stage2"))
    ap.add_argument("--num", type=int, default=300, help="generated images per evaluation")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--model", default="ditdh-tiny")
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 384, 512])
    ap.add_argument("--width-depth", type=int, default=2)
    ap.add_argument("--width-steps", type=int, default=1500)
    ap.add_argument("--width-batch", type=int, default=16)
    ap.add_argument("--width-lr", type=float, default=1e-3)
    ap.add_argument("--shift-train", type=int, default=10000)
    ap.add_argument("--shift-decoder-steps", type=int, default=600)
    ap.add_argument("--shift-steps", type=int, default=400)
    ap.add_argument("--shift-batch", type=int, default=32)
    ap.add_argument("--head-steps", type=int, default=600)
    ap.add_argument("--head-batch", type=int, default=64)
    ap.add_argument("--dit-width", type=int, default=384)
    ap.add_argument("--dit-depth", type=int, default=7)
    ap.add_argument(
        "--dit", type=Path, default=Path("runs/exp_dit_try"), help="(d): a DiT trained on the stage-1 latents"
    )
    args = ap.parse_args()
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for part in args.parts:
        results[part] = PARTS[part](args)
        _save(results_path, results)


if __name__ == "__main__":
    main()
