"""``genrep rae eval``: score generated images against a real data set.

- ``fd_effnet``: Frechet distance of pooled EfficientNet-Lite0 features (offline; *not* FID);
- ``precision`` / ``recall``: k-NN manifold estimates (Kynkaanniemi et al. 2019) in that space;
- ``fid``: Inception FID through torch-fidelity when its weights are on disk, else ``None``;
- ``class_accuracy``: the share of generated images that a classifier trained on real encoder
  features (multinomial logistic regression on the same pooled features) assigns to the class
  they were generated for; ``classifier_real_accuracy`` is that classifier on real test images.

Features of the real images are the same for every evaluation against a data set, so they are
cached (``$GENREP_CACHE/rae_eval/``, keyed by data set, split, resolution, count and feature space);
``--set cache_real=false`` recomputes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from genrep.core.config import Count
from genrep.core.errors import UserError
from genrep.core.rundir import RunDir, atomic_write_bytes
from genrep.core.runtime import pick_device
from genrep.rae import metrics as M
from genrep.rae.data import load_images
from genrep.rae.latents import as_numpy_images


@dataclass
class EvalConfig:
    """``genrep rae eval``."""

    samples: Optional[Path] = None  # a sample --out directory (samples.npz) or the .npz file
    dataset: str = "fashion-mnist"
    split: str = "test"
    real_limit: Count = 1000  # real images for FD / precision / recall
    classifier_train: Count = 2000  # real training images for the class-accuracy classifier
    k: Count = 3
    cache_real: bool = True  # reuse the features of the real images across evaluations
    device: str = "auto"


def _real_images(dataset: str, split: str, size: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    ds = load_images(dataset, split, size, limit)
    xs, ys = [], []
    for i in range(len(ds)):
        item = ds[i]
        if item is not None:
            xs.append(item[0])
            ys.append(item[1])
    if not xs:
        raise UserError(f"eval: no readable images in {dataset} ({split})")
    return as_numpy_images(torch.stack(xs)), np.asarray(ys)


def fit_linear_classifier(
    features: np.ndarray, labels: np.ndarray, num_classes: int, steps: int = 300, weight_decay: float = 1e-4
) -> torch.nn.Linear:
    """Multinomial logistic regression (full-batch L-BFGS) on standardised features."""
    x = torch.from_numpy(features).float()
    y = torch.from_numpy(labels).long()
    mean, std = x.mean(0), x.std(0) + 1e-6
    clf = torch.nn.Linear(x.shape[1], num_classes)
    opt = torch.optim.LBFGS(clf.parameters(), lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")
    xn = (x - mean) / std

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(clf(xn), y) + weight_decay * clf.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():  # fold the standardisation into the layer
        clf.weight.div_(std)
        clf.bias.sub_((clf.weight * mean).sum(1))
    return clf


def _real_features(
    features: "M.EffNetFeatures", dataset: str, split: str, size: int, limit: int, use_cache: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) of the first ``limit`` real images, from the cache when it has them."""
    import hashlib
    import json

    from genrep.core.cache import cache_dir

    key = json.dumps(
        {
            "dataset": str(Path(dataset).resolve()) if Path(dataset).exists() else dataset,
            "split": split,
            "size": size,
            "limit": limit,
            "features": features.signature,
        },
        sort_keys=True,
    )
    path = cache_dir("rae_eval") / f"real_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if use_cache and path.is_file():
        with np.load(path) as data:
            return data["features"], data["labels"]
    images, labels = _real_images(dataset, split, size, limit)
    feats = features(images)
    if use_cache:
        import io

        buf = io.BytesIO()
        np.savez(buf, features=feats, labels=labels, key=np.array(key))
        atomic_write_bytes(path, buf.getvalue())
    return feats, labels


def evaluate(cfg: EvalConfig, out: str | Path) -> dict:
    if cfg.samples is None:
        raise UserError("eval: --samples DIR is required (the --out of 'genrep rae sample')")
    path = Path(cfg.samples)
    path = path / "samples.npz" if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"{path}: samples.npz not found")
    try:
        data = np.load(path)
        if "arr_0" not in data:
            raise UserError(f"{path}: no 'arr_0' array (expected samples.npz from 'genrep rae sample')")
    except (OSError, ValueError, EOFError) as err:
        raise UserError(f"{path}: not a readable .npz file ({type(err).__name__})") from None
    run = RunDir(out)
    run.write_config(cfg)
    metrics = score_images(data["arr_0"], data["labels"] if "labels" in data else None, cfg)
    run.write_metrics(metrics)
    return metrics


def score_images(
    fake: np.ndarray, fake_labels: np.ndarray | None, cfg: EvalConfig, features: "M.EffNetFeatures | None" = None
) -> dict:
    """The metrics of :func:`evaluate` for uint8 images ``[N, H, W, 3]`` (and their class labels)."""
    size = fake.shape[1]
    features = features or M.EffNetFeatures(device=pick_device(cfg.device))
    real_f, real_labels = _real_features(features, cfg.dataset, cfg.split, size, cfg.real_limit, cfg.cache_real)
    fake_f = features(fake)
    mu_r, cov_r = M.gaussian_stats(real_f)
    mu_f, cov_f = M.gaussian_stats(fake_f)
    metrics: dict = {
        "fd_effnet": M.frechet_distance(mu_r, cov_r, mu_f, cov_f, method="eigh"),
        **{k: v for k, v in M.precision_recall_knn(real_f, fake_f, k=cfg.k).items() if k in ("precision", "recall")},
        "num_fake": int(len(fake)),
        "num_real": int(len(real_f)),
    }
    reason = M.fid_unavailable_reason()
    fid = (
        {"fid": None, "status": reason}
        if reason
        else M.fid_inception(_real_images(cfg.dataset, cfg.split, size, cfg.real_limit)[0], fake)
    )
    metrics.update(fid=fid.get("fid"), fid_status=fid.get("status", "ok"))
    if fake_labels is not None:
        train_f, train_labels = _real_features(
            features, cfg.dataset, "train", size, cfg.classifier_train, cfg.cache_real
        )
        k = int(max(train_labels.max(), fake_labels.max())) + 1
        clf = fit_linear_classifier(train_f, train_labels, k)
        with torch.no_grad():
            pred_fake = clf(torch.from_numpy(fake_f).float()).argmax(1).numpy()
            pred_real = clf(torch.from_numpy(real_f).float()).argmax(1).numpy()
        metrics["class_accuracy"] = float((pred_fake == fake_labels).mean())
        metrics["classifier_real_accuracy"] = float((pred_real == real_labels).mean())
    metrics["feature_space"] = M.metric_signature()
    return metrics
