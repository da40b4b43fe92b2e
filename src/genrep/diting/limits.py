"""Bounds on the numbers DITING's commands take, shared by the click options and the library.

Kept free of heavy imports, so that ``genrep diting --help`` stays quick.
"""

from __future__ import annotations

import operator

from genrep.core.errors import UserError

MAX_RESAMPLES = 100_000  # bootstrap resamples: (resamples x items) weights are held in memory at once


def _integer(value: object) -> int | None:
    """``value`` as an int when it is an integer (numpy integers too, bools not), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def check_bootstrap(resamples: object, seed: object) -> None:
    """Raise a one-line UserError naming 'resamples' or 'seed' when either is out of range."""
    n = _integer(resamples)
    if n is None or not 0 <= n <= MAX_RESAMPLES:
        raise UserError(f"resamples must be an integer from 0 to {MAX_RESAMPLES}, got {resamples!r}")
    s = _integer(seed)
    if s is None or s < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")


MAX_PERMUTATIONS = 100_000  # permutation-test draws: (permutations x items) sign flips are held in memory at once


def check_permutations(permutations: object, seed: object) -> None:
    """Raise a one-line UserError naming 'permutations' or 'seed' when either is out of range."""
    n = _integer(permutations)
    if n is None or not 1 <= n <= MAX_PERMUTATIONS:
        raise UserError(f"permutations must be an integer from 1 to {MAX_PERMUTATIONS}, got {permutations!r}")
    s = _integer(seed)
    if s is None or s < 0:
        raise UserError(f"permutation seed must be a non-negative integer, got {seed!r}")
