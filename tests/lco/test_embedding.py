"""EmbeddingModel: prompts, last-token pooling, padding / batch-size invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genrep.core.errors import UserError
from genrep.lco.embedding import EmbeddingModel, PromptConfig, as_item, last_token_pool
from tests.lco.tiny_vlms import tiny_causal_lm

TEXTS = [
    "a",
    "the quick brown fox jumps over the lazy dog and then some more words",
    "猫在垫子上。",
    "embedding models turn sentences into vectors",
]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"))


def test_last_token_pool_left_and_right_padding():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert torch.equal(last_token_pool(hidden, left), hidden[:, 3])
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    assert torch.equal(last_token_pool(hidden, right), torch.stack([hidden[0, 1], hidden[1, 2]]))


def test_prompt_is_chat_template_plus_suffix(tiny_lm):
    emb = EmbeddingModel.from_pretrained(tiny_lm)
    p = emb.prompt("hello world").prompt
    assert (
        p == "<|im_start|>user\nhello world\nSummarize the above text in one word:<|im_end|>\n<|im_start|>assistant\n"
    )
    q = EmbeddingModel.from_pretrained(tiny_lm, prompts=PromptConfig(query={"text": "\nQuery:"}))
    assert "\nQuery:" in q.prompt("x", side="query").prompt and "Summarize" in q.prompt("x", side="document").prompt
    raw = EmbeddingModel.from_pretrained(tiny_lm, prompts=PromptConfig(chat_template=False))
    assert raw.prompt("hi").prompt == "<|endoftext|>hi\nSummarize the above text in one word:"


def test_truncation_keeps_the_suffix(tiny_lm):
    emb = EmbeddingModel.from_pretrained(tiny_lm, max_length=5)
    p = emb.prompt("the quick brown fox jumps over the lazy dog " * 5).prompt
    assert p.endswith("\nSummarize the above text in one word:<|im_end|>\n<|im_start|>assistant\n")
    content = p.split("user\n")[1].split("\nSummarize")[0]
    assert len(emb.backbone.tokenizer(content, add_special_tokens=False)["input_ids"]) <= 5


def test_encode_is_batch_size_and_order_invariant(tiny_lm):
    emb = EmbeddingModel.from_pretrained(tiny_lm)
    full = emb.encode(TEXTS, batch_size=len(TEXTS), show_progress=False)
    single = np.stack([emb.encode([t], batch_size=1, show_progress=False)[0] for t in TEXTS])
    unsorted = emb.encode(TEXTS, batch_size=3, sort_by_length=False, show_progress=False)
    assert full.shape == (4, 32)
    np.testing.assert_allclose(np.linalg.norm(full, axis=1), 1.0, atol=1e-5)
    assert np.abs(full - single).max() < 1e-5 and np.abs(full - unsorted).max() < 1e-5
    assert np.abs(full[0] - full[1]).max() > 1e-3  # different texts, different embeddings
    with torch.no_grad():
        batch = emb.embed_batch(TEXTS)
    assert np.abs(batch.numpy() - full).max() < 1e-5


def test_absolute_position_models_need_position_ids(tmp_path, tiny_lm):
    """GPT-2-style learned positions: left padding shifts every position unless ids count real tokens only."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=256)).save_pretrained(
        tmp_path
    )
    tok.save_pretrained(tmp_path)
    emb = EmbeddingModel.from_pretrained(str(tmp_path))
    single = np.stack([emb.encode([t], show_progress=False)[0] for t in TEXTS])
    assert np.abs(emb.encode(TEXTS, batch_size=4, show_progress=False) - single).max() < 1e-5
    emb._pass_positions = False  # what a plain forward does
    assert np.abs(emb.encode(TEXTS, batch_size=4, show_progress=False) - single).max() > 1e-3


def test_layers_and_similarity(tiny_lm):
    emb = EmbeddingModel.from_pretrained(tiny_lm)
    per_layer = emb.encode(TEXTS, layers=[0, 1, 2], show_progress=False)
    assert per_layer.shape == (3, 4, 32)
    np.testing.assert_allclose(per_layer[2], emb.encode(TEXTS, show_progress=False), atol=1e-6)
    sim = EmbeddingModel.similarity(per_layer[2], per_layer[2])
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-5)
    t = torch.as_tensor(per_layer[2])
    assert torch.allclose(EmbeddingModel.similarity(t, t), torch.as_tensor(sim, dtype=torch.float32), atol=1e-5)
    assert emb.encode(TEXTS, convert_to="torch", show_progress=False).dtype == torch.float32


def test_bad_inputs(tiny_lm):
    emb = EmbeddingModel.from_pretrained(tiny_lm)
    with pytest.raises(UserError, match="cannot embed image"):
        emb.prompt({"image": object()})
    with pytest.raises(UserError, match="unknown field"):
        as_item({"txt": "a"})
    with pytest.raises(UserError, match="batch_size"):
        emb.encode(["a"], batch_size=0)
    with pytest.raises(UserError, match="cannot load backbone"):
        EmbeddingModel.from_pretrained("/nonexistent/model/dir")


def test_bundled_smollm2_prompt_and_invariance(smollm2_dir):
    emb = EmbeddingModel.from_pretrained("smollm2-135m")
    assert emb.prompt("你好").prompt.endswith(
        "<|im_start|>user\n你好\nSummarize the above text in one word:<|im_end|>\n<|im_start|>assistant\n"
    )
    texts = TEXTS[:3]
    full = emb.encode(texts, batch_size=3, show_progress=False)
    single = np.stack([emb.encode([t], show_progress=False)[0] for t in texts])
    assert full.shape == (3, 576) and np.abs(full - single).max() < 1e-4


def test_an_unknown_side_is_an_error_not_the_document_side():
    prompts = PromptConfig()
    with pytest.raises(UserError, match="side: unknown 'queries' \\(query or document\\)"):
        prompts.suffix_for("text", "queries")


def test_an_unknown_backbone_kind_is_an_error_not_a_text_model():
    from genrep.lco.backbones import modalities_of

    assert modalities_of("vlm") == ("text", "image", "video")
    with pytest.raises(UserError, match="backbone kind 'audio-lm' is unknown"):
        modalities_of("audio-lm")
