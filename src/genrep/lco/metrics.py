"""Evaluation metrics of LCO-EMB (docs/papers.md section 2, "Scaling Language-Centric Omnimodal Representation
Learning"): retrieval, semantic textual similarity and zero-shot classification on embedding matrices.

What the paper reports, and which function computes it:

- retrieval (MIEB / SeaDoc-style any-to-any retrieval): :func:`retrieval_metrics` gives Recall@1/5/10, MRR and
  nDCG@10 (SeaDoc's main score) from a query x document score matrix; :func:`rank_documents` is the ranking it uses;
  :func:`read_qrels_tsv` / :func:`qrels_to_indices` read BEIR / TREC-style relevance judgments.
- STS: :func:`sts_spearman`, Spearman's rho between the cosine similarity of each sentence pair and the gold score
  (the MTEB STS main score).
- zero-shot classification: :func:`zero_shot_accuracy`, argmax cosine similarity of an item embedding against the
  embeddings of one text prompt per class ("a photo of a {label}").

nDCG follows trec_eval: the gain of a document is its relevance grade (linear, not ``2**rel - 1``), the discount at
rank ``r`` (starting at 1) is ``1 / log2(r + 1)``, and the ideal DCG sorts the query's grades in decreasing order and
truncates at ``k``. Documents with grade <= 0 are not relevant (BEIR qrels files list some with score 0).

numpy and scipy only (no torch), so these run anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from genrep.core.errors import UserError

__all__ = [
    "cosine_matrix",
    "qrels_to_indices",
    "rank_documents",
    "read_qrels_tsv",
    "retrieval_metrics",
    "sts_spearman",
    "zero_shot_accuracy",
]

_EPS = 1e-12


def _matrix(x, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise UserError(f"{name}: expected a 2-D array, got shape {tuple(arr.shape)}")
    return arr


def rank_documents(scores: np.ndarray) -> np.ndarray:
    """Document indices per query, best first: ``scores`` [n_queries, n_docs] -> int array of the same shape.

    Sorted by decreasing score; equal scores keep the lower document index first (stable sort).
    """
    scores = _matrix(scores, "scores")
    if np.isnan(scores).any():
        raise UserError("scores: contains NaN")
    return np.argsort(-scores, axis=1, kind="stable")


def _relevance(qrel, i: int, n_docs: int) -> dict[int, float]:
    """One query's judgments as {doc_index: grade > 0}; a set / iterable means grade 1 for each listed doc."""
    if isinstance(qrel, Mapping):
        items = list(qrel.items())
    elif isinstance(qrel, (str, bytes)) or not isinstance(qrel, Iterable):
        raise UserError(
            f"qrels[{i}]: expected a set of document indices or a dict {{doc_index: grade}}, got {type(qrel).__name__}"
        )
    else:
        items = [(d, 1.0) for d in qrel]
    rel: dict[int, float] = {}
    for d, g in items:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise UserError(f"qrels[{i}]: document index {d!r} is not an integer")
        d = int(d)
        if not 0 <= d < n_docs:
            raise UserError(f"qrels[{i}]: document index {d} out of range [0, {n_docs})")
        try:
            g = float(g)
        except (TypeError, ValueError):
            raise UserError(f"qrels[{i}]: relevance grade {g!r} of document {d} is not a number") from None
        if not math.isfinite(g):
            raise UserError(f"qrels[{i}]: relevance grade {g!r} of document {d} is not finite")
        if g > 0:
            rel[d] = g
    if not rel:
        raise UserError(f"query {i} has no relevant document")
    return rel


def retrieval_metrics(
    scores: np.ndarray,
    qrels: Sequence[Iterable[int] | Mapping[int, float]],
    ks: Sequence[int] = (1, 5, 10),
    ndcg_k: int = 10,
) -> dict[str, float]:
    """Recall@k, MRR and nDCG@k of a score matrix against relevance judgments, averaged over queries.

    ``scores`` is [n_queries, n_docs] (higher = more relevant); ``qrels[i]`` lists query i's relevant document
    indices (binary) or maps them to graded relevance. Returns ``{"recall@k": ... for k in ks, "mrr": ...,
    f"ndcg@{ndcg_k}": ..., "num_queries": n}``.

    - recall@k: |relevant ∩ top-k| / |relevant| per query.
    - mrr: 1 / rank of the first relevant document over the full ranking.
    - ndcg@k: trec_eval style (linear gain = grade, discount 1/log2(rank + 1), ideal DCG from the sorted grades).
    """
    ranking = rank_documents(scores)
    n_queries, n_docs = ranking.shape
    if n_queries == 0:
        raise UserError("scores: no queries")
    if len(qrels) != n_queries:
        raise UserError(f"qrels: {len(qrels)} queries, but scores has {n_queries} rows")
    ks = [int(k) for k in ks]
    for k in [*ks, ndcg_k]:
        if k < 1:
            raise UserError(f"cutoff k={k}: must be >= 1")
    # position[q, d] = 0-based rank of document d for query q.
    position = np.empty_like(ranking)
    np.put_along_axis(position, ranking, np.arange(n_docs)[None, :].repeat(n_queries, axis=0), axis=1)
    discount = 1.0 / np.log2(np.arange(2, n_docs + 2, dtype=np.float64))  # rank 1, 2, ... -> 1/log2(rank + 1)

    recall = {k: 0.0 for k in ks}
    mrr = 0.0
    ndcg = 0.0
    for i in range(n_queries):
        rel = _relevance(qrels[i], i, n_docs)
        docs = np.fromiter(rel.keys(), dtype=np.int64, count=len(rel))
        grades = np.fromiter(rel.values(), dtype=np.float64, count=len(rel))
        pos = position[i, docs]
        for k in ks:
            recall[k] += float(np.count_nonzero(pos < k)) / len(docs)
        mrr += 1.0 / (int(pos.min()) + 1)
        top = pos < ndcg_k
        dcg = float(np.sum(grades[top] * discount[pos[top]]))
        ideal = np.sort(grades)[::-1][:ndcg_k]
        idcg = float(np.sum(ideal * discount[: len(ideal)]))
        ndcg += dcg / idcg
    out: dict[str, float] = {f"recall@{k}": recall[k] / n_queries for k in ks}
    out["mrr"] = mrr / n_queries
    out[f"ndcg@{ndcg_k}"] = ndcg / n_queries
    out["num_queries"] = n_queries
    return out


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, _EPS)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` [n, d] with every row of ``b`` [m, d] -> [n, m].

    Rows are L2-normalised inside; an all-zero row has similarity 0 with everything (no NaN).
    """
    a = _matrix(a, "a")
    b = _matrix(b, "b")
    if a.shape[1] != b.shape[1]:
        raise UserError(f"cosine_matrix: dimension mismatch, a has {a.shape[1]} columns and b has {b.shape[1]}")
    return _normalise_rows(a) @ _normalise_rows(b).T


def sts_spearman(emb_a: np.ndarray, emb_b: np.ndarray, gold: Sequence[float]) -> float:
    """STS main score: Spearman's rho between cosine(emb_a[i], emb_b[i]) and ``gold[i]`` over sentence pairs."""
    from scipy.stats import spearmanr

    a = _matrix(emb_a, "emb_a")
    b = _matrix(emb_b, "emb_b")
    gold_arr = np.asarray(gold, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise UserError(f"sts_spearman: emb_a has shape {a.shape} but emb_b has shape {b.shape}")
    if len(gold_arr) != len(a):
        raise UserError(f"sts_spearman: {len(a)} sentence pairs but {len(gold_arr)} gold scores")
    if len(gold_arr) < 2:
        raise UserError("sts_spearman: needs at least 2 sentence pairs")
    cos = np.sum(_normalise_rows(a) * _normalise_rows(b), axis=1)
    return float(spearmanr(cos, gold_arr).statistic)


def zero_shot_accuracy(item_emb: np.ndarray, class_emb: np.ndarray, labels: Sequence[int] | np.ndarray) -> dict:
    """Zero-shot classification: each item gets the class whose prompt embedding has the highest cosine similarity.

    ``item_emb`` [n, d], ``class_emb`` [n_classes, d] (one embedded text prompt per class), ``labels`` [n] ints in
    [0, n_classes). Returns ``{"accuracy": float, "per_class": [accuracy of items of class c] (NaN for a class
    without items), "confusion": [[count of true c predicted as c']]}``. Ties go to the lower class index.
    """
    sims = cosine_matrix(item_emb, class_emb)
    n_items, n_classes = sims.shape
    label_arr = np.asarray(labels).reshape(-1)
    if len(label_arr) != n_items:
        raise UserError(f"zero_shot_accuracy: {n_items} items but {len(label_arr)} labels")
    if n_items == 0 or n_classes == 0:
        raise UserError("zero_shot_accuracy: needs at least one item and one class")
    if not np.issubdtype(label_arr.dtype, np.integer):
        raise UserError("zero_shot_accuracy: labels must be integer class indices")
    bad = (label_arr < 0) | (label_arr >= n_classes)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise UserError(f"zero_shot_accuracy: label {int(label_arr[j])} of item {j} out of range [0, {n_classes})")
    pred = np.argmax(sims, axis=1)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (label_arr, pred), 1)
    support = confusion.sum(axis=1)
    per_class = [float(confusion[c, c] / support[c]) if support[c] else float("nan") for c in range(n_classes)]
    return {
        "accuracy": float(np.mean(pred == label_arr)),
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "predictions": pred.tolist(),
    }


def mcnemar_exact(correct_before: Sequence[bool], correct_after: Sequence[bool]) -> dict:
    """Exact (binomial) McNemar test of two classifiers scored on the *same* items.

    Only discordant items count: ``gained`` (wrong before, right after) and ``lost`` (right before, wrong
    after). Under the null hypothesis of equal accuracy each discordant item is a fair coin, so the
    two-sided p-value is ``min(1, 2 P[Binomial(gained + lost, 1/2) <= min(gained, lost)])``. Returns
    ``{"gained", "lost", "p_value"}`` (p = 1 when no item changed).
    """
    from scipy.stats import binom

    before = np.asarray(correct_before, dtype=bool)
    after = np.asarray(correct_after, dtype=bool)
    if before.shape != after.shape:
        raise UserError(f"mcnemar_exact: {before.size} items before but {after.size} after")
    gained, lost = int(np.sum(~before & after)), int(np.sum(before & ~after))
    n = gained + lost
    p = 1.0 if n == 0 else float(min(1.0, 2.0 * binom.cdf(min(gained, lost), n, 0.5)))
    return {"gained": gained, "lost": lost, "p_value": p}


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def read_qrels_tsv(path: str | Path) -> dict[str, dict[str, int]]:
    """Read a BEIR / TREC-style qrels TSV: ``query-id <TAB> corpus-id <TAB> score`` per line.

    The first non-blank line is a header (skipped) when its third field is not an integer; blank lines are skipped.
    Returns ``{query_id: {corpus_id: score}}`` in file order.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot read qrels file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    qrels: dict[str, dict[str, int]] = {}
    first = True
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) != 3:
            raise UserError(
                f"{path}:{lineno}: expected 3 tab-separated fields (query-id, corpus-id, score), got {len(fields)}"
            )
        qid, did, score = (f.strip() for f in fields)
        if first:
            first = False
            if not _is_int(score):
                continue  # header line, e.g. "query-id corpus-id score"
        if not _is_int(score):
            raise UserError(f"{path}:{lineno}: field 'score': {score!r} is not an integer")
        if not qid:
            raise UserError(f"{path}:{lineno}: field 'query-id': empty")
        if not did:
            raise UserError(f"{path}:{lineno}: field 'corpus-id': empty")
        docs = qrels.setdefault(qid, {})
        if did in docs and docs[did] != int(score):
            raise UserError(
                f"{path}:{lineno}: field 'score': query {qid!r} already judged corpus-id {did!r} "
                f"as {docs[did]}, now {int(score)}"
            )
        docs[did] = int(score)
    if not qrels:
        raise UserError(f"{path}: no qrels lines")
    return qrels


def qrels_to_indices(
    qrels: Mapping[str, Mapping[str, int]],
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
) -> list[dict[int, int]]:
    """Map id-keyed qrels to index-keyed ones aligned with a score matrix's rows (``query_ids``) and columns
    (``doc_ids``): returns ``[{doc_index: score} for each query id]``, ready for :func:`retrieval_metrics`.

    A query id without qrels or a judged corpus id that is not in ``doc_ids`` is a :class:`UserError`.
    """
    doc_index: dict[str, int] = {}
    for j, did in enumerate(doc_ids):
        if did in doc_index:
            raise UserError(f"doc_ids: corpus-id {did!r} appears twice (positions {doc_index[did]} and {j})")
        doc_index[did] = j
    out: list[dict[int, int]] = []
    for qid in query_ids:
        if qid not in qrels:
            raise UserError(f"qrels: no judgments for query-id {qid!r}")
        row: dict[int, int] = {}
        for did, score in qrels[qid].items():
            if did not in doc_index:
                raise UserError(f"qrels: query-id {qid!r} judges corpus-id {did!r}, which is not in the corpus")
            row[doc_index[did]] = int(score)
        out.append(row)
    return out
