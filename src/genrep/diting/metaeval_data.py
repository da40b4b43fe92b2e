"""The data model of the meta-evaluation (``genrep.diting.metaeval``): segments, human ratings and the
segments scored by both humans and a metric.

A *segment* is one system's translation of one item, keyed ``(item_id, system)``. Its human score is
the mean over its annotations (raters) of the rubric total ``specific + general_1 + general_2``
(0-6). Only segments with both a human and a metric score are used. Metrics where lower is better
(TER, ``LOWER_IS_BETTER``) are negated first, so that every statistic reads "higher = agrees more".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from genrep.diting.metaeval_stats import _codes
from genrep.diting.schema import Judgment

Key = tuple[str, str]  # (item_id, system)
LOWER_IS_BETTER = frozenset({"ter"})


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


def _aligned(keys: list[Key], human: np.ndarray, metric: np.ndarray) -> Aligned:
    items, item = _codes([k[0] for k in keys])
    systems, system = _codes([k[1] for k in keys])
    return Aligned(keys, np.asarray(human, float), np.asarray(metric, float), item, system, items, systems)


def align(human: Mapping[Key, float], metric: Mapping[Key, float]) -> Aligned:
    """The segments present in both (sorted by item, then system)."""
    keys = sorted(set(human) & set(metric))
    return _aligned(keys, np.array([human[k] for k in keys]), np.array([metric[k] for k in keys]))
