import contextlib
import os
from pathlib import Path

import pytest

# Everything the tests run must work without a network: make any hub access fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GENREP_NO_PROGRESS", "1")

# The cache the session started with, read before any test's fixture moves GENREP_CACHE elsewhere:
# the bundled LMs are materialised there once and shared by every test (and by later sessions).
SESSION_CACHE = Path(os.environ.get("GENREP_CACHE") or Path.home() / ".cache" / "genrep").expanduser()


@contextlib.contextmanager
def _session_cache():
    before = os.environ.get("GENREP_CACHE")
    os.environ["GENREP_CACHE"] = str(SESSION_CACHE)
    try:
        yield
    finally:
        if before is None:
            del os.environ["GENREP_CACHE"]
        else:
            os.environ["GENREP_CACHE"] = before


@pytest.fixture(scope="session")
def bundled_lm_dir():
    """``bundled_lm_dir(name)``: the materialised directory of a bundled LM in the session's cache.

    Materialises it when the cache does not have it yet (``genrep assets prepare`` does the same, about
    35 s for SmolLM2 and 90 s for Gemma); skips only when the asset's package is not installed.
    """
    from genrep.core.bundled.lm import BUNDLED_LMS, is_installed, materialize

    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            if not is_installed(name):
                pytest.skip(f"bundled LM '{name}' is not installed: {BUNDLED_LMS[name].install}")
            with _session_cache():
                made[name] = materialize(name)
        return made[name]

    return get


@pytest.fixture(scope="session")
def smollm2_dir(bundled_lm_dir):
    """The materialised SmolLM2-135M directory (see ``bundled_lm_dir``)."""
    return bundled_lm_dir("smollm2-135m")
