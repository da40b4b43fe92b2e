"""The geometry of embedding spaces, the measures behind LCO-EMB's representation analysis (docs/papers.md s2.9,
"Scaling Language-Centric Omnimodal Representation Learning"; the command is :mod:`genrep.lco.analyze`): how
isotropic the embedding space of each layer is, and how well two modalities' spaces align.

- :func:`anisotropy` / :func:`anisotropy_per_layer`: the paper's anisotropy measure, the expected cosine similarity
  of two different samples' embeddings, ``1 / (n (n - 1)) * sum_{i != j} cos(e_i, e_j)``, per layer and per
  modality (the paper shows that light text-only contrastive tuning lowers it for all modalities).
- :func:`mutual_knn_alignment`: cross-modal kernel alignment by mutual k-nearest neighbours (k = 10), the fraction of
  each sample's k nearest neighbours (cosine) shared by its two representations (paired rows).
- :func:`cka` / :func:`linear_cka` / :func:`unbiased_cka`: centred kernel alignment
  ``HSIC(K, L) / (sqrt(HSIC(K, K) HSIC(L, L)) + eps)`` of the Gram matrices of the two representations, with the
  biased HSIC (the original CKA) or the unbiased HSIC of Song et al. 2012, linear or RBF kernels.
- :func:`cknna`: CKA restricted to the pairs (i, j) where j is among the k nearest neighbours of i in *both*
  representations (Huh et al. 2024, "The platonic representation hypothesis").
- :func:`plot_anisotropy`: anisotropy against layer index, one line per series.

The alignment measures follow the LCO-EMB reference's ``Analysis/kernel_alignment.py`` (itself taken from the
platonic-representation code) as its driver runs them: the rows of both matrices are scaled to unit L2 norm first
(``normalize=True``, the default), and the CKA-type ratios keep the reference's ``+ 1e-6`` in the denominator
(``eps``). Golden numbers from the reference are in ``tests/fixtures/lco_reference/`` (docs/lco.md, "Kernel
alignment", says how they were made and where float32 makes the reference itself unreliable).

numpy only, float64 throughout; inputs may be numpy arrays, anything ``np.asarray`` takes, or CPU/GPU torch tensors
(copied to the CPU).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from genrep.core.errors import UserError

__all__ = [
    "anisotropy",
    "anisotropy_per_layer",
    "cka",
    "cknna",
    "linear_cka",
    "mutual_knn_alignment",
    "plot_anisotropy",
    "unbiased_cka",
]

_NORM_EPS = 1e-12  # torch.nn.functional.normalize's floor on the norm
REFERENCE_EPS = 1e-6  # the reference's constant in every CKA-type denominator
_BLOCK = 1024  # rows per block of the n x n similarity matrix in mutual_knn_alignment and anisotropy

Kernel = Literal["linear", "rbf"]


def _as_matrix(x, name: str) -> np.ndarray:
    """A [n, d] float64 array from a numpy array, array-like or torch tensor (bfloat16 included)."""
    if hasattr(x, "detach"):
        t = x.detach().cpu()
        try:
            x = t.numpy()
        except TypeError:  # dtypes numpy lacks, e.g. bfloat16
            x = t.float().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise UserError(f"{name}: expected a 2-D array [samples, dims], got shape {tuple(arr.shape)}")
    if not np.isfinite(arr).all():
        raise UserError(f"{name}: contains NaN or inf")
    return arr


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows divided by max(||row||, 1e-12), as ``F.normalize(x, dim=-1)`` does (an all-zero row stays zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _NORM_EPS)


def _paired(a, b, fn: str, normalize: bool, min_rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    a = _as_matrix(a, "a")
    b = _as_matrix(b, "b")
    if len(a) != len(b):
        raise UserError(f"{fn}: a has {len(a)} rows but b has {len(b)}; rows must be paired")
    if len(a) < min_rows:
        raise UserError(f"{fn}: needs at least {min_rows} samples, got {len(a)}")
    if normalize:
        a, b = _unit_rows(a), _unit_rows(b)
    return a, b


def anisotropy(emb, *, divisor: Literal["pairs", "nonzero"] = "pairs") -> float:
    """Mean cosine similarity over the pairs of different rows of ``emb`` [n, d].

    ``divisor="pairs"`` (the default, the paper's definition): ``sum_{i != j} cos(e_i, e_j) / (n (n - 1))``, computed
    in O(n d) with the unit rows u_i as ``(||sum_i u_i||^2 - sum_i ||u_i||^2) / (n (n - 1))``; an all-zero row counts
    as a zero vector (cosine 0 with everything). Near 0 for an isotropic space, near 1 when all embeddings point the
    same way.

    ``divisor="nonzero"``: the reference's ``Analysis/anisotropy.py`` exactly: the sum of the strictly lower
    triangle of the cosine matrix divided by ``np.count_nonzero`` of that triangle, so pairs whose cosine is exactly
    0 (a zero row, exactly orthogonal rows) drop out of the mean instead of counting as 0. The two agree whenever no
    cosine is exactly 0, as with any real embeddings. O(n^2 d), in blocks of rows.
    """
    x = _as_matrix(emb, "emb")
    n = x.shape[0]
    if n < 2:
        raise UserError(f"anisotropy: needs at least 2 embeddings, got {n}")
    u = _unit_rows(x)
    if divisor == "pairs":
        s = u.sum(axis=0)
        return float((s @ s - np.sum(u * u)) / (n * (n - 1)))
    if divisor != "nonzero":
        raise UserError(f"anisotropy: divisor={divisor!r} must be 'pairs' or 'nonzero'")
    total, count = 0.0, 0
    for start in range(1, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        sims = u[start:stop] @ u[:stop].T
        lower = np.arange(stop)[None, :] < np.arange(start, stop)[:, None]  # j < i
        vals = sims[lower]
        total += float(vals.sum())
        count += int(np.count_nonzero(vals))
    return total / count if count else float("nan")


def anisotropy_per_layer(layers: Mapping | Sequence) -> dict | list[float]:
    """:func:`anisotropy` of each layer's embeddings: a dict {layer: emb} gives a dict with the same keys (and
    order), a list of [n, d] arrays (or one [layers, n, d] array) gives a list."""
    if isinstance(layers, Mapping):
        return {key: anisotropy(emb) for key, emb in layers.items()}
    return [anisotropy(emb) for emb in layers]


def _knn(x: np.ndarray, k: int) -> np.ndarray:
    """Indices [n, k] of each row's k most similar other rows by inner product (ties -> lower index)."""
    n = len(x)
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        sims = x[start:stop] @ x.T
        rows = np.arange(stop - start)
        sims[rows, rows + start] = -np.inf  # a sample is not its own neighbour
        out[start:stop] = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return out


def _check_int(value, fn: str, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UserError(f"{fn}: {name}={value!r} must be an integer")
    if not low <= int(value) <= high:
        raise UserError(f"{fn}: {name}={value} must be in [{low}, {high}] for these samples")
    return int(value)


def mutual_knn_alignment(a, b, k: int = 10, *, normalize: bool = True) -> float:
    """Mutual k-nearest-neighbour alignment of two representations of the same n samples (row i of ``a`` [n, d1]
    and of ``b`` [n, d2] is the same sample): the reference's ``mutual_knn`` (``Analysis/kernel_alignment.py``).

    N_a(i) = the k rows of ``a`` other than i with the highest similarity to a_i, N_b(i) likewise; the score is
    ``mean_i |N_a(i) ∩ N_b(i)| / k``, 1 for spaces with identical neighbourhoods and about k / (n - 1) for unrelated
    ones. The similarity is the inner product of the rows, after scaling them to unit norm when ``normalize`` (the
    default, as the reference's driver does: cosine similarity). Exact ties go to the lower index (the reference's
    unstable ``argsort`` leaves their order unspecified).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise UserError(f"mutual_knn_alignment: k={k!r} must be a positive integer")
    a, b = _paired(a, b, "mutual_knn_alignment", normalize, min_rows=1)
    k = int(k)
    n = len(a)
    if n <= k:
        raise UserError(f"mutual_knn_alignment: needs more than k={k} samples, got {n}")
    na = _knn(a, k)
    nb = _knn(b, k)
    shared = 0
    for start in range(0, n, _BLOCK):
        sa, sb = na[start : start + _BLOCK], nb[start : start + _BLOCK]
        shared += int(np.count_nonzero(sa[:, :, None] == sb[:, None, :]))
    return shared / (n * k)


# ---------------------------------------------------------------------------------------------------------------
# HSIC and CKA


def _hsic_biased(k: np.ndarray, lm: np.ndarray) -> float:
    """``trace(K H L H)`` with ``H = I - 1/n`` (no 1/(n-1)^2 factor, as in the reference's ``hsic_biased``), in
    O(n^2): ``K H`` subtracts each row's mean, and ``trace(X Y) = sum(X * Y^T)``. K, L need not be symmetric."""
    kh = k - k.mean(axis=1, keepdims=True)
    lh = lm - lm.mean(axis=1, keepdims=True)
    return float(np.sum(kh * lh.T))


def _hsic_unbiased(k: np.ndarray, lm: np.ndarray) -> float:
    """Song et al. 2012 (JMLR 13, eq. 5), with K~, L~ = K, L with zeroed diagonals and m = n:
    ``[tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((m-1)(m-2)) - 2 / (m-2) 1^T K~ L~ 1] / (m (m-3))``.

    As the reference's ``hsic_unbiased`` writes it: ``tr(K~ L~)`` is ``sum(K~ * L~^T)`` and ``1^T K~ L~ 1`` is
    ``sum(K~ @ L~)`` (here the column sums of K~ dotted with the row sums of L~, O(n^2)), which matters for the
    non-symmetric masked kernels of :func:`cknna`."""
    m = len(k)
    kt = k.copy()
    lt = lm.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    value = (
        np.sum(kt * lt.T)
        + kt.sum() * lt.sum() / ((m - 1) * (m - 2))
        - 2.0 * (kt.sum(axis=0) @ lt.sum(axis=1)) / (m - 2)
    )
    return float(value / (m * (m - 3)))


def _hsic_unbiased_linear(a: np.ndarray, b: np.ndarray) -> float:
    """:func:`_hsic_unbiased` of K = A A^T, L = B B^T in feature space, O(n d1 d2), for column-centred A, B (the
    unbiased HSIC does not change when a constant vector is subtracted from every row): with q_i = ||a_i||^2,
    r_i = ||b_i||^2 and zero column sums, ``tr(K~ L~) = ||A^T B||_F^2 - q.r``, ``1^T K~ 1 = -sum q``,
    ``1^T L~ 1 = -sum r`` and ``1^T K~ L~ 1 = q.r``."""
    m = len(a)
    q = np.sum(a * a, axis=1)
    r = np.sum(b * b, axis=1)
    qr = float(q @ r)
    value = (np.sum((a.T @ b) ** 2) - qr) + q.sum() * r.sum() / ((m - 1) * (m - 2)) - 2.0 * qr / (m - 2)
    return float(value / (m * (m - 3)))


def _ratio(kl: float, kk: float, ll: float, eps: float) -> float:
    """``kl / (sqrt(kk ll) + eps)``, the reference's CKA / CKNNA ratio. NaN when ``kk ll < 0`` (possible for the
    unbiased HSIC, an estimate; the reference's ``torch.sqrt`` gives NaN too); 0.0 when the denominator is exactly 0
    (``eps=0`` and a constant representation)."""
    prod = kk * ll
    if prod < 0:
        return float("nan")
    den = math.sqrt(prod) + eps
    if den == 0:
        return 0.0
    return float(kl / den)


def _gram(x: np.ndarray, kernel: str, sigma: float) -> np.ndarray:
    if kernel == "linear":
        return x @ x.T
    sq = np.sum(x * x, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
    np.fill_diagonal(d2, 0.0)
    return np.exp(-d2 / (2.0 * sigma**2))


def _check_eps(eps: float, fn: str) -> float:
    if (
        isinstance(eps, bool)
        or not isinstance(eps, (int, float, np.floating))
        or not eps >= 0
        or not math.isfinite(eps)
    ):
        raise UserError(f"{fn}: eps={eps!r} must be a finite number >= 0")
    return float(eps)


def cka(
    a,
    b,
    *,
    kernel: Kernel = "linear",
    sigma: float = 1.0,
    unbiased: bool = False,
    normalize: bool = True,
    eps: float = REFERENCE_EPS,
) -> float:
    """Centred kernel alignment of two representations of the same n samples, ``a`` [n, d1] and ``b`` [n, d2]: the
    reference's ``AlignmentMetrics.cka`` (``Analysis/kernel_alignment.py``).

    ``CKA = HSIC(K, L) / (sqrt(HSIC(K, K) HSIC(L, L)) + eps)`` with the Gram matrices of the rows: ``kernel="linear"``
    (the reference's ``'ip'``) ``K = A A^T``, ``L = B B^T``; ``kernel="rbf"`` ``K_ij = exp(-||a_i - a_j||^2 /
    (2 sigma^2))``. ``unbiased=False``: the biased HSIC ``trace(K H L H)``, ``H = I - 1/n`` (Kornblith et al. 2019);
    ``unbiased=True``: the unbiased HSIC of Song et al. 2012, eq. 5 (needs n >= 4; can be negative, and the ratio is
    NaN when ``HSIC(K, K) HSIC(L, L) < 0``).

    ``normalize`` (default True) scales every row to unit L2 norm first, as the reference's driver does before any
    metric; ``eps`` defaults to the reference's 1e-6 (``eps=0`` gives the textbook ratio; then a constant
    representation gives 0.0). The reference's constant is not negligible for the unbiased HSIC, which is divided by
    n (n - 3): on unit rows HSIC(K, K) is about ||Cov||_F^2, 1/d for isotropic rows.

    The linear kernels are evaluated in feature space (O(n d1 d2)) when both dimensions are below n and with the
    n x n Gram matrices otherwise; the results are equal. 1 (less O(eps)) for identical spaces, invariant to
    orthogonal transforms and isotropic scaling of either (with ``normalize=False`` and ``eps > 0`` a scaling moves
    the value by O(eps / HSIC)).
    """
    fn = "unbiased_cka" if unbiased else "cka"
    if kernel not in ("linear", "rbf"):
        raise UserError(f"{fn}: kernel={kernel!r} must be 'linear' or 'rbf'")
    if kernel == "rbf" and not (isinstance(sigma, (int, float, np.floating)) and sigma > 0 and math.isfinite(sigma)):
        raise UserError(f"{fn}: sigma={sigma!r} must be a positive number")
    eps = _check_eps(eps, fn)
    a, b = _paired(a, b, fn, normalize, min_rows=4 if unbiased else 2)
    n = len(a)
    feature_space = kernel == "linear" and max(a.shape[1], b.shape[1]) < n
    if kernel == "linear":  # both HSICs are unchanged by centring the columns; it keeps float64 exact on offset rows
        a = a - a.mean(axis=0)
        b = b - b.mean(axis=0)
    if feature_space and not unbiased:
        kl = float(np.sum((b.T @ a) ** 2))
        kk = float(np.sum((a.T @ a) ** 2))
        ll = float(np.sum((b.T @ b) ** 2))
    elif feature_space:
        kl, kk, ll = _hsic_unbiased_linear(a, b), _hsic_unbiased_linear(a, a), _hsic_unbiased_linear(b, b)
    else:
        k, lm = _gram(a, kernel, sigma), _gram(b, kernel, sigma)
        hsic = _hsic_unbiased if unbiased else _hsic_biased
        kl, kk, ll = hsic(k, lm), hsic(k, k), hsic(lm, lm)
    return _ratio(kl, kk, ll, eps)


def linear_cka(a, b, *, normalize: bool = True, eps: float = REFERENCE_EPS) -> float:
    """Linear CKA with the biased HSIC (Kornblith et al. 2019), the reference's ``cka`` with ``kernel_metric='ip'``
    (``Analysis/kernel_alignment.py``): ``trace(K H L H) / (sqrt(trace(K H K H) trace(L H L H)) + eps)`` with
    ``K = A A^T``, ``L = B B^T``, ``H = I - 1/n``; equal to ``||B_c^T A_c||_F^2 / (||A_c^T A_c||_F ||B_c^T B_c||_F +
    eps)`` with column-centred A, B. Rows are scaled to unit norm first unless ``normalize=False``; ``eps`` is the
    reference's 1e-6 by default. See :func:`cka`."""
    return cka(a, b, kernel="linear", unbiased=False, normalize=normalize, eps=eps)


def unbiased_cka(
    a,
    b,
    *,
    kernel: Kernel = "linear",
    sigma: float = 1.0,
    normalize: bool = True,
    eps: float = REFERENCE_EPS,
) -> float:
    """CKA with the unbiased HSIC of Song et al. 2012, eq. 5 (the reference's ``unbiased_cka``,
    ``Analysis/kernel_alignment.py``): ``HSIC_1(K, L) / (sqrt(HSIC_1(K, K) HSIC_1(L, L)) + eps)``, with K~, L~ the
    Gram matrices with zeroed diagonals and ``HSIC_1(K, L) = [tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2))
    - 2/(n-2) 1^T K~ L~ 1] / (n (n-3))``. Needs n >= 4. See :func:`cka` for the options."""
    return cka(a, b, kernel=kernel, sigma=sigma, unbiased=True, normalize=normalize, eps=eps)


def _topk_mask(k: np.ndarray, topk: int, exclude_self: bool) -> np.ndarray:
    """[n, n] 0/1 mask of each row's ``topk`` largest entries (ties -> lower index); the diagonal is never picked
    before every off-diagonal entry when ``exclude_self`` (it is set to -inf, as in the reference)."""
    scores = k.copy()
    if exclude_self:
        np.fill_diagonal(scores, -np.inf)
    idx = np.argsort(-scores, axis=1, kind="stable")[:, :topk]
    mask = np.zeros_like(k)
    np.put_along_axis(mask, idx, 1.0, axis=1)
    return mask


def cknna(
    a,
    b,
    k: int | None = 10,
    *,
    unbiased: bool = True,
    distance_agnostic: bool = False,
    normalize: bool = True,
    eps: float = REFERENCE_EPS,
) -> float:
    """Centred kernel nearest-neighbour alignment (CKNNA; Huh et al. 2024), the reference's ``cknna``
    (``Analysis/kernel_alignment.py``): CKA of the linear kernels ``K = A A^T``, ``L = B B^T`` restricted to mutual
    k-nearest neighbours.

    M_K[i, j] = 1 when j is among the k largest entries of row i of K (``unbiased``: K with its diagonal at -inf,
    so a sample is not its own neighbour; biased: the diagonal competes like any other entry), M_L likewise, and
    ``sim(X, Y, M) = HSIC(M * X, M * Y)`` with the unbiased (Song et al. 2012, eq. 5) or the biased HSIC; the score
    is ``sim(K, L, M_K M_L) / (sqrt(sim(K, K, M_K) sim(L, L, M_L)) + eps)``. ``distance_agnostic=True`` replaces
    ``sim`` by the number of pairs in the mask, so that the score is ``|M_K ∩ M_L| / (sqrt(|M_K| |M_L|) + eps)``,
    the mutual k-NN fraction (less O(eps)): the reference returns the mask matrix itself there, on which its
    ``.item()`` fails for any n > 1, so that branch has no reference numbers.

    ``k=None`` means k = n - 1 (every other sample; with ``unbiased`` the score is then :func:`unbiased_cka`
    exactly). The reference tests ``topk < 2`` before it replaces None, so None raises a TypeError there; genrep
    does what the replacement intends. k must be in [2, n]. Ties between equal kernel entries go to the lower
    index (the reference's ``torch.topk`` leaves them unspecified). Rows are scaled to unit norm first unless
    ``normalize=False``; ``eps`` is the reference's 1e-6. O(n^2) memory.
    """
    eps = _check_eps(eps, "cknna")
    a, b = _paired(a, b, "cknna", normalize, min_rows=4 if unbiased and not distance_agnostic else 2)
    n = len(a)
    topk = _check_int(n - 1 if k is None else k, "cknna", "k", 2, n)
    gk, gl = a @ a.T, b @ b.T
    mk = _topk_mask(gk, topk, exclude_self=unbiased)
    ml = _topk_mask(gl, topk, exclude_self=unbiased)
    hsic = _hsic_unbiased if unbiased else _hsic_biased

    def sim(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> float:
        if distance_agnostic:
            return float(mask.sum())
        return hsic(mask * x, mask * y)

    return _ratio(sim(gk, gl, mk * ml), sim(gk, gk, mk), sim(gl, gl, ml), eps)


def plot_anisotropy(per_layer: Mapping[str, Sequence[float]], title: str) -> bytes:
    """Line plot of anisotropy (y) against layer index (x), one line per series (e.g. "base" and "tuned", or one
    per modality); returns PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genrep.core.images import figure_png

    if not per_layer:
        raise UserError("plot_anisotropy: no series to plot")
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, values in per_layer.items():
        values = [float(v) for v in values]
        ax.plot(range(len(values)), values, marker="o", markersize=3, label=str(name))
    ax.set_xlabel("layer")
    ax.set_ylabel("anisotropy (mean pairwise cosine)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return figure_png(fig)
