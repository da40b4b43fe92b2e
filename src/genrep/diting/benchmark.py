"""Benchmarks: the starter benchmark shipped with genrep, or any items file, validated.

``starter`` (``genrep/diting/data/starter.jsonl``, see the README beside it) holds original
Chinese web-novel-style passages written for this project, 25 per dimension, each with its
phenomenon annotated, context where the phenomenon needs it and a reference translation. Any
``.jsonl`` / ``.csv`` file of :class:`~genrep.diting.schema.Item` records (e.g. the ``items.jsonl``
written by ``genrep diting load-official``) works the same way.

Validation (one-line errors naming the file, line and field): every field present, the
dimension's annotation present (the phenomenon is a span of the source for idiom, ambiguity and
terminology; context is present for ambiguity, tense and zero_pronoun), a reference present, no
duplicate ids. Redacted items (official placeholders) skip the source checks.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from genrep.core.errors import UserError
from genrep.diting.schema import CONTEXT_DIMENSIONS, DIMENSIONS, SPAN_DIMENSIONS, Item, read_records

BUNDLED = {"starter": Path(__file__).parent / "data" / "starter.jsonl"}


def benchmark_path(name_or_path: str | Path) -> Path:
    if str(name_or_path) in BUNDLED:
        return BUNDLED[str(name_or_path)]
    path = Path(name_or_path)
    if not path.is_file():
        raise UserError(f"unknown benchmark '{name_or_path}': not a bundled name ({', '.join(BUNDLED)}) nor a file")
    return path


def validate_items(items: list[Item], where: str = "items") -> None:
    """Raise a one-line UserError for the first item that breaks the benchmark's rules."""
    seen: dict[str, int] = {}
    for n, item in enumerate(items, start=1):
        at = f"{where}: item {n} ({item.id})"
        if item.id in seen:
            raise UserError(f"{at}: field 'id': duplicate of item {seen[item.id]}")
        seen[item.id] = n
        if not item.reference_en.strip():
            raise UserError(f"{at}: field 'reference_en': empty")
        if item.redacted:
            continue
        if item.dimension in SPAN_DIMENSIONS and item.phenomenon not in item.source_zh:
            raise UserError(
                f"{at}: field 'phenomenon': '{item.phenomenon}' does not occur in source_zh "
                f"(required for {item.dimension})"
            )
        if item.dimension in CONTEXT_DIMENSIONS and not item.context.strip():
            raise UserError(f"{at}: field 'context': empty (required for {item.dimension})")


def load_benchmark(
    name_or_path: str | Path = "starter", dimensions: list[str] | None = None, limit_per_dimension: int | None = None
) -> list[Item]:
    """The validated items of a benchmark, optionally only some dimensions / the first N of each."""
    path = benchmark_path(name_or_path)
    items = read_records(path, Item, "items file")
    validate_items(items, str(path))
    if dimensions:
        unknown = sorted(set(dimensions) - set(DIMENSIONS))
        if unknown:
            raise UserError(f"unknown dimension(s) {', '.join(unknown)} (known: {', '.join(DIMENSIONS)})")
        items = [i for i in items if i.dimension in dimensions]
    if limit_per_dimension is not None:
        kept: Counter = Counter()
        out = []
        for i in items:
            if kept[i.dimension] < limit_per_dimension:
                kept[i.dimension] += 1
                out.append(i)
        items = out
    return items


def benchmark_info(items: list[Item]) -> list[dict]:
    """Rows per dimension: items, with context, redacted, mean source length (characters)."""
    rows = []
    for dim in DIMENSIONS:
        sel = [i for i in items if i.dimension == dim]
        if not sel:
            continue
        rows.append(
            {
                "dimension": dim,
                "items": len(sel),
                "with_context": sum(bool(i.context) for i in sel),
                "redacted": sum(i.redacted for i in sel),
                "mean_source_chars": round(sum(len(i.source_zh) for i in sel) / len(sel), 1),
            }
        )
    rows.append(
        {
            "dimension": "total",
            "items": len(items),
            "with_context": sum(bool(i.context) for i in items),
            "redacted": sum(i.redacted for i in items),
            "mean_source_chars": round(sum(len(i.source_zh) for i in items) / max(1, len(items)), 1),
        }
    )
    return rows
