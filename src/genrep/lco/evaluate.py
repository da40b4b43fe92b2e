"""``genrep lco eval``: the evaluation tasks of LCO-EMB on an embedding model.

Tasks (``--task``, repeatable):

- ``hsk-retrieval``: the bundled HSK test split (no sentence shared with the training split):
  Chinese queries retrieve their English translation among all test sentences, and back
  (``en2zh/...``). Recall@1/5/10, MRR, nDCG@10, the anisotropy of the embeddings (docs/papers.md s2.9:
  mean off-diagonal cosine similarity) and the zh/en kernel alignment (mutual k-NN, k = 10).
- ``retrieval:DIR``: a BEIR / SeaDoc-style folder: ``queries.jsonl`` and ``corpus.jsonl`` (rows
  ``{"_id" | "id", "text"?, "image"?}``; a SeaDoc corpus holds page images), ``qrels.tsv``
  (``query-id  corpus-id  score``). Scored by nDCG@10 (SeaDoc's main score) and Recall@k.
- ``sts:FILE``: JSONL ``{"sentence1", "sentence2", "score"}``; Spearman of cosine vs gold.
- ``classification:FILE``: zero-shot classification: JSONL ``{"text" | "image", "label"}``; each class
  is embedded through ``--class-prompt`` (default ``"{label}"`` for texts, ``"a photo of a {label}"``
  for images); accuracy of the nearest class prompt.

Every task writes its numbers into ``metrics.json`` (the first task's headline numbers also at the
top level: ``recall@1``, ``ndcg@10``, ``anisotropy``) and a figure where one helps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from genrep.core.config import Count, NonNegInt
from genrep.core.errors import UserError
from genrep.core.rundir import RunDir, atomic_write_bytes
from genrep.lco.data import hsk_pairs_split, json_lines, load_media
from genrep.lco.embedding import EmbeddingModel
from genrep.lco.geometry import anisotropy, linear_cka, mutual_knn_alignment, plot_anisotropy
from genrep.lco.metrics import qrels_to_indices, read_qrels_tsv, retrieval_metrics, sts_spearman, zero_shot_accuracy


@dataclass
class EvalConfig:
    model: str = "base:smollm2-135m"  # base:NAME or a trained model directory
    tasks: list[str] = field(default_factory=lambda: ["hsk-retrieval"])
    batch_size: Count = 16
    hsk_test_size: Count = 500
    hsk_seed: int = 0
    limit: Optional[Count] = None  # evaluate on the first N queries / pairs only (None = all)
    class_prompt: str = ""
    device: str = "auto"
    layers: list[int] = field(default_factory=list)  # also report anisotropy at these hidden-state layers
    max_length: Optional[Count] = None  # content tokens kept (None = the model's own; the reference: 300)
    max_pixels: Optional[NonNegInt] = None  # pixels per image (None = the model's own; the reference: 1280*28*28)


def _read_jsonl(path: Path, what: str) -> list[dict]:
    rows = [obj for _, obj in json_lines(path, what)]
    if not rows:
        raise UserError(f"{path}: empty")
    return rows


def _item(row: dict, where: str, base: Path) -> dict:
    item = {}
    if row.get("text"):
        item["text"] = str(row["text"])
    if row.get("image"):
        p = Path(row["image"])
        p = p if p.is_absolute() else base / p
        if not p.is_file():
            raise UserError(f"{where}: image not found: {p}")
        item["image"] = str(p)
    if not item:
        raise UserError(f"{where}: needs 'text' or 'image'")
    return load_media(item)


def hsk_retrieval(emb: EmbeddingModel, cfg: EvalConfig) -> dict:
    test = hsk_pairs_split(cfg.hsk_test_size, cfg.hsk_seed).test
    if cfg.limit:
        test = test[: cfg.limit]
    zh, en = [p["zh"] for p in test], [p["en"] for p in test]
    per_layer = None
    if cfg.layers and emb.prompts.query == emb.prompts.document and emb.head is None:
        # one forward pass gives both the embeddings (the model's own layer, last) and the analysed layers
        per_layer = emb.encode(zh + en, batch_size=cfg.batch_size, layers=[*cfg.layers, emb.layer], description="hsk")
        zh_q, en_d = per_layer[-1][: len(test)], per_layer[-1][len(test) :]
    else:
        zh_q = emb.encode(zh, batch_size=cfg.batch_size, side="query", description="hsk zh")
        en_d = emb.encode(en, batch_size=cfg.batch_size, side="document", description="hsk en")
    gold = [{i: 1} for i in range(len(test))]
    out: dict = retrieval_metrics(zh_q @ en_d.T, gold)
    if emb.prompts.query == emb.prompts.document:
        zh_d, en_q = zh_q, en_d
    else:
        zh_d = emb.encode([p["zh"] for p in test], batch_size=cfg.batch_size, side="document", description="hsk zh")
        en_q = emb.encode([p["en"] for p in test], batch_size=cfg.batch_size, side="query", description="hsk en")
    back = retrieval_metrics(en_q @ zh_d.T, gold)
    out.update({f"en2zh/{k}": v for k, v in back.items() if k != "num_queries"})
    both = np.concatenate([zh_q, en_d])
    out.update(
        {
            "anisotropy": anisotropy(both),
            "anisotropy_zh": anisotropy(zh_q),
            "anisotropy_en": anisotropy(en_d),
            "mutual_knn@10": mutual_knn_alignment(zh_q, en_d, k=min(10, len(test) - 1)),
            "cka": linear_cka(zh_q, en_d),
        }
    )
    if cfg.layers:
        if per_layer is None:
            per_layer = emb.encode(zh + en, batch_size=cfg.batch_size, layers=cfg.layers, description="hsk layers")
        out["anisotropy_per_layer"] = {str(layer): anisotropy(per_layer[i]) for i, layer in enumerate(cfg.layers)}
    return out


def folder_retrieval(emb: EmbeddingModel, root: Path, cfg: EvalConfig) -> dict:
    queries = _read_jsonl(root / "queries.jsonl", "queries")
    corpus = _read_jsonl(root / "corpus.jsonl", "corpus")

    def ident(row: dict, n: int, f: str) -> str:
        if "_id" not in row and "id" not in row:
            raise UserError(f"{root / f}:{n}: missing field '_id'")
        return str(row.get("_id", row.get("id")))

    q_ids = [ident(r, n, "queries.jsonl") for n, r in enumerate(queries, 1)]
    d_ids = [ident(r, n, "corpus.jsonl") for n, r in enumerate(corpus, 1)]
    qrels = read_qrels_tsv(root / "qrels.tsv")
    keep = [i for i, q in enumerate(q_ids) if q in qrels]
    if not keep:
        raise UserError(f"{root / 'qrels.tsv'}: no judged query is in queries.jsonl")
    if cfg.limit:
        keep = keep[: cfg.limit]
    q_items = [_item(queries[i], f"{root / 'queries.jsonl'}:{i + 1}", root) for i in keep]
    d_items = [_item(r, f"{root / 'corpus.jsonl'}:{n}", root) for n, r in enumerate(corpus, 1)]
    q = emb.encode(q_items, batch_size=cfg.batch_size, side="query", description="queries")
    d = emb.encode(d_items, batch_size=cfg.batch_size, side="document", description="corpus")
    rel = qrels_to_indices(qrels, [q_ids[i] for i in keep], d_ids)
    out = retrieval_metrics(q @ d.T, rel)
    out.update(
        {
            "anisotropy_queries": anisotropy(q),
            "anisotropy_corpus": anisotropy(d),
            "anisotropy": anisotropy(np.concatenate([q, d])),
        }
    )
    return out


def sts(emb: EmbeddingModel, path: Path, cfg: EvalConfig) -> dict:
    rows = _read_jsonl(path, "STS")
    for n, r in enumerate(rows, 1):
        for key in ("sentence1", "sentence2", "score"):
            if key not in r:
                raise UserError(f"{path}:{n}: missing field '{key}'")
    if cfg.limit:
        rows = rows[: cfg.limit]
    a = emb.encode([r["sentence1"] for r in rows], batch_size=cfg.batch_size, description="sts a")
    b = emb.encode([r["sentence2"] for r in rows], batch_size=cfg.batch_size, description="sts b")
    return {
        "spearman": sts_spearman(a, b, [float(r["score"]) for r in rows]),
        "num_pairs": len(rows),
        "anisotropy": anisotropy(np.concatenate([a, b])),
    }


def classification(emb: EmbeddingModel, path: Path, cfg: EvalConfig) -> dict:
    rows = _read_jsonl(path, "classification")
    if cfg.limit:
        rows = rows[: cfg.limit]
    labels = sorted({str(r.get("label")) for r in rows})
    items = []
    for n, r in enumerate(rows, 1):
        if "label" not in r:
            raise UserError(f"{path}:{n}: missing field 'label'")
        items.append(_item(r, f"{path}:{n}", path.parent))
    is_image = any("image" in x for x in items)
    template = cfg.class_prompt or ("a photo of a {label}" if is_image else "{label}")
    x = emb.encode(items, batch_size=cfg.batch_size, side="query", description="items")
    c = emb.encode(
        [template.format(label=lbl) for lbl in labels],
        batch_size=cfg.batch_size,
        side="document",
        description="class prompts",
    )
    res = zero_shot_accuracy(x, c, [labels.index(str(r["label"])) for r in rows])
    return {**res, "labels": labels, "class_prompt": template, "anisotropy": anisotropy(x)}


def mteb_task(emb: EmbeddingModel, task_name: str, cfg: EvalConfig, cache: Path) -> dict:
    """One mteb task (``mteb.get_task(NAME)``; mteb downloads its data) through
    :mod:`genrep.lco.mteb_adapter`, results cached under ``cache`` by the model's name and a hash of its
    weights and settings. mteb's offline mock tasks are reachable by class name (``MockSTSTask``), to check a
    set-up without the network. A task needing a modality the model lacks is a one-line error."""
    from genrep.core.rundir import model_dir
    from genrep.lco import mteb_adapter
    from genrep.lco.adapters import MODEL_FILE

    mteb = mteb_adapter.import_mteb()
    try:
        task = mteb.get_task(task_name)
    except KeyError:
        import mteb.mocks.mock_tasks as mocks

        mock = getattr(mocks, task_name, None)
        if not (isinstance(mock, type) and task_name.startswith("Mock")):
            raise UserError(f"--task mteb:{task_name}: mteb has no task of that name") from None
        task = mock()
    root = None if cfg.model.startswith("base:") else model_dir(cfg.model, MODEL_FILE)
    encoder = mteb_adapter.MTEBEncoder(emb, cfg.batch_size, mteb_adapter.default_model_name(cfg.model, root))
    result = mteb_adapter.evaluate(encoder, [task], cache=mteb.ResultCache(cache))
    scores = {r.task_name: float(r.get_score()) for r in result.task_results}
    meta = encoder.mteb_model_meta
    return {
        "main_score": scores[task.metadata.name],
        "mteb_main_score_name": task.metadata.main_score,
        "mteb_model": meta.name,
        "mteb_revision": meta.revision,
    }


def run_task(emb: EmbeddingModel, task: str, cfg: EvalConfig, out: Path | None = None) -> dict:
    name, _, arg = task.partition(":")
    if name == "hsk-retrieval":
        return hsk_retrieval(emb, cfg)
    if name == "mteb":
        if not arg:
            raise UserError(f"--task {task}: give the mteb task name as mteb:NAME")
        return mteb_task(emb, arg, cfg, Path(out or ".") / "mteb")
    if not arg and name in ("retrieval", "seadoc", "sts", "classification"):
        raise UserError(f"--task {task}: give the data path as {name}:PATH")
    if name in ("retrieval", "seadoc"):
        return folder_retrieval(emb, Path(arg), cfg)
    if name == "sts":
        return sts(emb, Path(arg), cfg)
    if name == "classification":
        return classification(emb, Path(arg), cfg)
    raise UserError(
        f"--task: unknown task '{task}' (hsk-retrieval, retrieval:DIR, seadoc:DIR, sts:FILE, classification:FILE, "
        "mteb:NAME)"
    )


def evaluate(cfg: EvalConfig, out: str | Path, emb: EmbeddingModel | None = None) -> dict:
    from genrep.lco.adapters import load_model

    if not cfg.tasks:
        raise UserError("--task: give at least one task")
    run = RunDir(out)
    run.write_config(cfg)
    if emb is None:
        from genrep.core.runtime import pick_device

        emb = load_model(cfg.model, device=pick_device(cfg.device))
    if cfg.max_length is not None:
        emb.max_length = cfg.max_length
    if cfg.max_pixels is not None:
        emb.set_max_pixels(cfg.max_pixels)
    results = {task: run_task(emb, task, cfg, run.path) for task in cfg.tasks}
    first = results[cfg.tasks[0]]
    headline = {
        k: first[k]
        for k in (
            "recall@1",
            "recall@5",
            "recall@10",
            "mrr",
            "ndcg@10",
            "anisotropy",
            "spearman",
            "accuracy",
            "main_score",
        )
        if k in first
    }
    metrics = {"model": cfg.model, **headline, "tasks": results}
    if "anisotropy_per_layer" in first:
        series = {"anisotropy": [first["anisotropy_per_layer"][str(layer)] for layer in cfg.layers]}
        atomic_write_bytes(run.figures / "anisotropy_per_layer.png", plot_anisotropy(series, cfg.model))
    run.write_metrics(metrics)
    return metrics
