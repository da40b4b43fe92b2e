"""System-level soft pairwise accuracy (SPA) and the exact (order-independent) system means."""

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from genrep.core.errors import UserError
from genrep.diting import metaeval as me


def _all_flips(n_units):
    """Every swap pattern of ``n_units`` units once: the permutation test enumerated exactly."""
    return np.array(list(itertools.product([False, True], repeat=n_units)))


def _brute_p(a, b):
    """p(a > b) by enumerating all 2^n swap patterns, in exact rational arithmetic."""
    a, b = [Fraction(x) for x in a], [Fraction(x) for x in b]
    observed = sum(a) - sum(b)
    hits = 0
    patterns = list(itertools.product([False, True], repeat=len(a)))
    for swap in patterns:
        null = sum((y - x) if s else (x - y) for x, y, s in zip(a, b, swap))
        hits += null >= observed
    return hits / len(patterns)


def test_p_values_and_spa_by_hand_with_every_permutation_enumerated():
    # 3 systems x 2 items; the four swap patterns enumerate the test exactly
    human = np.array([[2.0, 4.0], [1.0, 1.0], [2.0, 4.0]])
    metric = np.array([[1.0, 1.0], [2.0, 2.0], [0.0, 3.0]])
    flips = _all_flips(2)
    ph, pm = me.pairwise_p_values(human, flips), me.pairwise_p_values(metric, flips)
    # human: A-B differences (1, 3): only the identity reaches the observed 4 -> 1/4; A = C -> 1;
    # B-C differences (-1, -3): every swap gives >= -4 -> 1
    assert ph[0, 1] == 0.25 and ph[0, 2] == 1.0 and ph[1, 2] == 1.0
    # metric: A-B (-1, -1) -> 1; A-C (1, -2) -> 3/4; B-C (2, -1) -> 1/2
    assert pm[0, 1] == 1.0 and pm[0, 2] == 0.75 and pm[1, 2] == 0.5
    assert np.isnan(ph[1, 0]) and np.isnan(ph[0, 0])  # only the upper triangle is filled
    spa = 1 - (abs(0.25 - 1) + abs(1 - 0.75) + abs(1 - 0.5)) / 3
    assert spa == 0.5
    # with random permutations, the estimate approaches the enumerated value
    value, pairs = me.soft_pairwise_accuracy(human, metric, permutations=20000, seed=1)
    assert pairs == 3 and value == pytest.approx(0.5, abs=0.02)


def test_p_values_equal_exact_enumeration_including_exact_ties_float_addition_misses():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, size=(4, 5)) / 3  # thirds: not exact in binary, many exact ties
    # a system with the same values as system 0 in another order: a tie that float sums break
    scores = np.vstack([scores, [[0.1, 0.2, 0.7, 0.0, 0.0]], [[0.7, 0.1, 0.2, 0.0, 0.0]]])
    x, y = scores[4], scores[5]
    assert (np.ones(5) @ (y - x)) > 0  # plain float: y - x sums to a positive value, not to 0
    p = me.pairwise_p_values(scores, _all_flips(5))
    for i, j in itertools.combinations(range(len(scores)), 2):
        assert p[i, j] == _brute_p(scores[i], scores[j]), (i, j)
    # identical multisets: the identity and the full swap both tie; exactly half the patterns reach it
    assert p[4, 5] == _brute_p(x, y) and p[4, 5] > 0


def _reference_spa(human, metric, permutations, seed):
    """mt-metrics-eval's definition written out with loops: sign flips from default_rng(seed).random in
    float32 rounded to 0/1 (0 = swap), drawn once for all pairs and both sides; p(i > j) = share of
    permutations with null sum difference >= observed sum difference; 1 - mean |p_h - p_m| over i < j.
    The sums are exact (Fractions): in float arithmetic the identity permutation, whose null equals the
    observed difference, can fall a last bit short and go uncounted (mt-metrics-eval compares in float32)."""
    n_sys, n_seg = human.shape
    rng = np.random.default_rng(seed)
    signs = 2.0 * np.rint(rng.random(size=(permutations, n_seg), dtype=np.float32)) - 1.0

    def p_values(scores):
        p = {}
        for i in range(n_sys):
            for j in range(i + 1, n_sys):
                a = [Fraction(float(x)) for x in scores[i]]
                b = [Fraction(float(x)) for x in scores[j]]
                observed = sum(a) - sum(b)
                hits = 0
                for r in range(permutations):
                    null = Fraction(0)
                    for k in range(n_seg):
                        null += int(signs[r, k]) * (a[k] - b[k])
                    hits += null >= observed
                p[i, j] = hits / permutations
        return p

    ph, pm = p_values(human), p_values(metric)
    return 1.0 - sum(abs(ph[k] - pm[k]) for k in ph) / len(ph)


@pytest.mark.parametrize("seed", [0, 7])
def test_spa_equals_an_independent_loop_implementation_of_the_mtme_definition(seed):
    rng = np.random.default_rng(seed)
    quality = rng.normal(size=5)
    human = quality[:, None] + rng.normal(size=(5, 12))
    metric = human + rng.normal(scale=1.5, size=(5, 12))
    value, pairs = me.soft_pairwise_accuracy(human, metric, permutations=300, seed=4)
    assert pairs == 10
    assert value == pytest.approx(_reference_spa(human, metric, 300, 4), abs=1e-12)


def test_spa_is_one_when_the_metric_equals_the_human_scores_and_is_deterministic():
    rng = np.random.default_rng(5)
    human = rng.integers(0, 7, size=(6, 9)).astype(float)
    human[2, 3] = np.nan  # a missing segment: that pair uses the items both systems have
    assert me.soft_pairwise_accuracy(human, human.copy()) == (1.0, 15)
    metric = human + rng.normal(size=human.shape)
    first = me.soft_pairwise_accuracy(human, metric, permutations=500, seed=9)
    assert first == me.soft_pairwise_accuracy(human, metric, permutations=500, seed=9)
    assert 0.0 <= first[0] <= 1.0
    assert me.permutation_flips(4).shape == (me.SPA_PERMUTATIONS, 4)
    assert (me.SPA_PERMUTATIONS, me.SPA_SEED) == (1000, 4)  # mt-metrics-eval's defaults


def test_spa_is_reported_at_system_level_with_its_parameters():
    rng = np.random.default_rng(2)
    human = {(f"i{i}", f"s{s}"): float(rng.integers(0, 7)) for i in range(5) for s in range(4)}
    metric = {k: v + float(rng.normal()) for k, v in human.items()}
    res = me.evaluate_metric(human, metric, resamples=0, permutations=200, spa_seed=3)
    spa = res["system_level"]["soft_pairwise_accuracy"]
    a = me.align(human, metric)
    names, h = me.system_item_matrix(a, a.human)
    assert names == sorted(a.systems)
    expected = me.soft_pairwise_accuracy(h, me.system_item_matrix(a, a.metric)[1], 200, 3)
    assert spa == {"value": expected[0], "ci95": None, "pairs": 6, "permutations": 200, "seed": 3}
    assert "pairwise_accuracy" in res["system_level"]  # existing keys kept
    with pytest.raises(UserError, match="permutations"):
        me.evaluate_metric(human, metric, resamples=0, permutations=0)
    with pytest.raises(UserError, match="seed"):
        me.evaluate_metric(human, metric, resamples=0, spa_seed=-1)


def test_equal_multisets_of_segment_scores_give_exactly_equal_system_means_and_tie():
    a_vals, b_vals = [0.1, 0.2, 0.7, 0.0], [0.7, 0.2, 0.1, 0.0]
    assert np.sum(a_vals) != np.sum(b_vals)  # the naive float sums differ in the last bit
    items = ["w", "x", "y", "z"]
    human = {**{(i, "A"): v for i, v in zip(items, a_vals)}, **{(i, "B"): v for i, v in zip(items, b_vals)}}
    human[("x", "C")] = 0.0
    metric = {k: 10 * v for k, v in human.items()}
    metric.update({("w", "A"): 0.1, ("x", "A"): 0.2, ("y", "A"): 0.7})
    metric.update({("w", "B"): 0.7, ("x", "B"): 0.2, ("y", "B"): 0.1})
    a = me.align(human, metric)
    naive = np.bincount(a.system, a.human) / np.bincount(a.system)
    assert naive[a.systems.index("A")] != naive[a.systems.index("B")]  # the old bincount means
    naive = np.bincount(a.system, a.metric) / np.bincount(a.system)
    assert naive[a.systems.index("A")] != naive[a.systems.index("B")]
    hs, ms = me.system_means(a)
    assert hs[a.systems.index("A")] == hs[a.systems.index("B")] == math.fsum(a_vals) / 4
    assert ms[a.systems.index("A")] == ms[a.systems.index("B")]
    # the A-B pair is a tie on both sides, hence correct: system-level pairwise accuracy is 1
    res = me.evaluate_metric(human, metric, resamples=0)
    assert res["system_level"]["pairwise_accuracy"]["value"] == 1.0
    scores = me.system_scores(human)
    assert scores["A"] == scores["B"]
    assert me.exact_mean([]) != me.exact_mean([])  # NaN for no values
