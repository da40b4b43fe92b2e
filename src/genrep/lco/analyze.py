"""``genrep lco analyze``: the representation analysis of LCO-EMB, per layer and per modality.

docs/papers.md s2.9: anisotropy (mean off-diagonal cosine similarity of embeddings)
per layer and per modality (text-only contrastive training lowers it for the other modalities too),
and the kernel alignment between the first two views, as the reference's
``Analysis/kernel_alignment.py`` computes it (rows L2-normalised first; :mod:`genrep.lco.geometry`):
mutual k-nearest neighbours (k = 10), CKNNA at the same k, linear CKA with the biased HSIC and
with the unbiased HSIC of Song et al. 2012.

The data are paired *views* of the same content: the HSK test pairs (views ``zh`` and ``en``), or a
JSONL file whose rows hold one item per modality (``{"text": ..., "image": path}`` gives views
``text`` and ``image``). Every view is embedded at every chosen hidden-state layer (last token, the
same prompts as training); several models (``--model``, repeatable: ``base:NAME`` or trained
directories) are compared in one plot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from genrep.core.config import Count
from genrep.core.errors import UserError
from genrep.core.rundir import RunDir, atomic_write_bytes
from genrep.lco.data import hsk_pairs_split, json_lines, load_media
from genrep.lco.embedding import MODALITIES
from genrep.lco.geometry import anisotropy, cknna, linear_cka, mutual_knn_alignment, plot_anisotropy, unbiased_cka


@dataclass
class AnalyzeConfig:
    models: list[str] = field(default_factory=lambda: ["base:smollm2-135m"])
    pairs: str = "hsk"  # hsk or a JSONL file of rows with one item per modality
    limit: Count = 300
    layers: list[int] = field(default_factory=list)  # hidden-state indices; empty = every layer
    k: Count = 10
    batch_size: Count = 16
    hsk_test_size: Count = 500
    device: str = "auto"


def read_views(cfg: AnalyzeConfig) -> dict[str, list]:
    if cfg.pairs == "hsk":
        test = hsk_pairs_split(cfg.hsk_test_size).test[: cfg.limit or None]
        return {"zh": [p["zh"] for p in test], "en": [p["en"] for p in test]}
    path = Path(cfg.pairs)
    views: dict[str, list] = {}
    keys: list[str] | None = None
    for n, row in json_lines(path, "pairs"):
        present = [m for m in MODALITIES if row.get(m) is not None]
        if keys is None:
            keys = present
            if len(keys) < 2:
                raise UserError(f"{path}:{n}: a row needs at least two modalities of the same content")
        if present != keys:
            raise UserError(f"{path}:{n}: has modalities {present}, the first row had {keys}")
        for m in keys:
            value = row[m]
            if m != "text":
                p = Path(value) if Path(value).is_absolute() else path.parent / value
                if not p.exists():
                    raise UserError(f"{path}:{n}: {m} not found: {p}")
                value = load_media({m: str(p)})[m]
            views.setdefault(m, []).append({m: value})
        if cfg.limit and len(views[keys[0]]) >= cfg.limit:
            break
    return views


def analyze(cfg: AnalyzeConfig, out: str | Path) -> dict:
    from genrep.core.runtime import pick_device
    from genrep.lco.adapters import load_model

    run = RunDir(out)
    run.write_config(cfg)
    views = read_views(cfg)
    names = list(views)
    n = len(views[names[0]])
    if n <= cfg.k:
        raise UserError(f"analysis needs more than k={cfg.k} pairs (got {n})")
    results: dict[str, dict] = {}
    for spec in cfg.models:
        emb = load_model(spec, device=pick_device(cfg.device))
        layers = cfg.layers or list(range(emb.num_hidden_layers() + 1))
        embs = {
            v: emb.encode(views[v], batch_size=cfg.batch_size, layers=layers, description=f"{spec} {v}") for v in names
        }
        a, b = names[0], names[1]
        pairs = [(embs[a][i], embs[b][i]) for i in range(len(layers))]
        results[spec] = {
            "layers": layers,
            "anisotropy": {v: [anisotropy(embs[v][i]) for i in range(len(layers))] for v in names},
            f"mutual_knn@{cfg.k}": [mutual_knn_alignment(x, y, cfg.k) for x, y in pairs],
            # CKNNA needs two neighbours at least: None at k = 1
            f"cknna@{cfg.k}": [cknna(x, y, cfg.k) if cfg.k >= 2 else None for x, y in pairs],
            "cka": [linear_cka(x, y) for x, y in pairs],
            "unbiased_cka": [unbiased_cka(x, y) for x, y in pairs],
        }
        del emb
    series = {f"{m} / {v}": r["anisotropy"][v] for m, r in results.items() for v in names}
    atomic_write_bytes(
        run.figures / "anisotropy_per_layer.png", plot_anisotropy(series, f"anisotropy per layer ({', '.join(names)})")
    )
    atomic_write_bytes(run.figures / "alignment_per_layer.png", _alignment_plot(results, cfg.k, names))
    metrics = {"views": names, "pairs": n, "models": results}
    run.write_metrics(metrics)
    return metrics


def _alignment_plot(results: dict, k: int, names: list[str]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genrep.core.images import figure_png

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for spec, r in results.items():
        (line,) = axes[0].plot(r["layers"], r[f"mutual_knn@{k}"], marker=".", label=f"{spec} mutual k-NN")
        knn = [(layer, v) for layer, v in zip(r["layers"], r[f"cknna@{k}"]) if v is not None]
        if knn:
            axes[0].plot(*zip(*knn), ls="--", marker=".", color=line.get_color(), label=f"{spec} CKNNA")
        axes[1].plot(r["layers"], r["cka"], marker=".", color=line.get_color(), label=f"{spec} CKA")
        axes[1].plot(
            r["layers"], r["unbiased_cka"], ls="--", marker=".", color=line.get_color(), label=f"{spec} unbiased"
        )
    axes[0].set_title(f"k-NN alignment (k={k}): {names[0]} vs {names[1]}")
    axes[1].set_title(f"linear CKA: {names[0]} vs {names[1]}")
    for ax in axes:
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return figure_png(fig)
