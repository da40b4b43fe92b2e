"""The Generation-Representation Scaling Law (GRSL) of LCO-EMB (docs/papers.md s2.2, "Scaling Language-Centric
Omnimodal Representation Learning").

The paper finds a positive, roughly linear relation across backbones between a model's generative capability
(e.g. a generative benchmark score of the base MLLM) and the quality of the representations it yields after the
same light contrastive tuning (e.g. its embedding-benchmark score). This module reads (name, generative score,
representation score) points (:func:`read_points`), fits the line ``representation = slope * generative +
intercept`` by least squares and reports R^2 plus Pearson's r and Spearman's rho with their p-values
(:func:`fit_grsl`), and plots points and line (:func:`plot_grsl`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genrep.core.errors import UserError
from genrep.core.jsonl import iter_jsonl

__all__ = ["GRSLPoint", "fit_grsl", "plot_grsl", "read_points"]

_FIELDS = ("name", "generative", "representation")
_CSV_SUFFIXES = (".csv",)
_JSONL_SUFFIXES = (".jsonl", ".json-lines")


@dataclass
class GRSLPoint:
    """One backbone: its name, generative score (x) and representation score (y)."""

    name: str
    generative: float
    representation: float


def _number(value, at: str, field: str, from_text: bool) -> float:
    if from_text:
        try:
            x = float(str(value).strip())
        except ValueError:
            raise UserError(f"{at}: field '{field}': {value!r} is not a number") from None
    else:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{at}: field '{field}': {value!r} is not a number")
        x = float(value)
    if not math.isfinite(x):
        raise UserError(f"{at}: field '{field}': {value!r} is not a finite number")
    return x


def _point(record: Mapping, at: str, from_text: bool) -> GRSLPoint:
    for field in _FIELDS:
        value = record.get(field)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise UserError(f"{at}: field '{field}': missing")
    name = record["name"]
    if not isinstance(name, str):
        raise UserError(f"{at}: field 'name': {name!r} is not a string")
    return GRSLPoint(
        name=name.strip(),
        generative=_number(record["generative"], at, "generative", from_text),
        representation=_number(record["representation"], at, "representation", from_text),
    )


def _read_csv(path: Path, text: str) -> list[GRSLPoint]:
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise UserError(f"{path}:1: empty CSV (expected a header with columns {', '.join(_FIELDS)})")
    reader.fieldnames = header
    missing = [f for f in _FIELDS if f not in header]
    if missing:
        raise UserError(f"{path}:1: header lacks column(s) {', '.join(missing)} (expected {', '.join(_FIELDS)})")
    points = []
    for row in reader:
        at = f"{path}:{reader.line_num}"
        if None in row:
            raise UserError(f"{at}: more fields than the header has columns")
        points.append(_point(row, at, from_text=True))
    return points


def _read_jsonl(path: Path) -> list[GRSLPoint]:
    points = []
    for lineno, record in iter_jsonl(path, "points file"):  # unreadable, not UTF-8 or not JSON: file:line
        at = f"{path}:{lineno}"
        if not isinstance(record, dict):
            raise UserError(f"{at}: expected a JSON object with keys {', '.join(_FIELDS)}")
        points.append(_point(record, at, from_text=False))
    return points


def read_points(path: str | Path) -> list[GRSLPoint]:
    """Read GRSL points from a CSV file (header with columns name, generative, representation; other columns are
    ignored) or a JSONL file (one object per line with those keys), chosen by suffix (.csv, .jsonl, .json-lines).
    At least 3 points are required for a fit."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _CSV_SUFFIXES + _JSONL_SUFFIXES:
        raise UserError(
            f"{path}: unknown points file type {suffix or '(no suffix)'!r}; use .csv, .jsonl or .json-lines"
        )
    if suffix in _JSONL_SUFFIXES:
        points = _read_jsonl(path)
    else:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise UserError(f"{path}: cannot read points file ({exc.strerror or exc})") from None
        except UnicodeDecodeError:
            raise UserError(f"{path}: not UTF-8 text") from None
        points = _read_csv(path, text)
    if len(points) < 3:
        raise UserError(f"{path}: {len(points)} point(s); a fit needs at least 3 points")
    return points


def fit_grsl(points: Sequence[GRSLPoint]) -> dict:
    """Fit the Generation-Representation Scaling Law of docs/papers.md s2.2: the least-squares line
    ``representation = slope * generative + intercept`` across backbones (the paper's positive linear trend between
    generative and representation quality).

    Returns ``{"slope", "intercept", "r2", "pearson", "pearson_p", "spearman", "spearman_p", "n"}`` (p-values from
    scipy.stats.pearsonr / spearmanr, two-sided).
    """
    from scipy.stats import pearsonr, spearmanr

    n = len(points)
    if n < 3:
        raise UserError(f"{n} point(s); a fit needs at least 3 points")
    x = np.array([float(p.generative) for p in points])
    y = np.array([float(p.representation) for p in points])
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise UserError("GRSL points: scores must be finite numbers")
    xc = x - x.mean()
    yc = y - y.mean()
    sxx = float(xc @ xc)
    syy = float(yc @ yc)
    if sxx == 0.0:
        raise UserError("GRSL points: all generative scores are equal; the slope is undefined")
    if syy == 0.0:
        raise UserError("GRSL points: all representation scores are equal; the correlation is undefined")
    slope = float(xc @ yc) / sxx
    intercept = float(y.mean() - slope * x.mean())
    residual = y - (slope * x + intercept)
    r2 = 1.0 - float(residual @ residual) / syy
    pr = pearsonr(x, y)
    sr = spearmanr(x, y)
    return {
        "slope": slope,
        "intercept": intercept,
        "r2": r2,
        "pearson": float(pr.statistic),
        "pearson_p": float(pr.pvalue),
        "spearman": float(sr.statistic),
        "spearman_p": float(sr.pvalue),
        "n": n,
    }


def plot_grsl(
    points: Sequence[GRSLPoint],
    fit: Mapping[str, float],
    xlabel: str = "generative score",
    ylabel: str = "representation score",
    title: str = "Generation-Representation Scaling Law",
) -> bytes:
    """Scatter of the points (each annotated with its name) with the fitted line; the legend gives slope, Pearson r
    and Spearman rho. Returns PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genrep.core.images import figure_png

    if not points:
        raise UserError("plot_grsl: no points to plot")
    x = np.array([float(p.generative) for p in points])
    y = np.array([float(p.representation) for p in points])
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    ax.scatter(x, y, zorder=3, label="backbones")
    for p in points:
        ax.annotate(p.name, (p.generative, p.representation), textcoords="offset points", xytext=(4, 4), fontsize=8)
    pad = 0.05 * (x.max() - x.min() or 1.0)
    xs = np.array([x.min() - pad, x.max() + pad])
    label = f"fit: slope={fit['slope']:.3g}, Pearson r={fit['pearson']:.3f}, Spearman \u03c1={fit['spearman']:.3f}"
    ax.plot(xs, fit["slope"] * xs + fit["intercept"], color="C3", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return figure_png(fig)
