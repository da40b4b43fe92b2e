"""Meta-evaluation of metric scores against DITING human judgments (MetricAlign, docs/papers.md s3.5), in
the manner of mt-metrics-eval and of the WMT metrics tasks.

A *segment* is one system's translation of one item, keyed ``(item_id, system)``. Its human score is
the mean over its annotations (raters) of the rubric total ``specific + general_1 + general_2``
(0-6). Only segments with both a human and a metric score are used; the counts are reported.
Metrics where lower is better (TER) are negated first, so that every statistic reads "higher =
agrees more".

Statistics (pure functions over arrays, the grouping an explicit argument, as in mt-metrics-eval):

- correlations: Pearson r, Spearman rho (Pearson of average ranks) and Kendall tau-b (ties
  corrected: ``(C - D) / sqrt((n0 - n1)(n0 - n2))``), point values from ``scipy.stats``;
- segment level with grouping ``none`` (all segments flattened), ``item`` (per item across systems,
  then averaged) or ``system`` (per system across items, then averaged). A group with fewer than
  two segments or a constant side has no correlation and is skipped (mt-metrics-eval's default: NaNs
  are dropped, not replaced by 0); the number of groups used is reported;
- system level: per system the mean metric and the mean human score over the segments they share
  (summed exactly with ``math.fsum``, so that equal multisets of scores give equal means whatever
  their order), then the correlations over systems, the pairwise accuracy of system pairs and the
  soft pairwise accuracy (Thompson, Mathur, Deutsch & Finkelstein, WMT 2024, as mt-metrics-eval):
  ``1 - mean_{i<j} |p_human(i>j) - p_metric(i>j)|`` with one-sided paired permutation p-values over
  the items both systems have (default 1000 permutations, seed 4, as mt-metrics-eval);
- pairwise accuracy with ties, ``acc_eq`` (Deutsch, Foster & Freitag 2023, "Ties Matter"): over the
  pairs of segments in the same group, a pair is correct when human and metric order it the same
  way or both tie; the metric ties a pair when ``|m_i - m_j| <= eps``. Grouped, it is the mean of
  the per-group accuracies over groups with at least one pair. Tie calibration picks one ``eps``
  for all groups from ``{0} U {observed |m_i - m_j|}`` to maximise acc_eq (the smallest on a tie),
  as mt-metrics-eval's ``tau_optimization`` does; acc_eq at ``eps = 0`` is reported too;
- 95% confidence intervals: percentile bootstrap resampling *items* with replacement (default
  1000 resamples, fixed seed). A resample is the concatenation of the drawn items' segments; each
  statistic is recomputed on it (tie calibration is redone per resample). The bootstrap is
  vectorised: a resample is a row of multiplicity weights, and the weighted statistics below equal
  scipy / a pair count on the repeated data (pairs of a segment with its own copy are not counted
  for acc_eq; Kendall's tau-b ignores them anyway, being tied on both sides). With ``item``
  grouping an item drawn twice counts twice in the average. Fewer than two items: no interval;
- inter-rater agreement: for segments with at least two annotations, the first two raters' totals
  (correlations, exact agreement, mean absolute difference) and per-criterion exact agreement. In the
  official sample the raters are positional (``r1``, ``r2`` within a task), not persons.

Files: the mt-metrics-eval layout (``NAME.seg.score``: a block per system, ``system<TAB>score`` per
segment in a fixed item order, ``None`` where missing; ``NAME.sys.score``: ``system<TAB>score``) and
a reader for MetricAlign-style JSON Lines.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from scipy import stats

from genrep.core.errors import UserError
from genrep.core.files import _printable
from genrep.core.jsonl import iter_jsonl
from genrep.core.rundir import atomic_write_text
from genrep.diting.limits import MAX_RESAMPLES as MAX_RESAMPLES  # re-exported: the bound on resamples
from genrep.diting.limits import check_bootstrap, check_permutations
from genrep.diting.rubric import CRITERIA
from genrep.diting.schema import DIMENSIONS, Judgment

Key = tuple[str, str]  # (item_id, system)
CORRELATIONS = ("pearson", "spearman", "kendall")
GROUPINGS = ("none", "item", "system")
LOWER_IS_BETTER = frozenset({"ter"})
SPA_PERMUTATIONS = 1000  # mt-metrics-eval's default number of permutations (``num_permutations``)
SPA_SEED = 4  # mt-metrics-eval's default seed of its pairwise permutation test
_CHUNK = 200  # bootstrap rows per block in the pair computations (bounds memory to ~ _CHUNK x pairs)


# ---------------------------------------------------------------------------------------------
# human scores


@dataclass
class HumanRatings:
    """Each segment's annotations in rater order: the 0-6 totals and, where known, the criteria."""

    totals: dict[Key, list[float]]
    criteria: dict[Key, list[tuple[int, int, int]]] = field(default_factory=dict)

    def means(self) -> dict[Key, float]:
        """The human score of each segment: the mean over its raters of the 0-6 total."""
        return {k: float(np.mean(v)) for k, v in self.totals.items()}

    @property
    def annotations(self) -> int:
        return sum(len(v) for v in self.totals.values())


def ratings_from_judgments(judgments: Iterable[Judgment]) -> HumanRatings:
    """Group rubric judgments by segment (in record order)."""
    totals: dict[Key, list[float]] = {}
    criteria: dict[Key, list[tuple[int, int, int]]] = {}
    for j in judgments:
        key = (j.item_id, j.system)
        totals.setdefault(key, []).append(float(j.total))
        criteria.setdefault(key, []).append((j.specific, j.general_1, j.general_2))
    return HumanRatings(totals, criteria)


def metric_from_segments(rows: Iterable[Mapping[str, Any]], metric: str) -> dict[Key, float]:
    """``{(item_id, system): score}`` from refmetrics' per-segment rows (rows without the metric skipped)."""
    return {(r["item_id"], r["system"]): float(r[metric]) for r in rows if r.get(metric) is not None}


@dataclass
class Aligned:
    """Segments scored by both humans and the metric, sorted by (item_id, system)."""

    keys: list[Key]
    human: np.ndarray
    metric: np.ndarray
    item: np.ndarray  # index into ``items``
    system: np.ndarray  # index into ``systems``
    items: list[str]
    systems: list[str]

    def subset(self, mask: np.ndarray) -> Aligned:
        keys = [k for k, keep in zip(self.keys, mask) if keep]
        return _aligned(keys, self.human[mask], self.metric[mask])


def _codes(labels: list[str]) -> tuple[list[str], np.ndarray]:
    names = list(dict.fromkeys(labels))
    index = {n: k for k, n in enumerate(names)}
    return names, np.array([index[x] for x in labels], dtype=int)


def _aligned(keys: list[Key], human: np.ndarray, metric: np.ndarray) -> Aligned:
    items, item = _codes([k[0] for k in keys])
    systems, system = _codes([k[1] for k in keys])
    return Aligned(keys, np.asarray(human, float), np.asarray(metric, float), item, system, items, systems)


def align(human: Mapping[Key, float], metric: Mapping[Key, float]) -> Aligned:
    """The segments present in both (sorted by item, then system)."""
    keys = sorted(set(human) & set(metric))
    return _aligned(keys, np.array([human[k] for k in keys]), np.array([metric[k] for k in keys]))


# ---------------------------------------------------------------------------------------------
# correlations (point values: scipy.stats)


def _is_constant(x: np.ndarray) -> bool:
    return len(x) == 0 or bool(np.all(x == x[0]))


def correlation(x: np.ndarray, y: np.ndarray, kind: str) -> float:
    """Pearson, Spearman or Kendall tau-b (scipy.stats); NaN with fewer than 2 values or a constant side."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or _is_constant(x) or _is_constant(y):
        return math.nan
    if kind == "pearson":
        return float(stats.pearsonr(x, y).statistic)
    if kind == "spearman":
        return float(stats.spearmanr(x, y).statistic)
    if kind == "kendall":
        return float(stats.kendalltau(x, y, variant="b").statistic)
    raise ValueError(f"unknown correlation {kind!r}")


def per_group_correlations(x: np.ndarray, y: np.ndarray, groups: np.ndarray, kind: str) -> np.ndarray:
    """The correlation within each group (groups numbered 0..G-1); NaN for a group that has none."""
    x, y, groups = np.asarray(x, float), np.asarray(y, float), np.asarray(groups)
    return np.array([correlation(x[groups == g], y[groups == g], kind) for g in range(groups.max() + 1)])


def grouped_correlation(x: np.ndarray, y: np.ndarray, groups: np.ndarray, kind: str) -> tuple[float, int]:
    """(mean of the per-group correlations, groups used): groups without one (< 2 values, constant) skipped."""
    per = per_group_correlations(x, y, _codes(list(np.asarray(groups)))[1], kind)
    ok = ~np.isnan(per)
    return (float(per[ok].mean()) if ok.any() else math.nan), int(ok.sum())


# vectorised bootstrap forms: row b of W holds each segment's multiplicity in resample b


def _constant_rows(x: np.ndarray, W: np.ndarray) -> np.ndarray:
    xb = np.broadcast_to(x, W.shape)
    present = W > 0
    lo = np.where(present, xb, np.inf).min(axis=1)
    hi = np.where(present, xb, -np.inf).max(axis=1)
    return ~(lo < hi)


def _weighted_pearson(x: np.ndarray, y: np.ndarray, W: np.ndarray) -> np.ndarray:
    total = W.sum(axis=1, keepdims=True)
    dx = x - (W * x).sum(axis=1, keepdims=True) / total
    dy = y - (W * y).sum(axis=1, keepdims=True) / total
    return (W * dx * dy).sum(axis=1) / np.sqrt((W * dx * dx).sum(axis=1) * (W * dy * dy).sum(axis=1))


def _weighted_ranks(x: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) in the repeated data: #smaller + (#equal + 1) / 2."""
    less = x[..., None, :] < x[..., :, None]  # [.., i, j] = x_j < x_i
    equal = x[..., None, :] == x[..., :, None]
    if x.ndim == 1:
        return W @ less.T + (W @ equal.T + 1) / 2
    return np.einsum("bj,bij->bi", W, less) + (np.einsum("bj,bij->bi", W, equal) + 1) / 2


def _pair_quadratic(W: np.ndarray, M: np.ndarray) -> np.ndarray:
    """sum_ij W_bi M_ij W_bj for each row b (M per row when 3-D)."""
    return ((W @ M) * W).sum(axis=1) if M.ndim == 2 else np.einsum("bi,bij,bj->b", W, M, W)


def _weighted_kendall(x: np.ndarray, y: np.ndarray, W: np.ndarray) -> np.ndarray:
    sx = np.sign(x[..., :, None] - x[..., None, :])
    sy = np.sign(y[..., :, None] - y[..., None, :])
    return _pair_quadratic(W, sx * sy) / np.sqrt(_pair_quadratic(W, np.abs(sx)) * _pair_quadratic(W, np.abs(sy)))


def weighted_correlation(x: np.ndarray, y: np.ndarray, W: np.ndarray, kind: str) -> np.ndarray:
    """For each row b of the multiplicities ``W`` (B, n), the correlation of the data in which segment k
    appears ``W[b, k]`` times (equal to scipy on ``np.repeat``); ``x``/``y`` are (n,) or (B, n).
    NaN where fewer than two values or a side is constant."""
    W = np.atleast_2d(np.asarray(W, float))
    x, y = np.asarray(x, float), np.asarray(y, float)
    bad = _constant_rows(x, W) | _constant_rows(y, W)
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "pearson":
            r = _weighted_pearson(x, y, W)
        elif kind == "spearman":
            r = _weighted_pearson(_weighted_ranks(x, W), _weighted_ranks(y, W), W)
        elif kind == "kendall":
            r = _weighted_kendall(x, y, W)
        else:
            raise ValueError(f"unknown correlation {kind!r}")
    r = np.clip(r, -1.0, 1.0)
    r[bad] = math.nan
    return r


# ---------------------------------------------------------------------------------------------
# pairwise accuracy with ties (acc_eq) and tie calibration


def _within_pairs(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(len(groups), k=1)
    keep = groups[i] == groups[j]
    return i[keep], j[keep]


def _pair_terms(
    h: np.ndarray, m: np.ndarray, i: np.ndarray, j: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(|metric difference|, correct if the metric does not tie, correct if it ties) per pair."""
    dh, dm = h[i] - h[j], m[i] - m[j]
    return np.abs(dm), (np.sign(dh) == np.sign(dm)).astype(float), (dh == 0).astype(float)


def _group_pair_weights(pair_groups: np.ndarray) -> np.ndarray:
    """1 / (groups x pairs in the pair's group): the weighted sum of correct pairs is the group mean."""
    _, inv, counts = np.unique(pair_groups, return_inverse=True, return_counts=True)
    return 1.0 / (len(counts) * counts[inv])


def _acc_curves(d: np.ndarray, sign_ok: np.ndarray, tie_ok: np.ndarray, V: np.ndarray):
    """acc_eq at every candidate threshold: (eps (K,), acc (R, K)) for pair weights V (R, P).

    Below a pair's difference the metric orders it (correct = sign_ok); from it on the metric ties
    it (correct = tie_ok); so acc(eps) = V @ sign_ok + cumsum over pairs sorted by difference."""
    if len(d) == 0:
        return np.zeros(1), np.full((V.shape[0], 1), math.nan)
    order = np.argsort(d, kind="stable")
    ds = d[order]
    last = np.flatnonzero(np.r_[ds[1:] != ds[:-1], True])  # last pair of each run of equal differences
    eps = ds[last]
    if eps[0] > 0:
        eps, last = np.r_[0.0, eps], np.r_[-1, last]
    cum = np.cumsum(V[:, order] * (tie_ok - sign_ok)[order], axis=1)
    flips = np.where(last >= 0, cum[:, np.maximum(last, 0)], 0.0)
    return eps, (V @ sign_ok)[:, None] + flips


def pairwise_accuracy(
    human: np.ndarray, metric: np.ndarray, groups: np.ndarray | None = None, eps: float = 0.0
) -> float:
    """acc_eq: the share of segment pairs (within the same group) that the metric orders as the humans
    do, a tie counting as correct when both tie (metric tie: ``|m_i - m_j| <= eps``); grouped, the mean
    of the per-group accuracies over groups with a pair. NaN without pairs."""
    h, m = np.asarray(human, float), np.asarray(metric, float)
    g = np.zeros(len(h), dtype=int) if groups is None else np.asarray(groups)
    i, j = _within_pairs(g)
    if len(i) == 0:
        return math.nan
    d, sign_ok, tie_ok = _pair_terms(h, m, i, j)
    correct = np.where(d <= eps, tie_ok, sign_ok)
    return float(_group_pair_weights(g[i]) @ correct)


def calibrated_pairwise_accuracy(
    human: np.ndarray, metric: np.ndarray, groups: np.ndarray | None = None
) -> tuple[float, float]:
    """(best acc_eq, its eps) over eps in {0} U {observed |m_i - m_j|} (tie calibration)."""
    h, m = np.asarray(human, float), np.asarray(metric, float)
    g = np.zeros(len(h), dtype=int) if groups is None else np.asarray(groups)
    i, j = _within_pairs(g)
    if len(i) == 0:
        return math.nan, 0.0
    eps, acc = _acc_curves(*_pair_terms(h, m, i, j), _group_pair_weights(g[i])[None])
    k = int(np.argmax(acc[0]))
    return float(acc[0, k]), float(eps[k])


def weighted_pairwise_accuracy(
    human: np.ndarray, metric: np.ndarray, W: np.ndarray, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """acc_eq curves for resamples: (eps (K,), acc (B, K)); row b is acc_eq on the data in which
    segment k appears ``W[b, k]`` times, counting pairs of distinct segments (weight W_i W_j), grouped
    by ``groups`` (mean over the groups with a pair in the resample)."""
    h, m = np.asarray(human, float), np.asarray(metric, float)
    W = np.atleast_2d(np.asarray(W, float))
    g = np.zeros(len(h), dtype=int) if groups is None else _codes(list(np.asarray(groups)))[1]
    i, j = _within_pairs(g)
    terms = _pair_terms(h, m, i, j)
    pair_group = g[i]
    onehot = (pair_group[:, None] == np.arange(g.max() + 1)[None]).astype(float)
    eps, blocks = np.zeros(1), []
    for start in range(0, W.shape[0], _CHUNK):
        w = W[start : start + _CHUNK, i] * W[start : start + _CHUNK, j]
        totals = w @ onehot
        present = (totals > 0).sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            V = np.nan_to_num(w / (totals[:, pair_group] * present))
        eps, acc = _acc_curves(*terms, V)
        acc[present[:, 0] == 0] = math.nan
        blocks.append(acc)
    return eps, np.concatenate(blocks) if blocks else np.zeros((0, 1))


# ---------------------------------------------------------------------------------------------
# bootstrap plumbing


def resample_counts(n_units: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n_units) multiplicities of units drawn with replacement (n_units draws each)."""
    check_bootstrap(resamples, seed)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_units, size=(resamples, n_units))
    counts = np.zeros((resamples, n_units))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1)
    return counts


def _value(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _stat(value: float, boot: np.ndarray | None) -> dict[str, Any]:
    """``{"value": x, "ci95": [lo, hi]}``: percentile interval over the finite resample values."""
    ci = None
    if boot is not None:
        finite = boot[np.isfinite(boot)]
        if len(finite):
            lo, hi = np.percentile(finite, [2.5, 97.5])
            ci = [float(lo), float(hi)]
    return {"value": _value(value), "ci95": ci}


def _weighted_mean_rows(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts @ values) / counts.sum(axis=1, keepdims=counts.ndim == values.ndim)


def _nanmean_rows(x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=1)


# ---------------------------------------------------------------------------------------------
# segment level, system level, inter-rater


def _segment_correlations(a: Aligned, grouping: str, counts: np.ndarray | None) -> dict[str, Any]:
    W = counts[:, a.item] if counts is not None else None
    out: dict[str, Any] = {}
    for kind in CORRELATIONS:
        boot = None
        if grouping == "none":
            per = np.array([correlation(a.human, a.metric, kind)])
            if W is not None:
                boot = weighted_correlation(a.human, a.metric, W, kind)
        elif grouping == "item":  # items are the resampled units: a drawn copy adds its item's value once
            per = per_group_correlations(a.human, a.metric, a.item, kind)
            if counts is not None:
                ok = ~np.isnan(per)
                boot = _weighted_mean_rows(counts[:, ok], per[ok])
        else:
            per = per_group_correlations(a.human, a.metric, a.system, kind)
            if W is not None:
                sel = [a.system == s for s in range(len(a.systems))]
                boot = _nanmean_rows(
                    np.stack([weighted_correlation(a.human[m], a.metric[m], W[:, m], kind) for m in sel], axis=1)
                )
        ok = ~np.isnan(per)
        out[kind] = _stat(float(per[ok].mean()) if ok.any() else math.nan, boot)
        out["groups"] = int(ok.sum())
    return out


def _segment_accuracy(a: Aligned, grouping: str, counts: np.ndarray | None) -> dict[str, Any]:
    if grouping == "item":
        i, j = _within_pairs(a.item)
        pair_item = a.item[i]
        npairs = np.bincount(pair_item, minlength=len(a.items)).astype(float)
        ok = npairs > 0
        V = (pair_item[None, :] == np.arange(len(a.items))[:, None]) / np.maximum(npairs, 1)[:, None]
        eps, curves = _acc_curves(*_pair_terms(a.human, a.metric, i, j), V)
        point = curves[ok].mean(axis=0) if ok.any() else np.full(len(eps), math.nan)
        boot = _weighted_mean_rows(counts[:, ok], curves[ok]) if counts is not None else None
    else:
        groups = np.zeros(len(a.keys), dtype=int) if grouping == "none" else a.system
        eps, point = weighted_pairwise_accuracy(a.human, a.metric, np.ones((1, len(a.keys))), groups)
        point = point[0]
        boot = (
            weighted_pairwise_accuracy(a.human, a.metric, counts[:, a.item], groups)[1] if counts is not None else None
        )
    k = int(np.nanargmax(point)) if np.isfinite(point).any() else 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        best = np.nanmax(boot, axis=1) if boot is not None and boot.size else None
    return {
        "pairwise_accuracy": _stat(point[0], boot[:, 0] if boot is not None else None),
        "pairwise_accuracy_calibrated": {**_stat(point[k], best), "epsilon": float(eps[k])},
    }


def exact_mean(values: Iterable[float]) -> float:
    """The mean via ``math.fsum``: the correctly rounded sum divided by the count (NaN when empty).

    A plain float sum rounds after every addition, so its result depends on the order and the grouping
    of the values (``0.1 + 0.2 + 0.7`` and ``0.7 + 0.2 + 0.1`` differ in the last bit). ``fsum``
    returns the exact sum rounded once, a function of the multiset of values alone: two systems with
    the same segment scores in any order get bit-identical means and therefore tie exactly."""
    v = [float(x) for x in values]
    return math.fsum(v) / len(v) if v else math.nan


def exact_group_means(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """``exact_mean`` of ``values`` per group index ``0 .. n_groups - 1`` (NaN for an empty group)."""
    values, groups = np.asarray(values, float), np.asarray(groups)
    return np.array([exact_mean(values[groups == g]) for g in range(n_groups)])


def system_means(a: Aligned) -> tuple[np.ndarray, np.ndarray]:
    """Per system (in ``a.systems`` order) the mean human and the mean metric score over its segments,
    summed exactly (``exact_mean``) so that systems with equal multisets of scores compare equal."""
    k = len(a.systems)
    return exact_group_means(a.human, a.system, k), exact_group_means(a.metric, a.system, k)


# ---------------------------------------------------------------------------------------------
# soft pairwise accuracy (system level)


def permutation_flips(n_units: int, permutations: int = SPA_PERMUTATIONS, seed: int = SPA_SEED) -> np.ndarray:
    """(permutations, n_units) booleans: True where a permutation swaps the two systems' scores of a unit.

    Each unit is swapped independently with probability 1/2. The draw follows mt-metrics-eval's
    (``numpy.random.default_rng(seed).random`` in float32, rounded to the nearest integer; 0 means
    swap), so on complete data the same seed gives the same permutations."""
    check_permutations(permutations, seed)
    u = np.random.default_rng(seed).random(size=(permutations, n_units), dtype=np.float32)
    return np.rint(u) == 0


def _float_sums_exact(v: np.ndarray) -> bool:
    """Whether every signed partial sum of any two rows of ``v`` (finite values) is exact in float64: all
    values are integer multiples of one ``2**-q`` (q <= 30: integers, halves, quarters ...) and twice
    the scaled total stays below ``2**52``. Then the matrix products need no exact re-check."""
    for q in range(31):
        w = np.ldexp(v, q)
        if np.array_equal(w, np.round(w)):
            return 2.0 * float(np.abs(w).sum()) < 2.0**52
    return False


def _swapped_sum_nonpositive(flips: np.ndarray, x: np.ndarray, y: np.ndarray, exact: bool = False) -> np.ndarray:
    """Per permutation, whether the sum of ``x_k - y_k`` over the swapped units is <= 0, decided exactly.

    A float matrix product decides the clear cases; rows within its rounding bound of 0 are redone
    with ``math.fsum`` over the swapped ``x_k`` and ``-y_k`` (exact sum, rounded once: its sign is the
    sign of the true sum), so ties (e.g. the identity permutation, equal systems) are never lost."""
    approx = flips.astype(float) @ (x - y)
    if exact:  # the float product is already exact (``_float_sums_exact``)
        return approx <= 0
    scale = float(np.abs(x).sum() + np.abs(y).sum())
    bound = 4.0 * (len(x) + 2) * np.finfo(float).eps * scale
    out = approx <= 0
    for r in np.flatnonzero(np.abs(approx) <= bound):
        f = flips[r]
        out[r] = math.fsum([*x[f].tolist(), *(-y[f]).tolist()]) <= 0
    return out


def pairwise_p_values(scores: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """One-sided paired permutation p-values that system ``i`` is better than system ``j``.

    ``scores`` is (systems, units) with NaN where a system has no score for a unit; ``flips`` is
    ``permutation_flips(units, ...)``. For the pair (i, j), over the units both have: the observed
    statistic is ``sum_k (s_ik - s_jk)``; a permutation swaps the two scores of the units it flips; the
    p-value is the share of permutations whose statistic is >= the observed one. Returns (S, S) with
    the upper triangle (i < j) filled; NaN elsewhere and for pairs without a shared finite unit."""
    s = np.asarray(scores, float)
    n = s.shape[0]
    p = np.full((n, n), math.nan)
    exact = _float_sums_exact(s[np.isfinite(s)])
    for i in range(n):
        for j in range(i + 1, n):
            shared = np.isfinite(s[i]) & np.isfinite(s[j])
            if shared.any():
                # null = observed - 2 * (sum over swapped units of s_ik - s_jk), so null >= observed
                # exactly when that swapped sum is <= 0
                p[i, j] = float(np.mean(_swapped_sum_nonpositive(flips[:, shared], s[i, shared], s[j, shared], exact)))
    return p


def soft_pairwise_accuracy(
    human: np.ndarray, metric: np.ndarray, permutations: int = SPA_PERMUTATIONS, seed: int = SPA_SEED
) -> tuple[float, int]:
    """(SPA, pairs): soft pairwise accuracy (Thompson et al. 2024) of system-level metric scores.

    ``human`` and ``metric`` are (systems, units) arrays, NaN where a segment is missing. The same
    permutations (``permutation_flips(units, permutations, seed)``) serve every pair and both sides.
    SPA = 1 - mean over pairs i < j of ``abs(p_human(i > j) - p_metric(i > j))``, over the pairs with
    a p-value on both sides (their number is returned); NaN without such a pair."""
    h, m = np.asarray(human, float), np.asarray(metric, float)
    flips = permutation_flips(h.shape[1], permutations, seed)
    ph, pm = pairwise_p_values(h, flips), pairwise_p_values(m, flips)
    i, j = np.triu_indices(h.shape[0], k=1)
    diff = np.abs(ph[i, j] - pm[i, j])
    ok = np.isfinite(diff)
    return (1.0 - float(diff[ok].mean()) if ok.any() else math.nan), int(ok.sum())


def system_item_matrix(a: Aligned, values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(systems sorted by name, (systems, items) matrix of ``values`` with NaN where a segment is absent)."""
    order = sorted(range(len(a.systems)), key=lambda s: a.systems[s])
    row = np.empty(len(a.systems), dtype=int)
    row[order] = np.arange(len(order))
    out = np.full((len(a.systems), len(a.items)), math.nan)
    out[row[a.system], a.item] = values
    return [a.systems[s] for s in order], out


def _system_level(
    a: Aligned, counts: np.ndarray | None, permutations: int = SPA_PERMUTATIONS, spa_seed: int = SPA_SEED
) -> dict[str, Any]:
    hs, ms = system_means(a)
    boot_h: np.ndarray | None = None
    boot_m: np.ndarray | None = None
    present: np.ndarray | None = None
    if counts is not None:
        onehot = (a.system[:, None] == np.arange(len(a.systems))[None]).astype(float)
        W = counts[:, a.item]
        n = W @ onehot
        present = (n > 0).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot_h = np.nan_to_num((W * a.human) @ onehot / n)
            boot_m = np.nan_to_num((W * a.metric) @ onehot / n)
    out: dict[str, Any] = {"systems": len(a.systems)}
    for kind in CORRELATIONS:
        boot = weighted_correlation(boot_h, boot_m, present, kind) if present is not None else None  # type: ignore[arg-type]
        out[kind] = _stat(correlation(hs, ms, kind), boot)
    boot = None
    if present is not None:
        assert boot_h is not None and boot_m is not None  # set with present
        i, j = np.triu_indices(len(a.systems), k=1)
        w = present[:, i] * present[:, j]
        correct = np.sign(boot_h[:, i] - boot_h[:, j]) == np.sign(boot_m[:, i] - boot_m[:, j])
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = (w * correct).sum(axis=1) / w.sum(axis=1)
    out["pairwise_accuracy"] = _stat(pairwise_accuracy(hs, ms), boot)
    spa, pairs = soft_pairwise_accuracy(
        system_item_matrix(a, a.human)[1], system_item_matrix(a, a.metric)[1], permutations, spa_seed
    )
    out["soft_pairwise_accuracy"] = {
        "value": _value(spa),
        "ci95": None,
        "pairs": pairs,
        "permutations": permutations,
        "seed": spa_seed,
    }
    return out


def _evaluate(
    a: Aligned, resamples: int, seed: int, permutations: int = SPA_PERMUTATIONS, spa_seed: int = SPA_SEED
) -> dict[str, Any]:
    counts = resample_counts(len(a.items), resamples, seed) if resamples > 0 and len(a.items) >= 2 else None
    segment = {g: {**_segment_correlations(a, g, counts), **_segment_accuracy(a, g, counts)} for g in GROUPINGS}
    return {
        "items": len(a.items),
        "segments": len(a.keys),
        "segment_level": segment,
        "system_level": _system_level(a, counts, permutations, spa_seed),
    }


def inter_rater_agreement(
    ratings: HumanRatings, keys: Iterable[Key] | None = None, resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Agreement of the first two raters of each segment with at least two annotations (0-6 totals:
    Pearson, Spearman, Kendall tau-b, exact agreement, mean absolute difference; exact agreement per
    criterion where both raters' criteria are known); bootstrap over items."""
    check_bootstrap(resamples, seed)
    wanted = set(ratings.totals) if keys is None else set(keys)
    pairs = sorted(k for k in wanted if len(ratings.totals.get(k, [])) >= 2)
    out: dict[str, Any] = {"segments": len(pairs), "raters": "the first two annotations of each segment"}
    if len(pairs) < 2:
        return out
    a = np.array([ratings.totals[k][0] for k in pairs])
    b = np.array([ratings.totals[k][1] for k in pairs])
    items, item = _codes([k[0] for k in pairs])
    counts = resample_counts(len(items), resamples, seed) if resamples > 0 and len(items) >= 2 else None
    W = counts[:, item] if counts is not None else None
    for kind in CORRELATIONS:
        out[kind] = _stat(correlation(a, b, kind), weighted_correlation(a, b, W, kind) if W is not None else None)

    def mean_stat(v: np.ndarray, w: np.ndarray | None) -> dict[str, Any]:
        return _stat(float(v.mean()), _weighted_mean_rows(w, v) if w is not None else None)

    out["exact_agreement"] = mean_stat((a == b).astype(float), W)
    out["mean_abs_diff"] = mean_stat(np.abs(a - b), W)
    known = [n for n, k in enumerate(pairs) if len(ratings.criteria.get(k, [])) >= 2]
    if known:
        crit: dict[str, list[float]] = {c: [] for c in CRITERIA}
        for n in known:
            first, second = ratings.criteria[pairs[n]][:2]
            for c, x, y in zip(CRITERIA, first, second):
                crit[c].append(float(x == y))
        Wk = W[:, known] if W is not None else None
        out["criteria_exact_agreement"] = {c: mean_stat(np.array(v), Wk) for c, v in crit.items()}
        out["criteria_segments"] = len(known)
    return out


# ---------------------------------------------------------------------------------------------
# the front door


def evaluate_metric(
    human: Mapping[Key, float],
    metric: Mapping[Key, float],
    dimensions: Mapping[str, str] | None = None,
    resamples: int = 1000,
    seed: int = 0,
    permutations: int = SPA_PERMUTATIONS,
    spa_seed: int = SPA_SEED,
) -> dict[str, Any]:
    """Segment- and system-level meta-evaluation of one (higher-is-better) metric, overall and per dimension.

    The overall segment-level ungrouped figures are repeated at the top (``pearson``, ``spearman``,
    ``kendall``, ``pairwise_accuracy``, ``pairwise_accuracy_calibrated``). ``permutations`` and
    ``spa_seed`` drive the permutation tests of the system-level soft pairwise accuracy."""
    check_bootstrap(resamples, seed)
    check_permutations(permutations, spa_seed)
    a = align(human, metric)
    if len(a.keys) < 2:
        raise UserError(f"only {len(a.keys)} segment(s) have both a human and a metric score; nothing to correlate")
    overall = _evaluate(a, resamples, seed, permutations, spa_seed)
    none = overall["segment_level"]["none"]
    out: dict[str, Any] = {
        "segments": len(a.keys),
        "items": len(a.items),
        "systems": len(a.systems),
        "human_only_segments": len(set(human) - set(metric)),
        "metric_only_segments": len(set(metric) - set(human)),
        **{k: none[k] for k in (*CORRELATIONS, "pairwise_accuracy", "pairwise_accuracy_calibrated")},
        "segment_level": overall["segment_level"],
        "system_level": overall["system_level"],
    }
    if dimensions:
        dims = np.array([dimensions.get(k[0], "") for k in a.keys])
        out["per_dimension"] = {
            d: _evaluate(a.subset(dims == d), resamples, seed, permutations, spa_seed)
            for d in DIMENSIONS
            if (dims == d).sum() >= 2
        }
    return out


def meta_evaluate(
    ratings: HumanRatings,
    metrics: Mapping[str, Mapping[Key, float]],
    dimensions: Mapping[str, str] | None = None,
    resamples: int = 1000,
    seed: int = 0,
    lower_is_better: Iterable[str] = LOWER_IS_BETTER,
    permutations: int = SPA_PERMUTATIONS,
    spa_seed: int = SPA_SEED,
) -> dict[str, Any]:
    """The meta-evaluation of every metric against the human ratings, plus inter-rater agreement.

    Metrics named in ``lower_is_better`` are negated first. ``permutations`` / ``spa_seed``: the
    permutation tests of the system-level soft pairwise accuracy. Returns a JSON-ready dict."""
    check_bootstrap(resamples, seed)
    check_permutations(permutations, spa_seed)
    lower = set(lower_is_better)
    human = ratings.means()
    results: dict[str, Any] = {}
    for name, scores in metrics.items():
        oriented = {k: -v for k, v in scores.items()} if name in lower else dict(scores)
        res = evaluate_metric(human, oriented, dimensions, resamples, seed, permutations, spa_seed)
        used = set(human) & set(scores)
        results[name] = {
            "orientation": "negated (lower is better)" if name in lower else "higher is better",
            "annotations": sum(len(ratings.totals[k]) for k in used),
            **res,
        }
    dims = dict(dimensions or {})
    agreement = inter_rater_agreement(ratings, resamples=resamples, seed=seed)
    if dims:
        agreement["per_dimension"] = {
            d: inter_rater_agreement(ratings, [k for k in ratings.totals if dims.get(k[0]) == d], resamples, seed)
            for d in DIMENSIONS
            if any(dims.get(k[0]) == d for k in ratings.totals)
        }
    return {
        "human": {
            "segments": len(human),
            "annotations": ratings.annotations,
            "items": len({k[0] for k in human}),
            "systems": len({k[1] for k in human}),
            "score": "mean over annotations of specific + general_1 + general_2 (0-6)",
        },
        "bootstrap": {
            "resamples": resamples,
            "seed": seed,
            "unit": "item",
            "interval": "95% percentile",
            "note": "no interval with fewer than two items",
        },
        "permutation_test": {"permutations": permutations, "seed": spa_seed, "unit": "item"},
        "definitions": {
            "pearson": "scipy.stats.pearsonr",
            "spearman": "scipy.stats.spearmanr (average ranks)",
            "kendall": "scipy.stats.kendalltau, variant='b'",
            "pairwise_accuracy": "acc_eq (Deutsch et al. 2023) at eps=0: pairs ordered alike or tied by both",
            "pairwise_accuracy_calibrated": "acc_eq at the eps in {0} U {|m_i - m_j|} that maximises it",
            "groupings": "none = all segments; item = per item across systems, averaged; system = per system "
            "across items, averaged; groups without a correlation (< 2 segments, constant) skipped",
            "system_level": "per system mean metric vs mean human over the shared segments (exact sums: "
            "math.fsum, so equal multisets of scores tie exactly)",
            "soft_pairwise_accuracy": "system level, Thompson et al. 2024 (mt-metrics-eval): 1 - mean over "
            "system pairs i < j (sorted names) of |p_human(i>j) - p_metric(i>j)|, p one-sided paired "
            "permutation test over shared items",
        },
        "metrics": results,
        "inter_rater": agreement,
    }


# ---------------------------------------------------------------------------------------------
# mt-metrics-eval files


def mtme_segment_order(items: Iterable[str], systems: Iterable[str]) -> list[Key]:
    """The fixed segment order of the ``*.seg.score`` files: systems sorted by name, each a block
    of every item in the given (benchmark) order."""
    items = list(dict.fromkeys(items))
    return [(i, s) for s in sorted(set(systems)) for i in items]


def _mtme_name(system: str) -> str:
    if not system or any(c in system for c in "\t\n\r"):
        raise UserError(f"system name {system!r}: tabs and newlines cannot be written to mt-metrics-eval files")
    return system


def check_metric_name(name: str, where: str = "metric name") -> str:
    """A metric name that can name the ``NAME.seg.score`` files: not empty, no path separators, no
    control characters, not starting with a dot; a UserError naming it otherwise."""
    if (
        not name
        or name.startswith(".")
        or len(name) > 200
        or any(c in name for c in "/\\")
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
    ):
        raise UserError(
            f"{where} {name!r}: cannot name the mt-metrics-eval files (no '/', '\\', control "
            "characters or leading '.', at most 200 characters)"
        )
    return name


def _mtme_score(x: float | None) -> str:
    return "None" if x is None or not math.isfinite(x) else repr(float(x))


def write_mtme_scores(
    directory: str | Path,
    metric_name: str,
    seg_scores: Mapping[Key, float],
    sys_scores: Mapping[str, float],
    segment_order: list[Key],
) -> tuple[Path, Path]:
    """``{name}.seg.score`` (``system<TAB>score`` per segment of ``segment_order``, ``None`` where
    missing) and ``{name}.sys.score`` (``system<TAB>score`` per system, in order of first appearance)."""
    directory = Path(directory)
    check_metric_name(metric_name)
    seg = "".join(f"{_mtme_name(s)}\t{_mtme_score(seg_scores.get((i, s)))}\n" for i, s in segment_order)
    systems = list(dict.fromkeys(s for _, s in segment_order))
    sys_text = "".join(f"{_mtme_name(s)}\t{_mtme_score(sys_scores.get(s))}\n" for s in systems)
    return (
        atomic_write_text(directory / f"{metric_name}.seg.score", seg),
        atomic_write_text(directory / f"{metric_name}.sys.score", sys_text),
    )


def write_mtme_docs(directory: str | Path, items: Iterable[str], dimensions: Mapping[str, str]) -> Path:
    """``segments.docs``: one ``DIMENSION ITEM_ID`` line per segment of a system block (the
    mt-metrics-eval documents file, the dimension standing in for the domain)."""
    return atomic_write_text(
        Path(directory) / "segments.docs", "".join(f"{dimensions.get(i, 'none')} {i}\n" for i in dict.fromkeys(items))
    )


def system_scores(seg_scores: Mapping[Key, float]) -> dict[str, float]:
    """The mean segment score of each system."""
    per: dict[str, list[float]] = {}
    for (_, system), v in seg_scores.items():
        per.setdefault(system, []).append(v)
    return {s: exact_mean(v) for s, v in per.items()}


# ---------------------------------------------------------------------------------------------
# MetricAlign-style JSON Lines


@dataclass
class MetricAlignData:
    ratings: HumanRatings
    metrics: dict[str, dict[Key, float]]
    dimensions: dict[str, str]


_RESERVED = ("item_id", "system", "dimension", "human")


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _parse_rater(value: Any, where: str, name: str) -> tuple[float, tuple[int, int, int] | None]:
    if _number(value):
        if not 0 <= value <= 6:
            raise UserError(f"{where}: field '{name}': expected a score from 0 to 6, got {value}")
        return float(value), None
    if isinstance(value, dict):
        unknown = sorted(set(value) - {*CRITERIA, "rater"})
        if unknown:
            raise UserError(f"{where}: field '{name}.{unknown[0]}': unknown criterion (expected {', '.join(CRITERIA)})")
        crit = []
        for c in CRITERIA:
            if c not in value:
                raise UserError(f"{where}: field '{name}.{c}': missing")
            if value[c] not in (0, 1, 2) or isinstance(value[c], bool):
                raise UserError(f"{where}: field '{name}.{c}': expected 0, 1 or 2, got {json.dumps(value[c])}")
            crit.append(int(value[c]))
        return float(sum(crit)), (crit[0], crit[1], crit[2])
    raise UserError(f"{where}: field '{name}': expected a number 0-6 or an object with {', '.join(CRITERIA)}")


def _parse_human(value: Any, where: str) -> tuple[list[float], list[tuple[int, int, int]] | None]:
    """(per-rater totals, per-rater criteria or None) of a ``human`` field."""
    if isinstance(value, list) and not value:
        raise UserError(f"{where}: field 'human': empty list of ratings")
    raters = value if isinstance(value, list) else [value]
    names = [f"human[{n}]" for n in range(len(raters))] if isinstance(value, list) else ["human"]
    parsed = [_parse_rater(r, where, name) for r, name in zip(raters, names)]
    crits = [c for _, c in parsed]
    return [t for t, _ in parsed], (crits if all(c is not None for c in crits) else None)  # type: ignore[return-value]


def read_metricalign(path: str | Path) -> MetricAlignData:
    """Human ratings and metric scores from MetricAlign-style JSON Lines: per line ``item_id``,
    ``system``, optional ``dimension``, ``human`` (0-6, a list of per-rater 0-6 scores, or per-rater
    objects with ``specific``/``general_1``/``general_2``) and one number (or null) per metric."""
    path = Path(path)
    shown = _printable(str(path))
    totals: dict[Key, list[float]] = {}
    criteria: dict[Key, list[tuple[int, int, int]]] = {}
    metrics: dict[str, dict[Key, float]] = {}
    dimensions: dict[str, str] = {}
    for n, rec in iter_jsonl(path, "MetricAlign file"):
        where = f"{shown}:{n}"
        if not isinstance(rec, dict):
            raise UserError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        for name in ("item_id", "system"):
            if not isinstance(rec.get(name), str) or not rec[name]:
                raise UserError(f"{where}: field '{name}': missing or not a non-empty string")
        key = (rec["item_id"], rec["system"])
        if key in totals:
            raise UserError(f"{where}: field 'system': duplicate segment ({key[0]}, {key[1]})")
        dim = rec.get("dimension")
        if dim is not None:
            if dim not in DIMENSIONS:
                raise UserError(f"{where}: field 'dimension': {dim!r} is not one of {', '.join(DIMENSIONS)}")
            if dimensions.setdefault(key[0], dim) != dim:
                raise UserError(f"{where}: field 'dimension': item {key[0]} was {dimensions[key[0]]} before")
        if "human" not in rec:
            raise UserError(f"{where}: field 'human': missing")
        totals[key], crit = _parse_human(rec["human"], where)
        if crit is not None:
            criteria[key] = crit
        for name, value in rec.items():
            if name in _RESERVED:
                continue
            check_metric_name(name, f"{where}: field")
            if value is None:
                metrics.setdefault(name, {})
                continue
            if not _number(value):
                raise UserError(
                    f"{where}: field '{name}': expected a metric score (a number or null), got {json.dumps(value)[:40]}"
                )
            metrics.setdefault(name, {})[key] = float(value)
    if not totals:
        raise UserError(f"{shown}: no records")
    if not any(metrics.values()):
        raise UserError(f"{shown}: no metric scores (numeric fields besides {', '.join(_RESERVED)})")
    return MetricAlignData(HumanRatings(totals, criteria), metrics, dimensions)


# ---------------------------------------------------------------------------------------------
# report

SPA_DEFINITION = (
    "SPA (soft pairwise accuracy, Thompson et al. 2024, as in mt-metrics-eval) is 1 - the mean over "
    "system pairs of |p_metric - p_human|, where p are the one-sided permutation p-values of the "
    "pairwise differences between the two systems' scores."
)


def format_stat(stat: Mapping[str, Any] | None) -> str:
    """``0.123 [0.045, 0.201]``: a statistic's value and its 95% interval when there is one (``n/a``: no value)."""
    if not stat or stat.get("value") is None:
        return "n/a"
    ci = stat.get("ci95")
    return f"{stat['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def report_markdown(result: Mapping[str, Any]) -> str:
    """``report.md`` of a meta-evaluation: a row per metric, the system-level SPA among the columns."""
    h = result["human"]
    perm = result.get("permutation_test") or {}
    lines = [
        "# Meta-evaluation against human judgments",
        "",
        f"{h['segments']} segments ({h['annotations']} annotations), {h['items']} items, {h['systems']} systems. "
        "Values with a 95% bootstrap interval over items where there is one.",
        "",
        "| metric | seg pearson | seg kendall | seg acc_eq | sys pearson | sys pairwise acc | SPA (sys) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in result["metrics"].items():
        sys_level = r["system_level"]
        cells = [
            name,
            format_stat(r["pearson"]),
            format_stat(r["kendall"]),
            format_stat(r["pairwise_accuracy"]),
            format_stat(sys_level["pearson"]),
            format_stat(sys_level["pairwise_accuracy"]),
            format_stat(sys_level["soft_pairwise_accuracy"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"{SPA_DEFINITION} Here over the items both systems have, "
        f"{perm.get('permutations', SPA_PERMUTATIONS)} permutations, seed {perm.get('seed', SPA_SEED)}.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# figure


def scatter_png(
    human: Mapping[Key, float],
    metrics: Mapping[str, Mapping[Key, float]],
    dimensions: Mapping[str, str] | None = None,
    results: Mapping[str, Any] | None = None,
) -> bytes:
    """Metric score (as reported) vs human score per segment, a panel per metric, coloured by dimension."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genrep.core.images import figure_png

    names = list(metrics)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.8), squeeze=False)
    dims = dimensions or {}
    present = [d for d in (*DIMENSIONS, "") if any(dims.get(k[0], "") == d for k in human)]
    colours = dict(zip(present, plt.get_cmap("tab10").colors))  # type: ignore[attr-defined]  # a ListedColormap
    for ax, name in zip(axes[0], names):
        a = align(human, metrics[name])
        for d in present:
            sel = np.array([dims.get(k[0], "") == d for k in a.keys], dtype=bool)
            if sel.any():
                ax.scatter(a.metric[sel], a.human[sel], s=14, alpha=0.7, color=colours[d], label=d or "segments")
        res = (results or {}).get(name) or {}
        shown = [
            f"{label}={res[k]['value']:.2f}"
            for k, label in (("pearson", "r"), ("kendall", "tau_b"))
            if res.get(k, {}).get("value") is not None
        ]
        title = f"{name} ({', '.join([*shown, f'n={len(a.keys)}'])})"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"{name} (segment)" + (" - lower is better, negated for r" if name in LOWER_IS_BETTER else ""))
        ax.set_ylabel("human score (0-6, mean of raters)")
        ax.set_ylim(-0.3, 6.3)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return figure_png(fig)
