"""Click options every run command shares (``--out``, ``--config``, ``--set``) and the flag filter.

``--out`` is checked when the command line is parsed, before any work starts
(:func:`genrep.core.files.prepare_out`), and locked for the whole command
(:class:`genrep.core.files.OutLock`): a second genrep process on the same directory fails at
once. torchrun workers other than rank 0 share rank 0's directory and do not take the lock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def out_callback(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """Check, create and lock ``--out`` for the life of the command."""
    if value is None or ctx.resilient_parsing:
        return value
    from genrep.core.files import OutLock, is_secondary_rank, prepare_out, remove_if_empty

    path, created = prepare_out(value)
    if is_secondary_rank():
        return path
    lock = OutLock.acquire(path)

    def release() -> None:
        lock.release()
        if created is not None:  # only when the command failed before writing anything
            remove_if_empty(path, created)

    ctx.call_on_close(release)
    return path


def out_option(default: Path | None = None, help: str = "Output directory.") -> Callable[[F], F]:
    """The ``--out`` option (required, or with a default such as ``runs/demo``), checked and locked."""
    if default is None:
        return click.option("--out", type=click.Path(path_type=Path), required=True, help=help, callback=out_callback)
    return click.option(
        "--out", type=click.Path(path_type=Path), default=default, show_default=True, help=help, callback=out_callback
    )


OUT = out_option()
CONFIG = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="YAML file with the command's config fields.",
)
SET = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field.")


def given_flags(**kwargs) -> dict:
    """CLI flags that were given: None or an empty tuple means 'not given', so the config file or default stands."""
    return {k: v for k, v in kwargs.items() if v is not None and v != ()}
