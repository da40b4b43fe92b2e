"""``genrep diting ...``: data (load-official, bench info), translate, score, serve."""

from __future__ import annotations

from pathlib import Path

import click

from genrep.core.cli_options import CONFIG, OUT, SET
from genrep.core.cli_options import given_flags as _flags
from genrep.diting.limits import MAX_RESAMPLES


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


# an LLM judge's failed items (AgentEval failed_as_zero): meta-eval and leaderboard count them or drop them
FAILED = click.option(
    "--failed",
    "failed_policy",
    type=click.Choice(["include", "exclude"]),
    default="include",
    show_default=True,
    help="LLM-judge items recorded as failed (0/0/0, failed: true): count them as 0 (the reference) or drop them.",
)


@diting.command("meta-eval")
@click.option(
    "--official",
    type=click.Path(path_type=Path),
    default=None,
    help="Official release (Label Studio export): items, translations and human judgments.",
)
@click.option("--judgments", type=click.Path(path_type=Path), default=None, help="judgments.jsonl / .csv (human).")
@click.option("--translations", type=click.Path(path_type=Path), default=None, help="translations.jsonl / .csv")
@click.option("--items", "items_path", default=None, help="Items the translations refer to (bundled name or file).")
@click.option(
    "--metricalign",
    type=click.Path(path_type=Path),
    default=None,
    help="MetricAlign-style JSONL: item_id, system, dimension, human and one field per metric.",
)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="bleu, chrf, ter, comet (or the metric fields of --metricalign); '--metric chrf bleu' or "
    "repeated (default: chrf bleu; with --metricalign every metric in the file).",
)
@click.option(
    "--resamples",
    type=click.IntRange(0, MAX_RESAMPLES),
    default=1000,
    show_default=True,
    help=f"Bootstrap resamples of items (0: no intervals; at most {MAX_RESAMPLES}).",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--comet-model", default="Unbabel/wmt22-comet-da", show_default=True)
@click.option(
    "--judge-scores",
    type=click.Path(path_type=Path),
    multiple=True,
    help="An LLM judge's scores.jsonl (e.g. from genrep diting agenteval) to meta-evaluate as a metric named by "
    "its rater; repeatable.",
)
@FAILED
@click.argument("more_metrics", nargs=-1)
@OUT
def meta_eval_cmd(
    official,
    judgments,
    translations,
    items_path,
    metricalign,
    metrics,
    resamples,
    seed,
    comet_model,
    judge_scores,
    failed_policy,
    more_metrics,
    out: Path,
) -> None:
    """Meta-evaluate metrics against human judgments (correlations, pairwise accuracy, bootstrap CIs)."""
    from genrep.core.rundir import RunDir, atomic_write_bytes
    from genrep.diting import metaeval as me

    files = (judgments, translations, items_path)
    sources = sum(x is not None for x in (official, metricalign)) + (any(x is not None for x in files))
    if sources != 1:
        raise click.UsageError("give one of --official, --metricalign, or --judgments with --translations and --items")
    if any(x is not None for x in files) and not all(x is not None for x in files):
        raise click.UsageError("--judgments, --translations and --items go together")
    names = list(dict.fromkeys([*metrics, *more_metrics]))
    source: dict = {}
    signatures: dict = {}
    if metricalign is not None:
        data = me.read_metricalign(metricalign)
        ratings, dims = data.ratings, data.dimensions
        names = names or list(data.metrics)
        for m in names:
            if m not in data.metrics:
                raise click.UsageError(f"metric '{m}' not in {metricalign} (found: {', '.join(data.metrics)})")
        scores = {m: data.metrics[m] for m in names}
        item_order = [k[0] for k in ratings.totals]
        source = {"metricalign": str(metricalign)}
    else:
        from genrep.diting.refmetrics import score_translations

        names = names or ["chrf", "bleu"]
        items, trans, judged = _meta_eval_inputs(official, judgments, translations, items_path)
        ratings, dims = me.ratings_from_judgments(judged), {i.id: i.dimension for i in items}
        results, segments = score_translations(trans, items, names, comet_model)
        signatures = results["signatures"]
        scores = {m: me.metric_from_segments(segments, m) for m in names}
        item_order = [i.id for i in items]
        source = (
            {"official": str(official)}
            if official
            else {k: str(v) for k, v in zip(("judgments", "translations", "items"), files)}
        )
    for name, judged_scores in _judge_metric_scores(judge_scores, failed_policy).items():
        if name in scores:
            raise click.UsageError(f"judge scores named '{name}' twice (a metric or another --judge-scores file)")
        names.append(name)
        scores[name] = judged_scores
    unavailable = {m: signatures.get(m, "no scores") for m in names if not scores[m]}
    usable = {m: s for m, s in scores.items() if s}
    if not usable:
        reasons = "; ".join(f"{m}: {r}" for m, r in unavailable.items())
        raise click.UsageError(f"no metric scores to meta-evaluate ({reasons})")
    result = me.meta_evaluate(ratings, usable, dims, resamples, seed)
    run = RunDir(out)
    run.write_config(
        {
            **{k: None if v is None else str(v) for k, v in source.items()},
            "metrics": names,
            "resamples": resamples,
            "seed": seed,
            "comet_model": comet_model,
            "judge_scores": [str(p) for p in judge_scores],
            "failed": failed_policy,
        }
    )
    human = ratings.means()
    order = me.mtme_segment_order(item_order, {k[1] for s in (human, *usable.values()) for k in s})
    me.write_mtme_scores(run / "mtme", "human", human, me.system_scores(human), order)
    for m, s in usable.items():
        oriented = {k: -v for k, v in s.items()} if m in me.LOWER_IS_BETTER else s
        me.write_mtme_scores(run / "mtme", m, oriented, me.system_scores(oriented), order)
    me.write_mtme_docs(run / "mtme", item_order, dims)
    atomic_write_bytes(run.figures / "metric_vs_human.png", me.scatter_png(human, usable, dims, result["metrics"]))
    atomic_write_bytes(run / "report.md", me.report_markdown(result).encode("utf-8"))
    run.write_metrics(
        {
            "source": source,
            "metric_names": list(usable),
            "unavailable": unavailable,
            **result,
            "signatures": signatures,
            "files": {
                "mtme": "mtme/ (NAME.seg.score: a block per system, sorted by name, of system<TAB>"
                "score per item in segments.docs order; NAME.sys.score: mean segment score; "
                "TER negated)",
                "figure": "figures/metric_vs_human.png",
                "report": "report.md (a table per metric, system-level SPA included, and SPA's definition)",
            },
        }
    )
    h = result["human"]
    click.echo(f"{h['segments']} segments ({h['annotations']} annotations), {h['items']} items, {h['systems']} systems")
    for m, r in result["metrics"].items():
        click.echo(
            f"{m}: seg pearson {_fmt_stat(r['pearson'])}, kendall {_fmt_stat(r['kendall'])}, acc_eq "
            f"{_fmt_stat(r['pairwise_accuracy'])}; sys pearson {_fmt_stat(r['system_level']['pearson'])}, "
            f"SPA {me.format_stat(r['system_level']['soft_pairwise_accuracy'])}"
        )
    ir = result["inter_rater"]
    if "pearson" in ir:
        click.echo(
            f"inter-rater ({ir['segments']} segments): pearson {ir['pearson']['value']:.3f}, exact agreement "
            f"{ir['exact_agreement']['value']:.3f}"
        )
    click.echo(
        f"wrote {run / 'metrics.json'}, {run / 'report.md'}, {run / 'mtme'}, {run.figures / 'metric_vs_human.png'}"
    )


def _fmt_stat(stat: dict) -> str:
    value = "n/a" if stat["value"] is None else f"{stat['value']:.3f}"
    return value + (f" [{stat['ci95'][0]:.3f}, {stat['ci95'][1]:.3f}]" if stat.get("ci95") else "")


def _judge_metric_scores(paths, failed_policy: str) -> dict[str, dict[tuple[str, str], float]]:
    """``{rater: {(item_id, system): mean 0-6 total}}`` from LLM-judge Judgment files; failed records
    (0/0/0, ``failed: true``) kept as 0 or dropped by ``failed_policy``."""
    from genrep.diting import metaeval as me
    from genrep.diting.schema import Judgment, read_records

    by_rater: dict[str, list[Judgment]] = {}
    for path in paths:
        for j in read_records(path, Judgment, "judge scores file"):
            if not (j.failed and failed_policy == "exclude"):
                by_rater.setdefault(j.rater, []).append(j)
    return {rater: me.ratings_from_judgments(js).means() for rater, js in by_rater.items()}


def _meta_eval_inputs(official, judgments, translations, items_path):
    """(items, translations, judgments) from an official release or three record files."""
    from genrep.diting.benchmark import load_benchmark
    from genrep.diting.official import load_official
    from genrep.diting.schema import Judgment, read_records
    from genrep.diting.translate import read_translations

    if official is not None:
        data = load_official(official)
        return data.items, data.translations, data.judgments
    return (
        load_benchmark(items_path),
        read_translations(translations),
        read_records(judgments, Judgment, "judgments file"),
    )


@diting.command("leaderboard")
@click.option("--judgments", type=click.Path(path_type=Path), default=None, help="judgments.jsonl / .csv")
@click.option("--items", "items_path", default=None, help="Items (bundled name or file) for the dimensions.")
@click.option(
    "--official",
    type=click.Path(path_type=Path),
    default=None,
    help="Official release: rank its human judgments (items from the release).",
)
@click.option(
    "--resamples",
    type=click.IntRange(0, MAX_RESAMPLES),
    default=1000,
    show_default=True,
    help=f"Bootstrap resamples of items (0: no intervals; at most {MAX_RESAMPLES}).",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@FAILED
@OUT
def leaderboard_cmd(judgments, items_path, official, resamples: int, seed: int, failed_policy: str, out: Path) -> None:
    """Systems x dimensions table of mean 0-6 scores with bootstrap CIs (md, html, csv, png heatmap)."""
    from genrep.core.rundir import RunDir
    from genrep.diting.benchmark import load_benchmark
    from genrep.diting.leaderboard import OVERALL, build_leaderboard, write_leaderboard
    from genrep.diting.official import load_official
    from genrep.diting.schema import Judgment, read_records

    if (official is None) == (judgments is None):
        raise click.UsageError("give --judgments (with --items for the dimensions) or --official")
    items: list | None  # of Item
    if official is not None:
        data = load_official(official)
        judged, items, source = data.judgments, data.items, {"official": str(official)}
    else:
        judged = read_records(judgments, Judgment, "judgments file")
        items = load_benchmark(items_path) if items_path else None
        source = {"judgments": str(judgments), "items": items_path}
    dropped = sum(j.failed for j in judged) if failed_policy == "exclude" else 0
    if dropped:
        judged = [j for j in judged if not j.failed]
    board = build_leaderboard(judged, items, resamples, seed)
    run = RunDir(out)
    run.write_config(
        {
            **{k: None if v is None else str(v) for k, v in source.items()},
            "resamples": resamples,
            "seed": seed,
            "failed": failed_policy,
        }
    )
    paths = write_leaderboard(board, run.path)
    run.write_metrics(
        {
            "source": source,
            "judgments": board.judgments,
            "failed": {"policy": failed_policy, "dropped": dropped},
            "items": board.items,
            "systems": len(board.systems),
            "dimensions": board.dimensions,
            "bootstrap": {"resamples": resamples, "seed": seed, "unit": "item", "interval": "95% percentile"},
            "leaderboard": board.rows(),
        }
    )
    for s in board.systems[:5]:
        click.echo(f"{board.rank[s]:>3}. {s}: {board.cells[(s, OVERALL)].text()}")
    click.echo(f"{len(board.systems)} systems; wrote " + ", ".join(str(p) for p in paths.values()))


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
