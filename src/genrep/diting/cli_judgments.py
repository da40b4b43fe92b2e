"""``genrep diting meta-eval`` and ``genrep diting leaderboard``: the commands over judgments.

meta-eval compares metric scores (reference metrics, a MetricAlign-style file's fields, LLM judges'
scores) with human judgments; leaderboard ranks systems by their judgments. Both are registered on
the ``genrep diting`` group in :mod:`genrep.diting.cli`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import click

from genrep.core.cli_options import OUT
from genrep.diting.limits import MAX_RESAMPLES

# an LLM judge's failed items (AgentEval failed_as_zero): meta-eval and leaderboard count them or drop them
FAILED = click.option(
    "--failed",
    "failed_policy",
    type=click.Choice(["include", "exclude"]),
    default="include",
    show_default=True,
    help="LLM-judge items recorded as failed (0/0/0, failed: true): count them as 0 (the reference) or drop them.",
)


@click.command("meta-eval")
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
    from genrep.core.rundir import RunDir
    from genrep.diting import metaeval as me

    files = (judgments, translations, items_path)
    sources = sum(x is not None for x in (official, metricalign)) + (any(x is not None for x in files))
    if sources != 1:
        raise click.UsageError("give one of --official, --metricalign, or --judgments with --translations and --items")
    if any(x is not None for x in files) and not all(x is not None for x in files):
        raise click.UsageError("--judgments, --translations and --items go together")
    names = list(dict.fromkeys([*metrics, *more_metrics]))
    if metricalign is not None:
        inputs = _metricalign_inputs(metricalign, names)
    else:
        inputs = _scored_inputs(official, files, names, comet_model)
    names, scores, signatures = inputs.names, inputs.scores, inputs.signatures
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
    result = me.meta_evaluate(inputs.ratings, usable, inputs.dims, resamples, seed)
    run = RunDir(out)
    run.write_config(
        {
            **{k: None if v is None else str(v) for k, v in inputs.source.items()},
            "metrics": names,
            "resamples": resamples,
            "seed": seed,
            "comet_model": comet_model,
            "judge_scores": [str(p) for p in judge_scores],
            "failed": failed_policy,
        }
    )
    _write_meta_eval(run, inputs, usable, result)
    run.write_metrics(
        {
            "source": inputs.source,
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
    _echo_meta_eval(result, run)


class _MetaEvalInputs(NamedTuple):
    """What meta-eval compares: human ratings, metric scores per (item, system), and where they came from."""

    ratings: Any  # metaeval.Ratings
    dims: dict[str, str]  # item id -> dimension
    names: list[str]  # the metrics, in order
    scores: dict[str, dict[tuple[str, str], float]]
    item_order: list[str]
    source: dict
    signatures: dict


def _metricalign_inputs(metricalign: Path, names: list[str]) -> _MetaEvalInputs:
    """Ratings and metric scores read from a MetricAlign-style file (``names``: all its metrics if empty)."""
    from genrep.diting import metaeval as me

    data = me.read_metricalign(metricalign)
    names = names or list(data.metrics)
    for m in names:
        if m not in data.metrics:
            raise click.UsageError(f"metric '{m}' not in {metricalign} (found: {', '.join(data.metrics)})")
    return _MetaEvalInputs(
        ratings=data.ratings,
        dims=data.dimensions,
        names=names,
        scores={m: data.metrics[m] for m in names},
        item_order=[k[0] for k in data.ratings.totals],
        source={"metricalign": str(metricalign)},
        signatures={},
    )


def _scored_inputs(official, files: tuple, names: list[str], comet_model: str) -> _MetaEvalInputs:
    """Ratings from human judgments and the translations scored here with reference metrics ``names``
    (default chrF and BLEU), from an official release or the three record ``files``."""
    from genrep.diting import metaeval as me
    from genrep.diting.refmetrics import score_translations

    names = names or ["chrf", "bleu"]
    items, trans, judged = _meta_eval_inputs(official, *files)
    results, segments = score_translations(trans, items, names, comet_model)
    return _MetaEvalInputs(
        ratings=me.ratings_from_judgments(judged),
        dims={i.id: i.dimension for i in items},
        names=names,
        scores={m: me.metric_from_segments(segments, m) for m in names},
        item_order=[i.id for i in items],
        source=(
            {"official": str(official)}
            if official
            else {k: str(v) for k, v in zip(("judgments", "translations", "items"), files)}
        ),
        signatures=results["signatures"],
    )


def _write_meta_eval(run: Any, inputs: _MetaEvalInputs, usable: dict, result: dict) -> None:
    """mt-metrics-eval score files (human and each metric, TER negated), the scatter figure, report.md."""
    from genrep.core.rundir import atomic_write_bytes
    from genrep.diting import metaeval as me

    human = inputs.ratings.means()
    order = me.mtme_segment_order(inputs.item_order, {k[1] for s in (human, *usable.values()) for k in s})
    me.write_mtme_scores(run / "mtme", "human", human, me.system_scores(human), order)
    for m, s in usable.items():
        oriented = {k: -v for k, v in s.items()} if m in me.LOWER_IS_BETTER else s
        me.write_mtme_scores(run / "mtme", m, oriented, me.system_scores(oriented), order)
    me.write_mtme_docs(run / "mtme", inputs.item_order, inputs.dims)
    atomic_write_bytes(
        run.figures / "metric_vs_human.png", me.scatter_png(human, usable, inputs.dims, result["metrics"])
    )
    atomic_write_bytes(run / "report.md", me.report_markdown(result).encode("utf-8"))


def _echo_meta_eval(result: dict, run: Any) -> None:
    from genrep.diting import metaeval as me

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


@click.command("leaderboard")
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
