"""A tiny LLaVA-style vision-language model built from the bundled parts.

LCO-EMB's two claims (docs/papers.md s2.1, s2.2) are about *multimodal* generative backbones: text-only
contrastive refinement improves their image embeddings too, and backbones that generate better
give better embeddings (GRSL). No vision-language model exists offline, so this module builds one
the way LLaVA does:

    image --frozen EfficientNet-Lite0--> feature map [1280, h/32, w/32]
          --average-pooled to grid x grid--> grid^2 vectors
          --trainable MLP projector (Linear, GELU, Linear)--> grid^2 "image tokens" in the LM's
            input-embedding space, written over the ``<image>`` placeholder positions
    text  --the bundled LM's own embeddings--> the rest of the sequence

The language model is a bundled causal LM (SmolLM2-135M by default, Gemma-3-270M as an option) or
any ``AutoModelForCausalLM`` directory. ``<image>`` is added to the tokenizer as a special token
whose id lies *past* the LM's vocabulary: it never reaches the embedding table or the output
softmax, so building the VLM leaves every LM weight and logit as it was.

The processor expands each ``<image>`` in a prompt to ``grid^2`` placeholder tokens, so a row's
image tokens are contiguous and in the order of its images; rows are left- or right-padded and the
model derives position ids from the attention mask (``cumsum(mask) - 1``), so padding never
changes a row. ``TinyVLM`` therefore works unchanged with ``EmbeddingModel`` (kind ``vlm``), with
the trainer's LoRA (the language model's linear layers only; the vision tower and the projector
stay frozen there) and with ``save_model`` / ``load_model``.

A saved TinyVLM is a directory with ``tinyvlm.json``, ``projector.safetensors``, the tokenizer, and
the language model as a *reference* (a bundled name or path), a LoRA adapter over that reference
(``lm_adapter/``), or full weights (``language_model/``).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genrep.core.config import Count, NonNegInt
from genrep.core.errors import UserError
from genrep.core.rundir import atomic_write_json

CONFIG_FILE = "tinyvlm.json"
PROJECTOR_FILE = "projector.safetensors"
VISION_CHOICES = ("effnet-lite0", "effnet-lite0-random")
# Used where the LM has no chat template (Gemma-3-270M base): the content lines, nothing else.
PLAIN_TEMPLATE = "{{ bos_token }}{% for message in messages %}{{ message['content'] }}\n{% endfor %}"


@dataclass
class TinyVLMConfig:
    """What a TinyVLM is made of. ``lm``: a bundled LM name, a directory or a hub id; ``vision``:
    ``effnet-lite0`` (the bundled ImageNet weights) or ``effnet-lite0-random`` (same architecture,
    random weights: tests); images are resized to ``image_size`` and each becomes ``grid^2`` tokens."""

    lm: str = "smollm2-135m"
    vision: str = "effnet-lite0"
    image_size: Count = 96
    grid: Count = 3
    projector_hidden: NonNegInt = 0  # 0 = the LM's hidden size (LLaVA-1.5's two-layer MLP)
    image_token: str = "<image>"
    seed: int = 0  # initialises the projector (and a random vision tower)

    @property
    def num_image_tokens(self) -> int:
        return self.grid * self.grid

    def validate(self) -> None:
        if self.vision not in VISION_CHOICES:
            raise UserError(f"vlm.vision: unknown '{self.vision}' (one of {', '.join(VISION_CHOICES)})")
        if self.image_size < 32 or self.image_size % 32:
            raise UserError(
                f"vlm.image_size: {self.image_size} must be a multiple of 32 (>= 32): the encoder has stride 32"
            )
        if self.projector_hidden < 0 or not self.image_token.strip():
            raise UserError("vlm.projector_hidden must be >= 0 (0 = the LM's width) and vlm.image_token non-empty")
        if not 1 <= self.grid <= self.image_size // 32:
            raise UserError(f"vlm.grid: {self.grid} must be between 1 and image_size/32 = {self.image_size // 32}")


# ---------------------------------------------------------------------------------------------- processor
class TinyVLMImageProcessor:
    """PIL images or arrays (grey [H, W] or RGB [H, W, 3], uint8 or float in [0, 1]) -> RGB float
    tensors [N, 3, S, S] in [0, 1], bicubic-resized (the encoder normalises itself)."""

    def __init__(self, image_size: int):
        self.image_size = image_size

    def to_pil(self, image: Any):
        from PIL import Image

        if hasattr(image, "convert"):
            return image.convert("RGB")
        arr = np.asarray(image)
        if np.issubdtype(arr.dtype, np.integer):  # 0-255 values in any integer type
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        elif arr.dtype != np.uint8:  # floats in [0, 1]
            arr = (np.clip(arr.astype(np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
            arr = arr.transpose(1, 2, 0)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim not in (2, 3):
            raise UserError(f"image: expected [H, W] or [H, W, 3], got shape {tuple(arr.shape)}")
        return Image.fromarray(arr).convert("RGB")

    def __call__(self, images: Sequence[Any]) -> torch.Tensor:
        from PIL import Image

        s = self.image_size
        arrays = [
            np.asarray(self.to_pil(im).resize((s, s), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
            for im in images
        ]
        if not arrays:
            return torch.zeros((0, 3, s, s))
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class TinyVLMProcessor:
    """Tokenizer + image processor with the interface ``EmbeddingModel`` expects from a VLM processor:
    ``apply_chat_template`` (content lists with ``{"type": "image"}`` parts) and
    ``__call__(text=[...], images=[[...], ...], padding=True, return_tensors="pt")``."""

    def __init__(self, tokenizer, cfg: TinyVLMConfig):
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.image_processor = TinyVLMImageProcessor(cfg.image_size)
        self.image_token = cfg.image_token
        if cfg.image_token not in tokenizer.get_vocab():
            from tokenizers import AddedToken

            tokenizer.add_tokens([AddedToken(cfg.image_token, special=True, normalized=False)], special_tokens=True)
        self.image_token_id = tokenizer.convert_tokens_to_ids(cfg.image_token)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.chat_template = tokenizer.chat_template or PLAIN_TEMPLATE

    @property
    def padding_side(self) -> str:
        return self.tokenizer.padding_side

    @padding_side.setter
    def padding_side(self, side: str) -> None:
        self.tokenizer.padding_side = side

    @property
    def num_image_tokens(self) -> int:
        return self.cfg.num_image_tokens

    def _flatten(self, messages: list[dict]) -> list[dict]:
        flat = []
        for m in messages:
            content = m["content"]
            if not isinstance(content, str):
                parts = []
                for part in content:
                    kind = part.get("type")
                    if kind == "image":
                        parts.append(self.image_token)
                    elif kind == "text":
                        parts.append(part["text"])
                    else:
                        raise UserError(f"TinyVLM: cannot take '{kind}' inputs (image and text only)")
                content = "".join(parts)
            flat.append({"role": m["role"], "content": content})
        return flat

    def apply_chat_template(
        self, messages: list[dict], tokenize: bool = False, add_generation_prompt: bool = True, **kwargs
    ) -> str:
        """The LM's chat template (or a plain one) with ``<image>`` placeholders where the images go."""
        return self.tokenizer.apply_chat_template(
            self._flatten(messages),
            chat_template=self.chat_template,
            tokenize=tokenize,
            add_generation_prompt=add_generation_prompt,
            **kwargs,
        )

    def expand_image_tokens(self, text: str, n_images: int, row: int = 0) -> str:
        found = text.count(self.image_token)
        if found != n_images:
            raise UserError(
                f"TinyVLM processor: row {row} has {found} {self.image_token} placeholder(s) but {n_images} image(s)"
            )
        return text.replace(self.image_token, self.image_token * self.num_image_tokens)

    def _rows_images(self, texts: list[str], images) -> list[list]:
        if images is None:
            return [[] for _ in texts]
        images = list(images)
        if len(images) == len(texts) and all(isinstance(x, (list, tuple)) for x in images):
            return [list(x) for x in images]
        flat, rows = list(images), []
        for t in texts:  # a flat list: images are taken in order of the placeholders
            n = t.count(self.image_token)
            rows.append(flat[:n])
            flat = flat[n:]
        if flat:
            raise UserError(f"TinyVLM processor: {len(flat)} image(s) more than {self.image_token} placeholders")
        return rows

    def __call__(
        self, text=None, images=None, padding: bool | str = True, return_tensors: str = "pt", **kwargs
    ) -> dict[str, torch.Tensor]:
        texts = [text] if isinstance(text, str) else list(text or [])
        if any(kwargs.get(k) for k in ("videos", "audio")):
            raise UserError("TinyVLM: cannot take video or audio inputs (image and text only)")
        rows = self._rows_images(texts, images)
        expanded = [self.expand_image_tokens(t, len(r), i) for i, (t, r) in enumerate(zip(texts, rows))]
        enc = dict(self.tokenizer(expanded, padding=padding, add_special_tokens=False, return_tensors="pt"))
        flat = [im for r in rows for im in r]
        if flat:
            enc["pixel_values"] = self.image_processor(flat)
        return enc

    def save_pretrained(self, directory: str | Path) -> None:
        self.tokenizer.save_pretrained(str(directory))


# ---------------------------------------------------------------------------------------------- model
def _vision_tower(cfg: TinyVLMConfig) -> nn.Module:
    """The bundled pretrained EfficientNet-Lite0, or the same architecture with random weights."""
    from genrep.core import assets
    from genrep.core.bundled.effnet import INSTALL, EfficientNetLite0

    if cfg.vision == "effnet-lite0":
        return assets.load("effnet-lite0")
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise UserError(f"vlm.vision: the EfficientNet-Lite code is not installed: {INSTALL}") from None
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed + 1)
        return EfficientNetLite0(EfficientNet.from_name("efficientnet-lite0"))


class TinyVLM(nn.Module):
    """Frozen vision tower + trainable projector + causal LM (see the module docstring)."""

    def __init__(self, cfg: TinyVLMConfig, vision_tower: nn.Module, language_model: nn.Module, image_token_id: int):
        super().__init__()
        self.cfg = cfg
        self.vision_tower: Any = vision_tower.requires_grad_(False)  # an EfficientNetLite0
        lm_config: Any = language_model.config  # a transformers config
        d_lm = lm_config.hidden_size
        d_in: int = vision_tower.head_channels  # type: ignore[assignment]
        hidden = cfg.projector_hidden or d_lm
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            self.multi_modal_projector = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_lm))
        self.language_model: Any = language_model  # a transformers / peft causal LM
        self.image_token_id = int(image_token_id)
        self.config = lm_config  # what EmbeddingModel / peft read (hidden size, layers)
        self.lm_source = cfg.lm
        dtype = next(language_model.parameters()).dtype
        self.multi_modal_projector.to(dtype)

    # -- pieces
    def train(self, mode: bool = True) -> "TinyVLM":
        super().train(mode)
        self.vision_tower.eval()  # BatchNorm statistics stay frozen
        return self

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[N, grid^2, d_lm]`` image tokens: frozen encoder -> average pool to grid x grid -> projector."""
        with torch.no_grad():
            fmap = self.vision_tower.features(pixel_values.float())
            fmap = F.adaptive_avg_pool2d(fmap, self.cfg.grid)
        tokens = fmap.flatten(2).transpose(1, 2)  # [N, grid^2, 1280], row-major over the grid
        proj = self.multi_modal_projector
        return proj(tokens.to(proj[0].weight.dtype))  # type: ignore[arg-type]

    def embed_inputs(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        """Input embeddings with the image tokens written over the ``<image>`` positions, in order."""
        is_image = input_ids == self.image_token_id
        table = self.language_model.get_input_embeddings()
        embeds = table(input_ids.masked_fill(is_image, 0))
        n = int(is_image.sum())
        if n == 0:
            return embeds
        if pixel_values is None:
            raise UserError("TinyVLM: the input has image tokens but no pixel_values")
        feats = self.image_features(pixel_values.to(embeds.device))
        if feats.shape[0] * feats.shape[1] != n:
            raise UserError(
                f"TinyVLM: {n} image tokens in the input but {feats.shape[0]} image(s) x {feats.shape[1]} tokens"
            )
        return embeds.masked_scatter(is_image.unsqueeze(-1), feats.reshape(-1, feats.shape[-1]).to(embeds.dtype))

    @staticmethod
    def positions(attention_mask: torch.Tensor) -> torch.Tensor:
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ):
        """The LM's output (loss with ``labels``, logits, hidden states...) on text + image tokens.

        ``logits_to_keep`` is explicit so that ``EmbeddingModel`` sees it and asks for one position only."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if position_ids is None:
            position_ids = self.positions(attention_mask)
        embeds = self.embed_inputs(input_ids, pixel_values)
        return self.language_model(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            labels=labels,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        max_new_tokens: int = 16,
        eos_token_id: int | Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Greedy decoding with a KV cache; returns the new tokens ``[B, <= max_new_tokens]`` (eos-padded)."""
        if not bool(attention_mask[:, -1].all()):
            raise UserError("TinyVLM.generate: inputs must be left-padded (processor.padding_side = 'left')")
        eos = eos_token_id if eos_token_id is not None else self.config.eos_token_id
        if eos is None:
            raise UserError("TinyVLM.generate: no eos_token_id given and the LM config has none")
        eos_ids = torch.tensor([eos] if isinstance(eos, int) else list(eos), device=input_ids.device)
        mask = attention_mask
        pos = self.positions(mask)
        out = self.language_model(
            inputs_embeds=self.embed_inputs(input_ids, pixel_values),
            attention_mask=mask,
            position_ids=pos,
            use_cache=True,
            logits_to_keep=1,
        )
        # transformers >= 5.2x calls the KV cache ``cache`` (``past_key_values`` before)
        lm = self.language_model
        base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm  # a peft wrapper takes **kwargs
        cache_arg = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        past, pos = getattr(out, cache_arg), pos[:, -1:]
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        new = []
        for t in range(max_new_tokens):
            nxt = out.logits[:, -1].argmax(-1)
            nxt = torch.where(done, eos_ids[0], nxt)
            new.append(nxt)
            done |= torch.isin(nxt, eos_ids)
            if bool(done.all()) or t == max_new_tokens - 1:
                break
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            pos = pos + 1
            out = self.language_model(
                input_ids=nxt[:, None], attention_mask=mask, position_ids=pos, use_cache=True, **{cache_arg: past}
            )
            past = getattr(out, cache_arg)
        return torch.stack(new, dim=1)

    def gradient_checkpointing_enable(self, **kwargs) -> None:
        self.language_model.gradient_checkpointing_enable(**kwargs)

    def gradient_checkpointing_disable(self) -> None:
        self.language_model.gradient_checkpointing_disable()

    # -- persistence
    def save_pretrained(self, directory: str | Path, *, language_model: str = "weights", **_: Any) -> Path:
        """Write ``tinyvlm.json`` + ``projector.safetensors`` and the LM as ``weights`` (full, the default:
        what ``save_model`` needs after fine-tuning or merging), ``adapter`` (the LM is a peft model over the
        reference) or ``reference`` (unchanged bundled/base LM: a few MB per checkpoint)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        spec: dict[str, Any] = {
            "config": dataclasses.asdict(self.cfg),
            "lm_source": self.lm_source,
            "language_model": language_model,
        }
        if language_model == "weights":
            lm = self.language_model
            if hasattr(lm, "merge_and_unload"):
                raise UserError("TinyVLM.save_pretrained: merge the LM's adapter first or save it as 'adapter'")
            lm.save_pretrained(directory / "language_model")
        elif language_model == "adapter":
            self.language_model.save_pretrained(directory / "lm_adapter")
        elif language_model != "reference":
            raise UserError("TinyVLM.save_pretrained: language_model must be weights, adapter or reference")
        sd = {k: v.detach().contiguous() for k, v in self.multi_modal_projector.state_dict().items()}
        save_file(sd, str(directory / PROJECTOR_FILE))
        atomic_write_json(directory / CONFIG_FILE, spec)
        return directory


def is_tinyvlm_dir(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def _load_lm(source: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from genrep.core.bundled.lm import BUNDLED_LMS, resolve_lm_path

    path = resolve_lm_path(source)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as err:  # ValueError: not a causal-LM checkpoint
        raise UserError(
            f"vlm.lm: cannot load '{source}' (bundled: {', '.join(BUNDLED_LMS)}; or a directory / "
            f"hub id): {str(err).splitlines()[0]}"
        ) from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _load_tokenizer(source: str):
    from transformers import AutoTokenizer

    from genrep.core.bundled.lm import resolve_lm_path

    try:
        return AutoTokenizer.from_pretrained(resolve_lm_path(source))
    except (OSError, ValueError) as err:
        raise UserError(f"vlm.lm: cannot load the tokenizer of '{source}': {str(err).splitlines()[0]}") from None


def build_tinyvlm(
    cfg: TinyVLMConfig, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[TinyVLM, TinyVLMProcessor]:
    """A fresh TinyVLM: the pretrained (or random) vision tower, a newly initialised projector, the LM."""
    cfg.validate()
    processor = TinyVLMProcessor(_load_tokenizer(cfg.lm), cfg)
    model = TinyVLM(cfg, _vision_tower(cfg), _load_lm(cfg.lm, dtype), processor.image_token_id)
    return model.to(device).eval(), processor


def load_tinyvlm(
    directory: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[TinyVLM, TinyVLMProcessor]:
    """Load a saved TinyVLM directory (see ``TinyVLM.save_pretrained``)."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    directory = Path(directory)
    f = directory / CONFIG_FILE
    try:
        spec = json.loads(f.read_text())
        cfg = TinyVLMConfig(**spec["config"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise UserError(f"{f}: not a readable TinyVLM config ({type(err).__name__}: {err})") from None
    cfg.validate()
    kind = spec.get("language_model", "reference")
    source = spec.get("lm_source", cfg.lm)
    try:
        if kind == "weights":
            lm = _load_lm(str(directory / "language_model"), dtype)
        else:
            lm = _load_lm(source, dtype)
            if kind == "adapter":
                from peft import PeftModel

                lm = PeftModel.from_pretrained(lm, str(directory / "lm_adapter")).merge_and_unload()
        processor = TinyVLMProcessor(AutoTokenizer.from_pretrained(str(directory)), cfg)
        model = TinyVLM(cfg, _vision_tower(cfg), lm, processor.image_token_id)
        model.multi_modal_projector.load_state_dict(load_file(str(directory / PROJECTOR_FILE)))
    except (OSError, ValueError, RuntimeError) as err:  # missing/corrupt projector, adapter or tokenizer
        raise UserError(
            f"{directory}: incomplete or broken TinyVLM directory ({type(err).__name__}: {str(err).splitlines()[0]})"
        ) from None
    model.lm_source = source if kind != "weights" else str(directory / "language_model")
    return model.to(device=device).eval(), processor
