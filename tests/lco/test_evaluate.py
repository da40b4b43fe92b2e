"""Evaluation tasks, the analysis command, the GRSL command and the MTEB adapter on a tiny backbone."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from genrep.cli import main
from genrep.core.errors import UserError
from genrep.lco.embedding import EmbeddingModel
from genrep.lco.evaluate import EvalConfig, evaluate
from genrep.lco.mteb_adapter import MTEBEncoder
from tests.lco.tiny_vlms import tiny_causal_lm, tiny_qwen2vl


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return tiny_causal_lm(tmp_path_factory.mktemp("lm"))


def _jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_folder_retrieval_sts_and_classification(lm, tmp_path):
    d = tmp_path / "beir"
    d.mkdir()
    _jsonl(
        d / "queries.jsonl",
        [{"_id": "q1", "text": "a red cat"}, {"_id": "q2", "text": "the blue sky"}, {"_id": "q3", "text": "unjudged"}],
    )
    _jsonl(
        d / "corpus.jsonl",
        [
            {"_id": f"d{i}", "text": t}
            for i, t in enumerate(["a red cat", "the blue sky", "a green tree", "a white house"])
        ],
    )
    (d / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\nq2\td1\t2\n")
    sts = _jsonl(
        tmp_path / "sts.jsonl",
        [
            {"sentence1": "a cat", "sentence2": "a cat", "score": 5},
            {"sentence1": "a cat", "sentence2": "the sky", "score": 0},
            {"sentence1": "a dog", "sentence2": "a fox", "score": 2},
        ],
    )
    cls = _jsonl(tmp_path / "cls.jsonl", [{"text": "cat", "label": "cat"}, {"text": "dog", "label": "dog"}])
    cfg = EvalConfig(model=f"base:{lm}", tasks=[f"retrieval:{d}", f"sts:{sts}", f"classification:{cls}"], device="cpu")
    m = evaluate(cfg, tmp_path / "out")
    r = m["tasks"][f"retrieval:{d}"]
    assert r["num_queries"] == 2 and r["recall@1"] == 1.0 and r["ndcg@10"] == pytest.approx(1.0)  # identical texts
    assert m["recall@1"] == 1.0 and "anisotropy" in m
    assert -1.0 <= m["tasks"][f"sts:{sts}"]["spearman"] <= 1.0
    c = m["tasks"][f"classification:{cls}"]
    assert c["accuracy"] == 1.0 and c["labels"] == ["cat", "dog"]  # "{label}" prompt equals the text
    assert (tmp_path / "out" / "config.yaml").is_file()
    (d / "qrels.tsv").write_text("q1\td9\t1\n")
    with pytest.raises(UserError, match="d9"):
        evaluate(EvalConfig(model=f"base:{lm}", tasks=[f"retrieval:{d}"], device="cpu"), tmp_path / "o2")
    with pytest.raises(UserError, match="unknown task"):
        evaluate(EvalConfig(model=f"base:{lm}", tasks=["nope"], device="cpu"), tmp_path / "o3")


def test_seadoc_style_page_image_corpus(tmp_path):
    tiny_qwen2vl(tmp_path / "vlm")
    d = tmp_path / "seadoc"
    (d / "pages").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 32, 3), dtype=np.uint8)).save(d / "pages" / f"p{i}.png")
    _jsonl(d / "queries.jsonl", [{"_id": "q0", "text": "a red cat"}, {"_id": "q1", "text": "the blue sky"}])
    _jsonl(d / "corpus.jsonl", [{"_id": f"p{i}", "image": f"pages/p{i}.png"} for i in range(3)])
    (d / "qrels.tsv").write_text("q0\tp1\t1\nq1\tp2\t1\n")
    m = evaluate(EvalConfig(model=f"base:{tmp_path / 'vlm'}", tasks=[f"seadoc:{d}"], device="cpu"), tmp_path / "o")
    assert 0.0 <= m["ndcg@10"] <= 1.0 and m["tasks"][f"seadoc:{d}"]["num_queries"] == 2


def test_analyze_and_grsl_commands(lm, tmp_path):
    pairs = _jsonl(tmp_path / "pairs.jsonl", [{"text": f"item {i} " + "word " * (i % 5)} for i in range(3)])
    with pytest.raises(SystemExit):  # one modality is not a pair
        main(["lco", "analyze", "--model", f"base:{lm}", "--pairs", str(pairs), "--out", str(tmp_path / "a0")])
    main(
        [
            "lco",
            "analyze",
            "--model",
            f"base:{lm}",
            "--pairs",
            "hsk",
            "--limit",
            "15",
            "--set",
            "device=cpu",
            "--out",
            str(tmp_path / "a"),
        ]
    )
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    r = m["models"][f"base:{lm}"]
    assert m["views"] == ["zh", "en"] and r["layers"] == [0, 1, 2]
    assert len(r["anisotropy"]["zh"]) == 3 and len(r["cka"]) == 3 and 0 <= r["mutual_knn@10"][-1] <= 1
    assert (tmp_path / "a" / "figures" / "anisotropy_per_layer.png").is_file()
    pts = tmp_path / "pts.csv"
    pts.write_text("name,generative,representation\na,1,2\nb,2,4.1\nc,3,5.9\n")
    main(["lco", "grsl", "--points", str(pts), "--out", str(tmp_path / "g")])
    fit = json.loads((tmp_path / "g" / "metrics.json").read_text())["fit"]
    assert fit["slope"] == pytest.approx(1.95) and fit["pearson"] > 0.99
    assert (tmp_path / "g" / "figures" / "grsl.png").read_bytes()[:4] == b"\x89PNG"


def test_mteb_adapter_protocol(lm, tmp_path, monkeypatch):
    emb = EmbeddingModel.from_pretrained(lm)
    enc = MTEBEncoder(emb, batch_size=2)
    texts = ["a red cat", "the blue sky", "a green tree"]
    direct = emb.encode(texts, show_progress=False)
    np.testing.assert_allclose(enc.encode(texts, task_name="t", prompt_type="query"), direct, atol=1e-6)

    class PromptType:  # mteb's enum shape
        value = "document"

    np.testing.assert_allclose(enc.encode(texts, prompt_type=PromptType()), direct, atol=1e-6)
    batches = [{"text": texts[:2]}, {"text": texts[2:]}]  # an mteb 2.x DataLoader
    np.testing.assert_allclose(enc.encode(batches), direct, atol=1e-6)
    np.testing.assert_allclose(enc.get_text_embeddings(texts), direct, atol=1e-6)
    sim = enc.similarity(direct, direct)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-5)
    np.testing.assert_allclose(enc.similarity_pairwise(direct, direct), 1.0, atol=1e-5)
    probs = enc.calculate_probs(direct, direct)
    np.testing.assert_allclose(probs.sum(1), 1.0) and np.testing.assert_array_equal(probs.argmax(1), [0, 1, 2])
    logits = 100.0 * np.asarray(sim, dtype=np.float64)  # the reference wrapper's scale (LCO_Embedding.py)
    expected = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(np.asarray(probs), expected / expected.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)
    if importlib.util.find_spec("mteb") is not None:  # a real mteb.ModelMeta (tests/lco/test_mteb_adapter.py has more)
        monkeypatch.setenv("MTEB_CACHE", str(tmp_path))  # importing mteb makes its default cache folder
        meta = enc.mteb_model_meta
        assert meta.embed_dim == 32 and meta.name == "genrep/lco" and len(meta.revision) == 12


def test_hsk_layers_come_from_the_same_forward_pass_as_the_embeddings(lm, tmp_path):
    plain = evaluate(EvalConfig(model=f"base:{lm}", tasks=["hsk-retrieval"], limit=12, device="cpu"), tmp_path / "a")
    cfg = EvalConfig(model=f"base:{lm}", tasks=["hsk-retrieval"], limit=12, device="cpu", layers=[0, 1, 2])
    with_layers = evaluate(cfg, tmp_path / "b")
    a, b = plain["tasks"]["hsk-retrieval"], with_layers["tasks"]["hsk-retrieval"]
    for key in ("recall@1", "recall@10", "ndcg@10", "en2zh/recall@1", "anisotropy", "cka"):
        assert b[key] == pytest.approx(a[key], abs=1e-5), key
    per_layer = b["anisotropy_per_layer"]
    assert list(per_layer) == ["0", "1", "2"]
    assert EmbeddingModel.from_pretrained(lm).num_hidden_layers() == 2  # so layer 2 is the embedding's own
    assert per_layer["2"] == pytest.approx(a["anisotropy"], abs=1e-5)
    assert per_layer["0"] != pytest.approx(per_layer["2"], abs=1e-3)
    assert (tmp_path / "b" / "figures" / "anisotropy_per_layer.png").is_file()
