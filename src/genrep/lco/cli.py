"""``genrep lco ...``: train, eval, analyze, merge, soup, export, grsl, pretrain-vlm, grsl-experiment."""

from __future__ import annotations

from pathlib import Path

import click

from genrep.core.cli_options import CONFIG, OUT, SET
from genrep.core.cli_options import given_flags as _flags


def _trained(spec: str) -> str:
    """``--model`` as given, or the ``model/`` folder inside it when it is the ``--out`` of a training run."""
    from genrep.core.rundir import model_dir
    from genrep.lco.adapters import MODEL_FILE

    found = model_dir(spec, MODEL_FILE)
    return str(found) if found != Path(spec) else spec


@click.group()
def lco() -> None:
    """LCO-EMB: omnimodal embeddings from generative (M)LLMs."""


@lco.command("train")
@click.option("--backbone", default=None, help="smollm2-135m (default), gemma3-270m, a local directory or hub id.")
@click.option("--data", default=None, help="hsk (bundled zh<->en pairs) or a triplet JSONL file.")
@click.option(
    "--method", type=click.Choice(["lora", "full", "head"]), default=None, help="What to train (default lora)."
)
@click.option("--epochs", type=float, default=None, help="Epochs to train (the reference: 2); 0 = --max-steps.")
@click.option("--max-steps", type=int, default=None)
@click.option("--batch-size", type=int, default=None, help="Global batch of triplets.")
@click.option("--chunk-size", type=int, default=None, help="GradCache chunk size (0 = off).")
@click.option("--lr", type=float, default=None)
@click.option("--grad-checkpointing/--no-grad-checkpointing", default=None)
@click.option("--max-length", type=int, default=None, help="Content tokens kept in training (the reference: 650).")
@click.option("--max-pixels", type=int, default=None, help="Pixels per training image (0 = the processor's own).")
@click.option("--thumbnail", type=int, default=None, help="Training images shrunk to fit N x N (700; 0 = off).")
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in --out.")
@CONFIG
@SET
@OUT
def train_cmd(
    backbone,
    data,
    method,
    epochs,
    max_steps,
    batch_size,
    chunk_size,
    lr,
    grad_checkpointing,
    max_length,
    max_pixels,
    thumbnail,
    resume,
    config_path,
    overrides,
    out,
):
    """Contrastive refinement (InfoNCE, in-batch + hard negatives) of a generative backbone."""
    from genrep.core.config import load_config
    from genrep.core.resume import summary
    from genrep.lco.train import TrainConfig, train

    flags = _flags(
        backbone=backbone,
        data=data,
        method=method,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        chunk_size=chunk_size,
        lr=lr,
        grad_checkpointing=grad_checkpointing,
        max_length=max_length,
        max_pixels=max_pixels,
        thumbnail=thumbnail,
    )
    cfg = load_config(TrainConfig, config_path, overrides, flags=flags)
    m = train(cfg, out, resume=resume)
    click.echo(
        f"trained {cfg.method} on {cfg.backbone} for {m['steps']} steps; {summary(m)}; model in {Path(out) / 'model'}"
    )


@lco.command("eval")
@click.option("--model", default=None, help="base:NAME (untuned backbone) or a trained model directory.")
@click.option(
    "--task",
    "tasks",
    multiple=True,
    help="hsk-retrieval (default), retrieval:DIR, seadoc:DIR, sts:FILE, classification:FILE, mteb:NAME.",
)
@click.option("--limit", type=int, default=None, help="Only the first N queries / pairs.")
@click.option("--batch-size", type=int, default=None)
@click.option("--max-length", type=int, default=None, help="Content tokens kept (default: the model's; 300).")
@click.option("--max-pixels", type=int, default=None, help="Pixels per image (default: the model's; 1280*28*28).")
@CONFIG
@SET
@OUT
def eval_cmd(model, tasks, limit, batch_size, max_length, max_pixels, config_path, overrides, out):
    """Retrieval, STS and zero-shot classification of an embedding model."""
    from genrep.core.config import load_config
    from genrep.lco.evaluate import EvalConfig, evaluate

    flags = _flags(
        model=_trained(model) if model else model,
        tasks=list(tasks) or None,
        limit=limit,
        batch_size=batch_size,
        max_length=max_length,
        max_pixels=max_pixels,
    )
    cfg = load_config(EvalConfig, config_path, overrides, flags=flags)
    m = evaluate(cfg, out)
    shown = {k: m[k] for k in ("recall@1", "ndcg@10", "anisotropy", "spearman", "accuracy", "main_score") if k in m}
    click.echo(
        f"{cfg.model}: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()) + f"; {Path(out) / 'metrics.json'}"
    )


@lco.command("analyze")
@click.option("--model", "models", multiple=True, help="base:NAME or trained model directories (repeatable).")
@click.option("--pairs", default=None, help="hsk (default) or a JSONL of rows with one item per modality.")
@click.option("--limit", type=int, default=None)
@click.option("--layer", "layers", type=int, multiple=True, help="Hidden-state layers (default: all).")
@CONFIG
@SET
@OUT
def analyze_cmd(models, pairs, limit, layers, config_path, overrides, out):
    """Anisotropy per layer and modality; mutual k-NN and CKA between modalities; plots."""
    from genrep.core.config import load_config
    from genrep.lco.analyze import AnalyzeConfig, analyze

    resolved = [_trained(m) for m in models]
    flags = _flags(models=resolved or None, pairs=pairs, limit=limit, layers=list(layers) or None)
    cfg = load_config(AnalyzeConfig, config_path, overrides, flags=flags)
    m = analyze(cfg, out)
    for spec, r in m["models"].items():
        last = {v: r["anisotropy"][v][-1] for v in m["views"]}
        click.echo(f"{spec}: last-layer anisotropy " + ", ".join(f"{v} {a:.3f}" for v, a in last.items()))
    click.echo(f"plots in {Path(out) / 'figures'}")


@lco.command("merge")
@click.option("--model", required=True, type=click.Path(path_type=Path), help="A trained LoRA model directory.")
@OUT
def merge_cmd(model, out):
    """Merge a LoRA adapter into the base weights (a standalone model directory)."""
    from genrep.core.rundir import RunDir, model_dir
    from genrep.lco.adapters import MODEL_FILE, merge, read_spec

    model = model_dir(model, MODEL_FILE)
    read_spec(model)  # a directory of the wrong kind fails before anything is written
    run = RunDir(out)
    run.write_config({"model": str(model), "out": str(out)})
    merged = merge(model, out)
    run.write_metrics({"merged_from": str(model), "model": str(merged)})
    click.echo(f"merged model in {merged}")


@lco.command("soup")
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="Trained model directories to average (repeatable, at least two).",
)
@click.option("--weight", "weights", multiple=True, type=float, help="Per-model weights (default uniform).")
@OUT
def soup_cmd(models, weights, out):
    """Model soup: average the weight changes of several runs of the same backbone."""
    import math

    from genrep.core.errors import UserError
    from genrep.core.rundir import RunDir, model_dir
    from genrep.lco.adapters import MODEL_FILE, read_spec, soup

    dirs = [model_dir(m, MODEL_FILE) for m in models]
    if any(not math.isfinite(w) for w in weights):
        raise UserError(f"soup: --weight must be finite numbers, got {list(weights)}")
    for d in dirs:
        read_spec(d)  # a directory of the wrong kind fails before anything is written
    run = RunDir(out)
    run.write_config({"models": [str(d) for d in dirs], "weights": list(weights) or None})
    souped = soup(dirs, out, list(weights) or None)
    run.write_metrics({"soup_of": [str(d) for d in dirs], "weights": list(weights) or None, "model": str(souped)})
    click.echo(f"soup of {len(dirs)} runs in {souped}")


@lco.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["sentence-transformers"]),
    required=True,
    help="Target format: a directory that sentence_transformers.SentenceTransformer(OUT) loads.",
)
@click.option("--model", required=True, type=click.Path(path_type=Path), help="A trained model directory or run.")
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="Load the export and compare its token ids and embeddings with genrep's on probe texts.",
)
@OUT
def export_cmd(fmt, model, check, out):
    """Export a trained model for other libraries (sentence-transformers: merged weights, tokenizer with the
    suffix-prompt chat template, last-token pooling, normalisation); OUT also gets export.json, config.yaml and
    metrics.json."""
    from genrep.core.rundir import RunDir
    from genrep.lco.export_st import EXPORT_FILE, export_sentence_transformers

    info = export_sentence_transformers(model, out, check=check)
    run = RunDir(out)  # beside the model's files (sentence-transformers ignores them), as every run command
    run.write_config({"format": fmt, "model": str(model), "check": check})
    run.write_metrics(
        {"format": fmt, "source": info["source"], "source_sha256": info["source_sha256"], "check": info.get("check")},
        command="lco export",
    )
    line = f"exported {info['method']} model {info['source']} as {fmt} to {out}"
    if "check" in info:
        worst = max(r["max_abs_diff"] for r in info["check"]["sides"].values())
        line += f"; check: max |diff| {worst:.1e} on {info['check']['texts']} texts"
    click.echo(f"{line}; {Path(out) / EXPORT_FILE}")


@lco.command("grsl")
@click.option(
    "--points",
    required=True,
    type=click.Path(path_type=Path),
    help="CSV or JSONL with name, generative, representation per backbone.",
)
@click.option("--xlabel", default="generative score", show_default=True)
@click.option("--ylabel", default="representation score", show_default=True)
@OUT
def grsl_cmd(points, xlabel, ylabel, out):
    """Generation-Representation Scaling Law: linear fit, Pearson, Spearman and a scatter plot."""
    from genrep.core.rundir import RunDir, atomic_write_bytes
    from genrep.lco.grsl import fit_grsl, plot_grsl, read_points

    pts = read_points(points)
    fit = fit_grsl(pts)
    run = RunDir(out)
    run.write_config({"points": str(points), "xlabel": xlabel, "ylabel": ylabel})
    atomic_write_bytes(run.figures / "grsl.png", plot_grsl(pts, fit, xlabel=xlabel, ylabel=ylabel))
    run.write_metrics({"fit": fit, "points": [p.__dict__ for p in pts]})
    click.echo(
        f"slope {fit['slope']:.4f}, Pearson {fit['pearson']:.3f}, Spearman {fit['spearman']:.3f} "
        f"over {fit['n']} backbones; plot in {run.figures / 'grsl.png'}"
    )


@lco.command("pretrain-vlm")
@click.option(
    "--lm", default=None, help="Language model: smollm2-135m (default), gemma3-270m or a causal-LM directory."
)
@click.option("--steps", type=int, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--save-at", "save_at", type=int, multiple=True, help="Steps saved as backbones (repeatable).")
@click.option("--lm-lora-r", type=int, default=None, help="0: projector only (LLaVA stage 1); >0: also LoRA on the LM.")
@click.option("--photos-fraction", type=float, default=None, help="Share of rows that are scikit-image photos.")
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in --out.")
@CONFIG
@SET
@OUT
def pretrain_vlm_cmd(lm, steps, batch_size, save_at, lm_lora_r, photos_fraction, resume, config_path, overrides, out):
    """Captioning pre-training of the tiny VLM (frozen EfficientNet-Lite0 + projector + bundled LM) on
    Fashion-MNIST; saves a family of backbones of growing generative skill with their generative scores."""
    from genrep.core.config import load_config
    from genrep.lco.pretrain_vlm import PretrainConfig, pretrain

    flags = _flags(
        steps=steps,
        batch_size=batch_size,
        save_at=list(save_at) or None,
        lm_lora_r=lm_lora_r,
        photos_fraction=photos_fraction,
    )
    if lm:
        flags["vlm"] = {"lm": lm}
    cfg = load_config(PretrainConfig, config_path, overrides, flags=flags)
    m = pretrain(cfg, out, resume=resume)
    for b in m["backbones"]:
        click.echo(
            f"step {b['step']:>6}: caption log-lik/token {b['caption_loglik']:.3f}, caption class accuracy "
            f"{b['caption_accuracy']:.3f}  {b['dir']}"
        )


@lco.command("grsl-experiment")
@click.option("--fast", is_flag=True, help="The short profile (at most ~10 minutes on 2 CPU cores).")
@click.option("--lm", default=None, help="Language model of the tiny VLM (default smollm2-135m).")
@click.option("--resume", is_flag=True, help="Skip finished stages; continue interrupted ones.")
@CONFIG
@SET
@OUT
def grsl_experiment_cmd(fast, lm, resume, config_path, overrides, out):
    """Both LCO-EMB claims on the tiny VLM: text-only refinement improves image embeddings, and better
    generators give better embeddings (GRSL fit, correlation, plots)."""
    from genrep.core.config import load_config
    from genrep.lco.grsl_experiment import PROFILES, GRSLExperimentConfig, run_experiment

    flags = {"pretrain": {"vlm": {"lm": lm}}} if lm else None
    cfg = load_config(
        GRSLExperimentConfig, config_path, overrides, flags=flags, base=PROFILES["fast" if fast else "default"]()
    )
    m = run_experiment(cfg, out, resume=resume)
    for b in m["backbones"]:
        click.echo(
            f"{b['name']}: caption log-lik {b['generative']['caption_loglik']:.3f}, zero-shot "
            f"{b['before']['zero_shot_accuracy']:.3f} -> {b['after']['zero_shot_accuracy']:.3f}, image "
            f"anisotropy {b['before']['anisotropy_image']:.3f} -> {b['after']['anisotropy_image']:.3f}"
        )
    fit = m["grsl_fit"]
    if "slope" in fit:
        click.echo(
            f"GRSL: slope {fit['slope']:.4f}, Pearson {fit['pearson']:.3f} (p {fit['pearson_p']:.3g}), "
            f"Spearman {fit['spearman']:.3f} over {fit['n']} backbones"
        )
    else:
        click.echo(f"GRSL: no fit ({fit['error']})")
    click.echo(f"plots in {Path(out) / 'figures'}")
