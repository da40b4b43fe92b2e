"""The geometry of embedding spaces, the measures behind LCO-EMB's representation analysis (docs/papers.md s2.9,
"Scaling Language-Centric Omnimodal Representation Learning"; the command is :mod:`genrep.lco.analyze`): how
isotropic the embedding space of each layer is, and how well two modalities' spaces align.

- :func:`anisotropy` / :func:`anisotropy_per_layer`: the paper's anisotropy measure, the expected cosine similarity
  of two different samples' embeddings, ``1 / (n (n - 1)) * sum_{i != j} cos(e_i, e_j)``, per layer and per
  modality (the paper shows that light text-only contrastive tuning lowers it for all modalities).
- :func:`mutual_knn_alignment`: cross-modal kernel alignment by mutual k-nearest neighbours (k = 10), the fraction of
  each sample's k nearest neighbours (cosine) shared by its two representations (paired rows).
- :func:`linear_cka`: linear centred kernel alignment, ``||B_c^T A_c||_F^2 / (||A_c^T A_c||_F ||B_c^T B_c||_F)``
  with column-centred A, B (equal to HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) for the linear kernels).
- :func:`plot_anisotropy`: anisotropy against layer index, one line per series.

numpy only; inputs may be numpy arrays, anything ``np.asarray`` takes, or CPU/GPU torch tensors (copied to the CPU).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from genrep.core.errors import UserError

__all__ = ["anisotropy", "anisotropy_per_layer", "linear_cka", "mutual_knn_alignment", "plot_anisotropy"]

_EPS = 1e-12
_BLOCK = 1024  # rows per block of the n x n similarity matrix in mutual_knn_alignment


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
    """Rows scaled to unit L2 norm; all-zero rows stay zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norms > _EPS, x / np.maximum(norms, _EPS), 0.0)


def anisotropy(emb) -> float:
    """Mean cosine similarity over all ordered pairs (i, j), i != j, of the rows of ``emb`` [n, d].

    Computed in O(n d) with the unit rows u_i: ``(||sum_i u_i||^2 - sum_i ||u_i||^2) / (n (n - 1))``. An all-zero
    row counts as a zero vector (cosine 0 with everything). Near 0 for an isotropic space, near 1 when all
    embeddings point the same way.
    """
    x = _as_matrix(emb, "emb")
    n = x.shape[0]
    if n < 2:
        raise UserError(f"anisotropy: needs at least 2 embeddings, got {n}")
    u = _unit_rows(x)
    s = u.sum(axis=0)
    return float((s @ s - np.sum(u * u)) / (n * (n - 1)))


def anisotropy_per_layer(layers: Mapping | Sequence) -> dict | list[float]:
    """:func:`anisotropy` of each layer's embeddings: a dict {layer: emb} gives a dict with the same keys (and
    order), a list of [n, d] arrays (or one [layers, n, d] array) gives a list."""
    if isinstance(layers, Mapping):
        return {key: anisotropy(emb) for key, emb in layers.items()}
    return [anisotropy(emb) for emb in layers]


def _knn(x: np.ndarray, k: int) -> np.ndarray:
    """Indices [n, k] of each row's k most cosine-similar other rows (ties -> lower index)."""
    u = _unit_rows(x)
    n = len(u)
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        sims = u[start:stop] @ u.T
        rows = np.arange(stop - start)
        sims[rows, rows + start] = -np.inf  # a sample is not its own neighbour
        out[start:stop] = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return out


def mutual_knn_alignment(a, b, k: int = 10) -> float:
    """Mutual k-nearest-neighbour alignment of two representations of the same n samples (row i of ``a`` [n, d1]
    and of ``b`` [n, d2] is the same sample).

    N_a(i) = the k rows of ``a`` other than i with the highest cosine similarity to a_i (ties -> lower index), N_b(i)
    likewise; the score is ``mean_i |N_a(i) ∩ N_b(i)| / k``, 1 for spaces with identical neighbourhoods and about
    k / (n - 1) for unrelated ones.
    """
    a = _as_matrix(a, "a")
    b = _as_matrix(b, "b")
    if len(a) != len(b):
        raise UserError(f"mutual_knn_alignment: a has {len(a)} rows but b has {len(b)}; rows must be paired")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise UserError(f"mutual_knn_alignment: k={k!r} must be a positive integer")
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


def linear_cka(a, b) -> float:
    """Linear CKA between two representations of the same n samples, ``a`` [n, d1] and ``b`` [n, d2].

    With column-centred A, B: ``||B^T A||_F^2 / (||A^T A||_F ||B^T B||_F)``, computed in feature space when both
    dimensions are below n and with the n x n Gram matrices otherwise (the two are equal). 1 for identical spaces,
    invariant to orthogonal transforms and isotropic scaling of either; 0.0 when a representation is constant.
    """
    a = _as_matrix(a, "a")
    b = _as_matrix(b, "b")
    if len(a) != len(b):
        raise UserError(f"linear_cka: a has {len(a)} rows but b has {len(b)}; rows must be paired")
    if len(a) < 2:
        raise UserError(f"linear_cka: needs at least 2 samples, got {len(a)}")
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    n = len(a)
    if max(a.shape[1], b.shape[1]) < n:
        num = np.sum((b.T @ a) ** 2)
        den = np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)
    else:
        ka = a @ a.T
        kb = b @ b.T
        num = np.sum(ka * kb)
        den = np.linalg.norm(ka) * np.linalg.norm(kb)
    if den == 0:
        return 0.0
    return float(num / den)


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
