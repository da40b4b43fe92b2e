"""The DITING sections of ``genrep demo``: the two bundled LMs translate a slice of the starter
benchmark offline (chrF and BLEU per dimension, a plot, example outputs); then the meta-evaluation
of chrF and BLEU against the human judgments of the official sample, and its leaderboard."""

from __future__ import annotations

from genrep.core.report import Report
from genrep.core.rundir import RunDir

# (items per dimension, max new tokens) per demo profile
PROFILES = {"smoke": (1, 12), "fast": (1, 32), "full": (25, 96)}
# AgentEval with the bundled SmolLM2: (translations evaluated, max debate rounds) per profile
AGENTEVAL = {"smoke": (1, 1), "fast": (1, 1), "full": (6, 4)}
SYSTEMS = ["smollm2=local:smollm2-135m", "gemma3=local:gemma3-270m"]


def add_demo_section(report: Report, cfg, run: RunDir) -> dict:
    import numpy as np

    from genrep.core.images import figure_png
    from genrep.diting.benchmark import load_benchmark
    from genrep.diting.refmetrics import score_translations
    from genrep.diting.schema import DIMENSIONS
    from genrep.diting.translate import TranslateConfig, read_translation_log, translate

    per_dim, max_tokens = PROFILES[cfg.profile]
    base = run.path / "diting"
    tm = translate(
        TranslateConfig(
            bench="starter",
            systems=SYSTEMS,
            limit=per_dim,
            max_tokens=max_tokens,
            concurrency=1,  # two in-process LMs at once oversubscribe 2 cores: 71 s against 54 s measured
        ),
        base / "translate",
    )
    items = load_benchmark("starter", limit_per_dimension=per_dim)
    trans = read_translation_log(base / "translate" / "translations.jsonl")
    res, _ = score_translations(trans, items, ["chrf", "bleu"])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(res["systems"])
    fig, ax = plt.subplots(figsize=(8, 3.2))
    width = 0.8 / len(systems)
    for k, name in enumerate(systems):
        vals = [res["systems"][name]["per_dimension"].get(d, {}).get("chrf", 0.0) for d in DIMENSIONS]
        ax.bar(np.arange(len(DIMENSIONS)) + k * width, vals, width, label=name)
    ax.set_xticks(np.arange(len(DIMENSIONS)) + width * (len(systems) - 1) / 2, DIMENSIONS, fontsize=8)
    ax.set_ylabel("chrF")
    ax.legend(fontsize=8)
    fig.tight_layout()

    sec = report.section("DITING: web-novel translation with the bundled LMs")
    sec.text(
        f"The two bundled LMs translated {per_dim} item(s) per dimension of the starter benchmark "
        f"({len(items)} items, original web-novel-style passages shipped with genrep) offline through the "
        "in-process backend, greedy, through the LLM cache; SmolLM2-135M-Instruct with the chat prompt (DITING "
        "instruction + context + text), Gemma-3-270M (a base model) with a few-shot continuation prompt. "
        "Both models are tiny: expect low scores; the point is the pipeline, which runs unchanged against "
        "any OpenAI-compatible server (`--system NAME=vllm:MODEL@URL`)."
    )
    sec.table(
        [
            {
                "system": name,
                "items": r["items"],
                "failed": r["failed"],
                "chrF": round(r["chrf"], 2),
                "BLEU": round(r["bleu"], 2),
            }
            for name, r in res["systems"].items()
        ]
    )
    sec.image(figure_png(fig), "chrF per dimension on the starter slice", "diting_chrf.png")
    by_key = {(t.system, t.item_id): t for t in trans}
    examples = []
    for item in items[:: max(1, len(items) // 3)][:3]:
        examples.append(
            {
                "item": item.id,
                "source": item.source_zh,
                "reference": item.reference_en,
                **{name: by_key[(name, item.id)].output if (name, item.id) in by_key else "" for name in systems},
            }
        )
    sec.table(examples)
    sec.text(f"sacrebleu signatures: chrF `{res['signatures']['chrf']}`, BLEU `{res['signatures']['bleu']}`.")
    out = {
        "items": len(items),
        "requests": {n: s.get("requests", 0) for n, s in tm["systems"].items()},
        "chrf": {n: r["chrf"] for n, r in res["systems"].items()},
        "bleu": {n: r["bleu"] for n, r in res["systems"].items()},
    }
    out["agenteval"] = _agenteval_section(report, base, cfg.profile)
    out.update(_official_section(report, base, cfg.seed))
    return {"diting": out}


def _agenteval_section(report: Report, base, profile: str) -> dict:
    """AgentEval (expert 1 -> expert 2 -> judge) with the bundled SmolLM2 on the first translations, one transcript."""
    import json

    from genrep.diting.agenteval import AgentEvalConfig, Transcript, run_agenteval

    limit, rounds = AGENTEVAL[profile]
    cfg = AgentEvalConfig(
        translations=str(base / "translate" / "translations.jsonl"),
        bench="starter",
        backend="local:smollm2-135m",
        limit=limit,
        max_rounds=rounds,
        max_tokens=256,  # with each free-text string capped (below), an answer ends within 256 tokens
        local_string_tokens=48,  # a reason is cut after 48 tokens (the decoder's default is 160): ~3x faster on CPU
        concurrency=1,
    )
    m = run_agenteval(cfg, base / "agenteval")
    lines = (base / "agenteval" / "transcripts.jsonl").read_text(encoding="utf-8").splitlines()
    transcripts = [Transcript.model_validate_json(x) for x in lines if x.strip()]
    sec = report.section("DITING: AgentEval with the bundled SmolLM2")
    sec.text(
        f"Two expert agents and a judge (all SmolLM2-135M-Instruct, in process) deliberated over the rubric of each "
        f"item's dimension for the first {limit} translation(s), at most {rounds} round(s), under the reference "
        "protocol of the official DITING code: Chinese prompts with the nine global rules and a worked example per "
        "score level, Expert 2 and the judge shown Expert 1's reply, Expert 1 shown Expert 2's, the judge keeping "
        "only its own reasons and asked once more after a 'no' in the last round; its scores are recorded as given. "
        "The local backend decodes under the answer's JSON schema (structure forced, choices among the allowed "
        "values), so every answer is valid JSON; a reason is cut after 48 tokens to keep the demo short; what the model *says* is not a judgement worth using: a 135M model "
        "does not read Chinese web fiction. The point is the mechanics (rounds, agreement, the re-ask, calls and "
        "tokens per item), which run unchanged against a real server (`--backend vllm:MODEL@URL` or "
        "`llamacpp:MODEL@URL`, docs/diting.md)."
    )
    sec.table(
        [
            {
                "item": t.item_id,
                "system": t.system,
                "dimension": t.dimension,
                "failed": t.failed,
                "rounds": t.rounds,
                "agreed": t.agreed,
                "calls": t.calls,
                "tokens": t.prompt_tokens + t.completion_tokens,
                "scores": " ".join(f"{k}={v}" for k, v in (t.scores or {}).items()),
            }
            for t in transcripts
        ]
    )
    if transcripts:
        t = transcripts[0]
        shown = []
        for turn in t.turns:
            answer = json.dumps(turn.answer, ensure_ascii=False) if turn.answer is not None else f"error: {turn.error}"
            shown.append(f"round {turn.round} {turn.role}{' (re-asked)' if turn.reask else ''}: {answer}")
        sec.text(f"Transcript of `{t.item_id}` ({t.system}, {t.dimension}):")
        sec.code("\n".join(shown))
    return {
        "items": len(transcripts),
        "failed": sum(t.failed for t in transcripts),
        "rounds": [t.rounds for t in transcripts],
        "calls": [t.calls for t in transcripts],
        "summary": {k: m[k] for k in ("items", "failed") if k in m},
    }


def _official_section(report: Report, base, seed: int) -> dict:
    """Meta-evaluation of chrF / BLEU on the official sample's 230 human annotations, and the leaderboard."""
    from genrep.diting import metaeval as me
    from genrep.diting.leaderboard import build_leaderboard, write_leaderboard
    from genrep.diting.official import OFFICIAL_SAMPLE, load_official
    from genrep.diting.refmetrics import score_translations

    data = load_official(OFFICIAL_SAMPLE)
    _, segments = score_translations(data.translations, data.items, ["chrf", "bleu"])
    ratings = me.ratings_from_judgments(data.judgments)
    dims = {i.id: i.dimension for i in data.items}
    result = me.meta_evaluate(
        ratings, {m: me.metric_from_segments(segments, m) for m in ("chrf", "bleu")}, dims, resamples=200, seed=seed
    )

    def fmt(stat: dict) -> str:
        ci = stat.get("ci95")
        return f"{stat['value']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    sec = report.section("DITING: meta-evaluation and leaderboard on the official sample")
    h = result["human"]
    sec.text(
        f"The official DITING sample (shipped): {h['segments']} segments ({h['items']} redacted sources x "
        f"{h['systems']} systems) with {h['annotations']} human annotations (0-6 rubric totals). How well do "
        "reference metrics agree with the raters? Segment level, ungrouped, with 95% bootstrap intervals over "
        "items (200 resamples; `genrep diting meta-eval` runs 1,000):"
    )
    sec.table(
        [
            {
                "metric": m,
                "Pearson": fmt(r["pearson"]),
                "Kendall tau-b": fmt(r["kendall"]),
                "pairwise acc (ties)": fmt(r["pairwise_accuracy"]),
                "system-level Pearson": fmt(r["system_level"]["pearson"]),
            }
            for m, r in result["metrics"].items()
        ]
    )
    ir = result["inter_rater"]
    if "pearson" in ir:
        sec.text(
            f"The two raters agree far better with each other (Pearson {fmt(ir['pearson'])}, exact agreement "
            f"{fmt(ir['exact_agreement'])} over {ir['segments']} doubly-annotated segments) than the metrics "
            "with them: the gap an LLM-judge (AgentEval) is meant to close."
        )
    board = build_leaderboard(data.judgments, data.items, resamples=200, seed=seed)
    paths = write_leaderboard(board, base / "leaderboard")
    sec.image(paths["png"], "leaderboard of the official sample's human judgments (mean 0-6)", "diting_leaderboard.png")
    return {
        "meta_eval": {
            m: {
                "pearson": r["pearson"]["value"],
                "kendall": r["kendall"]["value"],
                "pairwise_accuracy": r["pairwise_accuracy"]["value"],
            }
            for m, r in result["metrics"].items()
        },
        "human_annotations": h["annotations"],
    }
