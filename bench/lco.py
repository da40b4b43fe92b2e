"""Benchmark LCO-EMB (``genrep.lco``) on this machine; writes a section of docs/benchmarks.md.

Measured, all on the bundled smollm2-135m:
  1. ``EmbeddingModel.encode`` throughput (texts/s, batch 32) on N shuffled mixed-length texts (HSK test
     sentences, zh and en, plus 3-8 sentence concatenations) against the loop a user would write in the same
     process: consecutive batches of the unsorted texts, the same prompts, tokenizer padding, a forward with
     the full LM-head logits, ``hidden_states[-1][:, -1]``, normalised (target >= 1.5x). Also ``encode`` with
     ``sort_by_length=False``, which splits the gain into sorting and skipping the logits; the embeddings of
     ``encode`` and the loop must agree (max abs diff < 1e-3).
  2. The training step of ``genrep lco train`` (LoRA r 64, dropout 0.05, B HSK triplets with hard negatives,
     forward + backward + clip + AdamW): seconds per step (median after one warm-up step) and peak memory,
     plain, with gradient checkpointing, with the chunked (GradCache) loss (chunk B/2) and with both. Each
     configuration runs in its own process (this script with ``--one``): on CPU the peak is the RSS high-water
     mark (VmHWM; reset once the model is loaded and paged in), and the increase is over the RSS then;
     on CUDA ``max_memory_allocated`` over ``memory_allocated`` after loading. On CPU the children run with
     ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc returns freed tensors and the RSS follows the live tensors.

usage: python bench/lco.py [--quick] [--no-write] [--n N] [--batch B] [--steps S]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rae_stage1 import write_section  # noqa: E402

MODEL = "smollm2-135m"
MARK = "LCO-BENCH-RESULT "
CONFIGS = {
    "plain": (False, False),
    "grad checkpointing": (True, False),
    "chunked loss": (False, True),
    "both": (True, True),
}  # name -> (grad_checkpointing, chunked loss)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def mixed_texts(n: int, seed: int = 0) -> list[str]:
    """3/4 single HSK test sentences (zh or en), 1/4 concatenations of 3-8 of them, shuffled."""
    from genrep.lco.data import hsk_pairs_split

    test = hsk_pairs_split(500).test
    rng = random.Random(seed)
    texts = rng.choices([p["zh"] for p in test] + [p["en"] for p in test], k=n - n // 4)
    for _ in range(n // 4):
        picked = rng.sample(test, rng.randint(3, 8))
        texts.append("".join(p["zh"] for p in picked) if rng.random() < 0.5 else " ".join(p["en"] for p in picked))
    rng.shuffle(texts)
    return texts


@torch.no_grad()
def naive_encode(emb, texts: list[str], batch_size: int) -> torch.Tensor:
    """What a user writes: batches in input order, full logits (no ``logits_to_keep``), last column (left padding)."""
    tok, model = emb.backbone.tokenizer, emb.model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        prompts = [emb.prompt(t).prompt for t in texts[i : i + batch_size]]
        enc = tok(prompts, padding=True, add_special_tokens=False, return_tensors="pt").to(emb.device)
        h = model(**enc, output_hidden_states=True).hidden_states[-1][:, -1]
        out.append(F.normalize(h.float(), dim=-1).cpu())
    return torch.cat(out)


def padding(lengths: list[int], batch_size: int, sort: bool) -> float:
    """Padded tokens / real tokens of the batches (1.0 = no padding)."""
    ls = sorted(lengths, reverse=True) if sort else lengths
    batches = [ls[i : i + batch_size] for i in range(0, len(ls), batch_size)]
    return sum(max(b) * len(b) for b in batches) / sum(ls)


def timed(fn):
    sync = torch.cuda.synchronize if device().type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    result = fn()
    sync()
    return result, time.perf_counter() - start


def encode_bench(n: int, batch_size: int = 32) -> dict:
    from genrep.lco.embedding import EmbeddingModel

    emb = EmbeddingModel.from_pretrained(MODEL, device=device())
    texts = mixed_texts(n)
    lengths = [emb.prompt(t).length for t in texts]
    emb.encode(texts[:batch_size], batch_size=batch_size, show_progress=False)  # warm-up
    naive_encode(emb, texts[:batch_size], batch_size)
    ref, t_naive = timed(lambda: naive_encode(emb, texts, batch_size))
    ours, t_ours = timed(lambda: emb.encode(texts, batch_size=batch_size, show_progress=False, convert_to="torch"))
    _, t_unsorted = timed(lambda: emb.encode(texts, batch_size=batch_size, show_progress=False, sort_by_length=False))
    return {
        "n": n,
        "batch": batch_size,
        "naive": t_naive,
        "ours": t_ours,
        "unsorted": t_unsorted,
        "max_abs_diff": float((ours - ref).abs().max()),
        "tokens": sum(lengths),
        "min_len": min(lengths),
        "max_len": max(lengths),
        "pad_sorted": padding(lengths, batch_size, True),
        "pad_unsorted": padding(lengths, batch_size, False),
    }


def proc_status_mb(key: str) -> float:
    return int(Path("/proc/self/status").read_text().split(f"{key}:")[1].split()[0]) / 1024


def reset_peak(dev: torch.device) -> tuple[float, bool]:
    """Memory in MB now, and whether the peak counter was reset here (else it includes loading)."""
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20, True
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets the RSS high-water mark VmHWM (Linux)
        return proc_status_mb("VmRSS"), True
    except (OSError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, False


def train_one(name: str, batch: int, steps: int) -> dict:
    """Child process: one configuration, built and stepped the way ``genrep.lco.train.train`` does it."""
    from genrep.core.runtime import seed_everything
    from genrep.lco.adapters import LoraSettings, apply_method
    from genrep.lco.backbones import load_backbone
    from genrep.lco.embedding import EmbeddingModel
    from genrep.lco.loss import chunked_contrastive_backward
    from genrep.lco.train import TrainConfig, _full_step, _SideEncoder, batch_indices, load_training_rows

    ckpt, chunked = CONFIGS[name]
    dev = device()
    cfg = TrainConfig(
        backbone=MODEL,
        method="lora",
        lora=LoraSettings(r=64, dropout=0.05),
        batch_size=batch,
        chunk_size=batch // 2 if chunked else 0,
        grad_checkpointing=ckpt,
        device=dev.type,
    )
    seed_everything(cfg.seed)
    rows = load_training_rows(cfg)
    emb = EmbeddingModel(
        load_backbone(cfg.backbone, device=dev), prompts=cfg.prompts, layer=cfg.layer, max_length=cfg.max_length
    )
    params = apply_method(emb, cfg.method, cfg.lora)
    model = emb.backbone.model
    if cfg.grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    with torch.no_grad():  # pages in the (memory-mapped) weights before the baseline is taken
        emb.embed_batch([rows[0].anchor])
    base, reset = reset_peak(dev)
    times, loss = [], float("nan")
    for step in range(steps + 1):  # step 0 is the warm-up
        mine = [rows[i] for i in batch_indices(len(rows), cfg.batch_size, step, cfg.seed)]
        anchors, positives, negatives = [r.anchor for r in mine], [r.positive for r in mine], [r.negative for r in mine]

        def one_step():
            opt.zero_grad(set_to_none=True)
            if cfg.chunk_size:
                out = chunked_contrastive_backward(
                    _SideEncoder(emb),
                    [("query", a) for a in anchors],
                    [("document", p) for p in positives],
                    [("document", n) for n in negatives],
                    chunk_size=cfg.chunk_size,
                    temperature=cfg.temperature,
                    gather=cfg.gather,
                )
            else:
                out = _full_step(emb, anchors, positives, negatives, cfg)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            return out

        loss, t = timed(one_step)
        times.append(t)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:  # not ru_maxrss: across exec it keeps the parent's peak, and clear_refs does not reset it
        peak = proc_status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "config": name,
        "chunk": cfg.chunk_size,
        "ckpt": ckpt,
        "s_per_step": statistics.median(times[1:]),
        "peak_mb": peak,
        "increase_mb": peak - base,
        "reset": reset,
        "loss": loss,
        "trainable_M": sum(p.numel() for p in params) / 1e6,
    }


def train_bench(batch: int, steps: int) -> list[dict]:
    # glibc keeps freed tensors resident (and the peak RSS then measures the allocator); with a fixed mmap
    # threshold every large tensor is its own mapping, returned when freed, so the RSS follows the live tensors.
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    rows = []
    for name in CONFIGS:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--one",
            name,
            "--batch",
            str(batch),
            "--steps",
            str(steps),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
        if proc.returncode or not lines:
            raise RuntimeError(f"{name}: child failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
        rows.append(json.loads(lines[-1][len(MARK) :]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="N 256, B 8, 2 measured steps (a smoke run)")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    ap.add_argument("--n", type=int, help="texts to encode (default 1024, 256 with --quick)")
    ap.add_argument("--batch", type=int, help="training batch of triplets (default 16, 8 with --quick)")
    ap.add_argument("--steps", type=int, help="measured training steps (default 4, 2 with --quick)")
    ap.add_argument("--one", choices=list(CONFIGS), help=argparse.SUPPRESS)  # child: one training configuration
    args = ap.parse_args()
    os.environ.setdefault("GENREP_NO_PROGRESS", "1")
    batch = args.batch or (8 if args.quick else 16)
    steps = args.steps or (2 if args.quick else 4)
    if args.one:
        print(MARK + json.dumps(train_one(args.one, batch, steps)), flush=True)
        return
    n = args.n or (256 if args.quick else 1024)
    from genrep.core.runtime import environment

    env = environment()
    load = os.getloadavg()[0]
    enc = encode_bench(n)
    train = train_bench(batch, steps)
    rate = {k: n / enc[k] for k in ("naive", "unsorted", "ours")}
    speedup = rate["ours"] / rate["naive"]
    flags = " ".join(
        f
        for f in (
            "--quick" if args.quick else "",
            f"--n {args.n}" if args.n else "",
            f"--batch {args.batch}" if args.batch else "",
            f"--steps {args.steps}" if args.steps else "",
        )
        if f
    )
    dev = env["gpus"][0] if env.get("gpus") else "CPU only"
    cpu = dev == "CPU only"
    mem = "peak RSS (MB)" if cpu else "peak allocated (MB)"
    state_mb = train[0]["trainable_M"] * 12  # fp32 gradient + two AdamW moments
    malloc = f" (`MALLOC_MMAP_THRESHOLD_={os.environ.get('MALLOC_MMAP_THRESHOLD_', '65536')}`)" if cpu else ""
    train_rows = "\n".join(
        f"| {r['config']} | {r['chunk'] or '-'} | {'yes' if r['ckpt'] else 'no'} | {r['s_per_step']:.2f} | "
        f"{r['peak_mb']:.0f} | {r['increase_mb']:.0f}{'' if r['reset'] else ' *'} | {r['loss']:.3f} |"
        for r in train
    )
    note = "" if all(r["reset"] for r in train) else "\n\\* the peak counter could not be reset: it includes loading.\n"
    md = f"""
## LCO-EMB (`python bench/lco.py{" " + flags if flags else ""}`)

Machine: {env["cpu"]}, {env["cpu_count"]} cores, torch {env["torch"]} ({env["torch_threads"]} threads), {dev};
load average {load:.1f} at the start. Model: the bundled {MODEL}, fp32.

`EmbeddingModel.encode` on {n} shuffled texts (HSK test sentences, zh and en, 1/4 of them 3-8 sentences joined;
prompts of {enc["min_len"]}-{enc["max_len"]} tokens, {enc["tokens"]:,} in all), batch {enc["batch"]}, against the
loop a user would write (consecutive batches of the unsorted texts, the same prompts, full LM-head logits,
`hidden_states[-1][:, -1]`), same model, same process:

| method | padded / real tokens | seconds | texts/s |
|---|---|---|---|
| naive loop (input order, full logits) | {enc["pad_unsorted"]:.2f} | {enc["naive"]:.1f} | {rate["naive"]:.1f} |
| `encode(..., sort_by_length=False)` | {enc["pad_unsorted"]:.2f} | {enc["unsorted"]:.1f} | {rate["unsorted"]:.1f} |
| `encode(...)` (sorted by length) | {enc["pad_sorted"]:.2f} | {enc["ours"]:.1f} | {rate["ours"]:.1f} |

Speed-up of `encode` over the naive loop: **{speedup:.2f}x** (target >= 1.5x); from skipping the logits
alone (unsorted `encode` against the loop) {rate["unsorted"] / rate["naive"]:.2f}x, from sorting alone
{rate["ours"] / rate["unsorted"]:.2f}x. Max abs difference of the embeddings: {enc["max_abs_diff"]:.1e}
({"ok" if enc["max_abs_diff"] < 1e-3 else "FAIL"}, must be < 1e-3).

Training step of `genrep lco train` (LoRA r 64 / alpha 16 / dropout 0.05, {train[0]["trainable_M"]:.1f} M trainable
parameters; {batch} HSK triplets with hard negatives, InfoNCE over {2 * batch} candidates; forward + backward +
clip + AdamW), median of {steps} step{"s" if steps > 1 else ""} after one warm-up step, each configuration in its own
process{malloc}.
The increase is over the memory after loading the model; it includes the LoRA gradients and the AdamW state
(~{state_mb:.0f} MB in every row):

| configuration | chunk | grad checkpointing | s/step | {mem} | increase (MB) | loss (last step) |
|---|---|---|---|---|---|---|
{train_rows}
{note}"""
    print(md)
    if not args.no_write:
        write_section(md, "LCO-EMB")


if __name__ == "__main__":
    main()
