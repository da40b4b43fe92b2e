"""DITING records (docs/papers.md s3.2, s3.3): benchmark items, system translations and rubric judgments.

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
import types
import typing
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
    failed: bool = False  # an LLM rater's failed item recorded as 0/0/0 (AgentEval failed_as_zero); readers may drop it

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
    an error naming ``file:line``. CSV: one column per field, cells converted by the field's type
    (see :func:`csv_cells`). The file must be UTF-8 (a BOM is dropped); ``what`` names it in the
    'not found' error.
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


# --- CSV -----------------------------------------------------------------------------------------------------------
#
# A cell holds a field's value as text: strings as they are, integers and floats in decimal, booleans as
# true/false, dicts, lists and nested models as JSON, None as an empty cell. The reader turns each cell back
# into its field's type from the model's annotations, so whatever write_records writes, read_records reads.

_JSON, _TEXT, _INT, _FLOAT, _BOOL, _ANY = "json", "text", "int", "float", "bool", "any"
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")
_CSV_FIELD_LIMIT = 2**31 - 1  # a transcript cell can exceed csv's default 128 KiB


def _cell_kind(annotation: Any) -> tuple[str, bool]:
    """(how a CSV cell of this field is parsed, whether the field accepts None)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _cell_kind(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if len(args) == 1:
            return _cell_kind(args[0])[0], optional
        return _ANY, optional
    if origin is Literal:
        values = typing.get_args(annotation)
        if all(isinstance(v, bool) for v in values):
            return _BOOL, False
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return _INT, False
        if all(isinstance(v, str) for v in values):
            return _TEXT, False
        return _ANY, False
    if annotation is str:
        return _TEXT, False
    if annotation is bool:
        return _BOOL, False
    if annotation is int:
        return _INT, False
    if annotation is float:
        return _FLOAT, False
    if annotation is Any:
        return _ANY, False
    return _JSON, False  # dict, list, tuple, a nested model


def _cell_value(kind: str, text: str, where: str) -> Any:
    """A cell's text as the field's Python value, or a UserError naming the cell."""
    if kind == _TEXT:
        return text
    value = text.strip()
    if kind == _INT:
        try:
            return int(value)
        except ValueError:
            raise UserError(f"{where}: expected an integer, got {text!r}") from None
    if kind == _FLOAT:
        try:
            return float(value)
        except ValueError:
            raise UserError(f"{where}: expected a number, got {text!r}") from None
    if kind == _BOOL:
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise UserError(f"{where}: expected true or false, got {text!r}")
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        if kind == _ANY:
            return text
        raise UserError(f"{where}: not valid JSON ({e.msg})") from None
    except RecursionError:
        raise UserError(f"{where}: JSON nested too deeply") from None


def csv_cells(cls: type[_Record], row: dict[str, str], where: str) -> dict[str, Any]:
    """The field values of one CSV row of ``cls`` records: each cell parsed by its field's type.

    An empty cell is None for an optional field, ``""`` for a text field, and the default for any
    other field that has one (an error for a required one)."""
    out: dict[str, Any] = {}
    for name, text in row.items():
        info = cls.model_fields[name]
        kind, optional = _cell_kind(info.annotation)
        at = f"{where}: column '{name}'"
        empty = text == "" if kind == _TEXT else not text.strip()
        if empty and (optional or kind != _TEXT):
            if optional:
                out[name] = None
            elif info.is_required():
                raise UserError(f"{at}: empty, but the field is required")
            continue
        out[name] = _cell_value(kind, text, at)
    return out


def _read_csv(path: Path, cls: type[R], what: str) -> list[R]:
    shown = _printable(str(path))
    text = read_text(path, what)
    limit = csv.field_size_limit(_CSV_FIELD_LIMIT)
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        rows: list[tuple[int, list[str]]] = []
        start = 1
        for cells in reader:
            if any(c.strip() for c in cells):
                rows.append((start, cells))
            start = reader.line_num + 1
    except csv.Error as e:
        raise UserError(f"{shown}:{reader.line_num}: not valid CSV ({e})") from None
    finally:
        csv.field_size_limit(limit)
    if not rows:
        return []
    known = list(cls.model_fields)
    header = [c.strip() for c in rows[0][1]]
    named = [c for c in header if c]
    for name in named:
        if name not in cls.model_fields:
            raise UserError(f"{shown}: unknown column '{name}' (known: {', '.join(known)})")
    repeated = [c for c in dict.fromkeys(named) if named.count(c) > 1]
    if repeated:
        raise UserError(f"{shown}: column '{repeated[0]}' appears twice in the header")
    missing = [n for n, f in cls.model_fields.items() if f.is_required() and n not in named]
    if missing:
        raise UserError(
            f"{shown}: missing column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(m) for m in missing)} (required for {cls.__name__} records)"
        )
    out: list[R] = []
    for line, cells in rows[1:]:
        where = f"{shown}:{line}"
        if len(cells) < len(header) or any(c.strip() for c in cells[len(header) :]):
            raise UserError(f"{where}: {len(cells)} cells, but the header has {len(header)} columns")
        row: dict[str, str] = {}
        for name, cell in zip(header, cells):
            if name:
                row[name] = cell
            elif cell.strip():
                raise UserError(f"{where}: a value under a column without a name in the header")
        out.append(parse_record(cls, csv_cells(cls, row, where), where))
    return out


def _csv_text(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False)
    return value


def records_to_text(records: Iterable[_Record], fmt: str = "jsonl") -> str:
    """Records as JSON Lines or CSV text (CSV: a header of the field names, then cells as
    :func:`read_records` reads them back)."""
    rows = [r.model_dump() for r in records]
    if fmt == "jsonl":
        return "".join(dumps_line(r) for r in rows)
    if fmt == "csv":
        buf = io.StringIO()
        if rows:
            writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
            writer.writeheader()
            for r in rows:
                writer.writerow({k: _csv_text(v) for k, v in r.items()})
        return buf.getvalue()
    raise ValueError(f"unknown format {fmt!r}")


def write_records(path: str | Path, records: Iterable[_Record]) -> Path:
    """Write records atomically as JSON Lines or CSV (by suffix)."""
    path = Path(path)
    return atomic_write_text(path, records_to_text(records, "csv" if path.suffix.lower() == ".csv" else "jsonl"))
