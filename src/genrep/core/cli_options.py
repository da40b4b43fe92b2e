"""Click options every run command shares (``--out``, ``--config``, ``--set``) and the flag filter."""

from __future__ import annotations

from pathlib import Path

import click

OUT = click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
CONFIG = click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
                      help="YAML file with the command's config fields.")
SET = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field.")


def given_flags(**kwargs) -> dict:
    """CLI flags that were given: None or an empty tuple means 'not given', so the config file or default stands."""
    return {k: v for k, v in kwargs.items() if v is not None and v != ()}
