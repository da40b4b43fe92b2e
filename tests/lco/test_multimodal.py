"""The LCO-EMB embedding path on (tiny, random, offline) vision-language backbones: Qwen2-VL and Idefics3."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from genrep.core.errors import UserError
from genrep.lco.backbones import (
    language_linear_names,
    load_backbone,
    reference_lora_names,
    set_max_pixels,
    tower_parameters,
)
from genrep.lco.embedding import EmbeddingModel

from .tiny_vlms import tiny_idefics3, tiny_qwen2vl

BUILDERS = {"qwen2vl": tiny_qwen2vl, "idefics3": tiny_idefics3}
IMAGE_TOKEN = {"qwen2vl": "<|image_pad|>", "idefics3": "<image>"}
IMAGE_SUFFIX = "Summarize the above image in one word:"
TEXTS = [
    "cat",
    "a photo of a red cat sitting on a blue mat, next to a small white house under a very wide sky",
    "the quick brown fox",
    "embedding models turn sentences and pictures into vectors; the quick brown fox "
    "jumps over the lazy dog again and again and again",
]


def _image(h: int, w: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    noise = rng.integers(-40, 41, size=(h, w, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


IMAGES = [_image(40, 60, 1), _image(64, 24, 2), _image(23, 23, 3), _image(50, 50, 4)]
INTERLEAVED = [
    {"text": "a red cat", "image": IMAGES[0]},
    {"text": "two pictures of a house and a tree under the sky", "image": [IMAGES[1], IMAGES[2]]},
    {"text": "fox", "image": IMAGES[3]},
]


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def tiny(request, tmp_path_factory):
    """(name, backbone, saved directory) for each tiny VLM."""
    saved = tmp_path_factory.mktemp(request.param)
    return request.param, BUILDERS[request.param](saved), saved


def _encode(em: EmbeddingModel, items, **kw) -> np.ndarray:
    return em.encode(items, show_progress=False, **kw)


def _padded(em: EmbeddingModel, items) -> bool:
    """Whether one batch of these items needs padding (so the invariance tests test something)."""
    enc = em._inputs([em.prompt(x) for x in items])
    return bool((enc["attention_mask"] == 0).any())


def test_builds_are_deterministic(tiny):
    name, bb, _ = tiny
    again = BUILDERS[name]()
    for (n, a), (_, b) in zip(bb.model.state_dict().items(), again.model.state_dict().items()):
        assert a.shape == b.shape and bool((a == b).all()), n
    assert again.processor.tokenizer.get_vocab() == bb.processor.tokenizer.get_vocab()


def test_embeddings_unit_norm_in_input_order(tiny):
    _, bb, _ = tiny
    em = EmbeddingModel(bb)
    hidden = bb.model.config.get_text_config().hidden_size
    mixed = [TEXTS[0], IMAGES[0], INTERLEAVED[1], TEXTS[1], IMAGES[1], INTERLEAVED[0], IMAGES[2], TEXTS[2]]
    out = _encode(em, mixed, batch_size=3)
    assert out.shape == (len(mixed), hidden)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    alone = np.concatenate([_encode(em, [x]) for x in mixed])
    assert np.abs(out - alone).max() < 1e-4
    # the training path (one forward per modality signature) puts them back in the same order; it
    # places an interleaved item's image before its text (the reference trainer), encode after (its MTEB wrapper)
    with torch.no_grad():
        trained = em.embed_batch(mixed).numpy()
    em.prompts.eval_order = em.prompts.train_order
    alone_train_order = np.concatenate([_encode(em, [x]) for x in mixed])
    em.prompts.eval_order = "text-first"
    assert np.abs(trained - alone_train_order).max() < 1e-4
    single = [i for i, x in enumerate(mixed) if x not in INTERLEAVED]
    assert np.abs(trained[single] - alone[single]).max() < 1e-4
    both = [i for i, x in enumerate(mixed) if x in INTERLEAVED]
    assert np.abs(trained[both] - alone[both]).max() > 1e-3
    # the pixels matter: different images (and an image added to a text) give different embeddings
    imgs = _encode(em, IMAGES)
    gram = imgs @ imgs.T
    assert (gram[~np.eye(len(IMAGES), dtype=bool)] < 1 - 1e-4).all()
    with_image, text_only = _encode(em, [INTERLEAVED[0], "a red cat"])
    assert float(with_image @ text_only) < 1 - 1e-4


@pytest.mark.parametrize("what", ["texts", "images", "interleaved"])
def test_batch_size_and_padding_invariance(tiny, what):
    _, bb, _ = tiny
    em = EmbeddingModel(bb)
    items = {"texts": TEXTS, "images": IMAGES, "interleaved": INTERLEAVED}[what]
    assert _padded(em, items)
    full = _encode(em, items, batch_size=len(items))
    single = _encode(em, items, batch_size=1)
    assert np.abs(full - single).max() < 1e-4
    unsorted = _encode(em, items, batch_size=len(items), sort_by_length=False)
    assert np.abs(unsorted - single).max() < 1e-4


def test_prompt_puts_suffix_after_the_image(tiny):
    name, bb, _ = tiny
    em = EmbeddingModel(bb)
    token = IMAGE_TOKEN[name]
    p = em.prompt(IMAGES[0])
    assert p.key == "image" and len(p.images) == 1
    assert p.prompt.count(token) == 1
    assert p.prompt.index(token) < p.prompt.index("\n" + IMAGE_SUFFIX)
    assert p.prompt.rstrip().endswith("assistant") or p.prompt.rstrip().endswith("Assistant:")
    assert p.prompt.index("\n" + IMAGE_SUFFIX) == p.prompt.index("\nSummarize the above image in one word:")
    text = INTERLEAVED[1]["text"]
    both = em.prompt(INTERLEAVED[1], order="media-first")  # the reference trainer: images, text, suffix
    assert both.prompt.count(token) == 2
    assert both.prompt.rindex(token) < both.prompt.index(text)
    assert both.prompt.index(text + "\nSummarize the above in one word:") > 0  # the interleaved suffix
    encoded = em.prompt(INTERLEAVED[1])  # encode's default, the reference MTEB wrapper: text, images, suffix
    assert encoded.prompt.index(text) < encoded.prompt.index(token)
    assert encoded.prompt.rindex(token) < encoded.prompt.index("\nSummarize the above in one word:")
    # after the processor: the placeholder is expanded to several image tokens, all before the suffix
    enc = em._inputs([p])
    ids = enc["input_ids"][0].tolist()
    image_id = bb.tokenizer.convert_tokens_to_ids(token)
    assert image_id == bb.model.config.image_token_id
    positions = [i for i, t in enumerate(ids) if t == image_id]
    assert len(positions) > 1
    text = bb.tokenizer.decode(ids[positions[-1] :], skip_special_tokens=False)
    assert IMAGE_SUFFIX in text


def test_lora_targets_are_the_language_model(tiny):
    _, bb, _ = tiny
    names = language_linear_names(bb.model)
    assert names
    leaves = {n.rsplit(".", 1)[-1] for n in names}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= leaves
    n_layers = bb.model.config.get_text_config().num_hidden_layers
    assert len(names) == 7 * n_layers
    for n in names:
        assert not any(w in n for w in ("visual", "vision", "merger", "connector", "projector", "lm_head")), n
    towers = tower_parameters(bb.model)
    assert towers
    assert not set(towers) & {n + ".weight" for n in names}


def test_reference_lora_targets_cover_the_model_body(tiny):
    """The reference's rule: every linear layer under ``model.model`` but the LM head; on the Qwen2-VL family
    the body holds the vision tower and merger as well as the language model."""
    name, bb, _ = tiny
    names = reference_lora_names(bb.model)
    assert set(language_linear_names(bb.model)) <= set(names)
    assert not any("lm_head" in n for n in names)
    assert all(n.startswith("model.") for n in names)
    linears = {n for n, m in bb.model.model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert {n[len("model.") :] for n in names} == linears
    if name == "qwen2vl":
        assert any("visual" in n for n in names)  # the vision tower and merger get adapters too


def test_max_pixels_caps_the_image_tokens(tiny):
    name, bb, _ = tiny
    big = Image.new("RGB", (448, 448), (200, 30, 30))
    if name != "qwen2vl":  # fixed-size processors: no pixel budget, nothing changes
        assert not set_max_pixels(bb.processor, 56 * 56)
        return
    counts = []
    for budget in (448 * 448, 112 * 112):
        em = EmbeddingModel(bb, max_pixels=budget)
        assert em.max_pixels == budget
        enc = em._inputs([em.prompt(big)])
        counts.append(int((enc["input_ids"] == bb.model.config.image_token_id).sum()))
    assert counts[1] < counts[0]


def test_load_backbone_round_trip(tiny):
    name, bb, saved = tiny
    loaded = load_backbone(str(saved))
    assert loaded.kind == "vlm" and "image" in loaded.modalities
    assert type(loaded.model) is type(bb.model)
    items = [TEXTS[1], IMAGES[0], INTERLEAVED[1], IMAGES[2]]
    a = _encode(EmbeddingModel(bb), items)
    b = _encode(EmbeddingModel(loaded), items)
    assert np.abs(a - b).max() < 1e-5


def test_load_backbone_refuses_a_tokenizer_only_processor(tiny, tmp_path):
    """An unresolvable processor class makes AutoProcessor fall back to the bare tokenizer, which would drop the
    images silently (every image the same embedding); load_backbone must refuse instead."""
    _, _, saved = tiny
    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    for cfg in ("processor_config.json", "tokenizer_config.json"):
        data = json.loads((broken / cfg).read_text())
        data["processor_class"] = "NoSuchProcessor"
        (broken / cfg).write_text(json.dumps(data))
    with pytest.raises(UserError, match="multimodal processor"):
        load_backbone(str(broken))
