"""``genrep lco train``: language-centric contrastive refinement (docs/papers.md s2.6, s2.7).

One step: a global batch of B (anchor, positive, hard negative) triplets; every anchor of the global
batch is scored against all positives and all negatives of the global batch (2B candidates, gathered
across DDP ranks) with InfoNCE at temperature 0.03 (``genrep.lco.loss``, ``gather="global"``: the
reference's loss and gradient). The recipe's defaults are the reference's (``Training/train_VL.sh`` and
``train_VL_any2any.py`` on Hugging Face ``Trainer``): LoRA r 64 / alpha 128 / dropout 0.05 on every
linear layer of the model body but the LM head, AdamW lr 4e-4 with 100 warmup steps and linear decay,
gradient clipping at 1.0, 4-bit NF4 base weights prepared for k-bit training where a GPU with
bitsandbytes is there (``quantize: auto``), content cut at 650 tokens and training images shrunk to
a 700 px thumbnail; the saved model encodes with the reference's evaluation budgets (300 tokens,
1280*28*28 pixels). The budget (batch size, steps or ``epochs``) defaults to laptop size; the
``configs/lco/paper-*.yaml`` files carry the reference's. ``chunk_size`` turns on the GradCache-style
chunked loss (the gradient of the whole batch, the activation memory of one chunk);
``grad_checkpointing`` recomputes activations in the backward pass. Under torchrun every rank takes its
slice of the global batch.

The data order is a function of (seed, epoch) only and the checkpoint holds the trainable
weights, the optimizer, the scheduler and every RNG, so ``--resume`` continues exactly; only the
fields in :data:`RESUME_MAY_DIFFER` may change on resume (``genrep.core.resume``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from genrep.core.bundled.lm import resolve_lm_path
from genrep.core.config import Count, NonNeg, NonNegInt, Positive, require_positive
from genrep.core.distributed import all_reduce_mean, init_distributed
from genrep.core.errors import UserError
from genrep.core.images import figure_png
from genrep.core.jsonl import append_jsonl
from genrep.core.lr_schedule import warmup_cosine, warmup_linear
from genrep.core.progress import progress_bar
from genrep.core.resume import RUN_CONTROL, start_run
from genrep.core.rundir import RunDir, atomic_write_bytes
from genrep.core.runtime import pick_device, seed_everything
from genrep.lco.adapters import LoraSettings, TrainableState, apply_method, save_model
from genrep.lco.backbones import load_backbone
from genrep.lco.data import Triplet, hsk_pairs_split, hsk_triplets, load_media, read_triplets
from genrep.lco.embedding import EVAL_MAX_LENGTH, EVAL_MAX_PIXELS, EmbeddingModel, PromptConfig
from genrep.lco.loss import GATHER_MODES, GatherMode, chunked_contrastive_backward, info_nce
from genrep.lco.tinyvlm import is_tinyvlm_dir

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# run-control fields that --resume accepts changed, and two memory knobs that keep the recipe (the same
# gradient up to float rounding: GradCache chunks, recomputed activations)
RESUME_MAY_DIFFER = (*RUN_CONTROL, "chunk_size", "grad_checkpointing")


@dataclass
class TrainConfig:
    backbone: str = "smollm2-135m"
    data: str = "hsk"  # "hsk" (bundled zh<->en pairs, train split) or a triplet JSONL file (the reference's format too)
    method: Literal["lora", "full", "head"] = "lora"
    lora: LoraSettings = field(default_factory=LoraSettings)
    epochs: NonNeg = 0.0  # > 0: train this many epochs (the reference: 2) instead of max_steps
    max_steps: Count = 100
    batch_size: Count = 32  # global batch of triplets (the reference: 1056; the paper's text-only runs: 768)
    chunk_size: NonNegInt = 0  # GradCache chunk (items per forward); 0 = the whole batch in one forward
    lr: Positive = 4e-4
    schedule: Literal["linear", "cosine"] = "linear"  # linear = HF Trainer's default (the reference)
    weight_decay: NonNeg = 0.0
    warmup_steps: NonNegInt = 100
    temperature: Positive = 0.03
    gather: GatherMode = "global"  # global (the reference) | full (W x global) | local | none
    hard_negatives: bool = True
    grad_checkpointing: bool = False
    grad_clip: NonNeg = 1.0
    max_length: Count = 650  # content tokens kept in training (the suffix prompt is never cut)
    thumbnail: NonNegInt = 700  # training images shrunk to fit this square (PIL thumbnail); 0 = off
    max_pixels: NonNegInt = 0  # pixels per image in training (pixel-budget processors); 0 = the processor's
    eval_max_length: Count = EVAL_MAX_LENGTH  # what the saved model encodes with (the reference's MTEB wrapper)
    eval_max_pixels: NonNegInt = EVAL_MAX_PIXELS
    layer: int = -1
    prompts: PromptConfig = field(default_factory=PromptConfig)
    hsk_test_size: Count = 500
    seed: int = 0
    device: str = "auto"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # bfloat16 on GPUs (the reference)
    # auto: 4-bit NF4 base weights (QLoRA, the reference) for LoRA on a CUDA GPU with bitsandbytes, else none
    quantize: Literal["auto", "", "nf4"] = "auto"
    log_every: Count = 5
    checkpoint_every: Count = 50
    keep_checkpoints: NonNegInt = 2


def total_steps(cfg: TrainConfig, n_rows: int) -> int:
    """Optimizer steps of the run: ``ceil(epochs * steps_per_epoch)`` with ``epochs > 0`` (HF Trainer's count;
    an epoch is ``n_rows // batch_size`` full global batches here), else ``max_steps``."""
    if cfg.epochs > 0:
        return max(1, math.ceil(cfg.epochs * max(1, n_rows // cfg.batch_size)))
    return cfg.max_steps


def resolve_quantize(cfg: TrainConfig, device: torch.device) -> str:
    """``quantize: auto`` -> ``nf4`` for LoRA on CUDA when bitsandbytes imports, else no quantization."""
    if cfg.quantize != "auto":
        return cfg.quantize
    if cfg.method != "lora" or device.type != "cuda" or is_tinyvlm_dir(resolve_lm_path(cfg.backbone)):
        return ""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return ""
    return "nf4"


def load_training_rows(cfg: TrainConfig) -> list[Triplet]:
    if cfg.data == "hsk":
        return hsk_triplets(hsk_pairs_split(cfg.hsk_test_size, cfg.seed).train, seed=cfg.seed)
    return read_triplets(cfg.data)


def batch_indices(n_rows: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The global batch of ``step``: epochs are fixed permutations of (seed, epoch); the last partial batch is dropped."""
    per_epoch = n_rows // batch_size
    if per_epoch < 1:
        raise UserError(f"batch_size {batch_size} is larger than the {n_rows} training rows")
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
    return perm[k * batch_size : (k + 1) * batch_size].tolist()


def _loss_plot(log: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([r["step"] for r in log], [r["loss"] for r in log])
    ax.set_xlabel("step")
    ax.set_ylabel("InfoNCE loss")
    ax.set_title("contrastive refinement")
    ax.grid(alpha=0.3)
    return figure_png(fig)


def train(cfg: TrainConfig, out: str | Path, resume: bool = False, fresh: bool = False) -> dict:
    """Train; writes config.yaml, checkpoints/, train_log.jsonl, model/ and metrics.json. ``resume``
    continues the run in ``out``; ``fresh`` deletes its checkpoints and logs and starts over."""
    info = init_distributed()
    _check(cfg, info)
    device = pick_device(cfg.device)
    rows = load_training_rows(cfg)  # bad training data fails before anything is written
    if cfg.epochs > 0:  # the step count the epochs make; config.yaml records it
        cfg.max_steps = total_steps(cfg, len(rows))
    run = RunDir(out)
    begin = start_run(
        "lco train",
        cfg,
        run.path,
        resume=resume,
        fresh=fresh,
        may_differ=RESUME_MAY_DIFFER,
        keep_last=cfg.keep_checkpoints,
        is_main=info.is_main,
    )
    if info.is_main:
        run.write_config(cfg)
    seed_everything(cfg.seed + info.rank)
    if not cfg.hard_negatives:
        rows = [Triplet(r.anchor, r.positive, None) for r in rows]

    quantize = resolve_quantize(cfg, device)
    emb, params, ddp = _build_model(cfg, device, info, quantize)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = min(cfg.warmup_steps, cfg.max_steps)
    if cfg.schedule == "linear":
        sched = warmup_linear(opt, warmup, cfg.max_steps)
    else:
        sched = warmup_cosine(opt, warmup, cfg.max_steps)
    state = TrainableState(emb)
    if begin.resumed:
        begin.load(model=state, optimizer=opt, scheduler=sched)
    last = _train_steps(cfg, rows, emb, params, ddp, opt, sched, state, begin, info, run / "train_log.jsonl")

    if begin.nothing_to_train:  # model/ and metrics.json are re-made from the checkpoint and its log
        last = begin.final_row() if info.is_main else {"step": begin.step}
    metrics = {
        "steps": cfg.max_steps,
        "epochs": cfg.epochs,
        "quantize": quantize,
        "gather": cfg.gather,
        "method": cfg.method,
        "backbone": cfg.backbone,
        "trainable_params": sum(p.numel() for p in params),
        "train_rows": len(rows),
        "final": last,
    }
    if info.is_main:
        if cfg.max_steps % cfg.checkpoint_every and not begin.nothing_to_train:
            begin.save(cfg.max_steps, model=state, optimizer=opt, scheduler=sched)
        _export(cfg, emb, ddp, run)
        log = begin.log_rows()
        if log:
            atomic_write_bytes(run.figures / "loss.png", _loss_plot(log))
        metrics.update(begin.metrics())
        run.write_metrics(metrics)
    return metrics


def _check(cfg: TrainConfig, info) -> None:
    """One-line errors for settings that cannot train (before anything is loaded or written)."""
    require_positive(cfg, ("max_steps", "batch_size", "log_every", "checkpoint_every", "max_length"), "lco train")
    if cfg.dtype not in DTYPES:
        raise UserError(f"dtype: unknown '{cfg.dtype}' (one of {', '.join(DTYPES)})")
    if cfg.gather not in GATHER_MODES:
        raise UserError(f"gather: unknown '{cfg.gather}' ({', '.join(GATHER_MODES)})")
    if cfg.schedule not in ("linear", "cosine"):
        raise UserError(f"schedule: unknown '{cfg.schedule}' (linear, cosine)")
    if cfg.quantize not in ("auto", "", "nf4"):
        raise UserError(f"quantize: unknown '{cfg.quantize}' (auto, nf4, or empty for none)")
    if cfg.batch_size % info.world_size:
        raise UserError(f"batch_size {cfg.batch_size} is not divisible by the {info.world_size} ranks")
    if info.enabled and cfg.prompts.query != cfg.prompts.document and not cfg.chunk_size:
        raise UserError(
            "lco train: different query/document prompts under DDP need chunk_size > 0 "
            "(the plain step would run two forwards before one backward)"
        )


def _build_model(cfg: TrainConfig, device: torch.device, info, quantize: str = ""):
    """The embedding model in training mode, its trainable parameters (``method``) and, under
    torchrun, the DDP wrapper of what trains (the head, or the backbone). With 4-bit weights the
    model is prepared for k-bit training first (the reference's ``prepare_model_for_kbit_training``)."""
    backbone = load_backbone(cfg.backbone, dtype=DTYPES[cfg.dtype], device=device, quantize=quantize or None)
    emb = EmbeddingModel(
        backbone, prompts=cfg.prompts, layer=cfg.layer, max_length=cfg.max_length, max_pixels=cfg.max_pixels
    )
    params = apply_method(emb, cfg.method, cfg.lora, kbit=bool(quantize), grad_checkpointing=cfg.grad_checkpointing)
    model = emb.backbone.model
    if cfg.grad_checkpointing and cfg.method != "head":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    ddp = None
    if info.enabled:
        target = emb.head if cfg.method == "head" else model
        ddp = torch.nn.parallel.DistributedDataParallel(
            target, device_ids=[device.index] if device.type == "cuda" else None
        )
        if cfg.method == "head":
            emb.head = ddp
        else:
            emb.forward_module = ddp
    return emb, params, ddp


def _train_steps(
    cfg: TrainConfig, rows, emb: EmbeddingModel, params, ddp, opt, sched, state, begin, info, log_path: Path
) -> dict:
    """Steps ``begin.step .. max_steps``: each rank's slice of the global batch, InfoNCE (GradCache
    chunks with ``chunk_size``), clipping, AdamW; log rows and checkpoints. Returns the last log row."""
    t0, last = time.perf_counter(), {}
    with progress_bar(cfg.max_steps - begin.step, f"lco train {cfg.method}", disable=not info.is_main) as bar:
        for step in range(begin.step, cfg.max_steps):
            opt.zero_grad(set_to_none=True)
            loss = step_backward(cfg, rows, emb, ddp, step, info)
            if not math.isfinite(loss):
                raise UserError(
                    f"lco train: loss is {loss} at step {step}; last good checkpoint: "
                    f"{begin.checkpointer.latest() or 'none'}"
                )
            if info.enabled:  # log the global batch's loss (with gather=global every rank already has it)
                loss = float(all_reduce_mean(torch.tensor(loss, dtype=torch.float64)))
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or float("inf")))
            opt.step()
            sched.step()
            bar.advance()
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.max_steps:
                last = {
                    "step": step + 1,
                    "loss": loss,
                    "grad_norm": grad_norm,
                    "lr": sched.get_last_lr()[0],
                    "seconds": time.perf_counter() - t0,
                }
                bar.status(f"loss {loss:.4f}")
                if info.is_main:
                    append_jsonl(log_path, last, fsync=False)
            if (step + 1) % cfg.checkpoint_every == 0 and info.is_main:
                begin.save(step + 1, model=state, optimizer=opt, scheduler=sched)
    return last


def step_backward(cfg: TrainConfig, rows, emb: EmbeddingModel, ddp, step: int, info) -> float:
    """This rank's slice of step ``step``'s global batch: forward, InfoNCE and backward into ``.grad``
    (GradCache chunks with ``chunk_size``). Returns this rank's loss."""
    per_rank = cfg.batch_size // info.world_size
    idx = batch_indices(len(rows), cfg.batch_size, step, cfg.seed)
    mine = [rows[i] for i in idx[info.rank * per_rank : (info.rank + 1) * per_rank]]
    anchors = [r.anchor for r in mine]
    positives = [r.positive for r in mine]
    negatives = [r.negative for r in mine] if mine[0].negative is not None else None
    if cfg.chunk_size:
        return chunked_contrastive_backward(
            _SideEncoder(emb, cfg.thumbnail),
            [("query", a) for a in anchors],
            [("document", p) for p in positives],
            None if negatives is None else [("document", n) for n in negatives],
            chunk_size=cfg.chunk_size,
            temperature=cfg.temperature,
            gather=cfg.gather,
            no_sync=(ddp.no_sync if ddp is not None else None),
        )
    return _full_step(emb, anchors, positives, negatives, cfg)  # one forward: DDP sees one forward per backward


def _export(cfg: TrainConfig, emb: EmbeddingModel, ddp, run: RunDir) -> None:
    """Unwrap DDP, switch to inference and save ``model/`` (adapter, head or full weights)."""
    model = emb.backbone.model
    if ddp is not None and cfg.method == "head":
        emb.head = ddp.module
    emb.forward_module = None
    model.eval()
    if cfg.grad_checkpointing and cfg.method != "head":
        model.gradient_checkpointing_disable()
    emb.max_length = cfg.eval_max_length  # the saved model encodes with the evaluation budgets
    emb.set_max_pixels(cfg.eval_max_pixels)
    save_model(
        emb,
        run / "model",
        method=cfg.method,
        backbone=cfg.backbone,
        info={"trained_steps": cfg.max_steps, "data": cfg.data},
    )


class _SideEncoder:
    """GradCache's encode(items): items are (side, item) pairs of one side."""

    def __init__(self, emb: EmbeddingModel, thumbnail: int = 0):
        self.emb = emb
        self.thumbnail = thumbnail

    def __call__(self, items):
        side = items[0][0]
        return self.emb.embed_batch([load_media(x, self.thumbnail) for _, x in items], side=side)


def _full_step(emb: EmbeddingModel, anchors, positives, negatives, cfg: TrainConfig) -> float:
    """Embed anchors, positives and negatives (one forward when both sides share a prompt format), InfoNCE, backward."""
    if emb.prompts.query == emb.prompts.document:
        items = [load_media(x, cfg.thumbnail) for x in anchors + positives + (negatives or [])]
        e = emb.embed_batch(items, side="document")
        b = len(anchors)
        a, p, n = e[:b], e[b : 2 * b], (e[2 * b :] if negatives else None)
    else:
        a = emb.embed_batch([load_media(x, cfg.thumbnail) for x in anchors], side="query")
        rest = emb.embed_batch([load_media(x, cfg.thumbnail) for x in positives + (negatives or [])], side="document")
        p, n = rest[: len(positives)], (rest[len(positives) :] if negatives else None)
    loss = info_nce(a, p, n, temperature=cfg.temperature, gather=cfg.gather)
    loss.backward()
    return float(loss.detach())
