"""genrep.rae.metrics: pixel metrics vs scikit-image, Frechet distance, EffNet features, P/R."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from genrep.core import assets
from genrep.rae import metrics
from genrep.rae.metrics import (
    EffNetFeatures,
    fd_effnet,
    fid_inception,
    frechet_distance,
    gaussian_stats,
    metric_signature,
    precision_recall_knn,
    psnr,
    ssim,
)

# Our SSIM is the same computation as skimage's in float64; observed differences are ~1e-16.
SSIM_TOL = 1e-10
PSNR_TOL = 1e-9


def sk_ssim(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> float:
    """skimage SSIM of one [C, H, W] image pair with the settings metrics.ssim promises."""
    return structural_similarity(
        x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=data_range, channel_axis=0
    )


def distorted_pairs(clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """[B, C, H, W] in [0, 1] -> (x, y) with noise, blur, a brightness shift and a copy."""
    noisy = np.clip(clean + rng.normal(0, 0.08, clean.shape), 0, 1)
    blurred = ndimage.gaussian_filter(clean, sigma=(0, 0, 1.2, 1.2))
    shifted = np.clip(clean * 0.8 + 0.15, 0, 1)
    x = np.concatenate([clean, clean, clean, clean])
    y = np.concatenate([noisy, blurred, shifted, clean])
    return x, y


def random_crops(img: np.ndarray, size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n random size x size crops of an [H, W] or [H, W, C] image, as [n, C, size, size] in [0, 1]."""
    img = img.astype(np.float64) / 255.0
    if img.ndim == 2:
        img = img[..., None]
    h, w = img.shape[:2]
    out = []
    for _ in range(n):
        i, j = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        out.append(img[i : i + size, j : j + size].transpose(2, 0, 1))
    return np.stack(out)


# ----------------------------------------------------------------------------------- PSNR


def test_psnr_constant_offset_hand_computed():
    x = torch.full((2, 3, 8, 8), 0.5)
    y = x + 0.1  # MSE = 0.01 everywhere -> 10 log10(1 / 0.01) = 20 dB
    np.testing.assert_allclose(psnr(x, y).numpy(), [20.0, 20.0], atol=1e-5)
    # data_range 255 with an offset of 5 grey levels: 10 log10(255^2 / 25)
    xu, yu = torch.full((1, 1, 4, 4), 100.0), torch.full((1, 1, 4, 4), 105.0)
    assert psnr(xu, yu, data_range=255.0).item() == pytest.approx(10 * np.log10(255**2 / 25), abs=1e-9)


def test_psnr_matches_skimage_and_is_per_image():
    rng = np.random.default_rng(0)
    x = rng.random((4, 3, 16, 20))
    y = np.clip(x + rng.normal(0, rng.uniform(0.01, 0.2, (4, 1, 1, 1)), x.shape), 0, 1)
    ours = psnr(torch.from_numpy(x), torch.from_numpy(y))
    assert ours.shape == (4,) and ours.dtype == torch.float64
    ref = [peak_signal_noise_ratio(x[i], y[i], data_range=1.0) for i in range(4)]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=PSNR_TOL)
    assert len(set(np.round(ref, 3))) == 4  # the noise levels differ, so must the values


def test_psnr_identical_is_inf():
    x = torch.rand(3, 1, 8, 8)
    y = x.clone()
    y[1] += 0.01
    out = psnr(x, y)
    assert torch.isinf(out[0]) and torch.isinf(out[2]) and torch.isfinite(out[1])


def test_pixel_metrics_reject_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        psnr(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 9))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        ssim(torch.rand(1, 16, 16), torch.rand(1, 16, 16))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(1, 1, 10, 30), torch.rand(1, 1, 10, 30))


# ----------------------------------------------------------------------------------- SSIM


def _check_ssim_against_skimage(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    ours = ssim(torch.from_numpy(x), torch.from_numpy(y), data_range=data_range)
    assert ours.shape == (len(x),)
    ref = np.array([sk_ssim(x[i], y[i], data_range) for i in range(len(x))])
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=SSIM_TOL)
    return ref


def test_ssim_matches_skimage_random_images():
    rng = np.random.default_rng(1)
    clean = rng.random((2, 3, 33, 41))
    x, y = distorted_pairs(clean, rng)
    ref = _check_ssim_against_skimage(x, y)
    n = len(clean)  # distorted_pairs puts the undistorted copies last
    assert np.allclose(ref[-n:], 1.0) and ref[:-n].max() < 0.99


def test_ssim_matches_skimage_natural_grey_and_rgb():
    rng = np.random.default_rng(2)
    grey = random_crops(skdata.camera(), 64, 3, rng)  # [3, 1, 64, 64]
    rgb = random_crops(skdata.chelsea(), 48, 3, rng)  # [3, 3, 48, 48]
    for clean in (grey, rgb):
        x, y = distorted_pairs(clean, rng)
        ref = _check_ssim_against_skimage(x, y)
        n = len(clean)
        assert np.all(ref[:-n] < 0.999) and np.allclose(ref[-n:], 1.0)


def test_ssim_matches_skimage_28x28_and_uint8_range():
    rng = np.random.default_rng(3)
    small = random_crops(skdata.camera(), 28, 4, rng)
    x, y = distorted_pairs(small, rng)
    _check_ssim_against_skimage(x, y)
    # the same images on a 0..255 scale with data_range=255 give the same SSIM
    x255, y255 = np.round(x * 255), np.round(y * 255)
    ref = _check_ssim_against_skimage(x255, y255, data_range=255.0)
    assert np.all(np.isfinite(ref))


def test_ssim_identical_is_one():
    x = torch.rand(2, 3, 28, 28)
    torch.testing.assert_close(ssim(x, x.clone()), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)


# ------------------------------------------------------------------------- Frechet distance


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_oracle(mu1, s1, mu2, s2) -> float:
    """FD via the symmetric form Tr((S1^1/2 S2 S1^1/2)^1/2), independent of sqrtm(S1 S2)."""
    r1 = _psd_sqrt(s1)
    ev = np.linalg.eigvalsh(r1 @ s2 @ r1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(ev, 0, None)).sum())


def test_gaussian_stats_is_mean_and_unbiased_cov():
    f = np.random.default_rng(4).normal(size=(50, 6))
    mu, cov = gaussian_stats(f)
    np.testing.assert_allclose(mu, f.mean(0))
    np.testing.assert_allclose(cov, np.cov(f, rowvar=False))
    np.testing.assert_allclose(cov, (f - mu).T @ (f - mu) / 49)
    with pytest.raises(ValueError):
        gaussian_stats(f[:1])


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(5)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    v1, v2 = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)
    # 1-d scalars work too: (1 - 3)^2 + (4 + 1 - 2 * 2) = 5
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]])) == pytest.approx(
        5.0
    )


def test_frechet_distance_identical_zero_and_symmetric():
    rng = np.random.default_rng(6)
    a = rng.normal(size=(400, 32))
    b = rng.normal(size=(400, 32)) @ rng.normal(size=(32, 32)) * 0.3 + 0.5
    (mu1, s1), (mu2, s2) = gaussian_stats(a), gaussian_stats(b)
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-9
    d12, d21 = frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu2, s2, mu1, s1)
    assert d12 > 1.0
    assert d12 == pytest.approx(d21, rel=1e-9)
    assert d12 == pytest.approx(frechet_oracle(mu1, s1, mu2, s2), rel=1e-9)


def test_frechet_distance_singular_covariances():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(10, 64)), rng.normal(size=(12, 64)) + 0.3  # fewer samples than dims
    (mu1, s1), (mu2, s2) = gaussian_stats(a), gaussian_stats(b)
    assert np.linalg.matrix_rank(s1) < 64
    d = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(d) and d > 0
    assert d == pytest.approx(frechet_oracle(mu1, s1, mu2, s2), rel=1e-6)
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-6 * np.trace(s1)


@pytest.mark.parametrize("n", [40, 600])  # singular (n < D) and full-rank covariances
def test_frechet_distance_eigh_method_matches_sqrtm(n):
    rng = np.random.default_rng(n)
    a = rng.normal(size=(n, 256))
    b = rng.normal(size=(n, 256)) * rng.uniform(0.5, 2.0, 256) + 0.1
    (mu1, s1), (mu2, s2) = gaussian_stats(a), gaussian_stats(b)
    d_sqrtm = frechet_distance(mu1, s1, mu2, s2)
    d_eigh = frechet_distance(mu1, s1, mu2, s2, method="eigh")
    # singular: sqrt of the ~0 eigenvalues amplifies rounding, the two agree to ~1e-7 relative
    assert d_eigh == pytest.approx(d_sqrtm, rel=1e-6 if n < 256 else 1e-9)
    assert abs(frechet_distance(mu1, s1, mu1, s1, method="eigh")) < 1e-12 * np.trace(s1)
    with pytest.raises(ValueError, match="method"):
        frechet_distance(mu1, s1, mu2, s2, method="svd")


def test_frechet_distance_eps_fallback_and_imaginary_check(monkeypatch):
    rng = np.random.default_rng(8)
    (mu1, s1), (mu2, s2) = gaussian_stats(rng.normal(size=(40, 8))), gaussian_stats(rng.normal(size=(40, 8)))
    expected = frechet_distance(mu1, s1, mu2, s2)
    real_sqrtm = metrics.linalg.sqrtm
    calls = []

    def nan_first(m):  # a singular product whose sqrtm blows up: the eps * I retry must rescue it
        calls.append(m)
        return np.full_like(m, np.nan) if len(calls) == 1 else real_sqrtm(m)

    monkeypatch.setattr(metrics.linalg, "sqrtm", nan_first)
    assert frechet_distance(mu1, s1, mu2, s2, eps=1e-6) == pytest.approx(expected, rel=1e-5)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], (s1 + 1e-6 * np.eye(8)) @ (s2 + 1e-6 * np.eye(8)))

    monkeypatch.setattr(metrics.linalg, "sqrtm", lambda m: real_sqrtm(m) + 1e-9j)  # negligible: dropped
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    monkeypatch.setattr(metrics.linalg, "sqrtm", lambda m: real_sqrtm(m) + 0.5j)  # large: an error
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(mu1, s1, mu2, s2)


# ------------------------------------------------------------------ EffNet feature space

needs_effnet = pytest.mark.skipif(not assets.get("effnet-lite0").available(), reason="effnet-lite0 not installed")


@pytest.fixture(scope="module")
def effnet():
    return EffNetFeatures(batch_size=16)


@pytest.fixture(scope="module")
def camera_crops() -> np.ndarray:
    """24 natural grey 28x28 uint8 images (downsampled crops of skimage's camera)."""
    rng = np.random.default_rng(9)
    small = skdata.camera()[::2, ::2]
    return (random_crops(small, 28, 24, rng)[:, 0] * 255).round().astype(np.uint8)


class MemoFeatures:
    """EffNetFeatures that computes each distinct image set once (keeps the test fast on CPU)."""

    def __init__(self, features: EffNetFeatures):
        self.features, self.cache, self.calls = features, {}, 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        key = images.tobytes()
        if key not in self.cache:
            self.cache[key] = self.features(images)
        return self.cache[key]


@needs_effnet
def test_effnet_features_shapes_and_layouts(effnet, camera_crops):
    grey = effnet(camera_crops[:3])  # uint8 [N, 28, 28]
    assert grey.shape == (3, 1280) and grey.dtype == np.float64 and np.all(np.isfinite(grey))
    # the same images as float [N, 3, H, W] (grey replicated), [N, 1, H, W] and uint8 [N, H, W, 3]
    as_float = torch.from_numpy(camera_crops[:3]).float().div(255)
    np.testing.assert_allclose(effnet(as_float[:, None].expand(-1, 3, -1, -1)), grey, atol=1e-5)
    np.testing.assert_allclose(effnet(as_float[:, None]), grey, atol=1e-5)
    np.testing.assert_allclose(effnet(np.repeat(camera_crops[:3, :, :, None], 3, axis=-1)), grey, atol=1e-5)
    rgb = effnet(torch.rand(2, 3, 40, 50))
    assert rgb.shape == (2, 1280) and rgb.dtype == np.float64
    with pytest.raises(ValueError):
        effnet(torch.rand(2, 4, 28, 28))


@needs_effnet
def test_effnet_features_deterministic_and_batch_independent(effnet, camera_crops):
    small_batches = EffNetFeatures(batch_size=3)
    a = small_batches(camera_crops[:4])  # batches of 3 + 1
    np.testing.assert_array_equal(a, small_batches(camera_crops[:4]))
    np.testing.assert_allclose(a, effnet(camera_crops[:4]), atol=1e-4)  # one batch of 4
    assert np.abs(a[0] - a[1]).max() > 1e-2  # different images -> different features


@needs_effnet
def test_fd_effnet_grows_with_noise(effnet, camera_crops):
    rng = np.random.default_rng(10)

    def noised(sigma: float) -> np.ndarray:
        x = camera_crops.astype(np.float64) + rng.normal(0, sigma * 255, camera_crops.shape)
        return np.clip(x, 0, 255).round().astype(np.uint8)

    # method="eigh": the same distance as the default sqrtm (test above) without 3 x 1280-d sqrtm,
    # which take 5-30 s each on a 2-core CPU
    memo = MemoFeatures(effnet)
    self_fd = fd_effnet(camera_crops, camera_crops, features=memo, method="eigh")
    light = fd_effnet(camera_crops, noised(0.15), features=memo, method="eigh")
    heavy = fd_effnet(camera_crops, noised(0.5), features=memo, method="eigh")
    assert memo.calls == 6 and len(memo.cache) == 3
    scale = np.trace(gaussian_stats(memo(camera_crops))[1])  # total feature variance of the set
    assert abs(self_fd) < 1e-9 * scale
    assert light > 0.05 * scale
    assert heavy > 1.2 * light


# --------------------------------------------------------------------- precision / recall


def blobs(centers: np.ndarray, n: int, rng: np.random.Generator, spread: float = 1.0) -> np.ndarray:
    return np.concatenate([c + spread * rng.normal(size=(n, centers.shape[1])) for c in centers]).astype(np.float32)


def test_precision_recall_identical_and_disjoint():
    rng = np.random.default_rng(11)
    centers = rng.normal(size=(3, 4)) * 20
    real = blobs(centers, 100, rng)
    out = precision_recall_knn(real, real.copy())
    assert out["precision"] == 1.0 and out["recall"] == 1.0
    assert out["k"] == 3 and out["n_real"] == 300 and out["n_fake"] == 300
    far = blobs(centers + 1000.0, 100, rng)
    out = precision_recall_knn(real, far)
    assert out["precision"] == 0.0 and out["recall"] == 0.0


def test_precision_recall_half_the_modes():
    rng = np.random.default_rng(12)
    centers = np.eye(4) * 50.0  # four well-separated modes in 4-d
    real = blobs(centers, 300, rng)
    fake = blobs(centers[:2], 300, rng)  # fresh samples from two of the four modes
    out = precision_recall_knn(torch.from_numpy(real), torch.from_numpy(fake), k=3)
    # k=3 balls around 300 samples per mode miss a few fresh samples of the same mode in 4-d
    assert out["precision"] > 0.9
    assert 0.45 < out["recall"] <= 0.5
    # chunking changes nothing
    small = precision_recall_knn(real, fake, k=3, chunk_size=37)
    assert small["precision"] == out["precision"] and small["recall"] == out["recall"]
    with pytest.raises(ValueError):
        precision_recall_knn(real[:3], fake, k=3)


def test_precision_recall_10k_by_10k_in_chunks():
    rng = np.random.default_rng(13)
    real = rng.normal(size=(10_000, 8)).astype(np.float32)
    fake = (rng.normal(size=(10_000, 8)) * 0.5).astype(np.float32)  # a narrower distribution
    out = precision_recall_knn(real, fake, k=3, chunk_size=2048)
    assert out["precision"] > 0.9 and out["recall"] < out["precision"]


# ---------------------------------------------------------------- FID and self-description


def test_fid_inception_unavailable_here():
    imgs = np.zeros((4, 28, 28), dtype=np.uint8)
    out = fid_inception(imgs, imgs)
    assert isinstance(out, dict)
    try:
        import torch_fidelity  # noqa: F401

        have_fidelity = True
    except ImportError:
        have_fidelity = False
    if have_fidelity and metrics._inception_weights_on_disk() is not None:
        assert isinstance(out["fid"], float)
    else:
        assert out["fid"] is None and out["status"].startswith("unavailable: ")


def test_fid_inception_never_downloads(monkeypatch, tmp_path):
    """With torch-fidelity importable but no weights on disk it must not call into it at all."""
    calls = []
    fake = types.ModuleType("torch_fidelity")
    fake.calculate_metrics = lambda **kw: calls.append(kw) or {"frechet_inception_distance": 1.5}
    monkeypatch.setitem(sys.modules, "torch_fidelity", fake)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("GENREP_INCEPTION_WEIGHTS_DIR", raising=False)
    imgs = np.zeros((2, 28, 28), dtype=np.uint8)
    out = fid_inception(imgs, imgs)
    assert out["fid"] is None and "not found" in out["status"] and calls == []
    # weights present -> torch-fidelity gets the local path and uint8 [3, H, W] images
    weights = tmp_path / "hub" / "checkpoints" / metrics.INCEPTION_WEIGHT_FILES[1]
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"")
    out = fid_inception(imgs, imgs)
    assert out == {"fid": 1.5, "status": "ok", "weights": str(weights)}
    (kw,) = calls
    assert kw["feature_extractor_weights_path"] == str(weights) and kw["fid"] is True
    sample = kw["input1"][0]
    assert sample.dtype == torch.uint8 and sample.shape == (3, 28, 28)


def test_metric_signature_describes_the_space():
    sig = metric_signature()
    assert sig["feature_space"] == "effnet-lite0 pooled head, 224px, bilinear antialias"
    assert sig["feature_dim"] == 1280 and sig["fd_metric"] == "fd_effnet"
    assert EffNetFeatures.signature == sig["feature_space"]
    # the offline distance is never called FID in the public names
    assert not any("fid" in name for name in metrics.__all__ if name != "fid_inception")
