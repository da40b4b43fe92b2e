"""The run directory given by ``--out``: everything a command produces lands there.

Layout: ``config.yaml`` (the resolved config), ``metrics.json`` (self-describing: it carries a
``signature`` saying what produced it), ``checkpoints/``, ``figures/`` and ``log.txt``.
Every file is written atomically (temporary file in the same directory, fsync, rename), so a
crash never leaves a half-written file behind.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

from genrep.core.config import dump_yaml


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace`` (mode 0666 minus the umask,
    like a file written with ``open``, not mkstemp's 0600)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:  # name the file the user knows, not the temporary one
        raise OSError(err.errno, err.strerror, str(path)) from err
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def signature(command: str | None = None) -> dict[str, Any]:
    """What produced a result: versions, command line, time (in the spirit of sacrebleu)."""
    import torch

    from genrep import __version__

    return {
        "genrep": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command": command if command is not None else " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def model_dir(path: str | Path, marker: str) -> Path:
    """Where the model is, given a model directory or the ``--out`` of the run that trained it:
    ``path`` itself when it holds ``marker``, else ``path/model`` when that holds ``marker``, else
    ``path`` (the caller says what is missing)."""
    path = Path(path)
    if not (path / marker).is_file() and (path / "model" / marker).is_file():
        return path / "model"
    return path


class RunDir:
    """An output directory of one command run."""

    def __init__(self, out: str | Path):
        self.path = Path(out)
        self.path.mkdir(parents=True, exist_ok=True)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def figures(self) -> Path:
        p = self.path / "figures"
        p.mkdir(exist_ok=True)
        return p

    def write_config(self, cfg: Any) -> Path:
        """``config.yaml``: the fully resolved config (defaults, file, flags and overrides)."""
        return atomic_write_text(self.path / "config.yaml", dump_yaml(cfg))

    def write_metrics(self, metrics: dict[str, Any], *, command: str | None = None) -> Path:
        """``metrics.json``: the numbers plus a ``signature`` of what produced them."""
        return atomic_write_json(self.path / "metrics.json", {**metrics, "signature": signature(command)})

    def read_metrics(self) -> dict[str, Any]:
        p = self.path / "metrics.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def logger(self, name: str = "genrep") -> logging.Logger:
        """A logger that appends to ``log.txt`` in the run directory (and propagates)."""
        log = logging.getLogger(name)
        log.setLevel(logging.INFO)
        target = str((self.path / "log.txt").resolve())
        if not any(getattr(h, "baseFilename", None) == target for h in log.handlers):
            handler = logging.FileHandler(target, encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            log.addHandler(handler)
        return log
