"""fp32 against bf16 autocast for the demo's DiT^DH-tiny: loss curves and step time, one process.

Both runs use ``genrep.rae.train_dit.train_step`` on the same synthetic-but-fixed latent batch stream
(320 x 4 x 4, the bundled encoder's shape; unit-variance latents with a per-class mean, so the loss
falls as the model learns the classes), the same initial weights, times and noise per step. Writes
``docs/figures/benchmarks/precision_loss.png`` and prints a Markdown table; also prints the
``precision: auto`` probe of this machine.

usage: python bench/precision.py [--steps 40] [--batch 64] [--out docs/figures/benchmarks]
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch


def run(precision: str, steps: int, batch: int, model0, data) -> tuple[list[float], float]:
    from genrep.rae.flow import shift_alpha
    from genrep.rae.train_dit import train_step

    model = copy.deepcopy(model0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95), weight_decay=0.0)
    alpha = shift_alpha((320, 4, 4))
    losses, t0 = [], time.perf_counter()
    for step in range(steps):
        x, y = data(step, batch)
        gen = torch.Generator().manual_seed(1000 + step)
        loss, _ = train_step(model, model, opt, x, y, alpha, gen, 1.0, precision)
        losses.append(loss.item())
    return losses, (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", default="docs/figures/benchmarks")
    args = ap.parse_args()
    from genrep.core.runtime import resolve_precision
    from genrep.rae.dit import DiT, dit_config

    print("probe:", resolve_precision("auto", torch.device("cpu"))[1])
    torch.manual_seed(0)
    means = torch.randn(10, 320, 4, 4)

    def data(step: int, batch: int):
        g = torch.Generator().manual_seed(step)
        y = torch.randint(0, 10, (batch,), generator=g)
        return 0.8 * means[y] + 0.6 * torch.randn(batch, 320, 4, 4, generator=g), y

    model0 = DiT(dit_config("ditdh-tiny", in_channels=320, grid=4, num_classes=10))
    curves = {p: run(p, args.steps, args.batch, model0, data) for p in ("fp32", "bf16")}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for p, (losses, sec) in curves.items():
        ax.plot(range(1, len(losses) + 1), losses, label=f"{p} ({sec:.2f} s/step)")
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss")
    ax.set_title(f"ditdh-tiny, batch {args.batch}: fp32 vs bf16 autocast")
    ax.legend()
    fig.tight_layout()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "precision_loss.png", dpi=120)
    a, b = curves["fp32"][0], curves["bf16"][0]
    diff = max(abs(u - v) for u, v in zip(a, b))
    rel = max(abs(u - v) / abs(u) for u, v in zip(a, b))
    print("| precision | s/step | first loss | last loss |\n|---|---|---|---|")
    for p, (losses, sec) in curves.items():
        print(f"| {p} | {sec:.3f} | {losses[0]:.4f} | {losses[-1]:.4f} |")
    print(f"max |fp32 - bf16| loss over {args.steps} steps: {diff:.4f} (relative {rel:.2%})")


if __name__ == "__main__":
    main()
