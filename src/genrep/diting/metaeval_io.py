"""The files of the meta-evaluation (``genrep.diting.metaeval``): the mt-metrics-eval layout
(``NAME.seg.score``: a block per system, ``system<TAB>score`` per segment in a fixed item order,
``None`` where missing; ``NAME.sys.score``: ``system<TAB>score``; ``segments.docs``) and a reader
for MetricAlign-style JSON Lines.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from genrep.core.errors import UserError
from genrep.core.files import _printable
from genrep.core.jsonl import iter_jsonl
from genrep.core.rundir import atomic_write_text
from genrep.diting.metaeval_data import HumanRatings, Key
from genrep.diting.metaeval_stats import exact_mean
from genrep.diting.rubric import CRITERIA
from genrep.diting.schema import DIMENSIONS

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
