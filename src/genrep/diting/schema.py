"""DITING records (PAPERS.md s3): benchmark items, system translations and rubric judgments.

- :class:`Item`: one benchmark item: an instruction naming the phenomenon, the Chinese source
  (with its context), the annotated phenomenon and a reference English translation; one of the six
  dimensions (idiom, ambiguity, terminology, tense, zero_pronoun, cultural_safety).
- :class:`Translation`: one system's output for one item.
- :class:`Judgment`: one rater's rubric scores for one translation: a dimension-specific criterion
  and two general criteria, each 0, 1 or 2 (sum 0-6).

Records are read from and written to JSON Lines or CSV (by file suffix). A bad record raises a
one-line :class:`~genrep.core.errors.UserError` naming the file, the line and the field.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from genrep.core.errors import UserError
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


def read_records(path: str | Path, cls: type[R]) -> list[R]:
    """Records of type ``cls`` from a ``.jsonl`` or ``.csv`` file (CSV: ``meta`` as a JSON string)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    out: list[R] = []
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            for n, row in enumerate(csv.DictReader(f), start=2):
                row = {k: v for k, v in row.items() if v != "" or k in ("output", "context", "rationale")}
                if "meta" in row:
                    try:
                        row["meta"] = json.loads(row["meta"])
                    except json.JSONDecodeError:
                        raise UserError(f"{path}:{n}: field 'meta': not valid JSON") from None
                if "redacted" in row:
                    row["redacted"] = row["redacted"].strip().lower() in ("1", "true", "yes")
                out.append(parse_record(cls, row, f"{path}:{n}"))
        return out
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            out.append(parse_record(cls, data, f"{path}:{n}"))
    return out


def records_to_text(records: Iterable[_Record], fmt: str = "jsonl") -> str:
    rows = [r.model_dump() for r in records]
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
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


def append_record(path: str | Path, record: _Record) -> None:
    """Append one record as a JSON line and flush it to disk (the runners' crash-safe log)."""
    with Path(path).open("a", encoding="utf-8") as f:
        f.write(json.dumps(record.model_dump(), ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def cut_torn_tail(path: Path) -> None:
    """Drop a last line cut short by a crash, reading only the tail of the file."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        size, pos = f.seek(0, os.SEEK_END), 0
        while size - pos > 0:
            step = min(size - pos, 1 << 16)
            f.seek(size - pos - step)
            chunk = f.read(step)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                f.truncate(size - pos - step + cut + 1)
                return
            pos += step
        f.truncate(0)


def read_appended(path: str | Path, cls: type[R]) -> list[R]:
    """Records from an append log. A torn last line (a write cut short by a crash) is cut from the
    file first (:func:`cut_torn_tail`), so that the next append starts on a fresh line."""
    path = Path(path)
    if not path.is_file():
        return []
    cut_torn_tail(path)
    out = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(f"{path}:{n}: not valid JSON") from None
            out.append(parse_record(cls, data, f"{path}:{n}"))
    return out
