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


def _check_range(name: str, value: object, low: int, high: int) -> None:
    n = _integer(value)
    if n is None or not low <= n <= high:
        raise UserError(f"{name} must be an integer from {low} to {high}, got {value!r}")


def _check_seed(name: str, seed: object) -> None:
    s = _integer(seed)
    if s is None or s < 0:
        raise UserError(f"{name} must be a non-negative integer, got {seed!r}")


def check_bootstrap(resamples: object, seed: object) -> None:
    """Raise a one-line UserError naming 'resamples' or 'seed' when either is out of range."""
    _check_range("resamples", resamples, 0, MAX_RESAMPLES)
    _check_seed("seed", seed)


MAX_PERMUTATIONS = 100_000  # permutation-test draws: (permutations x items) sign flips are held in memory at once


def check_permutations(permutations: object, seed: object) -> None:
    """Raise a one-line UserError naming 'permutations' or 'seed' when either is out of range."""
    _check_range("permutations", permutations, 1, MAX_PERMUTATIONS)
    _check_seed("permutation seed", seed)
