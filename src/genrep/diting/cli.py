"""``genrep diting ...``: data (load-official, bench info), translate, score, serve, agenteval; meta-eval and
leaderboard come from :mod:`genrep.diting.cli_judgments`."""

from __future__ import annotations

from pathlib import Path

import click

from genrep.core.cli_options import CONFIG, OUT, SET
from genrep.core.cli_options import given_flags as _flags
from genrep.diting.cli_judgments import leaderboard_cmd, meta_eval_cmd


@click.group()
def diting() -> None:
    """DITING: Chinese->English web-novel translation benchmark and evaluation."""


diting.add_command(meta_eval_cmd)
diting.add_command(leaderboard_cmd)


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
    run.write_config({"path": str(path)})
    write_records(run / "items.jsonl", data.items)
    write_records(run / "translations.jsonl", data.translations)
    write_records(run / "judgments.jsonl", data.judgments)
    summary = {"source": str(path), **data.summary()}
    run.write_metrics(summary)
    click.echo(
        f"{summary['tasks']} tasks -> {summary['items']} items, {summary['translations']} translations "
        f"({summary['systems']} systems), {summary['judgments']} judgments in {out}"
    )


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

    flags = _flags(
        bench=bench_name,
        systems=list(systems) or None,
        dimensions=list(dimensions) or None,
        limit=limit,
        concurrency=concurrency,
    )
    cfg = load_config(TranslateConfig, config_path, overrides, flags)
    m = translate(cfg, out)
    for name, s in m["systems"].items():
        click.echo(
            f"{name}: {s.get('requests', 0)} requests ({s.get('cached', 0)} cached, {s.get('failed', 0)} failed), "
            f"{s.get('skipped', 0)} already done"
        )
    click.echo(f"{m['translations']} translations ({m['failed']} failed) in {out / 'translations.jsonl'}")


@diting.command("score")
@click.option("--translations", type=click.Path(path_type=Path), required=True, help="translations.jsonl / .csv")
@click.option(
    "--bench",
    "bench_name",
    default="starter",
    show_default=True,
    help="Items the translations refer to (bundled name or items file).",
)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="bleu, chrf, ter, comet; '--metric chrf bleu' or repeated (default: chrf bleu).",
)
@click.option("--comet-model", default="Unbabel/wmt22-comet-da", show_default=True)
@click.argument("more_metrics", nargs=-1)
@OUT
def score_cmd(translations: Path, bench_name: str, metrics, comet_model: str, more_metrics, out: Path) -> None:
    """Reference-based scores (sacrebleu BLEU/chrF/TER, COMET when available) per system and dimension."""
    import json

    from genrep.core.rundir import RunDir, atomic_write_text
    from genrep.diting.benchmark import load_benchmark
    from genrep.diting.refmetrics import score_translations
    from genrep.diting.translate import read_translations

    names = list(metrics) + list(more_metrics) or ["chrf", "bleu"]
    trans = read_translations(translations)
    results, segments = score_translations(trans, load_benchmark(bench_name), names, comet_model)
    run = RunDir(out)
    run.write_config(
        {"translations": str(translations), "bench": bench_name, "metrics": names, "comet_model": comet_model}
    )
    atomic_write_text(run / "segments.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in segments))
    run.write_metrics({"translations": str(translations), "bench": bench_name, "metrics": names, **results})
    for system, r in results["systems"].items():
        click.echo(f"{system}: " + ", ".join(f"{m} {r[m]:.2f}" if r.get(m) is not None else f"{m} n/a" for m in names))


@diting.command("serve")
@click.option("--backend", "backend_spec", default="local:smollm2-135m", show_default=True)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; other than loopback only with --allow-remote.",
)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--allow-remote", is_flag=True, help="Listen on a non-loopback host too (the server has no authentication)."
)
def serve_cmd(backend_spec: str, host: str, port: int, allow_remote: bool) -> None:
    """Expose a backend (e.g. a bundled local LM) as an OpenAI-compatible server on loopback."""
    from genrep.diting.llm import make_backend
    from genrep.diting.llm.server import listen_address, serve

    listen_address(host, port, allow_remote=allow_remote)  # a bad --host fails before the backend is made
    if allow_remote:
        click.echo(
            f"warning: serving on {host} without authentication: anyone who can reach it can use the backend", err=True
        )
    serve(make_backend(backend_spec, cache=False), host=host, port=port, allow_remote=allow_remote)


@diting.command("agenteval")
@click.option("--translations", default=None, help="translations.jsonl / .csv to evaluate.")
@click.option(
    "--bench",
    "bench_name",
    default=None,
    help="Items the translations refer to (bundled name or items file; default starter).",
)
@click.option(
    "--backend",
    "backend_spec",
    default=None,
    help="Every role's backend, KIND:MODEL[@BASE_URL] (default local:smollm2-135m).",
)
@click.option("--expert1", default=None, help="Expert 1's backend (default --backend).")
@click.option("--expert2", default=None, help="Expert 2's backend (default --backend).")
@click.option("--judge", default=None, help="The judge's backend, also the single-agent judge (default --backend).")
@click.option(
    "--mode",
    type=click.Choice(["multi", "single"]),
    default=None,
    help="multi: two experts and a judge (default); single: one judge, one call.",
)
@click.option(
    "--protocol",
    type=click.Choice(["reference", "genrep"]),
    default=None,
    help="reference: the official code's protocol (default); genrep: genrep's earlier variant, not the paper's.",
)
@click.option(
    "--lang", type=click.Choice(["zh", "en"]), default=None, help="Prompt language (default zh, as the paper)."
)
@click.option("--enforce-rules", is_flag=True, default=None, help="Apply the mechanical global rules in code (logged).")
@click.option("--max-rounds", type=int, default=None, help="Debate rounds at most (default 4).")
@click.option("--limit", type=int, default=None, help="Evaluate the first N translations.")
@click.option("--concurrency", type=int, default=None, help="Items in flight (default 8).")
@CONFIG
@SET
@OUT
def agenteval_cmd(
    translations,
    bench_name,
    backend_spec,
    expert1,
    expert2,
    judge,
    mode,
    protocol,
    lang,
    enforce_rules,
    max_rounds,
    limit,
    concurrency,
    config_path,
    overrides,
    out: Path,
) -> None:
    """Score translations with AgentEval (two LLM experts + a judge) or a single LLM judge (resumable)."""
    from genrep.core.config import load_config
    from genrep.diting.agenteval import AgentEvalConfig, run_agenteval

    flags = _flags(
        translations=translations,
        bench=bench_name,
        backend=backend_spec,
        expert1=expert1,
        expert2=expert2,
        judge=judge,
        mode=mode,
        protocol=protocol,
        lang=lang,
        enforce_rules=enforce_rules,
        max_rounds=max_rounds,
        limit=limit,
        concurrency=concurrency,
    )
    cfg = load_config(AgentEvalConfig, config_path, overrides, flags)
    m = run_agenteval(cfg, out)
    overall = m["scores"]["overall"]
    click.echo(
        f"{m['items']} translations ({m['protocol']} protocol): {m['scored']} scored, {m['failed']} failed"
        + (f" (recorded as 0/0/0: {m['failed_recorded_as_zero']})" if m["failed_recorded_as_zero"] else "")
        + " "
        f"({m['this_run']['already_done']} already done); mean score "
        + ("n/a" if overall["mean"] is None else f"{overall['mean']:.2f}/6")
        + (f", mean rounds {m['rounds']['mean']}" if m["rounds"]["mean"] is not None else "")
        + (f", {m['per_item']['calls']} calls per item" if m["per_item"]["calls"] is not None else "")
    )
    for reason, n in list(m["failure_reasons"].items())[:3]:
        click.echo(f"  failed x{n}: {reason}")
    click.echo(f"wrote {out / 'scores.jsonl'}, {out / 'transcripts.jsonl'}, {out / 'metrics.json'}")
