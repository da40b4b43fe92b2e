"""Benchmark RAE stage 1 on this machine; writes the results into docs/benchmarks.md.

Measured in one process, so every ratio compares numbers taken under the same conditions:
  1. the fp32 matmul peak (square GEMMs, best of several sizes);
  2. decoder training throughput (forward + backward + AdamW) at sizes tiny and S on the bundled
     encoder's latent (320 x 4 x 4 -> 28 px), images/s and achieved GFLOP/s as a share of the peak;
  3. encoder throughput (EfficientNet-Lite0 at 128 px, images/s);
  4. training throughput of the real training step with cached against on-the-fly latents.

usage: python bench/rae_stage1.py [--quick] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def timeit(fn, min_time: float = 2.0, warmup: int = 2) -> float:
    """Seconds per call (mean over as many calls as fit in ``min_time``)."""
    for _ in range(warmup):
        fn()
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / n


def matmul_peak(min_time: float) -> float:
    best = 0.0
    for n in (1024, 2048, 3072):
        a, b = torch.randn(n, n), torch.randn(n, n)
        t = timeit(lambda: a @ b, min_time)
        best = max(best, 2 * n**3 / t / 1e9)
    return best


def decoder_step(size: str, batch: int, min_time: float) -> dict:
    from genrep.rae.decoder import DecoderConfig, ViTDecoder
    from genrep.rae.vit_parts import num_params

    dec = ViTDecoder(DecoderConfig(latent_channels=320, grid=4, patch=7, size=size))
    opt = torch.optim.AdamW(dec.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=True)
    z, target = torch.randn(batch, 320, 4, 4), torch.rand(batch, 3, 28, 28)

    def step():
        loss = (dec(z) - target).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = timeit(step, min_time)
    flops = 3 * dec.flops_per_image() * batch
    return {
        "size": size,
        "params_M": num_params(dec) / 1e6,
        "batch": batch,
        "images_per_s": batch / t,
        "gflops_per_s": flops / t / 1e9,
    }


def encoder_throughput(batch: int, min_time: float) -> float:
    from genrep.rae.encoders import build_encoder

    enc = build_encoder("effnet-lite0")
    x = torch.rand(batch, 3, 28, 28)
    return batch / timeit(lambda: enc.encode(x), min_time)


def train_throughput(on_the_fly: bool, steps: int, cache: Path, out: Path) -> float:
    from genrep.rae.train_decoder import TrainDecoderConfig, train_decoder

    cfg = TrainDecoderConfig(
        latents=cache,
        decoder="tiny",
        max_steps=steps,
        batch_size=64,
        perceptual="none",
        gan=False,
        on_the_fly=on_the_fly,
        log_every=steps,
        checkpoint_every=10**9,
        device="cpu",
    )
    m = train_decoder(cfg, out)
    return m["final"]["images_per_s"]


def write_section(markdown: str, name: str = "RAE stage 1") -> None:
    path = ROOT / "docs" / "benchmarks.md"
    text = (
        path.read_text()
        if path.exists()
        else "# Benchmarks\n\nEach section is written by the script it names; numbers come from one run of it.\n"
    )
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    if start in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="shorter timings (a smoke run)")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    args = ap.parse_args()
    os.environ.setdefault("GENREP_NO_PROGRESS", "1")
    t = 0.5 if args.quick else 3.0
    from genrep.core.runtime import environment

    env = environment()
    peak = matmul_peak(t)
    dec = [decoder_step("tiny", 64, t), decoder_step("S", 64, t)]
    enc = encoder_throughput(128, t)
    with tempfile.TemporaryDirectory() as tmp:
        from genrep.rae.encoders import build_encoder
        from genrep.rae.latents import cache_latents

        cache = Path(tmp) / "cache"
        cache_latents(build_encoder("effnet-lite0"), "fashion-mnist", cache, limit=2048, batch_size=128)
        steps = 10 if args.quick else 40
        cached = train_throughput(False, steps, cache, Path(tmp) / "a")
        fly = train_throughput(True, steps, cache, Path(tmp) / "b")

    results = {
        "env": env,
        "fp32_peak_gflops": peak,
        "decoder": dec,
        "encoder_images_per_s": enc,
        "train_cached_images_per_s": cached,
        "train_on_the_fly_images_per_s": fly,
    }
    print(json.dumps(results, indent=2))
    rows = "\n".join(
        f"| {d['size']} | {d['params_M']:.1f} | {d['batch']} | {d['images_per_s']:.0f} | {d['gflops_per_s']:.1f} | "
        f"{d['gflops_per_s'] / peak:.0%} |"
        for d in dec
    )
    md = f"""
## RAE stage 1 (`python bench/rae_stage1.py`)

Machine: {env["cpu"]}, {env["cpu_count"]} cores, torch {env["torch"]} ({env["torch_threads"]} threads), CPU only.
fp32 matmul peak measured in the same run: **{peak:.0f} GFLOP/s**.

Decoder training step (forward + backward + fused AdamW) on the bundled encoder's latent
(320 x 4 x 4 tokens -> 28 x 28 px, patch 7); FLOPs = 3 x the forward matmul FLOPs:

| decoder | params (M) | batch | images/s | GFLOP/s | share of peak |
|---|---|---|---|---|---|
{rows}

Encoder (EfficientNet-Lite0 at 128 px, batch 128, no grad): **{enc:.0f} images/s**.

Full training step of `genrep rae train-decoder` (decoder tiny, batch 64, L1 only), cached latents
against encoding every batch on the fly: **{cached:.0f}** against **{fly:.0f} images/s**
({cached / fly:.1f}x).
"""
    if not args.no_write:
        write_section(md)
    print(md)


if __name__ == "__main__":
    sys.exit(main())
