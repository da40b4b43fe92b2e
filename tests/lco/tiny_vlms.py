"""Tiny, randomly initialised vision-language backbones for the multimodal embedding tests.

Everything is built offline in about a second: a byte-level BPE tokenizer trained in memory on a
few sentences (plus the special tokens each model family needs), the real processor classes
(Qwen2-VL, Idefics3 / SmolVLM) with tiny image sizes, a chat template that renders messages the
way the released checkpoints' templates do, and a tiny model whose special token ids match the
tokenizer. ``tiny_qwen2vl`` / ``tiny_idefics3`` return a ``genrep.lco.backbones.Backbone``; with
``tmp_dir`` the model and processor are also saved there (for ``load_backbone(tmp_dir)``).
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from genrep.lco.backbones import Backbone

CORPUS = [
    "Summarize the above image in one word:",
    "Summarize the above text in one word:",
    "Summarize the above image and text in one word:",
    "You are a helpful assistant.",
    "a photo of a red cat sitting on a blue mat",
    "the quick brown fox jumps over the lazy dog",
    "a green tree next to a small white house under the sky",
    "user assistant system User Assistant",
    "embedding models turn sentences and pictures into vectors",
]

# Qwen2-VL's released chat template (Qwen/Qwen2-VL-*-Instruct), verbatim in structure.
QWEN2VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# SmolVLM / Idefics3's released chat template (HuggingFaceTB/SmolVLM-*-Instruct).
IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}: {{ message['content'] }}{% else %}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

QWEN2VL_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
IDEFICS3_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<image>",
    "<global-img>",
] + [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]


def _tokenizer(specials: list[str], **kwargs):
    """A byte-level BPE tokenizer trained in memory on CORPUS; ``specials`` get the first ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def _save(model, processor, tmp_dir) -> None:
    if tmp_dir is not None:
        os.makedirs(tmp_dir, exist_ok=True)
        model.save_pretrained(tmp_dir)
        processor.save_pretrained(tmp_dir)


@functools.cache
def _qwen2vl_processor_class():
    """``Qwen2VLProcessor``; without torchvision (transformers then has no video processor class, and the stock
    constructor refuses even ``video_processor=None``) an image-only subclass, registered with ``AutoProcessor``
    under a private config key so that ``load_backbone`` / ``AutoProcessor.from_pretrained`` can reload it."""
    from transformers import AutoProcessor, PretrainedConfig, Qwen2VLProcessor

    if importlib.util.find_spec("torchvision") is not None:
        return Qwen2VLProcessor

    class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    class _ImageOnlyKey(PretrainedConfig):
        model_type = "genrep_tests_qwen2vl_image_only"

    AutoProcessor.register(_ImageOnlyKey, Qwen2VLImageOnlyProcessor, exist_ok=True)
    return Qwen2VLImageOnlyProcessor


def tiny_qwen2vl(tmp_dir=None) -> Backbone:
    """Qwen2-VL: LM hidden 64, 2 layers, 4 heads (2 KV), M-RoPE sections [2, 3, 3]; vision tower depth 1,
    embed 32, patch 8, merge 2 (one LM token per 16x16 pixels), images resized to 16x16 .. 64x64 pixels."""
    import transformers
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    image_processor_class = (
        getattr(transformers, "Qwen2VLImageProcessorPil", None) or transformers.Qwen2VLImageProcessor
    )
    tokenizer = _tokenizer(
        QWEN2VL_SPECIALS, eos_token="<|im_end|>", pad_token="<|endoftext|>", extra_special_tokens=QWEN2VL_SPECIALS[1:]
    )
    ids = tokenizer.convert_tokens_to_ids
    image_processor = image_processor_class(
        patch_size=8, merge_size=2, temporal_patch_size=2, min_pixels=16 * 16, max_pixels=64 * 64
    )
    processor = _qwen2vl_processor_class()(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN2VL_CHAT_TEMPLATE
    )
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            bos_token_id=ids("<|endoftext|>"),
            eos_token_id=ids("<|im_end|>"),
            pad_token_id=ids("<|endoftext|>"),
        ),
        vision_config=dict(
            depth=1,
            embed_dim=32,
            hidden_size=64,
            num_heads=2,
            mlp_ratio=2,
            patch_size=8,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config).eval()
    _save(model, processor, tmp_dir)
    return Backbone(model.eval(), processor, kind="vlm", name="tiny-qwen2-vl", modalities=("text", "image", "video"))


def tiny_idefics3(tmp_dir=None) -> Backbone:
    """Idefics3 / SmolVLM: Llama LM hidden 64, 2 layers, 4 heads (2 KV); SigLIP-like vision tower with
    1 layer, hidden 32, 32x32 px tiles of 8 px patches, pixel-shuffle scale 2 -> 4 tokens per tile;
    images resized to longest edge 64 and split into up to 2x2 tiles plus the global 32 px view."""
    import transformers
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor

    # the PIL backend (transformers 5 names it ...Pil; the plain name needs torchvision there)
    image_processor_class = (
        getattr(transformers, "Idefics3ImageProcessorPil", None) or transformers.Idefics3ImageProcessor
    )
    tokenizer = _tokenizer(
        IDEFICS3_SPECIALS,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|endoftext|>",
        extra_special_tokens=IDEFICS3_SPECIALS[2:],
    )
    ids = tokenizer.convert_tokens_to_ids
    image_processor = image_processor_class(
        size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True
    )
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4, chat_template=IDEFICS3_CHAT_TEMPLATE
    )
    config = Idefics3Config(
        text_config=dict(
            model_type="llama",
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            bos_token_id=ids("<|im_start|>"),
            eos_token_id=ids("<end_of_utterance>"),
            pad_token_id=ids("<|endoftext|>"),
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        scale_factor=2,
        image_token_id=ids("<image>"),
        pad_token_id=ids("<|endoftext|>"),
    )
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(config).eval()
    _save(model, processor, tmp_dir)
    return Backbone(model.eval(), processor, kind="vlm", name="tiny-idefics3", modalities=("text", "image", "video"))


CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_causal_lm(tmp_dir) -> str:
    """A tiny random Llama (hidden 32, 2 layers) with a ChatML chat template, saved to ``tmp_dir``; returns the path.

    LoRA dropout, padding and the trainer run on it in well under a second per step."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _tokenizer(
        QWEN2VL_SPECIALS[:3], eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    os.makedirs(tmp_dir, exist_ok=True)
    model.save_pretrained(tmp_dir)
    tokenizer.save_pretrained(tmp_dir)
    return str(tmp_dir)
