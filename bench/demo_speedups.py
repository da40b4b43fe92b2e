"""The demo's three hot-path speed-ups, each against its baseline in the same process (issue #17).

  1. EfficientNet-Lite0 without gradients on its BatchNorm-folded channels-last copy
     (``genrep.core.bundled.effnet``) against the original modules, at the demo's two uses: pooled
     features at 224 px (the feature metrics) and block-11 tokens at 64 px (the RAE latent); images/s
     and the largest relative difference of the outputs.
  2. ``LocalBackend``'s prefix cache on AgentEval's real prompts (SmolLM2-135M, one starter item):
     Expert 1, then Expert 2, whose prompt shares all but its end with Expert 1's; Expert 2's request
     time with and without the cache, and whether the replies agree.
  3. A DiT^DH-micro training step (batch 32, the demo's latent 112 x 4 x 4): fused AdamW and the
     multi-tensor EMA against the for-loop AdamW and a per-parameter EMA.

usage: python bench/demo_speedups.py [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from rae_stage1 import timeit, write_section  # noqa: E402


def effnet_rows() -> list[dict]:
    from genrep.core import assets

    net = assets.load("effnet-lite0")
    rows = []
    for what, shape, upto in (("pooled, 224 px", (50, 3, 224, 224), None), ("block 11, 64 px", (128, 3, 64, 64), 11)):
        x = torch.rand(*shape)

        def folded():
            with torch.no_grad():
                return net.features(x, upto=upto)

        def original():  # the original modules, also without gradients (what features() ran before)
            with torch.no_grad():
                n = net.net
                h = n._swish(n._bn0(n._conv_stem(net.normalize(x))))
                for block in n._blocks if upto is None else n._blocks[:upto]:
                    h = block(h)
                return h if upto is not None else n._swish(n._bn1(n._conv_head(h)))

        a, b = folded(), original()
        rel = float((a - b).abs().max() / b.abs().max())
        t_fold, t_orig = timeit(folded), timeit(original)
        rows.append(
            {
                "features": what,
                "batch": shape[0],
                "original img/s": round(shape[0] / t_orig, 1),
                "folded img/s": round(shape[0] / t_fold, 1),
                "speed-up": round(t_orig / t_fold, 2),
                "max rel diff": f"{rel:.1e}",
            }
        )
    return rows


def prefix_cache_row() -> dict:
    from genrep.diting.agenteval import ExpertAnswer
    from genrep.diting.agenteval_prompts import reference_prompt, system_prompt
    from genrep.diting.benchmark import load_benchmark
    from genrep.diting.llm import LocalBackend, Sampling
    from genrep.diting.llm.structured import response_format
    from genrep.diting.schema import Translation

    item = load_benchmark("starter", limit_per_dimension=1)[0]
    tr = Translation(item_id=item.id, system="bench", output="He planted three banners outside the array.")
    first = [
        {"role": "system", "content": system_prompt("expert", item.dimension, "zh")},
        {"role": "user", "content": reference_prompt("expert", item, tr, "zh")},
    ]
    second = [
        *first,
        {"role": "assistant", "content": '{"specific": 1}'},
        {"role": "user", "content": "请给出你的意见。"},
    ]
    sampling = Sampling(max_tokens=256, response_format=response_format(ExpertAnswer))
    out = {}
    for cached in (False, True):
        backend = LocalBackend("smollm2-135m", max_string_tokens=48, prefix_cache=cached)
        asyncio.run(backend.complete(first, sampling))
        start = time.perf_counter()
        reply = asyncio.run(backend.complete(second, sampling))
        out[cached] = (time.perf_counter() - start, reply)
    (t_plain, a), (t_cached, b) = out[False], out[True]
    return {
        "prompt tokens": a.prompt_tokens,
        "reply tokens": a.completion_tokens,
        "without cache (s)": round(t_plain, 2),
        "with cache (s)": round(t_cached, 2),
        "speed-up": round(t_plain / t_cached, 2),
        "same reply": a.text == b.text,
    }


def dit_row() -> dict:
    from genrep.core.ema import EMA
    from genrep.rae.dit import DiT, dit_config
    from genrep.rae.train_dit import train_step

    torch.manual_seed(0)
    model0 = DiT(dit_config("ditdh-micro", in_channels=112, grid=4, num_classes=10))
    x, y = torch.randn(32, 112, 4, 4), torch.randint(0, 10, (32,))

    def setup(fast: bool):
        model = copy.deepcopy(model0)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), fused=fast)
        ema = EMA(model, 0.9999, warmup=True)
        gen = torch.Generator().manual_seed(0)

        def loop_ema():  # the per-parameter update this change replaced
            with torch.no_grad():
                d = ema.current_decay()
                for e, p in zip(ema.module.parameters(), model.parameters()):
                    e.lerp_(p.detach(), 1.0 - d)
                ema.num_updates += 1

        def step():
            train_step(model, model, opt, x, y, 0.661, gen, 1.0, "fp32")
            ema.update(model) if fast else loop_ema()

        return step

    t_loop, t_fast = timeit(setup(False), min_time=4.0), timeit(setup(True), min_time=4.0)
    return {
        "baseline ms/step": round(t_loop * 1e3, 1),
        "fused ms/step": round(t_fast * 1e3, 1),
        "speed-up": round(t_loop / t_fast, 2),
    }


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    args = ap.parse_args()
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    md = (
        "## Demo speed-ups (`python bench/demo_speedups.py`)\n\n"
        f"Machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"load average {os.getloadavg()[0]:.1f} at the start.\n\n"
        "EfficientNet-Lite0 without gradients: the BatchNorm-folded channels-last copy against the original "
        "modules (same weights, same input):\n\n"
        + table(effnet_rows())
        + "\n\nAgentEval's Expert 2 request after Expert 1's (SmolLM2-135M in process, schema-guided, reasons cut "
        "at 48 tokens), without and with `LocalBackend`'s prefix cache:\n\n"
        + table([prefix_cache_row()])
        + "\n\nDiT^DH-micro training step (batch 32, latent 112 x 4 x 4, fp32): for-loop AdamW and per-parameter "
        "EMA against fused AdamW and the multi-tensor EMA:\n\n" + table([dit_row()]) + "\n"
    )
    print(md)
    if not args.no_write:
        write_section(md, "Demo speed-ups")


if __name__ == "__main__":
    main()
