"""File-system boundaries: reading the user's files, checking ``--out`` and holding its lock.

Every problem an ordinary user can cause with a path (missing, a directory, unreadable, not UTF-8,
an ``--out`` that is a file or not writable, a full disk) becomes one
:class:`~genrep.core.errors.UserError` line that names the path and the problem:
:func:`read_text` for inputs, :func:`prepare_out` for the output directory, and
:func:`describe_os_error`, which the CLI applies to any ``OSError`` that escapes a command.

Inputs are read-only to genrep: nothing here opens a user's file for writing. The output
directory is held by one process at a time (:class:`OutLock`, an ``flock`` on ``--out/.lock``
that holds the owner's PID), so two runs cannot interleave their logs.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genrep.core.errors import UserError

LOCK_NAME = ".lock"

_PROBLEMS = {
    errno.ENOENT: "not found",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.EEXIST: "already exists",
    errno.ENAMETOOLONG: "file name too long",
    errno.EILSEQ: "file name is not valid in this file system's encoding",
    errno.ELOOP: "too many levels of symbolic links",
    errno.EFBIG: "file too large",
    errno.EMFILE: "too many open files",
}


def describe_os_error(err: OSError) -> str | None:
    """One line for an ordinary file-system error (``"<path>: no space left on device"``), or
    ``None`` for errors that are not the user's to fix (they keep their traceback)."""
    problem = _PROBLEMS.get(err.errno or -1)
    if problem is None:
        return None
    where = err.filename if err.filename is not None else None
    if where is None:
        return f"{problem} ({err.strerror or type(err).__name__})"
    text = f"{os.fsdecode(where)!s}"
    if err.filename2 is not None:
        text += f" -> {os.fsdecode(err.filename2)}"
    return f"{_printable(text)}: {problem}"


def _printable(text: str) -> str:
    """A path that can be printed even when it holds undecodable bytes (shown as \\xNN)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def check_utf8_argument(arg: str) -> None:
    """Command-line arguments must be valid UTF-8 (they end up in config.yaml and metrics.json)."""
    try:
        arg.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(
            f"argument '{_printable(arg)}' is not valid UTF-8 (rename the file or pass a UTF-8 path)"
        ) from None


def read_bytes(path: str | Path, what: str = "file") -> bytes:
    """The bytes of an input file, or a one-line UserError (not found, a directory, unreadable)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{_printable(str(path))}: {what} not found")
    if path.is_dir():
        raise UserError(f"{_printable(str(path))}: is a directory, expected a {what}")
    try:
        return path.read_bytes()
    except OSError as err:
        raise UserError(f"{_printable(str(path))}: {_PROBLEMS.get(err.errno or -1, err.strerror)}") from None


def decode_utf8(data: bytes, path: str | Path) -> str:
    """UTF-8 text (a leading BOM dropped), or a UserError naming the file and the line of the first
    byte that is not UTF-8."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise UserError(
            f"{_printable(str(path))}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
            f"{err.start}); save the file as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


def read_text(path: str | Path, what: str = "file") -> str:
    """An input text file as UTF-8 (BOM tolerated), never opened for writing."""
    return decode_utf8(read_bytes(path, what), path)


def prepare_out(path: str | Path) -> tuple[Path, Path | None]:
    """Check (and create) an output directory before any work starts.

    Returns ``(path, created)``: ``created`` is the outermost directory this call made (``path``
    itself or an ancestor), None when ``path`` existed. One-line errors: the path exists and is a
    file, a parent is a file, the directory cannot be created or is not writable.
    """
    path = Path(path)
    shown = _printable(str(path))
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {shown}: exists and is not a directory")
    created: Path | None = None
    if not path.exists():
        top = path
        while not top.parent.exists() and top.parent != top:
            top = top.parent
        try:
            path.mkdir(parents=True)
            created = top
        except FileExistsError:
            if not path.is_dir():
                raise UserError(f"--out {shown}: exists and is not a directory") from None
        except OSError as err:
            raise UserError(
                f"--out {shown}: cannot create the directory ({_PROBLEMS.get(err.errno or -1, err.strerror)})"
            ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"--out {shown}: directory is not writable")
    return path, created


def remove_if_empty(path: Path, up_to: Path) -> None:
    """Remove ``path`` and its ancestors up to ``up_to`` (inclusive) while they are empty
    (the directories :func:`prepare_out` made for a command that then failed)."""
    node = path
    while True:
        try:
            node.rmdir()
        except OSError:
            return
        if node == up_to or node.parent == node:
            return
        node = node.parent


class OutLock:
    """An exclusive lock on an output directory, held until :meth:`release` (or process exit).

    The lock is an ``flock`` on ``DIR/.lock``, whose content is the holder's PID; a second
    process fails at once with a UserError naming that PID. ``flock`` locks vanish with their
    process, so a killed run never leaves a stale lock behind (the file may stay; it is reused).
    """

    _held: dict[str, "OutLock"] = {}  # real path -> lock, so one process can take its own lock twice

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.path = self.dir / LOCK_NAME
        self._fd: int | None = None
        self._count = 0

    @classmethod
    def acquire(cls, directory: str | Path) -> "OutLock":
        key = os.path.realpath(directory)
        lock = cls._held.get(key)
        if lock is None:
            lock = cls(directory)
            lock._take()
            cls._held[key] = lock
        lock._count += 1
        return lock

    def _take(self) -> None:
        shown = _printable(str(self.dir))
        for _ in range(10):  # retry when the file was replaced between open and flock
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise UserError(
                    f"--out {shown}: cannot create {LOCK_NAME} ({_PROBLEMS.get(err.errno or -1, err.strerror)})"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise UserError(
                    f"--out {shown}: in use by another genrep run (PID {holder}); wait for it to "
                    f"finish or choose another --out"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._fd = fd
            return
        raise UserError(f"--out {shown}: could not take {LOCK_NAME}")

    def release(self) -> None:
        self._count -= 1
        if self._count > 0 or self._fd is None:
            return
        OutLock._held.pop(os.path.realpath(self.dir), None)
        try:
            os.ftruncate(self._fd, 0)
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def is_secondary_rank() -> bool:
    """True in a torchrun worker other than global rank 0 (it shares rank 0's ``--out``)."""
    rank = os.environ.get("RANK")
    return rank is not None and rank.strip() not in ("", "0")


def read_json(path: str | Path, what: str = "JSON file") -> object:
    """A JSON document from an input or model file: one-line errors for not found, not UTF-8 and
    not valid JSON (naming the line)."""
    import json

    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{_printable(str(path))}:{err.lineno}: not valid JSON ({err.msg})") from None
    except RecursionError:
        raise UserError(f"{_printable(str(path))}: JSON nested too deeply") from None


def file_sha256(path: Path) -> str:
    """sha256 (hex) of a file's bytes; a Hugging Face cache link into ``blobs/`` is named by its content hash
    already, so its target's name is returned without reading it."""
    if path.is_symlink():
        target = path.resolve()
        if target.parent.name == "blobs":
            return target.name
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_files(h: Any, root: Path, files: Sequence[Path]) -> None:
    """Feed ``h`` each file's path relative to ``root`` and its :func:`file_sha256`, in the given order: the
    same files give the same digest wherever the directory is copied; a changed byte or name another."""
    for f in files:
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + file_sha256(f).encode() + b"\n")
