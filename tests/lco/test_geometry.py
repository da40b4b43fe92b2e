from __future__ import annotations

import numpy as np
import pytest

from genrep.core.errors import UserError
from genrep.lco.geometry import (
    anisotropy,
    anisotropy_per_layer,
    linear_cka,
    mutual_knn_alignment,
    plot_anisotropy,
)


def _random_orthogonal(rng, d):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def test_anisotropy_isotropic_gaussian_near_zero():
    x = np.random.default_rng(0).normal(size=(2000, 64))
    assert abs(anisotropy(x)) < 0.01


def test_anisotropy_common_offset_near_one():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 32)) + 50.0 * np.ones(32)
    assert anisotropy(x) > 0.99


def test_anisotropy_matches_double_loop():
    x = np.random.default_rng(2).normal(size=(30, 7)) + 0.3
    n = len(x)
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                total += x[i] @ x[j] / (np.linalg.norm(x[i]) * np.linalg.norm(x[j]))
    assert anisotropy(x) == pytest.approx(total / (n * (n - 1)), abs=1e-12)


def test_anisotropy_zero_rows_and_errors():
    # pairs (1, 2) and (2, 1) have cosine 1, the four pairs with the zero row count as 0
    assert anisotropy(np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])) == pytest.approx(2 / 6)
    with pytest.raises(UserError, match="at least 2"):
        anisotropy(np.ones((1, 4)))
    with pytest.raises(UserError, match="2-D"):
        anisotropy(np.ones(4))


def test_anisotropy_per_layer_keeps_keys_and_order():
    rng = np.random.default_rng(3)
    layers = {"L2": rng.normal(size=(20, 4)) + 10.0, "L0": rng.normal(size=(20, 4))}
    out = anisotropy_per_layer(layers)
    assert list(out) == ["L2", "L0"]
    assert out["L2"] == pytest.approx(anisotropy(layers["L2"]))
    assert anisotropy_per_layer(list(layers.values())) == pytest.approx([out["L2"], out["L0"]])


def test_mutual_knn_self_and_rotated_scaled_copy():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(100, 16))
    assert mutual_knn_alignment(a, a) == 1.0
    assert mutual_knn_alignment(a, 3.7 * a @ _random_orthogonal(rng, 16)) == 1.0


def test_mutual_knn_independent_spaces_near_chance():
    rng = np.random.default_rng(5)
    n, k = 200, 10
    score = mutual_knn_alignment(rng.normal(size=(n, 16)), rng.normal(size=(n, 24)), k=k)
    assert abs(score - k / (n - 1)) < 0.05


def _knn_loop(x, k):
    u = [row / np.linalg.norm(row) for row in x]
    out = []
    for i in range(len(x)):
        others = sorted((j for j in range(len(x)) if j != i), key=lambda j: (-(u[i] @ u[j]), j))
        out.append(set(others[:k]))
    return out


def test_mutual_knn_matches_brute_force():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(15, 5)), rng.normal(size=(15, 3))
    a[:, 0] += b[:, 0]  # some shared structure
    for k in (1, 3, 7):
        na, nb = _knn_loop(a, k), _knn_loop(b, k)
        expected = np.mean([len(na[i] & nb[i]) / k for i in range(15)])
        assert mutual_knn_alignment(a, b, k=k) == pytest.approx(expected, abs=1e-15)


def test_mutual_knn_ties_go_to_lower_index():
    # all rows of a coincide: N_a(i) = the two lowest other indices. b: rows 0-1 along e0, rows 2-4 along e1, so
    # N_b(0) = {1, 2}, N_b(1) = {0, 2}, N_b(2) = {3, 4}, N_b(3) = {2, 4}, N_b(4) = {2, 3}.
    a = np.ones((5, 2))
    b = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [0.0, 1.0]])
    assert mutual_knn_alignment(a, b, k=2) == pytest.approx((2 + 2 + 0 + 0 + 0) / (5 * 2))


def test_mutual_knn_errors():
    with pytest.raises(UserError, match="more than k=10"):
        mutual_knn_alignment(np.ones((10, 3)), np.ones((10, 3)))
    with pytest.raises(UserError, match="paired"):
        mutual_knn_alignment(np.ones((20, 3)), np.ones((21, 3)))


def _cka_hsic(a, b):
    n = len(a)
    h = np.eye(n) - np.ones((n, n)) / n
    k, lm = a @ a.T, b @ b.T
    return np.trace(k @ h @ lm @ h) / np.sqrt(np.trace(k @ h @ k @ h) * np.trace(lm @ h @ lm @ h))


@pytest.mark.parametrize("n,d1,d2", [(50, 8, 12), (20, 30, 6), (12, 40, 50)])
def test_linear_cka_matches_hsic_formula(n, d1, d2):
    rng = np.random.default_rng(n)
    a = rng.normal(size=(n, d1)) + 2.0
    b = a[:, : min(d1, d2)] @ rng.normal(size=(min(d1, d2), d2)) + 0.5 * rng.normal(size=(n, d2))
    assert linear_cka(a, b) == pytest.approx(_cka_hsic(a, b), abs=1e-10)


def test_linear_cka_identity_and_invariances():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(60, 10))
    b = np.tanh(a @ rng.normal(size=(10, 6)))
    assert linear_cka(a, a) == pytest.approx(1.0, abs=1e-12)
    base = linear_cka(a, b)
    assert 0.0 < base < 1.0
    assert linear_cka(a, 4.2 * b @ _random_orthogonal(rng, 6)) == pytest.approx(base, abs=1e-12)
    assert linear_cka(a, np.ones((60, 3))) == 0.0


def test_plot_anisotropy_png():
    png = plot_anisotropy({"base": [0.9, 0.8, 0.85], "tuned": [0.4, 0.3, 0.2]}, "anisotropy per layer")
    assert png.startswith(b"\x89PNG")
