"""DITING records (PAPERS.md s3): benchmark items, system translations and rubric judgments.

- :class:`Item`: one benchmark item: an instruction naming the phenomenon, the Chinese source
  (with its context), the annotated phenomenon and a reference English translation; one of the six
  dimensions (idiom, ambiguity, terminology, tense, zero_pronoun, cultural_safety).
- :class:`Translation`: one system's output for one item.
- :class:`Judgment`: one rater's rubric scores for one translation: a dimension-specific criterion
  and two general criteria, each 0, 1 or 2 (sum 0-6).

Records are read from and written to JSON Lines or CSV (by file suffix). A bad record raises a
one-line :class:`~genrep.core.errors.UserError` naming the file, the line and the field.

Two kinds of file: a user's input (:func:`read_records`) is read-only and strict, through
:mod:`genrep.core.files` and :mod:`genrep.core.jsonl`; DITING's own append logs inside ``--out``
(:func:`append_record`, :func:`read_log`) have a last line torn by a crash repaired before they are
read again.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterable, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from genrep.core.errors import UserError
from genrep.core.files import _printable, read_text
from genrep.core.jsonl import append_jsonl, dumps_line, iter_jsonl, repair_tail
from genrep.core.rundir import atomic_write_text

Dimension = Literal["idiom", "ambiguity", "terminology", "tense", "zero_pronoun", "cultural_safety"]
DIMENSIONS: tuple[str, ...] = ("idiom", "ambiguity", "terminology", "tense", "zero_pronoun", "cultural_safety")
# dimensions whose phenomenon is a span of the source text, and those that need context to translate
SPAN_DIMENSIONS = ("idiom", "ambiguity", "terminology")
CONTEXT_DIMENSIONS = ("ambiguity", "tense", "zero_pronoun")


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Item(_Record):
    """A benchmark item."""

    id: str = Field(min_length=1)
    dimension: Dimension
    source_zh: str = Field(min_length=1)
    context: str = ""
    phenomenon: str = Field(min_length=1)
    reference_en: str = ""
    instruction: str = ""
    redacted: bool = False  # the official release replaces sources by placeholders like <novel><chapter><sentence N>


class Translation(_Record):
    """A system's translation of one item; ``meta`` holds e.g. latency, tokens or a failure reason."""

    item_id: str = Field(min_length=1)
    system: str = Field(min_length=1)
    output: str
    meta: dict[str, Any] = Field(default_factory=dict)


Score = Literal[0, 1, 2]


class Judgment(_Record):
    """A rater's rubric scores (0/1/2 each) for one system's translation of one item."""

    item_id: str = Field(min_length=1)
    system: str = Field(min_length=1)
    rater: str = Field(min_length=1)
    specific: Score
    general_1: Score
    general_2: Score
    rationale: str = ""

    @property
    def total(self) -> int:
        """The 0-6 score: specific + general_1 + general_2."""
        return self.specific + self.general_1 + self.general_2


R = TypeVar("R", bound=_Record)


def _error_line(err: ValidationError) -> str:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "record"
    return f"field '{field}': {first['msg']}"


def parse_record(cls: type[R], data: Any, where: str) -> R:
    """``cls`` from a dict, or a UserError ``"<where>: field 'x': <reason>"``."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise UserError(f"{where}: {_error_line(e)}") from None


def read_records(path: str | Path, cls: type[R], what: str = "file") -> list[R]:
    """Records of type ``cls`` from a user's ``.jsonl`` or ``.csv`` file (by suffix), read-only and strict.

    JSON Lines: every non-blank line is a record; a line that is not JSON (a torn last line too) is
    an error naming ``file:line``. CSV: ``meta`` as a JSON string. The file must be UTF-8 (a BOM is
    dropped); ``what`` names it in the 'not found' error.
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return _read_csv(path, cls, what)
    return [parse_record(cls, value, f"{_printable(str(path))}:{n}") for n, value in iter_jsonl(path, what)]


def read_log(path: str | Path, cls: type[R]) -> list[R]:
    """Records of one of DITING's own append logs inside ``--out`` ([] when it does not exist yet).

    A last line torn by a crash is cut from the file first (:func:`genrep.core.jsonl.repair_tail`),
    so that the next append starts on a fresh line. Never call this on a user's file.
    """
    path = Path(path)
    if not path.is_file():
        return []
    repair_tail(path)
    return [parse_record(cls, value, f"{_printable(str(path))}:{n}") for n, value in iter_jsonl(path, "log")]


def append_record(path: str | Path, record: _Record) -> None:
    """Append one record as a JSON line to one of DITING's own logs and fsync it (the runners' crash-safe log)."""
    append_jsonl(path, record.model_dump())


def _read_csv(path: Path, cls: type[R], what: str) -> list[R]:
    shown = _printable(str(path))
    out: list[R] = []
    for n, row in enumerate(csv.DictReader(io.StringIO(read_text(path, what), newline="")), start=2):
        row = {k: v for k, v in row.items() if v != "" or k in ("output", "context", "rationale")}
        if "meta" in row:
            try:
                row["meta"] = json.loads(row["meta"])
            except json.JSONDecodeError:
                raise UserError(f"{shown}:{n}: field 'meta': not valid JSON") from None
        if "redacted" in row:
            row["redacted"] = row["redacted"].strip().lower() in ("1", "true", "yes")
        out.append(parse_record(cls, row, f"{shown}:{n}"))
    return out


def records_to_text(records: Iterable[_Record], fmt: str = "jsonl") -> str:
    rows = [r.model_dump() for r in records]
    if fmt == "jsonl":
        return "".join(dumps_line(r) for r in rows)
    if fmt == "csv":
        buf = io.StringIO()
        if rows:
            writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
            writer.writeheader()
            for r in rows:
                writer.writerow({k: json.dumps(v, ensure_ascii=False) if isinstance(v, dict) else v for k, v in r.items()})
        return buf.getvalue()
    raise ValueError(f"unknown format {fmt!r}")


def write_records(path: str | Path, records: Iterable[_Record]) -> Path:
    """Write records atomically as JSON Lines or CSV (by suffix)."""
    path = Path(path)
    return atomic_write_text(path, records_to_text(records, "csv" if path.suffix.lower() == ".csv" else "jsonl"))
