"""``genrep lco grsl-experiment``: LCO-EMB's two central claims, reproduced on the tiny VLM.

docs/papers.md s2.1 and s2.2: (1) language-centric, *text-only* contrastive refinement of a multimodal LLM
improves its *image* embeddings too (anisotropy drops for every modality); (2) the Generation-
Representation Scaling Law: backbones that generate better give better embeddings after the same
refinement. The experiment:

1. ``pretrain``: captioning pre-training of the tiny VLM (``genrep.lco.pretrain_vlm``) saves a
   family of backbones at increasing steps, each with its generative score (held-out caption
   log-likelihood per token, caption class accuracy).
2. For each backbone, *before*: Fashion-MNIST test images (disjoint from the generative-score
   images) are embedded with the image suffix prompt; zero-shot classification against one text
   per class ("A photo of a sweater."), image->caption retrieval over a gallery of captions
   (relevant = the image's class), and the anisotropy of the image and of the text embeddings.
3. Text-only LoRA refinement (``genrep.lco.train``) on caption triplets (``captions.caption_triplets``;
   no image is ever seen), then the same measurements *after*.
4. The GRSL fit (``genrep.lco.grsl``) of representation score (zero-shot accuracy after refinement)
   against generative score, the correlation, plots, ``metrics.json`` and ``points.jsonl``.

Every stage writes its result before the next starts; ``--resume`` skips finished stages and
continues an interrupted pre-training or refinement from its last checkpoint. A resumed experiment
must have the config of the run it continues (only :data:`RESUME_MAY_DIFFER` may change; checked
against ``OUT/config.yaml`` before anything is written), and a run without ``--resume`` refuses an
``OUT`` that holds checkpoints of an earlier one unless ``fresh`` is passed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genrep.core.config import Count, Fraction, NonNegInt, Positive, read_yaml, require_positive
from genrep.core.errors import UserError
from genrep.core.images import figure_png
from genrep.core.resume import check_same_config, refuse_earlier_run
from genrep.core.rundir import RunDir, atomic_write_bytes, atomic_write_json, atomic_write_text
from genrep.lco.captioning import CaptionData, fashion_split
from genrep.lco.captions import PATTERNS, SYNONYMS, TONES, Attributes, caption, caption_triplets, class_prompts
from genrep.lco.data import read_triplets, write_triplets
from genrep.lco.embedding import EmbeddingModel
from genrep.lco.geometry import anisotropy
from genrep.lco.grsl import GRSLPoint, fit_grsl, plot_grsl
from genrep.lco.metrics import cosine_matrix, mcnemar_exact, retrieval_metrics, zero_shot_accuracy
from genrep.lco.pretrain_vlm import SCORE_FILE, PretrainConfig, backbone_name, pretrain

if TYPE_CHECKING:
    from genrep.lco.train import TrainConfig

GENERATIVE_METRICS = ("caption_loglik", "caption_accuracy")
# what --resume accepts changed: where it runs and the pre-training's logging and checkpointing (a finished
# stage is never redone, so anything that would change its result must stay as it was)
RESUME_MAY_DIFFER = (
    "device",
    "pretrain.device",
    "pretrain.log_every",
    "pretrain.checkpoint_every",
    "pretrain.keep_checkpoints",
)
REPRESENTATION_METRICS = ("zero_shot_accuracy", "i2t_top1", "i2t_ndcg@10")


@dataclass
class RefineConfig:
    """The text-only LoRA refinement run on every backbone (same data, steps and seed for all)."""

    steps: Count = 30
    batch_size: Count = 8  # triplets per step (the paper: 768)
    lr: Positive = 4e-4
    warmup_steps: NonNegInt = 3
    lora_r: Count = 16
    lora_alpha: Positive = 16.0
    lora_dropout: Fraction = 0.0
    text_rows: Count = 2000  # caption triplets generated (text only)
    extra_data: str = ""  # optional text triplet JSONL mixed in (e.g. NLI triplets)
    temperature: Positive = 0.03
    max_length: Count = 64


@dataclass
class GRSLExperimentConfig:
    pretrain: PretrainConfig = field(
        default_factory=lambda: PretrainConfig(steps=200, save_at=[0, 15, 40, 90, 200], eval_images=200)
    )
    refine: RefineConfig = field(default_factory=RefineConfig)
    test_images: Count = 300  # Fashion-MNIST test images for the representation scores
    captions_per_class: Count = 10  # retrieval gallery size = 10 x this
    encode_batch_size: Count = 32
    generative_metric: str = "caption_loglik"
    representation_metric: str = "zero_shot_accuracy"
    seed: int = 0  # used everywhere: it replaces pretrain.seed (one seed for splits, captions, refinement)
    device: str = "auto"  # replaces pretrain.device
    # false: claim (1) only (text-only refinement -> image transfer) on one or more backbones, no GRSL fit;
    # for budgets too small to rank backbones (the demo)
    fit: bool = True


def fast_config() -> GRSLExperimentConfig:
    """The ``--fast`` profile (the demo; a slow test): 8 min 30 s measured on 2 CPU cores."""
    return GRSLExperimentConfig(
        pretrain=PretrainConfig(
            steps=60,
            save_at=[0, 20, 60],
            eval_images=48,
            batch_size=16,
            train_images=5000,
            log_every=5,
            checkpoint_every=30,
        ),
        refine=RefineConfig(steps=8, text_rows=400),
        test_images=100,
        captions_per_class=4,
    )


PROFILES = {"default": GRSLExperimentConfig, "fast": fast_config}


# ---------------------------------------------------------------------------------------------- scores
def gallery(cfg: GRSLExperimentConfig) -> tuple[list[str], np.ndarray]:
    """Retrieval gallery: ``captions_per_class`` random captions per class and their labels."""
    rng = np.random.default_rng([cfg.seed, 11])
    texts, labels = [], []
    for c in range(len(SYNONYMS)):
        for _ in range(cfg.captions_per_class):
            attrs = Attributes(TONES[rng.integers(3)], PATTERNS[rng.integers(2)])
            texts.append(caption(c, attrs, rng))
            labels.append(c)
    return texts, np.array(labels)


def representation_scores(emb: EmbeddingModel, data: CaptionData, cfg: GRSLExperimentConfig) -> dict:
    """Zero-shot accuracy, image->caption retrieval and per-modality anisotropy of one embedding model."""
    bs = cfg.encode_batch_size
    img = emb.encode([{"image": im} for im in data.images], batch_size=bs, description="encode images")
    cls = emb.encode(class_prompts(), batch_size=bs, show_progress=False)
    texts, text_labels = gallery(cfg)
    txt = emb.encode(texts, batch_size=bs, description="encode captions")
    zs = zero_shot_accuracy(img, cls, data.labels)
    scores = cosine_matrix(img, txt)
    qrels = [np.flatnonzero(text_labels == y).tolist() for y in data.labels]
    ret = retrieval_metrics(scores, qrels, ks=(1, 10), ndcg_k=10)
    top1 = text_labels[scores.argmax(1)] == data.labels
    return {
        "zero_shot_accuracy": zs["accuracy"],
        "zero_shot_correct": (np.asarray(zs["predictions"]) == data.labels).tolist(),
        "zero_shot_per_class": [None if np.isnan(a) else a for a in zs["per_class"]],
        "i2t_top1": float(top1.mean()),
        "i2t_ndcg@10": ret["ndcg@10"],
        "i2t_mrr": ret["mrr"],
        "anisotropy_image": anisotropy(img),
        "anisotropy_text": anisotropy(txt),
        "image_text_gap": float(np.linalg.norm(img.mean(0) - txt.mean(0))),
        "n_images": len(data),
        "n_texts": len(texts),
    }


# ---------------------------------------------------------------------------------------------- plots
def _se(scores: dict) -> float:
    """Binomial standard error of a zero-shot accuracy over ``n_images`` images."""
    p = scores["zero_shot_accuracy"]
    return float(np.sqrt(p * (1 - p) / scores["n_images"]))


def _transfer_figure(rows: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"].replace("step_", "").lstrip("0") or "0" for r in rows]
    x = np.arange(len(rows))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, key, title in (
        (axes[0], "zero_shot_accuracy", "image zero-shot accuracy"),
        (axes[1], "anisotropy_image", "anisotropy of image embeddings"),
        (axes[2], "anisotropy_text", "anisotropy of text embeddings"),
    ):
        err = {
            side: [_se(r[side]) for r in rows] if key == "zero_shot_accuracy" else None for side in ("before", "after")
        }
        ax.bar(x - 0.2, [r["before"][key] for r in rows], 0.4, yerr=err["before"], capsize=2, label="before (base)")
        ax.bar(
            x + 0.2, [r["after"][key] for r in rows], 0.4, yerr=err["after"], capsize=2, label="after text-only LoRA"
        )
        ax.set_xticks(x, names)
        ax.set_xlabel("backbone (captioning pre-training step)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0].axhline(1 / len(SYNONYMS), color="grey", ls=":", lw=1, label="chance")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


# ---------------------------------------------------------------------------------------------- run
def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _validate(cfg: GRSLExperimentConfig) -> None:
    require_positive(cfg, ("test_images", "captions_per_class", "encode_batch_size"), "lco grsl-experiment")
    require_positive(cfg.refine, ("steps", "batch_size", "text_rows", "max_length"), "lco grsl-experiment refine")
    if cfg.generative_metric not in GENERATIVE_METRICS:
        raise UserError(
            f"generative_metric: unknown '{cfg.generative_metric}' (one of {', '.join(GENERATIVE_METRICS)})"
        )
    if cfg.representation_metric not in REPRESENTATION_METRICS:
        raise UserError(
            f"representation_metric: unknown '{cfg.representation_metric}' (one of {', '.join(REPRESENTATION_METRICS)})"
        )
    if cfg.fit and len(set(cfg.pretrain.save_at) | {cfg.pretrain.steps}) < 3:
        raise UserError("pretrain.save_at: the scaling-law fit needs at least 3 backbones (save_at + the last step)")


def _check_start(cfg: GRSLExperimentConfig, run: RunDir, resume: bool, fresh: bool) -> None:
    """The resume rules of the module docstring; after they pass, a run that is not resumed drops the
    per-backbone results of an earlier run (it recomputes them all)."""
    import shutil

    command = "lco grsl-experiment"
    if resume and fresh:
        raise UserError(f"{command}: resume and fresh exclude each other")
    if resume:
        if (run / "config.yaml").is_file():
            check_same_config(
                command,
                cfg,
                read_yaml(run / "config.yaml"),
                f"the experiment in {run.path} ran with",
                RESUME_MAY_DIFFER,
            )
        return
    if not fresh:
        for ckpt_dir in [run / "pretrain" / "checkpoints", *sorted((run / "family").glob("*/refine/checkpoints"))]:
            refuse_earlier_run(command, ckpt_dir)
    shutil.rmtree(run / "family", ignore_errors=True)


def _pretrain_stage(cfg: GRSLExperimentConfig, run: RunDir, resume: bool, fresh: bool) -> dict:
    """Stage 1: the pre-training's metrics (its backbones with their generative scores); a resumed experiment
    reuses a finished pre-training."""
    pre_dir = run / "pretrain"
    pre = _read(pre_dir / "metrics.json") if resume else None
    if pre is None:
        pre = pretrain(cfg.pretrain, pre_dir, resume=resume, fresh=fresh)
    return pre


def _write_refine_data(cfg: GRSLExperimentConfig, run: RunDir) -> Path:
    """The text-only refinement triplets (caption triplets plus ``refine.extra_data``), written to
    ``OUT/refine_data.jsonl``; returns that path."""
    data_path = run / "refine_data.jsonl"
    rows = caption_triplets(cfg.refine.text_rows, seed=cfg.seed)
    if cfg.refine.extra_data:
        extra = read_triplets(cfg.refine.extra_data)
        if any(set(side) - {"text"} for r in extra for side in (r.anchor, r.positive, r.negative or {})):
            raise UserError(
                f"refine.extra_data: {cfg.refine.extra_data} has non-text items; the refinement is text-only"
            )
        rows += extra
    write_triplets(data_path, rows)
    return data_path


def _refine_config(cfg: GRSLExperimentConfig, backbone: Path, data_path: Path, device: str) -> TrainConfig:
    """The ``genrep.lco.train`` config of one backbone's text-only LoRA refinement."""
    from genrep.lco.adapters import LoraSettings
    from genrep.lco.train import TrainConfig

    r = cfg.refine
    return TrainConfig(
        backbone=str(backbone),
        data=str(data_path),
        method="lora",
        # the decoder's linears and cosine decay: the settings docs/lco.md's results were measured with
        lora=LoraSettings(r=r.lora_r, alpha=r.lora_alpha, dropout=r.lora_dropout, scope="language"),
        schedule="cosine",
        max_steps=r.steps,
        batch_size=r.batch_size,
        lr=r.lr,
        warmup_steps=r.warmup_steps,
        temperature=r.temperature,
        max_length=r.max_length,
        seed=cfg.seed,
        device=device,
        log_every=max(1, min(5, r.steps)),
        checkpoint_every=max(1, r.steps // 2),
    )


def _backbone_stage(
    cfg: GRSLExperimentConfig,
    name: str,
    bdir: Path,
    home: Path,
    data_path: Path,
    test: CaptionData,
    device: str,
    resume: bool,
) -> dict:
    """Stages 2-3 for one backbone: its representation scores before, the text-only refinement, the scores
    after (each written to ``home`` before the next starts; a resumed experiment skips finished ones).
    Returns the backbone's entry of ``metrics.json``."""
    from genrep.lco.adapters import load_model
    from genrep.lco.train import train

    home.mkdir(parents=True, exist_ok=True)
    before = _read(home / "before.json") if resume else None
    if before is None:
        before = representation_scores(load_model(f"base:{bdir}", device=device), test, cfg)
        atomic_write_json(home / "before.json", before)
    after = _read(home / "after.json") if resume else None
    if after is None:
        tcfg = _refine_config(cfg, bdir, data_path, device)
        if not (resume and (home / "refine" / "model" / "lco_model.json").is_file()):
            train(tcfg, home / "refine", resume=resume)
        after = representation_scores(load_model(str(home / "refine" / "model"), device=device), test, cfg)
        atomic_write_json(home / "after.json", after)
    gen = json.loads((bdir / SCORE_FILE).read_text())
    return {
        "name": name,
        "step": gen["step"],
        "dir": str(bdir),
        "generative": {k: gen[k] for k in ("caption_loglik", "caption_nll", "caption_accuracy", "names_a_class")},
        "before": before,
        "after": after,
    }


def _write_points(cfg: GRSLExperimentConfig, run: RunDir, results: list[dict]) -> list[GRSLPoint]:
    """The (generative, representation) point of every backbone, also written to ``OUT/points.jsonl``."""
    points = [
        GRSLPoint(r["name"], r["generative"][cfg.generative_metric], r["after"][cfg.representation_metric])
        for r in results
    ]
    atomic_write_text(
        run / "points.jsonl",
        "".join(
            json.dumps({"name": p.name, "generative": p.generative, "representation": p.representation}) + "\n"
            for p in points
        ),
    )
    return points


def _fit(cfg: GRSLExperimentConfig, points: list[GRSLPoint], results: list[dict]) -> tuple[dict, dict]:
    """The GRSL fit of ``points`` and one fit per generative metric (``{"error": ...}`` where none fits or
    ``fit`` is off)."""
    fits_other: dict = {}
    if not cfg.fit:
        fit: dict = {"error": "not fitted (fit: false): this run measures text-to-image transfer only"}
    else:
        try:
            fit = fit_grsl(points)
        except UserError as err:  # e.g. all backbones equally good: no line to fit
            fit = {"error": str(err)}
    for g in GENERATIVE_METRICS if cfg.fit else ():
        try:
            fits_other[g] = fit_grsl(
                [GRSLPoint(r["name"], r["generative"][g], r["after"][cfg.representation_metric]) for r in results]
            )
        except UserError as err:
            fits_other[g] = {"error": str(err)}
    return fit, fits_other


def _write_figures(
    cfg: GRSLExperimentConfig, run: RunDir, points: list[GRSLPoint], fit: dict, results: list[dict]
) -> None:
    """``grsl.png`` (only when a line was fitted) and ``transfer.png``."""
    if "slope" in fit:
        labels = {
            "caption_loglik": "generative score: held-out caption log-likelihood per token",
            "caption_accuracy": "generative score: caption class accuracy",
        }
        atomic_write_bytes(
            run.figures / "grsl.png",
            plot_grsl(
                points,
                fit,
                xlabel=labels[cfg.generative_metric],
                ylabel=f"{cfg.representation_metric} after text-only LoRA",
                title="GRSL on the tiny VLM (Fashion-MNIST)",
            ),
        )
    else:
        (run.figures / "grsl.png").unlink(missing_ok=True)  # never show an earlier run's fit
    atomic_write_bytes(run.figures / "transfer.png", _transfer_figure(results))


def _transfer_summary(results: list[dict]) -> dict:
    """Claim (1) in numbers: the zero-shot gain and image anisotropy change of every backbone after the
    text-only refinement, with standard errors and a paired McNemar test."""
    delta = [r["after"]["zero_shot_accuracy"] - r["before"]["zero_shot_accuracy"] for r in results]
    # paired test on the same test images (scores written by an older genrep lack per-image results)
    paired = [
        mcnemar_exact(r["before"]["zero_shot_correct"], r["after"]["zero_shot_correct"])
        if "zero_shot_correct" in r["before"] and "zero_shot_correct" in r["after"]
        else None
        for r in results
    ]
    aniso = [r["after"]["anisotropy_image"] - r["before"]["anisotropy_image"] for r in results]
    return {
        "zero_shot_gain": delta,
        "image_anisotropy_change": aniso,
        "backbones_improved": int(sum(d > 0 for d in delta)),
        "n": len(delta),
        "zero_shot_se": [[_se(r["before"]), _se(r["after"])] for r in results],
        "zero_shot_mcnemar": paired,
    }


def run_experiment(cfg: GRSLExperimentConfig, out: str | Path, resume: bool = False, fresh: bool = False) -> dict:
    """Run (or with ``resume``, finish) the experiment; returns and writes the metrics. ``fresh`` deletes
    an earlier run's checkpoints, logs and results in ``out`` first."""
    from genrep.core.progress import track
    from genrep.core.runtime import pick_device

    _validate(cfg)
    device = str(pick_device(cfg.device))
    cfg.pretrain.device = device
    cfg.pretrain.seed = cfg.seed  # one seed for the whole experiment (data splits, captions, refinement)
    run = RunDir(out)
    _check_start(cfg, run, resume, fresh)
    run.write_config(cfg)

    # 1. generative pre-training -> backbones with generative scores
    pre = _pretrain_stage(cfg, run, resume, fresh)
    backbones = [(backbone_name(b["step"]), Path(b["dir"])) for b in pre["backbones"]]

    # 2-3. text-only refinement data, then per backbone: before, refine, after
    data_path = _write_refine_data(cfg, run)
    test = fashion_split("test", cfg.test_images, cfg.seed, offset=cfg.pretrain.eval_images)
    results = [
        _backbone_stage(cfg, name, bdir, run / "family" / name, data_path, test, device, resume)
        for name, bdir in track(backbones, "GRSL experiment: backbones", total=len(backbones))
    ]

    # 4. the scaling-law fit, the transfer summary, plots
    points = _write_points(cfg, run, results)
    fit, fits_other = _fit(cfg, points, results)
    _write_figures(cfg, run, points, fit, results)
    metrics = {
        "backbones": results,
        "grsl_fit": fit,
        "grsl_fits_by_generative_metric": fits_other,
        "generative_metric": cfg.generative_metric,
        "representation_metric": cfg.representation_metric,
        "transfer": _transfer_summary(results),
        "pretrain": {k: pre[k] for k in ("steps", "final_loss", "trainable_params") if k in pre},
    }
    run.write_metrics(metrics)
    return metrics
