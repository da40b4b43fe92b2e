"""The tiny LLaVA-style VLM: projector shapes, image-token placement, padding, save/load, EmbeddingModel use."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genrep.core.errors import UserError
from genrep.lco.backbones import load_backbone, tower_parameters
from genrep.lco.embedding import EmbeddingModel
from genrep.lco.tinyvlm import TinyVLMConfig, build_tinyvlm, load_tinyvlm
from tests.lco.tiny_vlms import tiny_causal_lm


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return tiny_causal_lm(tmp_path_factory.mktemp("tinylm"))


@pytest.fixture()
def vlm(tiny_lm):
    cfg = TinyVLMConfig(lm=tiny_lm, vision="effnet-lite0-random", image_size=64, grid=2, seed=3)
    return build_tinyvlm(cfg)


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(n)]


def _prompt(processor, n_images=1, text="a photo"):
    content = [{"type": "image"}] * n_images + [{"type": "text", "text": text}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


def test_projector_maps_each_image_to_grid_squared_lm_tokens(vlm):
    model, processor = vlm
    d = model.config.hidden_size
    pixels = processor.image_processor(_images(3))
    assert pixels.shape == (3, 3, 64, 64) and 0.0 <= float(pixels.min()) and float(pixels.max()) <= 1.0
    feats = model.image_features(pixels)
    assert feats.shape == (3, 4, d)
    assert [m.out_features for m in model.multi_modal_projector if hasattr(m, "out_features")] == [d, d]
    assert all(not p.requires_grad for p in model.vision_tower.parameters())
    # the image token is past the LM vocabulary: building the VLM leaves the embedding table alone
    assert processor.image_token_id >= model.language_model.get_input_embeddings().weight.shape[0]


def test_image_tokens_are_written_over_the_placeholders_in_order(vlm):
    model, processor = vlm
    imgs = _images(2)
    enc = processor(text=[_prompt(processor, 2)], images=[imgs])
    ids = enc["input_ids"][0]
    where = (ids == processor.image_token_id).nonzero().flatten()
    assert len(where) == 2 * 4 and bool((where.diff() == 1).all())  # two images x grid^2, contiguous
    embeds = model.embed_inputs(enc["input_ids"], enc["pixel_values"])[0]
    feats = model.image_features(enc["pixel_values"]).reshape(-1, embeds.shape[-1])
    assert torch.allclose(embeds[where], feats)
    text_pos = (ids != processor.image_token_id).nonzero().flatten()
    table = model.language_model.get_input_embeddings()
    assert torch.equal(embeds[text_pos], table(ids[text_pos]))
    # swapping the images swaps the blocks
    swapped = model.embed_inputs(enc["input_ids"], enc["pixel_values"].flip(0))[0]
    assert torch.allclose(swapped[where[:4]], embeds[where[4:]])


def test_placeholder_and_image_counts_must_match(vlm):
    _, processor = vlm
    with pytest.raises(UserError, match="placeholder"):
        processor(text=[_prompt(processor, 1)], images=[_images(2)])


def test_text_only_input_gives_the_language_models_own_output(vlm):
    model, processor = vlm
    enc = processor(text=["hello world the quick"])
    with torch.no_grad():
        a = model(**enc).logits
        b = model.language_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    assert torch.allclose(a, b, atol=1e-6)


def test_embedding_is_independent_of_padding_and_batch(vlm):
    model, processor = vlm
    from genrep.lco.backbones import Backbone

    emb = EmbeddingModel(Backbone(model, processor, "vlm", "tiny", ("text", "image")))
    items = [
        {"image": _images(1, 1)[0], "text": "red"},
        {"image": _images(1, 2)[0], "text": "a much longer text than the other one"},
        {"image": [_images(1, 3)[0], _images(1, 4)[0]], "text": "two images"},
    ]  # one key: one padded batch
    together = emb.encode(items, batch_size=3, sort_by_length=False, show_progress=False)
    alone = np.stack([emb.encode([x], show_progress=False)[0] for x in items])
    assert np.allclose(together, alone, atol=1e-5)
    assert not np.allclose(alone[0], alone[1], atol=1e-3)  # the inputs do matter
    processor.padding_side = "right"
    emb.backbone.tokenizer.padding_side = "right"
    enc_r = processor(text=[emb.prompt(x).prompt for x in items[:2]], images=[[items[0]["image"]], [items[1]["image"]]])
    assert not bool(enc_r["attention_mask"][:, -1].all())  # really right-padded
    with torch.no_grad():
        out = model(**enc_r, output_hidden_states=True)
    from genrep.lco.embedding import last_token_pool

    right = torch.nn.functional.normalize(last_token_pool(out.hidden_states[-1], enc_r["attention_mask"]), dim=-1)
    assert np.allclose(right.numpy(), alone[:2], atol=1e-5)


def test_greedy_generation_with_cache_matches_step_by_step_argmax(vlm):
    model, processor = vlm
    processor.padding_side = "left"
    enc = processor(
        text=[_prompt(processor, 1), _prompt(processor, 1, "a much longer prompt here")],
        images=[_images(1, 5), _images(1, 6)],
    )
    new = model.generate(**enc, max_new_tokens=5, eos_token_id=-1)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        for t in range(5):
            logits = model(input_ids=ids, attention_mask=mask, pixel_values=enc["pixel_values"]).logits[:, -1]
            assert torch.equal(logits.argmax(-1), new[:, t])
            ids = torch.cat([ids, new[:, t : t + 1]], 1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)


def test_generate_needs_left_padding_and_embedding_skips_the_lm_head(vlm):
    model, processor = vlm
    processor.padding_side = "right"
    enc = processor(
        text=[_prompt(processor, 1), _prompt(processor, 1, "longer prompt text")], images=[_images(1), _images(1, 1)]
    )
    with pytest.raises(UserError, match="left-padded"):
        model.generate(**enc, max_new_tokens=2)
    from genrep.lco.backbones import Backbone

    emb = EmbeddingModel(Backbone(model, processor, "vlm", "tiny", ("text", "image")))
    assert emb._keep_logits  # the forward signature exposes logits_to_keep


@pytest.mark.parametrize("lm_kind", ["reference", "adapter", "weights"])
def test_save_and_load_round_trip(vlm, tmp_path, lm_kind):
    model, processor = vlm
    with torch.no_grad():
        model.multi_modal_projector[0].weight.mul_(1.5)
    if lm_kind == "adapter":
        from peft import LoraConfig, get_peft_model

        lm = get_peft_model(
            model.language_model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        )
        model.language_model = lm
    elif lm_kind == "weights":
        with torch.no_grad():
            model.language_model.model.layers[0].mlp.up_proj.weight.add_(0.1)
    model.save_pretrained(tmp_path, language_model=lm_kind)
    processor.save_pretrained(tmp_path)
    enc = processor(text=[_prompt(processor, 1)], images=[_images(1, 9)])
    loaded, lproc = load_tinyvlm(tmp_path)
    with torch.no_grad():
        want = model(**enc).logits
        got = loaded(**lproc(text=[_prompt(lproc, 1)], images=[_images(1, 9)])).logits
    assert torch.allclose(want, got, atol=1e-5)
    backbone = load_backbone(str(tmp_path))
    assert backbone.kind == "vlm" and backbone.modalities == ("text", "image")
    assert set(tower_parameters(backbone.model)) == {
        n for n, _ in backbone.model.named_parameters() if n.startswith(("vision_tower.", "multi_modal_projector."))
    }


def test_bad_config_is_a_one_line_error(tiny_lm):
    with pytest.raises(UserError, match="image_size"):
        build_tinyvlm(TinyVLMConfig(lm=tiny_lm, vision="effnet-lite0-random", image_size=50))
    with pytest.raises(UserError, match="vision"):
        build_tinyvlm(TinyVLMConfig(lm=tiny_lm, vision="dinov2"))
