"""``genrep lco pretrain-vlm``: generative (captioning) pre-training of the tiny VLM, saving a family of
backbones of increasing generative skill.

The Generation-Representation Scaling Law (docs/papers.md s2.2) compares backbones that generate
better or worse. Here they are checkpoints of one captioning run: the tiny VLM
(``genrep.lco.tinyvlm``) learns to caption Fashion-MNIST images (captions from
``genrep.lco.captions``; optionally the scikit-image photos too) with the next-token loss on the
caption tokens only, as LLaVA's stage 1 (projector only, ``lm_lora_r = 0``) or stage 2 (projector
plus a LoRA on the language model, ``lm_lora_r > 0``). At every step in ``save_at`` the model is
saved as a backbone directory (a few MB: the projector, the LM adapter if any, the tokenizer) with
its *generative score* on held-out Fashion-MNIST test images:

- ``caption_loglik``: mean log-likelihood per caption token of a reference caption of each image
  (the negative of the held-out captioning loss; higher = better generator);
- ``caption_accuracy``: the share of greedy captions that name the image's class
  (``captions.class_of_caption``).

Training is resumable (``--resume``): the trainable weights, the optimizer, the scheduler and the
RNGs are checkpointed, the batches are a function of (seed, step), and saved backbones are kept.
Only the fields in :data:`RESUME_MAY_DIFFER` may change on resume (``genrep.core.resume``).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from genrep.core.config import Count, Fraction, NonNeg, NonNegInt, Positive, require_positive
from genrep.core.errors import UserError
from genrep.core.images import figure_png
from genrep.core.jsonl import append_jsonl
from genrep.core.lr_schedule import warmup_cosine
from genrep.core.progress import progress_bar
from genrep.core.resume import RunStart, start_run
from genrep.core.rundir import RunDir, atomic_write_bytes, atomic_write_json
from genrep.core.runtime import pick_device, seed_everything
from genrep.lco.captioning import (
    CaptionData,
    caption_loss,
    caption_nll,
    captioning_batch,
    fashion_split,
    generate_captions,
    prompt_text,
    reference_captions,
)
from genrep.lco.captions import PHOTO_CAPTIONS, caption, class_of_caption
from genrep.lco.tinyvlm import TinyVLM, TinyVLMConfig, TinyVLMProcessor, build_tinyvlm

SCORE_FILE = "generative.json"
# run-control fields that --resume accepts changed (``steps`` is this command's step budget)
RESUME_MAY_DIFFER = ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "device")


@dataclass
class PretrainConfig:
    vlm: TinyVLMConfig = field(default_factory=TinyVLMConfig)
    steps: Count = 150
    batch_size: Count = 16
    lr: Positive = 1e-3  # projector
    lm_lora_r: NonNegInt = 0  # 0: projector only (LLaVA stage 1); > 0: also a LoRA (alpha 2r) on the LM's linear layers
    lm_lr: Positive = 2e-4
    warmup_steps: NonNegInt = 10
    weight_decay: NonNeg = 0.0
    grad_clip: NonNeg = 1.0
    save_at: list[NonNegInt] = field(
        default_factory=lambda: [0, 10, 40, 150]
    )  # backbones; the last step is always saved
    train_images: Count = 20000  # Fashion-MNIST training images used (a fixed random subset)
    eval_images: Count = 200  # held-out Fashion-MNIST test images for the generative score
    photos_fraction: Fraction = 0.0  # share of training rows that are a scikit-image photo (random crop)
    instruction: str = "Describe the image."
    max_new_tokens: Count = 16
    eval_batch_size: Count = 32
    seed: int = 0
    device: str = "auto"
    log_every: Count = 10
    checkpoint_every: Count = 50
    keep_checkpoints: NonNegInt = 2


# ---------------------------------------------------------------------------------------------- data
def _photo_crop(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = photo.shape[:2]
    scale = rng.uniform(0.6, 1.0)
    ch, cw = max(8, int(h * scale)), max(8, int(w * scale))
    y, x = rng.integers(h - ch + 1), rng.integers(w - cw + 1)
    return photo[y : y + ch, x : x + cw]


def training_rows(
    data: CaptionData, idx: list[int], step: int, cfg: PretrainConfig, photos: dict[str, np.ndarray] | None
) -> tuple[list, list[str]]:
    """Images and freshly sampled captions of one batch (a function of (seed, step, row))."""
    images, texts = [], []
    for j, i in enumerate(idx):
        rng = np.random.default_rng([cfg.seed, step, j])
        if photos and rng.random() < cfg.photos_fraction:
            name = sorted(photos)[int(rng.integers(len(photos)))]
            images.append(_photo_crop(photos[name], rng))
            texts.append(PHOTO_CAPTIONS[name][int(rng.integers(len(PHOTO_CAPTIONS[name])))])
        else:
            images.append(data.images[i])
            texts.append(caption(int(data.labels[i]), data.attributes[i], rng))
    return images, texts


# ---------------------------------------------------------------------------------------------- scores
def generative_score(model: TinyVLM, processor: TinyVLMProcessor, data: CaptionData, cfg: PretrainConfig) -> dict:
    """The generative score of a backbone on held-out images (see the module docstring)."""
    was = model.training
    model.eval()
    prompt = prompt_text(processor, cfg.instruction)
    images = list(data.images)
    nll = caption_nll(model, processor, prompt, images, reference_captions(data, cfg.seed), cfg.eval_batch_size)
    generated = generate_captions(model, processor, prompt, images, cfg.max_new_tokens, cfg.eval_batch_size)
    named = [class_of_caption(g) for g in generated]
    model.train(was)
    return {
        "caption_nll": nll,
        "caption_loglik": -nll,
        "caption_perplexity": math.exp(min(nll, 50.0)),
        "caption_accuracy": float(np.mean([p == int(y) for p, y in zip(named, data.labels)])),
        "names_a_class": float(np.mean([p is not None for p in named])),
        "samples": [{"label": int(data.labels[i]), "caption": generated[i]} for i in range(min(8, len(data)))],
        "eval_images": len(data),
    }


# ---------------------------------------------------------------------------------------------- training
class _Trainable(torch.nn.Module):
    """Only the trainable tensors of the model, for small exact-resume checkpoints."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self._model = [model]

    def _named(self):
        return {n: p for n, p in self._model[0].named_parameters() if p.requires_grad}

    def state_dict(self, *args, **kwargs):  # noqa: D102
        return {n: p.detach() for n, p in self._named().items()}

    def load_state_dict(self, state, strict: bool = True):  # type: ignore[override]  # noqa: D102
        named = self._named()
        if set(named) != set(state):
            raise UserError(
                "pretrain-vlm --resume: the checkpoint does not match this configuration's trainable weights"
            )
        with torch.no_grad():
            for n, p in named.items():
                p.copy_(state[n])


def backbone_name(step: int) -> str:
    return f"step_{step:06d}"


def save_backbone(model: TinyVLM, processor: TinyVLMProcessor, directory: Path, score: dict, lm_lora: bool) -> Path:
    """Write a backbone directory atomically (temporary directory + rename)."""
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, language_model="adapter" if lm_lora else "reference")
    processor.save_pretrained(tmp)
    atomic_write_json(tmp / SCORE_FILE, score)
    old = directory.with_name(f".{directory.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)  # a crash from here on leaves the new or the old backbone, never neither
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def _samples_figure(data: CaptionData, rows: list[tuple[str, list[str]]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(6, len(data))
    fig, axes = plt.subplots(1, n, figsize=(2.3 * n, 1.9 + 0.42 * len(rows)), squeeze=False)
    for j in range(n):
        ax = axes[0, j]
        ax.imshow(data.images[j], cmap="gray")
        ax.set_xticks([])
        ax.set_yticks([])
        text = "\n".join(f"{name}: {caps[j][:34]}" for name, caps in rows if j < len(caps))
        ax.set_xlabel(text, fontsize=6, loc="left")
    fig.suptitle("greedy captions of held-out images, per backbone (pre-training step)", fontsize=9)
    fig.tight_layout()
    return figure_png(fig)


def _curve_figure(points: list[dict], log: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    if log:
        axes[0].plot([r["step"] for r in log], [r["loss"] for r in log])
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("captioning loss (train)")
    axes[0].grid(alpha=0.3)
    steps = [p["step"] for p in points]
    h1 = axes[1].plot(steps, [p["caption_loglik"] for p in points], "o-", label="held-out caption log-lik / token")
    ax2 = axes[1].twinx()
    h2 = ax2.plot(steps, [p["caption_accuracy"] for p in points], "s--", color="C1", label="caption class accuracy")
    axes[1].set_xlabel("pre-training step")
    axes[1].set_ylabel("log-likelihood")
    ax2.set_ylabel("class accuracy")
    axes[1].grid(alpha=0.3)
    axes[1].legend(handles=h1 + h2, fontsize=7, loc="lower right")
    axes[1].set_title("generative score of the saved backbones", fontsize=9)
    fig.tight_layout()
    return figure_png(fig)


# ---------------------------------------------------------------------------------------------- run
def _validate(cfg: PretrainConfig) -> list[int]:
    """One-line UserErrors for a config that cannot run; returns the sorted backbone steps (the last one included)."""
    require_positive(
        cfg,
        (
            "steps",
            "batch_size",
            "eval_images",
            "eval_batch_size",
            "log_every",
            "checkpoint_every",
            "max_new_tokens",
            "train_images",
        ),
        "lco pretrain-vlm",
    )
    cfg.vlm.validate()
    bad = [s for s in cfg.save_at if not 0 <= s <= cfg.steps]
    if bad:
        raise UserError(f"save_at: steps {bad} are outside 0..steps ({cfg.steps})")
    if cfg.lm_lora_r < 0 or cfg.grad_clip < 0:
        raise UserError(f"lm_lora_r ({cfg.lm_lora_r}) and grad_clip ({cfg.grad_clip}) must be >= 0 (0 = off)")
    if not 0.0 <= cfg.photos_fraction <= 1.0:
        raise UserError(f"photos_fraction: {cfg.photos_fraction} must be in [0, 1]")
    return sorted(set(cfg.save_at) | {cfg.steps})


def _load_photos(cfg: PretrainConfig) -> dict[str, np.ndarray] | None:
    """The scikit-image photos when ``photos_fraction`` > 0, else None."""
    if cfg.photos_fraction <= 0:
        return None
    from genrep.core import assets

    return assets.load("skimage-photos")


def _build_model(cfg: PretrainConfig, device: torch.device) -> tuple[TinyVLM, TinyVLMProcessor, list[dict]]:
    """The tiny VLM with its LM frozen (plus a LoRA on it when ``lm_lora_r`` > 0) and the optimizer's
    parameter groups: the projector at ``lr``, the LoRA at ``lm_lr``."""
    model, processor = build_tinyvlm(cfg.vlm, device=device)
    model.language_model.requires_grad_(False)  # stage 1 trains the projector only (no LM weight gradients)
    params: list[dict] = [{"params": list(model.multi_modal_projector.parameters()), "lr": cfg.lr}]
    if cfg.lm_lora_r > 0:
        from peft import LoraConfig, get_peft_model

        from genrep.lco.backbones import language_linear_names

        lora = LoraConfig(
            r=cfg.lm_lora_r,
            lora_alpha=2 * cfg.lm_lora_r,
            lora_dropout=0.0,
            target_modules=language_linear_names(model.language_model),
            bias="none",
        )
        model.language_model = get_peft_model(model.language_model, lora)
        params.append({"params": [p for p in model.language_model.parameters() if p.requires_grad], "lr": cfg.lm_lr})
    return model, processor, params


def _backbones_dir(run: RunDir, resumed: bool) -> Path:
    """``OUT/backbones``; a run from scratch first drops an earlier run's backbones."""
    backbones_dir = run / "backbones"
    if not resumed and backbones_dir.is_dir():
        # a run from scratch saves every backbone anew; an earlier run's must not pass for its own on a later resume
        for old in backbones_dir.glob("step_*"):
            shutil.rmtree(old, ignore_errors=True)
    backbones_dir.mkdir(exist_ok=True)
    return backbones_dir


@dataclass
class _Session:
    """What one pre-training run works with, from its setup in :func:`pretrain` to its results."""

    cfg: PretrainConfig
    device: torch.device
    run: RunDir
    begin: RunStart  # resume state, checkpoints and the train log
    save_at: list[int]
    train_data: CaptionData
    eval_data: CaptionData
    photos: dict[str, np.ndarray] | None
    model: TinyVLM
    processor: TinyVLMProcessor
    trainable: list[torch.nn.Parameter]
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    state: _Trainable
    backbones_dir: Path

    def maybe_save(self, step: int) -> None:
        """Save the backbone of ``step`` with its generative score if ``step`` is in ``save_at`` (a resumed run
        keeps one already saved)."""
        target = self.backbones_dir / backbone_name(step)
        if step in self.save_at and not (self.begin.resumed and (target / SCORE_FILE).is_file()):
            score = {"step": step, **generative_score(self.model, self.processor, self.eval_data, self.cfg)}
            save_backbone(self.model, self.processor, target, score, self.cfg.lm_lora_r > 0)


def _train(s: _Session) -> None:
    """The step loop from ``begin.step`` to ``steps``: logs, checkpoints and backbones on their steps."""
    from genrep.lco.train import batch_indices

    cfg, model = s.cfg, s.model
    start = s.begin.step
    log_path = s.run / "train_log.jsonl"
    prompt = prompt_text(s.processor, cfg.instruction)
    s.maybe_save(start)
    model.train()
    t0 = time.perf_counter()
    with progress_bar(cfg.steps - start, "pretrain-vlm (captioning)") as bar:
        for step in range(start, cfg.steps):
            idx = batch_indices(len(s.train_data), cfg.batch_size, step, cfg.seed)
            images, texts = training_rows(s.train_data, idx, step, cfg, s.photos)
            batch = {k: v.to(s.device) for k, v in captioning_batch(s.processor, prompt, images, texts).items()}
            s.opt.zero_grad(set_to_none=True)
            total, count = caption_loss(model, batch)
            loss = total / max(count, 1)  # mean over the batch's caption tokens (the LM's own loss)
            if not torch.isfinite(loss):
                raise UserError(f"pretrain-vlm: loss is {float(loss)} at step {step}; lower lr")
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(s.trainable, cfg.grad_clip or float("inf")))
            s.opt.step()
            s.sched.step()
            bar.advance()
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                rec = {
                    "step": step + 1,
                    "loss": float(loss.detach()),
                    "grad_norm": grad_norm,
                    "seconds": time.perf_counter() - t0,
                }
                bar.status(f"loss {float(loss.detach()):.3f}")
                append_jsonl(log_path, rec, fsync=False)
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                s.begin.save(step + 1, model=s.state, optimizer=s.opt, scheduler=s.sched)
            if step + 1 in s.save_at:
                s.maybe_save(step + 1)
                model.train()


def _write_results(s: _Session) -> dict:
    """The figures and ``metrics.json`` (one entry per saved backbone); returns the metrics."""
    points = []
    for step in s.save_at:
        f = s.backbones_dir / backbone_name(step) / SCORE_FILE
        if f.is_file():
            points.append({**json.loads(f.read_text()), "dir": str(f.parent.resolve())})
    log = s.begin.log_rows()
    atomic_write_bytes(s.run.figures / "generative_score.png", _curve_figure(points, log))
    atomic_write_bytes(
        s.run.figures / "captions.png",
        _samples_figure(
            s.eval_data,
            [
                (backbone_name(p["step"]).replace("step_", "").lstrip("0") or "0", [c["caption"] for c in p["samples"]])
                for p in points
            ],
        ),
    )
    metrics = {
        "backbones": [{k: v for k, v in p.items() if k != "samples"} for p in points],
        "steps": s.cfg.steps,
        "final_loss": log[-1]["loss"] if log else None,
        "trainable_params": sum(p.numel() for p in s.trainable),
        **s.begin.metrics(),
    }
    s.run.write_metrics(metrics)
    return metrics


def pretrain(cfg: PretrainConfig, out: str | Path, resume: bool = False, fresh: bool = False) -> dict:
    """Run the captioning pre-training; returns (and writes) the metrics with one entry per saved backbone.

    ``resume`` continues the run in ``out``; ``fresh`` deletes its checkpoints and log and starts over.
    """
    save_at = _validate(cfg)
    device = pick_device(cfg.device)
    run = RunDir(out)
    begin = start_run(
        "lco pretrain-vlm",
        cfg,
        run.path,
        resume=resume,
        fresh=fresh,
        may_differ=RESUME_MAY_DIFFER,
        steps_key="steps",
        keep_last=cfg.keep_checkpoints,
    )
    run.write_config(cfg)
    seed_everything(cfg.seed)  # then the data, the model (its init draws), the optimizer: in this order
    train_data = fashion_split("train", cfg.train_images, cfg.seed)
    eval_data = fashion_split("test", cfg.eval_images, cfg.seed)
    photos = _load_photos(cfg)
    model, processor, params = _build_model(cfg, device)
    opt = torch.optim.AdamW(params, weight_decay=cfg.weight_decay)
    sched = warmup_cosine(opt, min(cfg.warmup_steps, cfg.steps), cfg.steps)
    state = _Trainable(model)
    if begin.resumed:
        begin.load(model=state, optimizer=opt, scheduler=sched)
    session = _Session(
        cfg=cfg,
        device=device,
        run=run,
        begin=begin,
        save_at=save_at,
        train_data=train_data,
        eval_data=eval_data,
        photos=photos,
        model=model,
        processor=processor,
        trainable=[p for g in params for p in g["params"]],
        opt=opt,
        sched=sched,
        state=state,
        backbones_dir=_backbones_dir(run, begin.resumed),
    )
    _train(session)
    return _write_results(session)
