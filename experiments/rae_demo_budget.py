"""What limits class fidelity in the demo's RAE budget (results in docs/rae.md, "The demo's stage 2").

  latents  encode N Fashion-MNIST training images with effnet-lite0 (--size, --layer) into OUT/latents
  decoder  train the tiny decoder on OUT/latents (--steps, --batch, --lr, --tau, --perceptual) and report the
           share of its reconstructions of 100 real test images that the evaluation's classifier recognises
  onset    train a DiT^DH with flow matching on OUT/latents in a plain loop (--steps, --batch, --lr, --head-width)
           and, every --every steps, the nearest-class-mean accuracy of CFG-3 samples of its EMA in the
           normalised latent: when the model starts to use the class label
  cfg      sample a trained DiT (--dit) at several guidance scales (--scales) and evaluate class_accuracy

usage:
  python experiments/rae_demo_budget.py latents --out runs/exp_demo_budget --size 64 --layer block11 --num 3000
  python experiments/rae_demo_budget.py decoder --out runs/exp_demo_budget --steps 400 --lr 3e-3
  python experiments/rae_demo_budget.py onset --out runs/exp_demo_budget --steps 1000 --batch 32 --lr 2e-3
  python experiments/rae_demo_budget.py cfg --out runs/exp_demo_budget --dit runs/demo/rae/dit --scales 3,4,5,6,8
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path


def latents(a) -> dict:
    from genrep.rae.encoders import build_encoder
    from genrep.rae.latents import cache_latents

    enc = build_encoder("effnet-lite0", input_size=a.size, layer=a.layer)
    start = time.time()
    cache_latents(enc, "fashion-mnist", a.out / "latents", limit=a.num, batch_size=128)
    return {"latent_shape": list(enc.latent_shape), "encode_s": round(time.time() - start, 1)}


def decoder(a) -> dict:
    from genrep.rae.demo import reconstruction_class_accuracy
    from genrep.rae.evaluate import EvalConfig
    from genrep.rae.metrics import EffNetFeatures
    from genrep.rae.train_decoder import TrainDecoderConfig, train_decoder

    out = a.out / f"decoder_s{a.steps}_b{a.batch}_lr{a.lr}_tau{a.tau}_{a.perceptual}"
    cfg = TrainDecoderConfig(
        latents=a.out / "latents",
        decoder="tiny",
        max_steps=a.steps,
        batch_size=a.batch,
        lr=a.lr,
        warmup_steps=min(100, a.steps // 4),  # the demo's schedule (genrep.rae.demo)
        decay_end_steps=a.steps,
        ema_warmup=True,
        gan=False,
        grad_clip=1.0,
        perceptual=a.perceptual,
        perceptual_resolution=32,
        noise_tau=a.tau,
        log_every=max(1, a.steps // 10),
        checkpoint_every=a.steps,
    )
    start = time.time()
    train_decoder(cfg, out, fresh=True)
    seconds = time.time() - start
    acc = reconstruction_class_accuracy(out, 100, EvalConfig(real_limit=150, classifier_train=300), EffNetFeatures())
    return {"decoder": str(out), "train_s": round(seconds, 1), "reconstruction_class_accuracy": acc}


def onset(a) -> dict:
    import torch

    from genrep.rae.dit import DiT, dit_config
    from genrep.rae.latents import load_cache
    from genrep.rae.sample import SampleConfig, sample_latents

    torch.manual_seed(0)
    cache = load_cache(a.out / "latents")
    z, y = cache.stats.normalize(cache.latents), cache.labels  # the statistics a decoder trained on it keeps
    means = torch.stack([z[y == c].mean(0) for c in range(10)]).flatten(1)
    c, g = z.shape[1], z.shape[2]
    model = DiT(dit_config("ditdh-micro", c, g, 10, head_width=a.head_width, head_heads=a.head_width // 64))
    ema = copy.deepcopy(model).requires_grad_(False)
    alpha = (c * g * g / 4096) ** 0.5  # the dimension-dependent shift (docs/papers.md)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.0)
    labels = torch.arange(10).repeat_interleave(10)
    noise = torch.randn(100, c, g, g, generator=torch.Generator().manual_seed(1))
    rows = []
    for step in range(1, a.steps + 1):
        for group in opt.param_groups:
            group["lr"] = a.lr * min(1.0, step / 30)
        idx = torch.randint(0, len(z), (a.batch,))
        x0, t = z[idx], torch.rand(a.batch)
        t = alpha * t / (1 + (alpha - 1) * t)
        eps = torch.randn_like(x0)
        xt = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * eps
        loss = (model(xt, t, y[idx]) - (eps - x0)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(0.9995, (1 + step) / (10 + step))  # the demo's EMA warm-up
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), model.parameters()):
                pe.lerp_(p, 1 - decay)
        if step % a.every == 0:
            zz = sample_latents(ema.eval(), labels, noise, alpha, SampleConfig(steps=11, guidance="cfg", scale=3.0))
            ncm = torch.cdist(zz.flatten(1), means).argmin(1)
            rows.append(
                {"step": step, "loss": round(loss.item(), 3), "ncm_cfg3": (ncm == labels).float().mean().item()}
            )
            print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows}


def cfg_scales(a) -> dict:
    from genrep.rae.evaluate import EvalConfig, evaluate
    from genrep.rae.sample import SampleConfig, sample

    rows = []
    for scale in (float(s) for s in a.scales.split(",")):
        out = a.out / f"cfg_{scale}"
        sample(SampleConfig(dit=a.dit, num=200, steps=20, guidance="cfg", scale=scale, per_class=20), out)
        m = evaluate(EvalConfig(samples=out, real_limit=150, classifier_train=300), out / "eval")
        rows.append({"scale": scale, "class_accuracy": m["class_accuracy"], "fd_effnet": m["fd_effnet"]})
    return {"rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["latents", "decoder", "onset", "cfg"])
    ap.add_argument("--out", type=Path, default=Path("runs/exp_demo_budget"))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--layer", default="block11")
    ap.add_argument("--num", type=int, default=3000)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--tau", type=float, default=0.8)
    ap.add_argument("--perceptual", default="none", choices=["none", "effnet"])
    ap.add_argument("--head-width", type=int, default=192)
    ap.add_argument("--every", type=int, default=200)
    ap.add_argument("--dit", type=Path, default=Path("runs/demo/rae/dit"))
    ap.add_argument("--scales", default="3,4,5,6,8")
    a = ap.parse_args()
    result = {"latents": latents, "decoder": decoder, "onset": onset, "cfg": cfg_scales}[a.part](a)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{a.part}.json").write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, **result}, indent=2)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
