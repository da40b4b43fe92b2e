"""JSON Lines: strict reading of inputs, crash-safe appending and repair of genrep's own logs.

Two kinds of JSONL file, treated differently:

- **Inputs** (a user's translations, items, pairs): read-only. :func:`iter_jsonl` parses every
  line; a line that is not JSON, including a final line without its newline that is cut short, is
  a :class:`~genrep.core.errors.UserError` naming ``file:line``. A valid final record without a
  trailing newline is an ordinary record.
- **Logs genrep appends to inside ``--out``** (train logs, translation and score logs): a crash can
  cut the last line short. :func:`repair_tail` removes such a torn line (and only an unterminated,
  unparseable last line) before the log is read on resume; :func:`append_jsonl` writes one
  complete line and flushes it (``fsync`` on request), and :func:`truncate_jsonl` keeps the
  records a resumed run will not redo. Never call these on a file outside the run directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from genrep.core.errors import UserError
from genrep.core.files import _printable, decode_utf8, read_bytes
from genrep.core.rundir import atomic_write_text


def dumps_line(obj: Any) -> str:
    """One JSON line (UTF-8 text kept as is), newline included."""
    return json.dumps(obj, ensure_ascii=False, default=_default) + "\n"


def _default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def iter_jsonl(path: str | Path, what: str = "file") -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for each non-blank line of an input file; strict (see module doc)."""
    path = Path(path)
    text = decode_utf8(read_bytes(path, what), path)
    # split on "\n" only: str.splitlines() also splits on U+2028, U+0085 and others, which JSON strings
    # written with ensure_ascii=False hold unescaped
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{_printable(str(path))}:{n}: not valid JSON ({err.msg})") from None
        except RecursionError:
            raise UserError(f"{_printable(str(path))}:{n}: JSON nested too deeply") from None
        yield n, value


def read_jsonl(path: str | Path, what: str = "file") -> list[Any]:
    """Every value of an input JSONL file (strict)."""
    return [value for _, value in iter_jsonl(path, what)]


def repair_tail(path: str | Path) -> int:
    """Cut a torn last line (no trailing newline and not valid JSON) from one of genrep's own logs;
    a complete last record that only lacks its newline gets the newline instead. Returns the
    number of bytes removed (0 when the file was whole or absent)."""
    path = Path(path)
    if not path.is_file():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return 0
        start, pos = 0, size
        while pos > 0:  # find the last newline, reading backwards in blocks
            step = min(pos, 1 << 16)
            f.seek(pos - step)
            cut = f.read(step).rfind(b"\n")
            if cut >= 0:
                start = pos - step + cut + 1
                break
            pos -= step
        f.seek(start)
        tail = f.read()
        try:
            json.loads(tail.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            f.truncate(start)
            f.flush()
            os.fsync(f.fileno())
            return size - start
        f.seek(0, os.SEEK_END)
        f.write(b"\n")
        f.flush()
        os.fsync(f.fileno())
        return 0


def read_log(path: str | Path) -> list[Any]:
    """The records of one of genrep's own append logs, after :func:`repair_tail` ([] if absent)."""
    path = Path(path)
    if not path.is_file():
        return []
    repair_tail(path)
    return read_jsonl(path, "log")


def append_jsonl(path: str | Path, obj: Any, *, fsync: bool = True) -> None:
    """Append one record as a complete JSON line and flush it (to disk with ``fsync``)."""
    line = dumps_line(obj).encode("utf-8")
    try:
        with Path(path).open("ab") as f:
            f.write(line)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
    except OSError as err:  # a full disk or a vanished directory: name the log
        raise OSError(err.errno, err.strerror, str(path)) from err


def fsync_file(path: str | Path) -> None:
    """Flush a file's written data to disk (e.g. a train log at a checkpoint)."""
    path = Path(path)
    if path.is_file():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def truncate_jsonl(path: str | Path, keep: Callable[[Any], bool]) -> int:
    """Rewrite one of genrep's own logs atomically with only the records ``keep`` accepts (torn
    tail repaired first); returns how many records were kept."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept = [r for r in read_log(path) if keep(r)]
    atomic_write_text(path, "".join(dumps_line(r) for r in kept))
    return len(kept)


def truncate_log(path: str | Path, step: int) -> None:
    """On resume keep only the JSON-lines log records up to ``step`` (the rest will be redone); a
    line torn by a crash is dropped first (:func:`repair_tail`)."""
    truncate_jsonl(path, lambda r: isinstance(r, dict) and r.get("step", 0) <= step)
