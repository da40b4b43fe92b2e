from __future__ import annotations

import itertools

import numpy as np
import pytest

from genrep.core.errors import UserError
from genrep.lco.geometry import (
    REFERENCE_EPS,
    anisotropy,
    anisotropy_per_layer,
    cka,
    cknna,
    linear_cka,
    mutual_knn_alignment,
    plot_anisotropy,
    unbiased_cka,
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


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _cka_hsic(a, b, eps=0.0):
    n = len(a)
    h = np.eye(n) - np.ones((n, n)) / n
    k, lm = a @ a.T, b @ b.T
    return np.trace(k @ h @ lm @ h) / (np.sqrt(np.trace(k @ h @ k @ h) * np.trace(lm @ h @ lm @ h)) + eps)


def _cka_features(a, b, eps=0.0):
    """The feature-space formula of linear CKA (Kornblith et al. 2019, eq. 3), column-centred A, B."""
    a, b = a - a.mean(0), b - b.mean(0)
    return np.linalg.norm(b.T @ a) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b) + eps)


@pytest.mark.parametrize("n,d1,d2", [(50, 8, 12), (20, 30, 6), (12, 40, 50)])
def test_linear_cka_matches_hsic_formula(n, d1, d2):
    rng = np.random.default_rng(n)
    a = rng.normal(size=(n, d1)) + 2.0
    b = a[:, : min(d1, d2)] @ rng.normal(size=(min(d1, d2), d2)) + 0.5 * rng.normal(size=(n, d2))
    # the textbook ratio on the raw rows (genrep's linear_cka before the reference's normalisation and epsilon)
    assert linear_cka(a, b, normalize=False, eps=0.0) == pytest.approx(_cka_hsic(a, b), abs=1e-10)
    assert linear_cka(a, b, normalize=False, eps=0.0) == pytest.approx(_cka_features(a, b), abs=1e-10)
    # the default: unit rows and the reference's + 1e-6 in the denominator
    assert linear_cka(a, b) == pytest.approx(_cka_hsic(_unit(a), _unit(b), REFERENCE_EPS), abs=1e-10)
    assert linear_cka(a, b) == pytest.approx(_cka_features(_unit(a), _unit(b), REFERENCE_EPS), abs=1e-10)


def test_linear_cka_identity_and_invariances():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(60, 10))
    b = np.tanh(a @ rng.normal(size=(10, 6)))
    assert linear_cka(a, a) == pytest.approx(1.0, abs=1e-8)  # 1 less O(eps / HSIC(K, K))
    assert linear_cka(a, a, eps=0.0) == pytest.approx(1.0, abs=1e-12)
    base = linear_cka(a, b)
    assert 0.0 < base < 1.0
    assert linear_cka(a, 4.2 * b @ _random_orthogonal(rng, 6)) == pytest.approx(base, abs=1e-12)
    raw = linear_cka(a, b, normalize=False, eps=0.0)  # on raw rows eps > 0 would make the value scale-dependent
    rotated = linear_cka(a, 4.2 * b @ _random_orthogonal(rng, 6), normalize=False, eps=0.0)
    assert rotated == pytest.approx(raw, abs=1e-12)
    assert linear_cka(a, np.ones((60, 3))) == 0.0
    assert linear_cka(a, np.ones((60, 3)), eps=0.0) == 0.0


def test_normalisation_matters_on_offset_rows():
    """Raw-row CKA ignores a common offset (centring removes it); the reference's unit rows do not: the offset
    makes the rows anisotropic and changes the kernels."""
    rng = np.random.default_rng(8)
    z = rng.normal(size=(100, 4))
    a = z @ rng.normal(size=(4, 12)) + rng.normal(size=(100, 12))
    b = np.tanh(z @ rng.normal(size=(4, 9))) + 0.5 * rng.normal(size=(100, 9))
    raw = linear_cka(a, b, normalize=False)
    assert linear_cka(a + 10.0, b + 10.0, normalize=False) == pytest.approx(raw, abs=1e-10)
    assert abs(linear_cka(a + 10.0, b + 10.0) - linear_cka(a, b)) > 0.01
    assert linear_cka(a, b) == pytest.approx(linear_cka(_unit(a), _unit(b), normalize=False), abs=1e-12)


def _hsic_u_statistic(k, lm):
    """Unbiased HSIC as the U-statistic over distinct ordered index quadruples (Song et al. 2012, eq. 4 before
    the closed form): mean of k_ij l_ij + k_ij l_qr - 2 k_ij l_iq."""
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(len(k)), 4):
        total += k[i, j] * lm[i, j] + k[i, j] * lm[q, r] - 2.0 * k[i, j] * lm[i, q]
        count += 1
    return total / count


def _rbf(x, sigma):
    n = len(x)
    return np.array([[np.exp(-np.sum((x[i] - x[j]) ** 2) / (2 * sigma**2)) for j in range(n)] for i in range(n)])


@pytest.mark.parametrize("d1,d2", [(3, 2), (9, 11)])  # feature-space path and Gram path
def test_unbiased_cka_matches_u_statistic(d1, d2):
    rng = np.random.default_rng(d1)
    n = 7
    a = rng.normal(size=(n, d1)) + 1.5  # an offset: genrep centres the columns, the U-statistic does not
    b = a[:, :1] * rng.normal(size=(1, d2)) + rng.normal(size=(n, d2))
    for x, y, normalize in ((a, b, False), (_unit(a), _unit(b), True)):
        k, lm = x @ x.T, y @ y.T
        hu = _hsic_u_statistic
        for eps in (0.0, REFERENCE_EPS):
            expected = hu(k, lm) / (np.sqrt(hu(k, k) * hu(lm, lm)) + eps)
            assert unbiased_cka(a, b, normalize=normalize, eps=eps) == pytest.approx(expected, abs=1e-10)
    ka, kb = _rbf(_unit(a), 0.7), _rbf(_unit(b), 0.7)
    hu = _hsic_u_statistic
    expected = hu(ka, kb) / (np.sqrt(hu(ka, ka) * hu(kb, kb)) + REFERENCE_EPS)
    assert unbiased_cka(a, b, kernel="rbf", sigma=0.7) == pytest.approx(expected, abs=1e-10)
    h = np.eye(n) - 1.0 / n
    biased = np.trace(ka @ h @ kb @ h) / (np.sqrt(np.trace(ka @ h @ ka @ h) * np.trace(kb @ h @ kb @ h)) + 1e-6)
    assert cka(a, b, kernel="rbf", sigma=0.7) == pytest.approx(biased, abs=1e-10)


def test_unbiased_hsic_ignores_a_common_offset_of_the_features():
    """The identity genrep's centring relies on: eq.-5 HSIC of A A^T is unchanged by a + c for a constant row c."""
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(30, 5)), rng.normal(size=(30, 4))
    c = rng.normal(size=5) * 3.0
    base = unbiased_cka(a, b, normalize=False, eps=0.0)
    assert unbiased_cka(a + c, b, normalize=False, eps=0.0) == pytest.approx(base, abs=1e-12)
    k, lm = (a + c) @ (a + c).T, b @ b.T
    assert _hsic_u_statistic(k[:6, :6], lm[:6, :6]) == pytest.approx(
        _hsic_u_statistic((a @ a.T)[:6, :6], lm[:6, :6]), abs=1e-10
    )


def test_cka_family_identity_and_invariances():
    rng = np.random.default_rng(10)
    a = rng.normal(size=(80, 12)) + 0.5
    b = np.tanh(a @ rng.normal(size=(12, 7))) + 0.1 * rng.normal(size=(80, 7))
    q = _random_orthogonal(rng, 7)
    for fn in (
        linear_cka,
        unbiased_cka,
        lambda x, y: cka(x, y, kernel="rbf", sigma=0.8),
        lambda x, y: unbiased_cka(x, y, kernel="rbf", sigma=0.8),
        cknna,
        lambda x, y: cknna(x, y, unbiased=False),
    ):
        assert fn(a, a) == pytest.approx(1.0, abs=1e-4)
        base = fn(a, b)
        assert 0.0 < base < 1.0
        assert fn(a, 3.3 * b @ q) == pytest.approx(base, abs=1e-10)


def _masked_hsic_loops(k, lm, unbiased):
    """Eq. 5 (unbiased) with explicit sums, transposes as the reference writes them, or trace(K H L H)."""
    n = len(k)
    if not unbiased:
        h = np.eye(n) - np.ones((n, n)) / n
        return np.trace(k @ h @ lm @ h)
    kt, lt = k.copy(), lm.copy()
    np.fill_diagonal(kt, 0)
    np.fill_diagonal(lt, 0)
    tr = sum(kt[i, j] * lt[j, i] for i in range(n) for j in range(n))
    prod = sum(kt[i, p] * lt[p, j] for i in range(n) for j in range(n) for p in range(n))
    return (tr + kt.sum() * lt.sum() / ((n - 1) * (n - 2)) - 2 * prod / (n - 2)) / (n * (n - 3))


def _cknna_loops(a, b, k, unbiased):
    a, b = _unit(a), _unit(b)
    ka, kb = a @ a.T, b @ b.T
    n = len(a)

    def neighbours(g):
        mask = np.zeros((n, n))
        for i in range(n):
            cands = [j for j in range(n) if not (unbiased and j == i)]
            for j in sorted(cands, key=lambda j: (-g[i, j], j))[:k]:
                mask[i, j] = 1.0
        return mask

    ma, mb = neighbours(ka), neighbours(kb)
    s = lambda x, y, m: _masked_hsic_loops(m * x, m * y, unbiased)
    return s(ka, kb, ma * mb) / (np.sqrt(s(ka, ka, ma) * s(kb, kb, mb)) + REFERENCE_EPS)


@pytest.mark.parametrize("unbiased", [True, False])
def test_cknna_matches_loops(unbiased):
    rng = np.random.default_rng(11)
    a = rng.normal(size=(14, 4)) + 0.3
    b = a[:, :2] @ rng.normal(size=(2, 5)) + 0.7 * rng.normal(size=(14, 5))
    for k in (2, 4, 9):
        assert cknna(a, b, k, unbiased=unbiased) == pytest.approx(_cknna_loops(a, b, k, unbiased), abs=1e-10)


def test_cknna_full_neighbourhoods_reduce_to_cka():
    rng = np.random.default_rng(12)
    a = rng.normal(size=(40, 6)) + 1.0
    b = np.tanh(a @ rng.normal(size=(6, 8)))
    # unbiased: every other sample is a neighbour, the mask only zeroes the diagonal eq. 5 ignores anyway
    assert cknna(a, b, None) == cknna(a, b, 39)
    assert cknna(a, b, None) == pytest.approx(unbiased_cka(a, b), abs=1e-12)
    assert cknna(a, b, 40) == pytest.approx(unbiased_cka(a, b), abs=1e-12)
    # biased: k = n keeps the whole kernel; k = n - 1 drops each row's smallest entry, so it is not CKA
    assert cknna(a, b, 40, unbiased=False) == pytest.approx(linear_cka(a, b), abs=1e-12)
    assert cknna(a, b, 39, unbiased=False) != pytest.approx(linear_cka(a, b), abs=1e-6)


def test_cknna_distance_agnostic_is_mutual_knn():
    rng = np.random.default_rng(13)
    a, b = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
    b[:, :4] += a[:, :4]
    n, k = 50, 10
    expected = mutual_knn_alignment(a, b, k) * n * k / (n * k + REFERENCE_EPS)
    assert cknna(a, b, k, distance_agnostic=True) == pytest.approx(expected, abs=1e-15)


def test_alignment_argument_errors():
    a = np.random.default_rng(14).normal(size=(12, 3))
    with pytest.raises(UserError, match="k=1"):
        cknna(a, a, 1)
    with pytest.raises(UserError, match="k=13"):
        cknna(a, a, 13)
    with pytest.raises(UserError, match="integer"):
        cknna(a, a, 2.5)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="at least 4"):
        unbiased_cka(a[:3], a[:3])
    with pytest.raises(UserError, match="kernel"):
        cka(a, a, kernel="poly")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="sigma"):
        cka(a, a, kernel="rbf", sigma=0.0)
    with pytest.raises(UserError, match="eps"):
        linear_cka(a, a, eps=-1.0)
    with pytest.raises(UserError, match="paired"):
        cknna(a, a[:10])
    with pytest.raises(UserError, match="divisor"):
        anisotropy(a, divisor="all")  # type: ignore[arg-type]


def test_anisotropy_nonzero_divisor_matches_lower_triangle():
    rng = np.random.default_rng(15)
    x = np.vstack([rng.normal(size=(9, 4)), np.zeros((1, 4)), [[1, 0, 0, 0], [0, 1, 0, 0]]])
    u = np.array([r / np.linalg.norm(r) if np.linalg.norm(r) else r for r in x])
    lower = np.tril(u @ u.T, k=-1)
    assert anisotropy(x, divisor="nonzero") == pytest.approx(lower.sum() / np.count_nonzero(lower), abs=1e-12)
    y = rng.normal(size=(30, 5)) + 0.4  # no exact zeros: both divisors agree
    assert anisotropy(y, divisor="nonzero") == pytest.approx(anisotropy(y), abs=1e-12)


def test_mutual_knn_without_normalisation_uses_inner_products():
    rng = np.random.default_rng(16)
    a, b = rng.normal(size=(15, 3)), rng.normal(size=(15, 3))
    scaled = a * rng.uniform(0.2, 5.0, size=(15, 1))  # same cosines, different inner products
    assert mutual_knn_alignment(a, scaled, k=3) == 1.0
    assert mutual_knn_alignment(a, scaled, k=3, normalize=False) < 1.0

    def knn(x):
        g = x @ x.T
        return [set(sorted((j for j in range(15) if j != i), key=lambda j: (-g[i, j], j))[:3]) for i in range(15)]

    na, nb = knn(a), knn(b)
    expected = np.mean([len(na[i] & nb[i]) / 3 for i in range(15)])
    assert mutual_knn_alignment(a, b, k=3, normalize=False) == pytest.approx(expected, abs=1e-15)


def test_plot_anisotropy_png():
    png = plot_anisotropy({"base": [0.9, 0.8, 0.85], "tuned": [0.4, 0.3, 0.2]}, "anisotropy per layer")
    assert png.startswith(b"\x89PNG")
