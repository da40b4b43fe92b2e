"""Backbones: any transformers (M)LLM, by hub id or local directory, or a bundled GGUF LM.

LCO-EMB (docs/papers.md section 2) turns a generative model into an embedding model without changing
its architecture, so a backbone is just the generative model plus what turns inputs into token
ids: a tokenizer for a text-only causal LM, a processor (tokenizer + image/audio/video
preprocessing) for a vision/audio-language model. The kinds the study used and their peers:

- ``causal-lm``: any ``AutoModelForCausalLM`` (SmolLM2, Gemma-3, Qwen2.5, Llama, ...); the bundled
  names ``smollm2-135m`` and ``gemma3-270m`` load offline.
- ``vlm``: ``AutoModelForImageTextToText`` + ``AutoProcessor`` (Qwen2-VL, Qwen2.5-VL, SmolVLM /
  Idefics3, LLaVA-Next, ...).
- ``omni``: the Qwen2.5-Omni *thinker* (text, image, audio, video), as in LCO-Emb-Omni.
- a saved ``genrep.lco.tinyvlm`` directory (``tinyvlm.json``): the bundled LLaVA-style tiny VLM (kind ``vlm``).

Which kind a checkpoint is comes from its config's ``model_type``; ``kind=`` forces one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genrep.core.errors import UserError
from genrep.lco.tinyvlm import is_tinyvlm_dir, load_tinyvlm

VLM_TYPES = {
    "qwen2_vl",
    "qwen2_5_vl",
    "qwen3_vl",
    "idefics3",
    "smolvlm",
    "idefics2",
    "llava",
    "llava_next",
    "llava_onevision",
    "paligemma",
    "gemma3",
    "mllama",
    "internvl",
}
OMNI_TYPES = {"qwen2_5_omni", "qwen2_5_omni_thinker"}
# Sub-modules that belong to a modality tower or connector, never to the language model.
TOWER_WORDS = (
    "visual",
    "vision",
    "audio",
    "image_newline",
    "multi_modal_projector",
    "connector",
    "mm_projector",
    "merger",
    "projector",
    "lm_head",
    "embed_tokens",
)


@dataclass
class Backbone:
    """A loaded generative backbone: the model and what prepares its inputs."""

    model: Any  # a transformers model (torch.nn.Module), or a peft wrapper of one
    processor: Any  # a tokenizer (causal-lm) or a processor whose .tokenizer is the tokenizer
    kind: str  # causal-lm | vlm | omni
    name: str = ""
    modalities: tuple[str, ...] = ("text",)
    extra: dict = field(default_factory=dict)

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def has_chat_template(self) -> bool:
        template = getattr(self.processor, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)
        return bool(template)


MODALITIES: dict[str, tuple[str, ...]] = {
    "causal-lm": ("text",),
    "vlm": ("text", "image", "video"),
    "omni": ("text", "image", "audio", "video"),
}


def modalities_of(kind: str) -> tuple[str, ...]:
    """What a backbone of ``kind`` can embed; an unknown kind is an error, not a text-only model."""
    if kind not in MODALITIES:
        raise UserError(f"backbone kind '{kind}' is unknown (causal-lm, vlm, omni)")
    return MODALITIES[kind]


def detect_kind(config) -> str:
    model_type = getattr(config, "model_type", "")
    if model_type in OMNI_TYPES:
        return "omni"
    if model_type in VLM_TYPES and getattr(config, "vision_config", None) is not None:
        return "vlm"
    return "causal-lm"


def _quantization(quantize: str | None, device: torch.device):
    if not quantize:
        return None
    if quantize != "nf4":
        raise UserError(f"quantize: unknown value '{quantize}' (only 'nf4', the QLoRA setting of the paper)")
    if device.type != "cuda":
        raise UserError("quantize: 4-bit NF4 base weights need a CUDA GPU (bitsandbytes); on CPU leave quantize empty")
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError:
        raise UserError("quantize: 4-bit NF4 needs bitsandbytes: pip install bitsandbytes") from None
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def load_tinyvlm_backbone(
    directory: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> Backbone:
    """A saved TinyVLM as an LCO ``Backbone`` (kind ``vlm``, modalities text and image)."""
    model, processor = load_tinyvlm(directory, dtype=dtype, device=device)
    return Backbone(
        model=model,
        processor=processor,
        kind="vlm",
        name=str(directory),
        modalities=("text", "image"),
        extra={"tinyvlm": True},
    )


def load_backbone(
    name_or_path: str,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    kind: str | None = None,
    quantize: str | None = None,
    attn_implementation: str | None = None,
    processor_kwargs: dict | None = None,
) -> Backbone:
    """Load a backbone from a bundled name, a local directory or a hub id (the hub needs the network)."""
    from transformers import AutoConfig, AutoProcessor, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from genrep.core.bundled.lm import BUNDLED_LMS, resolve_lm_path

    device = torch.device(device)
    path = resolve_lm_path(name_or_path)
    if is_tinyvlm_dir(path):  # genrep's own tiny LLaVA-style VLM (lco.tinyvlm)
        if quantize:
            raise UserError("quantize: a TinyVLM backbone is not quantized (leave quantize empty)")
        return load_tinyvlm_backbone(path, dtype=dtype, device=device)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(path)
        kind = kind or detect_kind(config)
        kwargs: dict[str, Any] = {"dtype": dtype}
        model: Any  # a transformers model of the kind
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        quant = _quantization(quantize, device)
        if quant is not None:
            kwargs["quantization_config"] = quant
            kwargs["device_map"] = {"": device}
        if kind == "causal-lm":
            from transformers import AutoModelForCausalLM

            processor = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        elif kind == "vlm":
            from transformers import AutoModelForImageTextToText

            processor = AutoProcessor.from_pretrained(path, **(processor_kwargs or {}))
            model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
        elif kind == "omni":
            from transformers import Qwen2_5OmniThinkerForConditionalGeneration

            processor = AutoProcessor.from_pretrained(path, **(processor_kwargs or {}))
            model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(path, **kwargs)
        else:
            raise UserError(f"backbone kind '{kind}' is unknown (causal-lm, vlm, omni)")
    except OSError as err:
        raise UserError(
            f"cannot load backbone '{name_or_path}' (bundled: {', '.join(BUNDLED_LMS)}; or a local directory / "
            f"hub id): {str(err).splitlines()[0]}"
        ) from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if kind in ("vlm", "omni") and getattr(processor, "image_processor", None) is None:
        # AutoProcessor falls back to a bare tokenizer when it cannot resolve the processor class; the
        # tokenizer then ignores images, and every image would silently get the same embedding.
        raise UserError(
            f"cannot load backbone '{name_or_path}': no multimodal processor could be built for it (got a bare "
            f"{type(processor).__name__}, which would ignore images); check its processor_config.json / "
            "processor_class and that the processor's dependencies are installed"
        )
    if quant is None:
        model = model.to(device)
    return Backbone(
        model=model.eval(), processor=processor, kind=kind, name=name_or_path, modalities=modalities_of(kind)
    )


def language_linear_names(model: torch.nn.Module) -> list[str]:
    """Names of the language model's linear layers (LoRA targets): inside the decoder layers,
    never in a vision/audio tower, a connector or the LM head (docs/papers.md s2.6: LoRA on the
    language model's linear layers only, vision/audio towers frozen)."""
    names = []
    for name, module in model.named_modules():
        if not _is_linear(module):
            continue
        parts = name.split(".")
        if ".layers." not in f".{name}." or any(w in p for p in parts for w in TOWER_WORDS):
            continue
        names.append(name)
    if not names:
        raise UserError(f"no language-model linear layers found in {type(model).__name__} for LoRA")
    return names


LINEAR_CLASSES = ("Linear4bit", "Linear8bitLt")  # bitsandbytes' quantized linears count as linear layers


def _is_linear(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear) or type(module).__name__ in LINEAR_CLASSES


def reference_lora_names(model: torch.nn.Module) -> list[str]:
    """LoRA targets as the reference picks them (``Training/train_VL_any2any.py``, ``find_all_llm_linear_names``):
    every linear layer inside the model's body (its ``model`` attribute, when it has one) whose name does not
    contain ``lm_head``.

    What that covers depends on the architecture: on Qwen2.5-VL (transformers >= 4.52, the reference's
    4.57.1) the body holds the vision tower, the merger and the language model, so the vision tower's and the
    merger's linears are adapted too (their base weights stay frozen); on the Qwen2.5-Omni thinker the body is
    the language model alone; on a causal LM it is the decoder. A model without a ``model`` attribute (the
    bundled TinyVLM) contributes every linear layer except the LM head (its projector included).
    """
    body = getattr(model, "model", None)
    root, prefix = (body, "model.") if isinstance(body, torch.nn.Module) else (model, "")
    names = [f"{prefix}{n}" for n, m in root.named_modules() if n and _is_linear(m) and "lm_head" not in n]
    if not names:
        raise UserError(f"no linear layers found in {type(model).__name__} for LoRA")
    return sorted(names)


def set_max_pixels(processor: Any, max_pixels: int) -> bool:
    """Cap the pixels per image of a processor with a pixel budget (the Qwen2-VL family: ``size["longest_edge"]``,
    formerly ``max_pixels``), as the reference's MTEB wrapper does with ``max_pixels=1280*28*28``. Returns False
    (and changes nothing) for processors that resize to a fixed size instead."""
    ip = getattr(processor, "image_processor", None)
    if ip is None or max_pixels <= 0:
        return False
    size: Any = getattr(ip, "size", None)
    changed = False
    if isinstance(size, dict) and "longest_edge" in size and "shortest_edge" in size:
        ip.size = {**size, "longest_edge": int(max_pixels)}
        changed = True
    elif getattr(size, "longest_edge", None) is not None and getattr(size, "shortest_edge", None) is not None:
        size.longest_edge = int(max_pixels)  # transformers 5's SizeDict: the pixel budget of smart_resize
        changed = True
    if hasattr(ip, "max_pixels"):
        ip.max_pixels = int(max_pixels)
        changed = True
    return changed


def tower_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Parameters of the vision/audio towers and connectors (kept frozen)."""
    return {
        n: p
        for n, p in model.named_parameters()
        if any(w in n for w in ("visual", "vision", "audio", "multi_modal_projector", "connector"))
    }
