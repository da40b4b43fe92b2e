"""``genrep lco analyze``'s metrics.json, with a stand-in embedding model (no network, no LM)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import genrep.lco.adapters as adapters
import genrep.lco.analyze as analyze_mod
from genrep.lco.analyze import AnalyzeConfig, analyze
from genrep.lco.geometry import anisotropy, cknna, linear_cka, mutual_knn_alignment, unbiased_cka


class _FakeEmbedder:
    """Three hidden-state layers of 24 dims; view "en" is view "zh" rotated plus layer-dependent noise, so that the
    alignment falls with the layer."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def num_hidden_layers(self) -> int:
        return 2

    def encode(self, items, *, batch_size, layers, description):
        n = len(items)
        base = np.random.default_rng(0).normal(size=(n, 24)) + 3.0
        if items[0]["view"] == "zh":
            return np.stack([base for _ in layers])
        q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(24, 24)))
        return np.stack([base @ q + (0.5 + layer) * self.rng.normal(size=(n, 24)) for layer in layers])


@pytest.fixture
def fake(monkeypatch):
    views = {v: [{"view": v, "i": i} for i in range(40)] for v in ("zh", "en")}
    monkeypatch.setattr(analyze_mod, "read_views", lambda cfg: views)
    monkeypatch.setattr(adapters, "load_model", lambda spec, device: _FakeEmbedder(len(spec)))
    return views


def test_metrics_json_has_every_alignment_measure(fake, tmp_path):
    cfg = AnalyzeConfig(models=["base:fake"], k=5, device="cpu")
    m = analyze(cfg, tmp_path / "out")
    r = m["models"]["base:fake"]
    assert r["layers"] == [0, 1, 2] and m["views"] == ["zh", "en"] and m["pairs"] == 40
    for key in ("mutual_knn@5", "cknna@5", "cka", "unbiased_cka"):
        assert len(r[key]) == 3 and all(-1.0 <= v <= 1.0 for v in r[key])
    assert r["cka"][0] > r["cka"][2] and r["unbiased_cka"][0] > r["unbiased_cka"][2]
    emb = _FakeEmbedder(len("base:fake"))
    zh = emb.encode(fake["zh"], batch_size=1, layers=[0, 1, 2], description="")
    en = emb.encode(fake["en"], batch_size=1, layers=[0, 1, 2], description="")
    assert r["cka"] == pytest.approx([linear_cka(zh[i], en[i]) for i in range(3)], abs=1e-12)
    assert r["unbiased_cka"] == pytest.approx([unbiased_cka(zh[i], en[i]) for i in range(3)], abs=1e-12)
    assert r["cknna@5"] == pytest.approx([cknna(zh[i], en[i], 5) for i in range(3)], abs=1e-12)
    assert r["mutual_knn@5"] == pytest.approx([mutual_knn_alignment(zh[i], en[i], 5) for i in range(3)])
    assert r["anisotropy"]["en"] == pytest.approx([anisotropy(en[i]) for i in range(3)])
    stored = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert stored["models"]["base:fake"]["cknna@5"] == r["cknna@5"]
    assert (tmp_path / "out" / "figures" / "alignment_per_layer.png").read_bytes().startswith(b"\x89PNG")


def test_k_of_one_has_no_cknna(fake, tmp_path):
    m = analyze(AnalyzeConfig(models=["base:fake"], k=1, layers=[0, 2], device="cpu"), tmp_path / "out")
    r = m["models"]["base:fake"]
    assert r["cknna@1"] == [None, None] and len(r["mutual_knn@1"]) == 2
