from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from genrep.core.errors import UserError
from genrep.lco.metrics import (
    cosine_matrix,
    qrels_to_indices,
    rank_documents,
    read_qrels_tsv,
    retrieval_metrics,
    sts_spearman,
    zero_shot_accuracy,
)

# q0 ranks docs 1, 2, 3, 0; q1 ranks 2, then the tied 0, 1, 3 in index order.
SCORES = np.array(
    [
        [0.1, 0.9, 0.5, 0.3],
        [0.2, 0.2, 0.8, 0.2],
    ]
)


def test_rank_documents_descending_with_index_tie_break():
    assert rank_documents(SCORES).tolist() == [[1, 2, 3, 0], [2, 0, 1, 3]]
    assert rank_documents(np.zeros((1, 5))).tolist() == [[0, 1, 2, 3, 4]]


def test_retrieval_metrics_hand_computed():
    # q0: relevant docs 0 (rank 4) and 3 (rank 3), binary; q1: doc 2 (rank 1, grade 1) and doc 1 (rank 3, grade 3).
    qrels = [{0, 3}, {2: 1, 1: 3}]
    m = retrieval_metrics(SCORES, qrels)
    assert set(m) == {"recall@1", "recall@5", "recall@10", "mrr", "ndcg@10", "num_queries"}
    assert m["num_queries"] == 2
    assert m["recall@1"] == pytest.approx((0 + 1 / 2) / 2)
    assert m["recall@5"] == pytest.approx(1.0)
    assert m["recall@10"] == pytest.approx(1.0)
    assert m["mrr"] == pytest.approx((1 / 3 + 1 / 1) / 2)
    ndcg_q0 = (1 / math.log2(3 + 1) + 1 / math.log2(4 + 1)) / (1 / math.log2(1 + 1) + 1 / math.log2(2 + 1))
    ndcg_q1 = (1 / math.log2(1 + 1) + 3 / math.log2(3 + 1)) / (3 / math.log2(1 + 1) + 1 / math.log2(2 + 1))
    assert m["ndcg@10"] == pytest.approx((ndcg_q0 + ndcg_q1) / 2, abs=1e-12)


def test_retrieval_metrics_ties_go_to_lower_index():
    scores = np.array([[0.5, 0.5, 0.5]])
    m = retrieval_metrics(scores, [{1}], ks=(1, 2))
    assert m["recall@1"] == 0.0 and m["recall@2"] == 1.0
    assert m["mrr"] == pytest.approx(1 / 2)
    assert m["ndcg@10"] == pytest.approx(1 / math.log2(3))


def test_retrieval_metrics_ndcg_cutoff_truncates_dcg_and_ideal():
    scores = np.array([[4.0, 3.0, 2.0, 1.0]])
    m = retrieval_metrics(scores, [{2: 2, 3: 1}], ks=(1,), ndcg_k=1)
    assert m["ndcg@1"] == 0.0
    m = retrieval_metrics(scores, [{0: 1, 2: 2}], ks=(1,), ndcg_k=2)
    assert m["ndcg@2"] == pytest.approx(1.0 / (2 / 1 + 1 / math.log2(3)))


def _ndcg_loop(scores, qrels, k):
    total = 0.0
    for i, rel in enumerate(qrels):
        order = sorted(range(scores.shape[1]), key=lambda d: (-scores[i, d], d))
        dcg = sum(rel.get(d, 0) / math.log2(r + 2) for r, d in enumerate(order[:k]))
        ideal = sorted((g for g in rel.values() if g > 0), reverse=True)[:k]
        idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
        total += dcg / idcg
    return total / len(qrels)


def test_ndcg_matches_loop_on_random_data():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=(25, 40)), 1)  # rounding makes ties
    qrels = []
    for _ in range(25):
        docs = rng.choice(40, size=rng.integers(1, 15), replace=False)
        qrels.append({int(d): int(rng.integers(1, 4)) for d in docs})
    for k in (1, 5, 10, 40):
        m = retrieval_metrics(scores, qrels, ndcg_k=k)
        assert m[f"ndcg@{k}"] == pytest.approx(_ndcg_loop(scores, qrels, k), abs=1e-12)


def test_retrieval_metrics_errors():
    with pytest.raises(UserError, match="query 1 has no relevant document"):
        retrieval_metrics(SCORES, [{0}, set()])
    with pytest.raises(UserError, match="query 0 has no relevant document"):
        retrieval_metrics(SCORES, [{0: 0}, {1: 1}])
    with pytest.raises(UserError, match="out of range"):
        retrieval_metrics(SCORES, [{0}, {4}])
    with pytest.raises(UserError, match="2 rows"):
        retrieval_metrics(SCORES, [{0}])


def test_cosine_matrix_zero_row_safe():
    c = cosine_matrix(np.array([[3.0, 4.0], [0.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 2.0]]))
    assert np.allclose(c, [[0.6, 0.8], [0.0, 0.0]])


def test_sts_spearman():
    angles = np.array([0.1, 0.5, 0.9, 1.3, 1.5])
    emb_a = np.tile([[1.0, 0.0]], (5, 1))
    emb_b = np.stack([np.cos(angles), np.sin(angles)], axis=1) * 2.5
    assert sts_spearman(emb_a, emb_b, [5, 4, 3, 2, 1]) == pytest.approx(1.0)
    assert sts_spearman(emb_a, emb_b, [1, 2, 3, 4, 5]) == pytest.approx(-1.0)
    gold = [4.0, 5.0, 1.0, 2.0, 3.0]
    assert sts_spearman(emb_a, emb_b, gold) == pytest.approx(spearmanr(np.cos(angles), gold).statistic)

    rng = np.random.default_rng(1)
    a, b, g = rng.normal(size=(30, 8)), rng.normal(size=(30, 8)), rng.normal(size=30)
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert sts_spearman(a, b, g) == pytest.approx(spearmanr(cos, g).statistic, abs=1e-12)


def test_zero_shot_accuracy():
    class_emb = np.eye(3)
    items = np.array(
        [
            [1.0, 0.1, 0.0],  # -> 0, true 0
            [0.2, 1.0, 0.0],  # -> 1, true 1
            [0.0, 0.0, 1.0],  # -> 2, true 2
            [1.0, 0.0, 0.5],  # -> 0, true 2
            [0.9, 1.0, 0.0],  # -> 1, true 0
        ]
    )
    out = zero_shot_accuracy(items, class_emb * 7.0, [0, 1, 2, 2, 0])
    assert out["accuracy"] == pytest.approx(3 / 5)
    assert out["per_class"] == pytest.approx([1 / 2, 1.0, 1 / 2])
    assert out["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    with pytest.raises(UserError, match="out of range"):
        zero_shot_accuracy(items, class_emb, [0, 1, 2, 3, 0])


def test_read_qrels_tsv_with_and_without_header(tmp_path):
    body = "q1\td1\t1\nq1\td3\t2\n\nq2\td2\t0\n"
    with_header = tmp_path / "test.tsv"
    with_header.write_text("query-id\tcorpus-id\tscore\n" + body)
    without_header = tmp_path / "plain.tsv"
    without_header.write_text(body)
    expected = {"q1": {"d1": 1, "d3": 2}, "q2": {"d2": 0}}
    assert read_qrels_tsv(with_header) == expected
    assert read_qrels_tsv(without_header) == expected


def test_read_qrels_tsv_errors(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1 d2 1\n")
    with pytest.raises(UserError, match=r"bad\.tsv:3: expected 3 tab-separated fields"):
        read_qrels_tsv(bad)
    bad.write_text("q1\td1\t1\nq1\td2\tx\n")
    with pytest.raises(UserError, match=r"bad\.tsv:2: field 'score'"):
        read_qrels_tsv(bad)


def test_qrels_to_indices():
    qrels = {"q1": {"d1": 1, "d3": 2}, "q2": {"d2": 1}}
    assert qrels_to_indices(qrels, ["q2", "q1"], ["d1", "d2", "d3"]) == [{1: 1}, {0: 1, 2: 2}]
    with pytest.raises(UserError, match="'d3'"):
        qrels_to_indices(qrels, ["q1"], ["d1", "d2"])
    with pytest.raises(UserError, match="'q9'"):
        qrels_to_indices(qrels, ["q1", "q9"], ["d1", "d2", "d3"])


def test_mcnemar_exact_hand_computed_and_against_scipy():
    from scipy.stats import binomtest

    from genrep.lco.metrics import mcnemar_exact

    before = [1, 1, 0, 0, 0, 0, 1, 0]
    after = [1, 0, 1, 1, 1, 0, 1, 1]  # gained 4 (items 2, 3, 4, 7), lost 1 (item 1)
    t = mcnemar_exact(before, after)
    assert (t["gained"], t["lost"]) == (4, 1)
    assert t["p_value"] == pytest.approx(2 * (1 + 5) / 32)  # 2 P[Bin(5, 1/2) <= 1]
    assert t["p_value"] == pytest.approx(binomtest(1, 5, 0.5).pvalue)
    assert mcnemar_exact([1, 0], [1, 0]) == {"gained": 0, "lost": 0, "p_value": 1.0}
    rng = np.random.default_rng(0)
    for _ in range(20):
        b, a = rng.random(40) < 0.4, rng.random(40) < 0.5
        t = mcnemar_exact(b, a)
        assert t["p_value"] == pytest.approx(binomtest(min(t["gained"], t["lost"]), t["gained"] + t["lost"]).pvalue)
    with pytest.raises(UserError, match="3 items before but 2 after"):
        mcnemar_exact([1, 0, 1], [1, 0])
