"""``genrep diting ...``: data (load-official, bench info), translate, score, serve."""

from __future__ import annotations

from pathlib import Path

import click

OUT = click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
CONFIG = click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
                      help="YAML file with the command's config fields.")
SET = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field.")


def _flags(**kwargs) -> dict:
    return {k: v for k, v in kwargs.items() if v is not None and v != ()}


@click.group()
def diting() -> None:
    """DITING: Chinese->English web-novel translation benchmark and evaluation."""


@diting.command("load-official")
@click.argument("path", type=click.Path(path_type=Path))
@OUT
def load_official_cmd(path: Path, out: Path) -> None:
    """Convert an official DITING release (Label Studio export) to items/translations/judgments JSONL."""
    from genrep.core.rundir import RunDir
    from genrep.diting.official import load_official
    from genrep.diting.schema import write_records

    data = load_official(path)
    run = RunDir(out)
    write_records(run / "items.jsonl", data.items)
    write_records(run / "translations.jsonl", data.translations)
    write_records(run / "judgments.jsonl", data.judgments)
    summary = {"source": str(path), **data.summary()}
    run.write_metrics(summary)
    click.echo(f"{summary['tasks']} tasks -> {summary['items']} items, {summary['translations']} translations "
               f"({summary['systems']} systems), {summary['judgments']} judgments in {out}")


@diting.group("bench")
def bench() -> None:
    """Benchmarks: the bundled starter benchmark or an items file."""


@bench.command("info")
@click.argument("name", default="starter")
def bench_info(name: str) -> None:
    """Items per dimension of a benchmark (validated)."""
    from rich.console import Console
    from rich.table import Table

    from genrep.diting.benchmark import benchmark_info, benchmark_path, load_benchmark

    items = load_benchmark(name)
    table = Table(title=f"{name} ({benchmark_path(name)})")
    rows = benchmark_info(items)
    for col in rows[0]:
        table.add_column(col, justify="left" if col == "dimension" else "right")
    for r in rows:
        table.add_row(*(str(v) for v in r.values()))
    Console().print(table)


@diting.command("translate")
@click.option("--bench", "bench_name", default=None, help="Bundled benchmark name or items file (default starter).")
@click.option("--system", "systems", multiple=True, help="NAME=BACKEND, e.g. smol=local:smollm2-135m (repeat).")
@click.option("--dimension", "dimensions", multiple=True, help="Only this dimension (repeat).")
@click.option("--limit", type=int, default=None, help="Items per dimension.")
@click.option("--concurrency", type=int, default=None)
@CONFIG
@SET
@OUT
def translate_cmd(bench_name, systems, dimensions, limit, concurrency, config_path, overrides, out) -> None:
    """Translate a benchmark with one or more systems (resumable; failures recorded per item)."""
    from genrep.core.config import load_config
    from genrep.diting.translate import TranslateConfig, translate

    flags = _flags(bench=bench_name, systems=list(systems) or None, dimensions=list(dimensions) or None, limit=limit,
                   concurrency=concurrency)
    cfg = load_config(TranslateConfig, config_path, overrides, flags)
    m = translate(cfg, out)
    for name, s in m["systems"].items():
        click.echo(f"{name}: {s.get('requests', 0)} requests ({s.get('cached', 0)} cached, {s.get('failed', 0)} failed), "
                   f"{s.get('skipped', 0)} already done")
    click.echo(f"{m['translations']} translations ({m['failed']} failed) in {out / 'translations.jsonl'}")


@diting.command("score")
@click.option("--translations", type=click.Path(path_type=Path), required=True, help="translations.jsonl / .csv")
@click.option("--bench", "bench_name", default="starter", show_default=True,
              help="Items the translations refer to (bundled name or items file).")
@click.option("--metric", "metrics", multiple=True,
              help="bleu, chrf, ter, comet; '--metric chrf bleu' or repeated (default: chrf bleu).")
@click.option("--comet-model", default="Unbabel/wmt22-comet-da", show_default=True)
@click.argument("more_metrics", nargs=-1)
@OUT
def score_cmd(translations: Path, bench_name: str, metrics, comet_model: str, more_metrics, out: Path) -> None:
    """Reference-based scores (sacrebleu BLEU/chrF/TER, COMET when available) per system and dimension."""
    import json

    from genrep.core.rundir import RunDir, atomic_write_text
    from genrep.diting.benchmark import load_benchmark
    from genrep.diting.refmetrics import score_translations
    from genrep.diting.schema import Translation, read_records
    from genrep.diting.translate import latest_translations

    names = list(metrics) + list(more_metrics) or ["chrf", "bleu"]
    if not translations.is_file():
        raise click.UsageError(f"{translations}: file not found")
    trans = latest_translations(translations) if translations.suffix == ".jsonl" else read_records(translations, Translation)
    results, segments = score_translations(trans, load_benchmark(bench_name), names, comet_model)
    run = RunDir(out)
    atomic_write_text(run / "segments.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in segments))
    run.write_metrics({"translations": str(translations), "bench": bench_name, "metrics": names, **results})
    for system, r in results["systems"].items():
        click.echo(f"{system}: " + ", ".join(f"{m} {r[m]:.2f}" if r.get(m) is not None else f"{m} n/a" for m in names))


@diting.command("serve")
@click.option("--backend", "backend_spec", default="local:smollm2-135m", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
def serve_cmd(backend_spec: str, host: str, port: int) -> None:
    """Expose a backend (e.g. a bundled local LM) as an OpenAI-compatible server on loopback."""
    from genrep.diting.llm import make_backend
    from genrep.diting.llm.server import serve

    click.echo(f"serving {backend_spec} at http://{host}:{port}/v1 (Ctrl-C to stop)")
    serve(make_backend(backend_spec, cache=False), host=host, port=port)
