"""``genrep lco export --format sentence-transformers``: the exported directory reproduces genrep's embeddings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from genrep.cli import main
from genrep.lco.adapters import LoraSettings, apply_method, load_model, save_model
from genrep.lco.embedding import EmbeddingModel, PromptConfig
from genrep.lco.export_st import EXPORT_FILE, export_sentence_transformers, lco_chat_template
from tests.lco.tiny_vlms import tiny_causal_lm

st = pytest.importorskip("sentence_transformers")

# Mixed lengths (batches pad), edge whitespace, newlines, CJK (byte tokens in the tiny tokenizer) and texts
# longer than the models' max_length, so truncation inside the content is exercised.
TEXTS = [
    "a red cat",
    "the quick brown fox jumps over the lazy dog " * 3,
    "x",
    "trailing space ",
    " leading space",
    "two lines\nof text\n",
    "中文",  # 6 byte tokens: not cut (a cut inside a character is the documented difference)
    "a photo of a red cat sitting on a blue mat next to a green tree",
    "embedding models turn sentences into vectors\t",
]


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return tiny_causal_lm(tmp_path_factory.mktemp("lm"))


def _randomise(module: torch.nn.Module, word: str, seed: int, scale: float = 0.3) -> None:
    """Give the parameters whose name contains ``word`` random values, so that they change the embeddings."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if word in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)


@pytest.fixture(scope="module")
def lora_run(lm, tmp_path_factory):
    """A LoRA model with random non-zero B (the merge matters), saved like a training run's ``--out``."""
    emb = EmbeddingModel.from_pretrained(lm, max_length=12)
    apply_method(emb, "lora", LoraSettings(r=4, alpha=8, dropout=0.0))
    _randomise(emb.model, "lora_B", 0)
    run = tmp_path_factory.mktemp("lora_run")
    save_model(emb, run / "model", method="lora", backbone=lm)
    return run


def _assert_same(out, model_dir, texts=TEXTS, batch_size=3):
    """The exported directory's embeddings equal genrep's on both sides (batches smaller than the input)."""
    loaded = st.SentenceTransformer(str(out), device="cpu")
    emb = load_model(str(model_dir))
    got_d = loaded.encode(texts, batch_size=batch_size, show_progress_bar=False)
    got_q = loaded.encode_query(texts, batch_size=batch_size, show_progress_bar=False)
    want_d = emb.encode(texts, batch_size=batch_size, show_progress=False)
    want_q = emb.encode(texts, batch_size=batch_size, side="query", show_progress=False)
    assert got_d.shape == want_d.shape
    assert np.abs(got_d - want_d).max() < 1e-5
    assert np.abs(got_q - want_q).max() < 1e-5
    return loaded, got_d, got_q


def test_cli_exports_a_lora_run_that_sentence_transformers_loads(lora_run, lm, tmp_path, capsys):
    out = tmp_path / "st"
    main(["lco", "export", "--format", "sentence-transformers", "--model", str(lora_run), "--out", str(out)])
    assert "check: max |diff|" in capsys.readouterr().out
    info = json.loads((out / EXPORT_FILE).read_text())
    assert info["source"] == str((lora_run / "model").resolve()) and len(info["source_sha256"]) == 64
    assert info["carried"]["weights"] == "LoRA adapter merged into the base weights"
    for side in ("document", "query"):
        assert info["check"]["sides"][side]["token_ids_identical"]
        assert info["check"]["sides"][side]["max_abs_diff"] < 1e-5
    assert not (out / ".export-staging").exists()
    metrics = json.loads((out / "metrics.json").read_text())  # the run files every command writes
    assert metrics["check"] == info["check"] and (out / "config.yaml").is_file()
    loaded, got, _ = _assert_same(out, lora_run / "model")
    tok = loaded[0].tokenizer
    assert tok.padding_side == "right" and tok.chat_template.startswith("{% set lco")
    assert [type(m).__name__ for m in loaded] == ["Transformer", "Pooling", "Normalize"]
    base = load_model(f"base:{lm}").encode(TEXTS, show_progress=False)
    assert np.abs(got - base).max() > 1e-3  # the merged adapter is in the exported weights
    # a row's embedding does not depend on what it is batched with (right padding, no position ids needed)
    alone = np.stack([loaded.encode([t], show_progress_bar=False)[0] for t in TEXTS[:3]])
    assert np.abs(alone - got[:3]).max() < 1e-5


def test_export_is_plain_sentence_transformers_loaded_offline(lora_run, tmp_path):
    """Every module is a sentence-transformers class and the model a stock transformers one (no remote code);
    this process is offline (tests/conftest.py sets HF_HUB_OFFLINE before any import)."""
    import huggingface_hub.constants

    out = tmp_path / "st"
    export_sentence_transformers(lora_run, out, check=False)
    assert huggingface_hub.constants.HF_HUB_OFFLINE
    modules = json.loads((out / "modules.json").read_text())
    assert all(m["type"].startswith("sentence_transformers.") for m in modules)
    config = json.loads((out / "config.json").read_text())
    assert "auto_map" not in config and config["architectures"] == ["LlamaModel"]
    _assert_same(out, lora_run / "model", TEXTS[:4], batch_size=2)


@pytest.mark.slow
def test_export_loads_offline_without_genrep(lora_run, tmp_path):
    """A fresh interpreter with only sentence-transformers (no genrep import, no remote code) loads the export."""
    out = tmp_path / "st"
    export_sentence_transformers(lora_run, out, check=False)
    code = (
        "import json, sys; from sentence_transformers import SentenceTransformer; "
        "m = SentenceTransformer(sys.argv[1], device='cpu'); "
        "assert not any(k.startswith('genrep') for k in sys.modules); "
        "print(json.dumps(m.encode(json.loads(sys.argv[2]), batch_size=2).tolist()))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    res = subprocess.run(
        [sys.executable, "-c", code, str(out), json.dumps(TEXTS[:4])],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    got = np.array(json.loads(res.stdout.strip().splitlines()[-1]))
    want = load_model(str(lora_run / "model")).encode(TEXTS[:4], show_progress=False)
    assert np.abs(got - want).max() < 1e-5


def test_full_weights_system_message_and_per_side_suffixes(lm, tmp_path):
    prompts = PromptConfig(system="Be brief.", query={"text": "\nQuery: summarize in one word:"})
    emb = EmbeddingModel.from_pretrained(lm, max_length=8, prompts=prompts)
    apply_method(emb, "full")
    _randomise(emb.model, "mlp.down_proj", 1, scale=0.2)
    save_model(emb, tmp_path / "full", method="full", backbone=lm)
    info = export_sentence_transformers(tmp_path / "full", tmp_path / "st", check=False)
    lengths = info["carried"]["max_seq_length"]
    assert lengths["query"] != lengths["document"]  # the suffixes differ in length: one cap per side
    tok = emb.backbone.tokenizer
    assert any(len(tok(t, add_special_tokens=False)["input_ids"]) > 8 for t in TEXTS)  # some texts are truncated
    loaded, got_d, got_q = _assert_same(tmp_path / "st", tmp_path / "full")
    assert np.abs(got_d - got_q).max() > 1e-4  # the query suffix reached the query side
    assert loaded[0].query_length == lengths["query"]


def test_head_raw_prompt_and_other_layer(lm, tmp_path):
    """A ``head`` model (its projection as a Dense module), no chat template, layer 1, no normalisation."""
    emb = EmbeddingModel.from_pretrained(lm, prompts=PromptConfig(chat_template=False), layer=1, normalize=False)
    apply_method(emb, "head")
    assert emb.head is not None
    _randomise(emb.head, "", 2)
    save_model(emb, tmp_path / "head", method="head", backbone=lm)
    info = export_sentence_transformers(tmp_path / "head", tmp_path / "st", check=False)
    assert info["carried"]["head"] and info["carried"]["layer"] == 1 and not info["carried"]["chat_template"]
    loaded, got, _ = _assert_same(tmp_path / "st", tmp_path / "head")
    assert [type(m).__name__ for m in loaded] == ["Transformer", "Pooling", "Dense"]
    assert np.abs(np.linalg.norm(got, axis=1) - 1).max() > 1e-3  # not normalised, as the source model


@pytest.mark.parametrize(
    "suffix",
    ['\nQuote " and \\ backslash {{ braces }} {% raw %} %} in one word:', "\n总结成一个词 🙂:", "\t\r\n:"],
)
def test_template_renders_genrep_prompt_exactly(lm, suffix):
    """The LCO chat template gives emb.prompt's string, also for suffixes with Jinja syntax, escapes, non-BMP
    characters, and for a backbone template that starts with a newline and indentation."""
    emb = EmbeddingModel.from_pretrained(lm, prompts=PromptConfig(suffix={"text": suffix}, system="sys 'quoted'"))
    tok = emb.backbone.tokenizer
    tok.chat_template = "\n  " + tok.chat_template
    template = lco_chat_template(emb)
    for text in ["plain", " spaced ", "line\n", "中文"]:
        for side, kwargs in (("document", {}), ("query", {"task": "query"}), ("document", {"task": "document"})):
            got = tok.apply_chat_template(
                [{"role": "user", "content": text}], chat_template=template, tokenize=False, **kwargs
            )
            assert got == emb.prompt(text, side).prompt  # type: ignore[arg-type]


def test_a_cut_inside_a_character_is_the_one_truncation_difference(lora_run, tmp_path):
    """genrep decodes the truncated content, so a cut inside a multi-byte character becomes U+FFFD; the
    export keeps the original byte tokens (docs/lco.md). Every other truncated text matches (tests above)."""
    out = tmp_path / "st"
    export_sentence_transformers(lora_run, out, check=False)
    loaded = st.SentenceTransformer(str(out), device="cpu")
    emb = load_model(str(lora_run / "model"))
    text = "中" * 5  # 15 byte tokens in the tiny tokenizer; max_length 12 cuts inside none, 13 inside one
    emb.max_length = 13
    loaded[0].tokenizer.model_max_length += 1
    prompt = emb.prompt(text).prompt
    assert "\ufffd" in prompt
    ids = loaded.preprocess([text])["input_ids"][0].tolist()
    assert ids != emb.backbone.tokenizer(prompt, add_special_tokens=False)["input_ids"]


def _spec(d):
    return json.loads((d / "lco_model.json").read_text())


def test_bad_models_are_one_line_errors_with_exit_code_2(lora_run, lm, tmp_path, capsys):
    def export(model):
        with pytest.raises(SystemExit) as exit_info:
            main(
                [
                    "lco",
                    "export",
                    "--format",
                    "sentence-transformers",
                    "--model",
                    str(model),
                    "--out",
                    str(tmp_path / "o"),
                ]
            )
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
        return err

    (tmp_path / "empty").mkdir()
    assert "lco_model.json: missing" in export(tmp_path / "empty")
    assert "no such directory" in export(tmp_path / "nowhere")
    lora = shutil.copytree(lora_run / "model", tmp_path / "lora")
    (lora / "adapter" / "adapter_model.safetensors").unlink()
    assert f"{lora / 'adapter' / 'adapter_model.safetensors'}: missing, so there are no merged weights" in export(lora)
    shutil.rmtree(lora / "adapter")
    assert f"{lora / 'adapter' / 'adapter_config.json'}: missing" in export(lora)
    full = tmp_path / "full"
    full.mkdir()
    (full / "lco_model.json").write_text(
        json.dumps({**_spec(lora_run / "model"), "method": "full", "backbone": "model"})
    )
    assert f"{full / 'model' / 'config.json'}: missing, so there are no merged weights" in export(full)
    head = tmp_path / "head"
    head.mkdir()
    (head / "lco_model.json").write_text(json.dumps({**_spec(lora_run / "model"), "method": "head"}))
    assert f"{head / 'head.safetensors'}: missing" in export(head)
    vlm = shutil.copytree(lora_run / "model", tmp_path / "vlm")
    (vlm / "lco_model.json").write_text(json.dumps({**_spec(vlm), "kind": "vlm"}))
    assert f"{vlm / 'lco_model.json'}: backbone kind 'vlm' cannot be exported" in export(vlm)
    assert "inside the model directory" in export_into(lora_run, capsys)
    with pytest.raises(SystemExit) as exit_info:
        main(["lco", "export", "--format", "onnx", "--model", str(lora_run), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2 and "'onnx' is not 'sentence-transformers'" in capsys.readouterr().err


def export_into(run, capsys):
    """Exporting into the model directory itself is refused (it would mix two models' files)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["lco", "export", "--format", "sentence-transformers", "--model", str(run), "--out", str(run / "model")])
    assert exit_info.value.code == 2
    return capsys.readouterr().err
