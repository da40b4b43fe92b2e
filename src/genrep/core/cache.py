"""Where genrep keeps materialised assets: ``$GENREP_CACHE`` or ``~/.cache/genrep``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The cache directory (created), or a sub-directory of it."""
    root = Path(os.environ.get("GENREP_CACHE") or Path.home() / ".cache" / "genrep").expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
