"""Reference-based metrics for DITING translations: BLEU, chrF, TER (sacrebleu) and COMET.

The conventions of docs/papers.md s3.8: sacrebleu's ``BLEU().corpus_score`` with 13a tokenisation for
English, chrF (character 6-grams, beta 2) and TER, each with its sacrebleu signature saved.
Corpus scores per system (all items and per dimension) and sentence scores per segment (BLEU with
``effective_order=True``, as sacrebleu recommends for sentences). COMET runs only when
``unbabel-comet`` is installed and its checkpoint is on disk (a local ``.ckpt`` path or a warm
Hugging Face cache); otherwise it is reported as unavailable with the reason. Nothing downloads.

A failed translation (``meta.failed``) is scored as an empty output, so that systems are compared
on the same items; the count of failures is reported.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

from genrep.core.errors import UserError
from genrep.diting.schema import Item, Translation

METRICS = ("bleu", "chrf", "ter", "comet")


def _metric(name: str):
    import sacrebleu

    if name == "bleu":
        return sacrebleu.BLEU(tokenize="13a"), sacrebleu.BLEU(tokenize="13a", effective_order=True)
    if name == "chrf":
        return sacrebleu.CHRF(), sacrebleu.CHRF()
    if name == "ter":
        return sacrebleu.TER(), sacrebleu.TER()
    raise UserError(f"unknown metric '{name}' (known: {', '.join(METRICS)})")


def corpus_score(name: str, hyps: list[str], refs: list[str]) -> float:
    """A sacrebleu metric's corpus score (one reference per segment)."""
    return float(_metric(name)[0].corpus_score(hyps, [refs]).score)


def corpus_and_segments(name: str, hyps: list[str], refs: list[str]) -> tuple[float, list[float], str]:
    """(corpus score, sentence scores, signature) of a sacrebleu metric."""
    corpus_m, sent_m = _metric(name)
    corpus = corpus_m.corpus_score(hyps, [refs]).score
    sents = [sent_m.sentence_score(h, [r]).score for h, r in zip(hyps, refs)]
    return float(corpus), [float(s) for s in sents], str(corpus_m.get_signature())


def comet_scores(
    sources: list[str], hyps: list[str], refs: list[str], model: str = "Unbabel/wmt22-comet-da", batch_size: int = 16
) -> dict[str, Any]:
    """``{"system_score", "scores", "model"}`` or ``{"status": "unavailable: ..."}``; never downloads."""
    try:
        from comet import download_model, load_from_checkpoint
    except ImportError:
        return {"status": "unavailable: unbabel-comet is not installed (pip install 'genrep[comet]')"}
    from pathlib import Path

    try:
        if Path(model).is_file():
            ckpt = model
        else:
            import os

            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            ckpt = download_model(model)  # resolves from the local Hugging Face cache when offline
        scorer = load_from_checkpoint(ckpt)
    except Exception as e:  # not on disk, no network
        return {"status": f"unavailable: COMET model {model} not on disk ({type(e).__name__})"}
    data = [{"src": s, "mt": h, "ref": r} for s, h, r in zip(sources, hyps, refs)]
    out = scorer.predict(data, batch_size=batch_size, gpus=0, progress_bar=False)
    return {"system_score": float(out.system_score), "scores": [float(x) for x in out.scores], "model": model}


def score_translations(
    translations: Iterable[Translation],
    items: Iterable[Item],
    metrics: Iterable[str] = ("chrf", "bleu"),
    comet_model: str = "Unbabel/wmt22-comet-da",
) -> tuple[dict, list[dict]]:
    """(metrics per system, per-segment rows) for translations of the given items.

    ``metrics[system]`` = {"items", "failed", "<metric>": corpus score, "per_dimension": {dim: {...}}};
    metrics whose signature applies carry it under ``signatures``.
    """
    metrics = list(dict.fromkeys(metrics))
    for m in metrics:
        if m not in METRICS:
            raise UserError(f"unknown metric '{m}' (known: {', '.join(METRICS)})")
    by_id = {i.id: i for i in items}
    per_system: dict[str, list[tuple[Item, Translation]]] = defaultdict(list)
    for t in translations:
        if t.item_id not in by_id:
            raise UserError(f"translation of unknown item '{t.item_id}' (system {t.system}); wrong benchmark?")
        per_system[t.system].append((by_id[t.item_id], t))
    if not per_system:
        raise UserError("no translations to score")
    results: dict[str, Any] = {"systems": {}, "signatures": {}}
    segments: list[dict] = []
    for system, pairs in per_system.items():
        hyps = ["" if t.meta.get("failed") else t.output for _, t in pairs]
        refs = [i.reference_en for i, _ in pairs]
        rows: list[dict[str, Any]] = [{"item_id": i.id, "system": system, "dimension": i.dimension} for i, _ in pairs]
        sys_res: dict[str, Any] = {"items": len(pairs), "failed": sum(bool(t.meta.get("failed")) for _, t in pairs)}
        for m in metrics:
            if m == "comet":
                c = comet_scores([i.source_zh for i, _ in pairs], hyps, refs, comet_model)
                if "scores" not in c:
                    sys_res["comet"] = None
                    results["signatures"]["comet"] = c["status"]
                    continue
                sys_res["comet"] = c["system_score"]
                results["signatures"]["comet"] = c["model"]
                for row, s in zip(rows, c["scores"]):
                    row["comet"] = s
                continue
            corpus, sents, sig = corpus_and_segments(m, hyps, refs)
            sys_res[m] = corpus
            results["signatures"][m] = sig
            for row, s in zip(rows, sents):
                row[m] = s
        per_dim: dict[str, Any] = {}
        for dim in dict.fromkeys(i.dimension for i, _ in pairs):
            idx = [k for k, (i, _) in enumerate(pairs) if i.dimension == dim]
            d: dict[str, Any] = {"items": len(idx)}
            for m in metrics:
                if m == "comet":
                    vals = [rows[k].get("comet") for k in idx]
                    d["comet"] = sum(vals) / len(vals) if all(v is not None for v in vals) else None  # type: ignore[arg-type]
                else:
                    d[m] = corpus_score(m, [hyps[k] for k in idx], [refs[k] for k in idx])
            per_dim[dim] = d
        sys_res["per_dimension"] = per_dim
        results["systems"][system] = sys_res
        segments.extend(rows)
    return results, segments
