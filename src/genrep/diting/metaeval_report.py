"""The human-readable outputs of the meta-evaluation (``genrep.diting.metaeval``): the markdown report
(``report.md``) and the scatter plot of metric vs human scores.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from genrep.diting.metaeval_data import LOWER_IS_BETTER, Key, align
from genrep.diting.metaeval_stats import SPA_PERMUTATIONS, SPA_SEED
from genrep.diting.schema import DIMENSIONS

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
