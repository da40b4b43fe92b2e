"""Meta-evaluation of metric scores against DITING human judgments (MetricAlign, docs/papers.md s3.5), in
the manner of mt-metrics-eval and of the WMT metrics tasks: the evaluation drivers (segment level,
system level, inter-rater agreement, ``evaluate_metric``, ``meta_evaluate``).

The parts live in modules named for their job, and every name is re-exported here (use
``genrep.diting.metaeval`` as before):

- ``metaeval_data``: the data model (segments keyed ``(item_id, system)``, ``HumanRatings``,
  ``Aligned``, ``align``);
- ``metaeval_stats``: the statistics over arrays (correlations, pairwise accuracy, bootstrap, exact
  means, soft pairwise accuracy), with their definitions;
- ``metaeval_io``: mt-metrics-eval score files and the MetricAlign JSON Lines reader;
- ``metaeval_report``: the markdown report and the scatter plot.

A *segment* is one system's translation of one item, keyed ``(item_id, system)``. Its human score is
the mean over its annotations (raters) of the rubric total ``specific + general_1 + general_2``
(0-6). Only segments with both a human and a metric score are used; the counts are reported.
Metrics where lower is better (TER) are negated first, so that every statistic reads "higher =
agrees more".

Evaluation (the statistics themselves: ``metaeval_stats``):

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
- 95% confidence intervals: percentile bootstrap resampling *items* with replacement (default
  1000 resamples, fixed seed), every statistic recomputed on each resample;
- inter-rater agreement: for segments with at least two annotations, the first two raters' totals
  (correlations, exact agreement, mean absolute difference) and per-criterion exact agreement. In the
  official sample the raters are positional (``r1``, ``r2`` within a task), not persons.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterable, Mapping

import numpy as np

from genrep.core.errors import UserError
from genrep.diting.limits import MAX_RESAMPLES as MAX_RESAMPLES  # re-exported: the bound on resamples
from genrep.diting.limits import check_bootstrap, check_permutations
from genrep.diting.metaeval_data import (
    LOWER_IS_BETTER,
    Aligned,
    HumanRatings,
    Key,
    _aligned,
    align,
    metric_from_segments,
    ratings_from_judgments,
)
from genrep.diting.metaeval_io import (
    _RESERVED,
    MetricAlignData,
    _mtme_name,
    _mtme_score,
    _number,
    _parse_human,
    _parse_rater,
    check_metric_name,
    mtme_segment_order,
    read_metricalign,
    system_scores,
    write_mtme_docs,
    write_mtme_scores,
)
from genrep.diting.metaeval_report import (
    SPA_DEFINITION,
    format_stat,
    report_markdown,
    scatter_png,
)
from genrep.diting.metaeval_stats import (
    _CHUNK,
    CORRELATIONS,
    SPA_PERMUTATIONS,
    SPA_SEED,
    _acc_curves,
    _codes,
    _constant_rows,
    _float_sums_exact,
    _group_pair_weights,
    _is_constant,
    _nanmean_rows,
    _pair_quadratic,
    _pair_terms,
    _stat,
    _swapped_sum_nonpositive,
    _value,
    _weighted_kendall,
    _weighted_mean_rows,
    _weighted_pearson,
    _weighted_ranks,
    _within_pairs,
    calibrated_pairwise_accuracy,
    correlation,
    exact_group_means,
    exact_mean,
    grouped_correlation,
    pairwise_accuracy,
    pairwise_p_values,
    per_group_correlations,
    permutation_flips,
    resample_counts,
    soft_pairwise_accuracy,
    weighted_correlation,
    weighted_pairwise_accuracy,
)
from genrep.diting.rubric import CRITERIA
from genrep.diting.schema import DIMENSIONS

GROUPINGS = ("none", "item", "system")

__all__ = [  # the public names, defined here or re-exported from the split-off modules
    "Key",
    "LOWER_IS_BETTER",
    "HumanRatings",
    "ratings_from_judgments",
    "metric_from_segments",
    "Aligned",
    "align",
    "CORRELATIONS",
    "SPA_PERMUTATIONS",
    "SPA_SEED",
    "correlation",
    "per_group_correlations",
    "grouped_correlation",
    "weighted_correlation",
    "pairwise_accuracy",
    "calibrated_pairwise_accuracy",
    "weighted_pairwise_accuracy",
    "resample_counts",
    "exact_mean",
    "exact_group_means",
    "permutation_flips",
    "pairwise_p_values",
    "soft_pairwise_accuracy",
    "mtme_segment_order",
    "check_metric_name",
    "write_mtme_scores",
    "write_mtme_docs",
    "system_scores",
    "MetricAlignData",
    "read_metricalign",
    "SPA_DEFINITION",
    "format_stat",
    "report_markdown",
    "scatter_png",
    "GROUPINGS",
    "MAX_RESAMPLES",
    "inter_rater_agreement",
    "evaluate_metric",
    "meta_evaluate",
    "system_means",
    "system_item_matrix",
]
__all__ += [  # private helpers, re-exported for code that reached them as ``metaeval._x``
    "_aligned",
    "_CHUNK",
    "_codes",
    "_is_constant",
    "_constant_rows",
    "_weighted_pearson",
    "_weighted_ranks",
    "_pair_quadratic",
    "_weighted_kendall",
    "_within_pairs",
    "_pair_terms",
    "_group_pair_weights",
    "_acc_curves",
    "_value",
    "_stat",
    "_weighted_mean_rows",
    "_nanmean_rows",
    "_float_sums_exact",
    "_swapped_sum_nonpositive",
    "_mtme_name",
    "_mtme_score",
    "_RESERVED",
    "_number",
    "_parse_rater",
    "_parse_human",
]


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


def system_means(a: Aligned) -> tuple[np.ndarray, np.ndarray]:
    """Per system (in ``a.systems`` order) the mean human and the mean metric score over its segments,
    summed exactly (``exact_mean``) so that systems with equal multisets of scores compare equal."""
    k = len(a.systems)
    return exact_group_means(a.human, a.system, k), exact_group_means(a.metric, a.system, k)


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
