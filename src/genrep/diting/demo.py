"""The DITING section of ``genrep demo``: the two bundled LMs translate a slice of the starter
benchmark offline; chrF and BLEU per dimension, a plot and example outputs."""

from __future__ import annotations

from genrep.core.report import Report
from genrep.core.rundir import RunDir

# (items per dimension, max new tokens) per demo profile
PROFILES = {"smoke": (1, 12), "fast": (3, 64), "full": (25, 96)}
SYSTEMS = ["smollm2=local:smollm2-135m", "gemma3=local:gemma3-270m"]


def add_demo_section(report: Report, cfg, run: RunDir) -> dict:
    import numpy as np

    from genrep.core.images import figure_png
    from genrep.diting.benchmark import load_benchmark
    from genrep.diting.refmetrics import score_translations
    from genrep.diting.schema import DIMENSIONS
    from genrep.diting.translate import TranslateConfig, latest_translations, translate

    per_dim, max_tokens = PROFILES[cfg.profile]
    base = run.path / "diting"
    tm = translate(TranslateConfig(bench="starter", systems=SYSTEMS, limit=per_dim, max_tokens=max_tokens,
                                   concurrency=4), base / "translate")
    items = load_benchmark("starter", limit_per_dimension=per_dim)
    trans = latest_translations(base / "translate" / "translations.jsonl")
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
    sec.text(f"The two bundled LMs translated {per_dim} item(s) per dimension of the starter benchmark "
             f"({len(items)} items, original web-novel-style passages shipped with genrep) offline through the "
             "in-process backend, greedy, through the LLM cache; SmolLM2-135M-Instruct with the chat prompt (DITING "
             "instruction + context + text), Gemma-3-270M (a base model) with a few-shot continuation prompt. "
             "Both models are tiny: expect low scores; the point is the pipeline, which runs unchanged against "
             "any OpenAI-compatible server (`--system NAME=vllm:MODEL@URL`).")
    sec.table([{"system": name, "items": r["items"], "failed": r["failed"], "chrF": round(r["chrf"], 2),
                "BLEU": round(r["bleu"], 2)} for name, r in res["systems"].items()])
    sec.image(figure_png(fig), "chrF per dimension on the starter slice", "diting_chrf.png")
    by_key = {(t.system, t.item_id): t for t in trans}
    examples = []
    for item in items[:: max(1, len(items) // 3)][:3]:
        examples.append({"item": item.id, "source": item.source_zh, "reference": item.reference_en,
                         **{name: by_key[(name, item.id)].output if (name, item.id) in by_key else "" for name in systems}})
    sec.table(examples)
    sec.text(f"sacrebleu signatures: chrF `{res['signatures']['chrf']}`, BLEU `{res['signatures']['bleu']}`.")
    return {"diting": {"items": len(items), "requests": {n: s.get("requests", 0) for n, s in tm["systems"].items()},
                       "chrf": {n: r["chrf"] for n, r in res["systems"].items()},
                       "bleu": {n: r["bleu"] for n, r in res["systems"].items()}}}
