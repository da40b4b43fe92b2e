"""The ``genrep`` command: groups ``rae``, ``lco``, ``diting``, plus ``demo`` and ``assets``.

User errors (bad config key or type, missing file, unknown asset, bad flag) and ordinary
file-system problems (full disk, read-only directory, a file that is not UTF-8) are reported as one
line on stderr with exit code 2; ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import click

from genrep import __version__
from genrep.core.cli_options import out_option
from genrep.core.errors import UserError
from genrep.diting.cli import diting as diting_group
from genrep.lco.cli import lco as lco_group
from genrep.rae.cli import rae as rae_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="genrep")
@click.option("--debug", is_flag=True, help="Show tracebacks for user errors too.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """genrep: RAE + DiT^DH, LCO-EMB and DITING as usable software."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


@cli.group(invoke_without_command=True)
@click.pass_context
def assets(ctx: click.Context) -> None:
    """List the bundled offline assets and whether each is installed."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console
    from rich.table import Table

    from genrep.core import assets as registry
    from genrep.core.cache import cache_dir

    table = Table(title="genrep bundled assets")
    for col in ("name", "kind", "status", "size", "license"):
        table.add_column(col, overflow="fold")
    for row in registry.status():
        style = "green" if row["status"] == "available" else "red"
        table.add_row(row["name"], row["kind"], f"[{style}]{row['status']}[/]", row["size"], row["license"])
    console = Console()
    console.print(table)
    console.print(f"cache: {cache_dir()}  (set GENREP_CACHE to move it)")


@assets.command("prepare")
@click.argument("names", nargs=-1)
@click.option("-q", "--quiet", is_flag=True, help="Print only the assets that were materialised or are missing.")
def assets_prepare(names: tuple[str, ...], quiet: bool) -> None:
    """Materialise the assets that need it (or NAMES) into the cache; quick when all are ready.

    The bundled LMs are de-quantised once (about 35 s and 90 s); later runs only check the cache.
    One line per asset: ready, materialised in N s, or missing with its install command. A
    missing asset is optional (exit 0); a failed materialisation is an error (exit 2).
    """
    from genrep.core import assets as registry

    pending = False

    def start(name: str) -> None:
        nonlocal pending
        click.echo(f"{name}: ", nl=False)
        sys.stdout.flush()
        pending = True

    def done(row: dict) -> None:
        nonlocal pending
        if pending:
            click.echo(registry.prepare_line(row).removeprefix(f"{row['name']}: "))
            pending = False
        elif not quiet or row["status"] != "ready":
            click.echo(registry.prepare_line(row))

    try:
        rows = registry.prepare(list(names) or None, on_start=start, on_done=done)
    except Exception:
        if pending:
            click.echo("failed")
        raise
    missing = [r["name"] for r in rows if r["status"] == "missing"]
    if missing:
        click.echo(f"note: not installed (optional, see the install command above): {', '.join(missing)}")
    if not quiet:
        from genrep.core.cache import cache_dir

        click.echo(f"cache: {cache_dir()}  (set GENREP_CACHE to move it)")


@assets.command("check")
@click.argument("names", nargs=-1)
def assets_check(names: tuple[str, ...]) -> None:
    """Load every asset (or NAMES) and run a tiny forward pass; exit 1 if any fails."""
    from rich.console import Console
    from rich.table import Table

    from genrep.core import assets as registry

    for name in names:
        registry.get(name)  # unknown names fail early with one line
    console = Console()
    with console.status("loading assets (the first run materialises the LMs, about a minute)"):
        rows = registry.check(list(names) or None)
    table = Table(title="genrep assets check")
    for col in ("name", "ok", "seconds", "summary"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"], "[green]OK[/]" if r["ok"] else "[red]FAIL[/]", f"{r['seconds']:.1f}", r["summary"])
    console.print(table)
    if not all(r["ok"] for r in rows):
        raise SystemExit(1)


@cli.command()
@out_option(Path("runs/demo"), "Output directory for report.html, report.md, config.yaml and metrics.json.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="YAML file with DemoConfig fields (see configs/demo.yaml).",
)
@click.option(
    "--profile",
    type=click.Choice(["fast", "full", "smoke"]),
    default=None,
    help="fast (default, a few minutes), full (longer runs), smoke (seconds; for tests).",
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field.")
def demo(out: Path, config_path: Path | None, profile: str | None, overrides: tuple[str, ...]) -> None:
    """Run every system on bundled defaults and write a report."""
    from genrep.core.config import load_config
    from genrep.demo import DemoConfig, run_demo

    flags = {"profile": profile} if profile else None
    cfg = load_config(DemoConfig, config_path, overrides, flags=flags)
    md, html = run_demo(cfg, out)
    click.echo(f"wrote {html} and {md}")


cli.add_command(rae_group)
cli.add_command(diting_group)
cli.add_command(lco_group)


def _fail(message: str, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    click.echo(f"genrep: error: {message}", err=True)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    from genrep.core.files import check_utf8_argument, describe_os_error

    args = argv if argv is not None else sys.argv[1:]
    debug = "--debug" in args
    try:
        for arg in args:
            check_utf8_argument(arg)
        cli.main(args=argv, prog_name="genrep", standalone_mode=False)
    except UserError as err:
        _fail(str(err), debug)
    except OSError as err:  # ordinary file-system trouble (full disk, read-only, permissions): one line
        message = describe_os_error(err)
        if message is None:
            raise
        _fail(message, debug)
    except UnicodeDecodeError as err:  # a reader that did not go through core.files.read_text
        _fail(f"an input file is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8", debug)
    except click.UsageError as err:
        hint = f" (see '{err.ctx.command_path} --help')" if err.ctx is not None else ""
        click.echo(f"genrep: error: {err.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as err:
        click.echo(f"genrep: error: {err.format_message()}", err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
