"""Benchmark RAE stage 2 (DiT / DiT^DH) on this machine; writes a section of docs/benchmarks.md.

In one process: the fp32 matmul peak; the flow-matching training step (forward + backward +
AdamW) of dit-S, ditdh-tiny and ditdh-S on the bundled encoder's latent (320 x 4 x 4, patch 1),
samples/s and achieved GFLOP/s as a share of the peak (FLOPs = 3 x forward matmul FLOPs);
peak resident memory; sampling (Euler) latents/s against the number of steps; the training step
with ``torch.compile`` (inductor) against eager, same model, batch and process.

With ``--reference DIR`` (a checkout of bytetriper/RAE, with timm, einops, torchdiffeq and
omegaconf importable), genrep's training step is also timed against the reference's step on the
same config, batch and machine in the same process, fp32 and bf16 autocast: the reference's
``DiTwDDTHead`` + ``Transport.training_losses`` against genrep's DiT + ``flow_matching_loss``, both
with the same AdamW; the two are timed in alternation and the medians compared.

usage: python bench/rae_stage2.py [--quick] [--no-write] [--reference DIR] [--only-reference]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rae_stage1 import matmul_peak, timeit, write_section  # noqa: E402


def train_step(name: str, batch: int, min_time: float, compile: bool = False) -> dict:
    from genrep.rae.dit import DiT, dit_config
    from genrep.rae.flow import flow_matching_loss, shift_alpha

    torch.manual_seed(0)
    base = DiT(dit_config(name, in_channels=320, grid=4, num_classes=10))
    model = torch.compile(base) if compile else base
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, betas=(0.9, 0.95), weight_decay=0.0)
    x, y = torch.randn(batch, 320, 4, 4), torch.randint(0, 10, (batch,))
    alpha = shift_alpha((320, 4, 4))
    gen = torch.Generator().manual_seed(0)

    def step():
        loss = flow_matching_loss(model, x, y, alpha, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if compile:
        start = time.perf_counter()
        step()  # compilation happens here
        compile_s = time.perf_counter() - start
    t = timeit(step, min_time)
    params = sum(p.numel() for p in base.parameters())
    row = {
        "model": name,
        "params_M": params / 1e6,
        "batch": batch,
        "samples_per_s": batch / t,
        "gflops_per_s": 3 * base.flops_per_sample() * batch / t / 1e9,
    }
    if compile:
        row["compile_s"] = compile_s
    return row


def compile_rows(names: tuple[str, ...], batch: int, min_time: float) -> list[dict] | str:
    """Eager against torch.compile for each model, or why compile could not run."""
    rows = []
    for name in names:
        eager = train_step(name, batch, min_time)
        try:
            compiled = train_step(name, batch, min_time, compile=True)
        except Exception as e:  # no compiler, unsupported op, ...
            return f"torch.compile failed here: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        rows.append(
            {
                "model": name,
                "eager": eager["samples_per_s"],
                "compiled": compiled["samples_per_s"],
                "compile_s": compiled["compile_s"],
            }
        )
    return rows


def sampling(name: str, steps: int, batch: int, min_time: float) -> float:
    from genrep.rae.dit import DiT, dit_config
    from genrep.rae.flow import euler_sample, reference_grid, shift_alpha

    model = DiT(dit_config(name, in_channels=320, grid=4, num_classes=10)).eval()
    y = torch.randint(0, 10, (batch,))
    grid = reference_grid(steps + 1, max(shift_alpha((320, 4, 4)), 1.0))  # steps solver steps on the sampler's grid

    def run():
        with torch.no_grad():
            euler_sample(lambda x, t: model(x, t, y), torch.randn(batch, 320, 4, 4), grid)

    return batch / timeit(run, min_time, warmup=1)


def reference_params(cfg) -> dict:
    """The reference constructor arguments of a genrep DiT^DH config (DDT.py DiTwDDTHead)."""
    return dict(
        input_size=cfg.grid,
        patch_size=1,
        in_channels=cfg.in_channels,
        hidden_size=[cfg.width, cfg.head_width],
        depth=[cfg.depth, cfg.head_depth],
        num_heads=[cfg.heads, cfg.head_heads],
        mlp_ratio=cfg.mlp_ratio,
        class_dropout_prob=cfg.class_dropout,
        num_classes=cfg.num_classes,
        use_qknorm=cfg.qk_norm,
    )


def reference_rows(
    reference: Path, names: tuple[str, ...], batch: int, rounds: int, min_time: float, bf16_batch: int
) -> list[dict]:
    """genrep's training step against the reference's, fp32 (batch ``batch``) and bf16 autocast (batch
    ``bf16_batch``: a CPU without bf16 instructions runs it tens of times slower), median of alternating rounds."""
    import statistics

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))
    import torchvision_standin

    torchvision_standin.install()
    sys.path.insert(0, str(reference / "src"))
    from stage2.models.DDT import DiTwDDTHead
    from stage2.transport import create_transport

    from genrep.rae.dit import DiT, dit_config
    from genrep.rae.flow import flow_matching_loss, shift_alpha

    shape = (320, 4, 4)
    alpha = max(shift_alpha(shape), 1.0)
    rows = []
    for name in names:
        cfg = dit_config(name, in_channels=shape[0], grid=shape[1], num_classes=10)
        torch.manual_seed(0)
        ours, theirs = DiT(cfg), DiTwDDTHead(**reference_params(cfg))
        transport = create_transport("Linear", "velocity", time_dist_type="logit-normal_0_1", time_dist_shift=alpha)
        gen = torch.Generator().manual_seed(0)
        for precision in ("fp32", "bf16"):
            n = batch if precision == "fp32" else bf16_batch
            x, y = torch.randn(n, *shape), torch.randint(0, 10, (n,))
            steps = {}
            for label, model in (("genrep", ours), ("reference", theirs)):
                opt = torch.optim.AdamW(model.parameters(), lr=2e-4, betas=(0.9, 0.95), weight_decay=0.0)

                def step(model=model, opt=opt, label=label, x=x, y=y, precision=precision):
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                        if label == "genrep":
                            loss = flow_matching_loss(model, x, y, alpha, generator=gen)
                        else:
                            loss = transport.training_losses(model, x, dict(y=y))["loss"].mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

                steps[label] = step
            times: dict[str, list[float]] = {"genrep": [], "reference": []}
            for label in times:
                steps[label]()  # warm-up
            for _ in range(rounds):
                for label in times:
                    times[label].append(timeit(steps[label], min_time, warmup=0))
            g, r = statistics.median(times["genrep"]), statistics.median(times["reference"])
            rows.append(
                {"model": name, "precision": precision, "genrep": batch / g, "reference": batch / r, "ratio": r / g}
            )
            print(rows[-1], flush=True)
    return rows


def reference_md(rows: list[dict], batch: int, quick: bool) -> str:
    table = "\n".join(
        f"| {r['model']} | {r['precision']} | {r['reference']:.1f} | {r['genrep']:.1f} | {r['ratio']:.2f}x |"
        for r in rows
    )
    return f"""
Against the reference (`python bench/rae_stage2.py{" --quick" if quick else ""} --reference DIR`): the
training step of genrep's DiT^DH and of the reference's `DiTwDDTHead` + `Transport.training_losses`
(same config and batch, latent 320 x 4 x 4, same AdamW), timed in alternation, medians:

| model | precision | batch | reference samples/s | genrep samples/s | genrep / reference |
|---|---|---|---|---|---|
{table}
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--reference", type=Path, default=None, help="a bytetriper/RAE checkout to time against")
    ap.add_argument("--only-reference", action="store_true", help="only the comparison with --reference")
    ap.add_argument(
        "--bf16-batch", type=int, default=64, help="batch of the bf16 comparison (small on CPUs without bf16)"
    )
    args = ap.parse_args()
    os.environ.setdefault("GENREP_NO_PROGRESS", "1")
    t = 0.5 if args.quick else 3.0
    from genrep.core.runtime import environment

    env = environment()
    ref_md = ""
    if args.reference is not None:
        rounds = 3 if args.quick else 5
        ref_rows = reference_rows(args.reference, ("ditdh-tiny", "ditdh-S"), 64, rounds, t / 2, args.bf16_batch)
        ref_md = reference_md(ref_rows, args.quick)
        if args.only_reference:
            print(ref_md)
            return
    peak = matmul_peak(t)
    rows = [train_step(n, 64, t) for n in ("ditdh-tiny", "dit-S", "ditdh-S")]
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    samp = {steps: sampling("ditdh-tiny", steps, 64, t) for steps in (10, 25, 50)}
    comp = compile_rows(("ditdh-tiny", "dit-S"), 64, t)
    if isinstance(comp, str):
        comp_md = comp
    else:
        comp_md = (
            "| model | eager samples/s | compiled samples/s | speed-up | compile time (s) |\n|---|---|---|---|---|\n"
            + "\n".join(
                f"| {r['model']} | {r['eager']:.0f} | {r['compiled']:.0f} | {r['compiled'] / r['eager']:.2f}x | "
                f"{r['compile_s']:.0f} |"
                for r in comp
            )
        )
    table = "\n".join(
        f"| {r['model']} | {r['params_M']:.1f} | {r['batch']} | {r['samples_per_s']:.0f} | "
        f"{r['gflops_per_s']:.1f} | {r['gflops_per_s'] / peak:.0%} |"
        for r in rows
    )
    samp_rows = "\n".join(f"| {s} | {v:.1f} |" for s, v in samp.items())
    md = f"""
## RAE stage 2 (`python bench/rae_stage2.py{" --quick" if args.quick else ""}`)

Machine: {env["cpu"]}, {env["cpu_count"]} cores, torch {env["torch"]} ({env["torch_threads"]} threads), CPU only.
fp32 matmul peak measured in the same run: **{peak:.0f} GFLOP/s**.

Flow-matching training step (forward + backward + AdamW, fp32) on the bundled encoder's latent
(320 x 4 x 4, patch 1, 16 tokens); FLOPs = 3 x forward matmul FLOPs (attention included):

| model | params (M) | batch | samples/s | GFLOP/s | share of peak |
|---|---|---|---|---|---|
{table}

Peak resident memory of the process after these steps: {peak_rss_mb:.0f} MB.

Sampling latents with ditdh-tiny, Euler, batch 64 (decoder not included):

| steps | latents/s |
|---|---|
{samp_rows}

Training step with `torch.compile` (default inductor mode) against eager, batch 64, fp32, same process
(measured after the peak-memory reading above):

{comp_md}
{ref_md}"""
    print(md)
    if not args.no_write:
        write_section(md, "RAE stage 2")


if __name__ == "__main__":
    main()
