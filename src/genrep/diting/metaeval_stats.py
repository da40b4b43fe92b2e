"""The statistics of the meta-evaluation (``genrep.diting.metaeval``): pure numpy / scipy functions over
arrays, the grouping an explicit argument, as in mt-metrics-eval. No I/O and no knowledge of judgment
records; bootstrap resamples are rows of multiplicity weights.

- correlations: Pearson r, Spearman rho (Pearson of average ranks) and Kendall tau-b (ties
  corrected: ``(C - D) / sqrt((n0 - n1)(n0 - n2))``), point values from ``scipy.stats``;
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
- exact means: summed with ``math.fsum``, so that equal multisets of scores give equal means
  whatever their order;
- soft pairwise accuracy (Thompson, Mathur, Deutsch & Finkelstein, WMT 2024, as mt-metrics-eval):
  ``1 - mean_{i<j} |p_human(i>j) - p_metric(i>j)|`` with one-sided paired permutation p-values over
  the items both systems have (default 1000 permutations, seed 4, as mt-metrics-eval).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterable

import numpy as np
from scipy import stats

from genrep.diting.limits import check_bootstrap, check_permutations

CORRELATIONS = ("pearson", "spearman", "kendall")
SPA_PERMUTATIONS = 1000  # mt-metrics-eval's default number of permutations (``num_permutations``)
SPA_SEED = 4  # mt-metrics-eval's default seed of its pairwise permutation test
_CHUNK = 200  # bootstrap rows per block in the pair computations (bounds memory to ~ _CHUNK x pairs)


def _codes(labels: list[str]) -> tuple[list[str], np.ndarray]:
    """(distinct labels in order of first appearance, each label's index into them)."""
    names = list(dict.fromkeys(labels))
    index = {n: k for k, n in enumerate(names)}
    return names, np.array([index[x] for x in labels], dtype=int)


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
# exact means


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
