"""``EmbeddingModel``: a generative (M)LLM used as an embedding model, the LCO-EMB way.

docs/papers.md s2.4 and s2.5: every input (text, image, audio, video or an
interleaved mix) goes through the backbone's chat template as one user turn, its content followed
by a suffix prompt such as ``"\\nSummarize the above text in one word:"``, with the generation
prompt appended; queries and documents use the same template (a different suffix per side is
allowed). The embedding is the hidden state of the *last token* of the last (or a chosen) layer
under left padding, L2-normalised:

    e(x) = h_L[x ; suffix ; gen-prompt]_{-1} / || h_L[...]_{-1} ||_2

Padding must not change an embedding (users' "embeddings change with batch size" reports), so:
the last *real* token is found from the attention mask (correct under left or right padding); a
causal LM gets explicit position ids counted over real tokens only (``cumsum(mask) - 1``), so a
left-padded row sees the positions it would see alone; multimodal models compute their own
(M-RoPE) positions from the mask. Long inputs are truncated inside the content, never in the
suffix, so the token that is pooled is always the prompt's last token.

``encode`` groups inputs by modality, sorts them by length (short batches pad little) and
restores the input order; it shows progress and returns numpy (default) or torch.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from genrep.core.errors import UserError
from genrep.core.progress import track
from genrep.lco.backbones import Backbone, load_backbone, set_max_pixels

MODALITIES = ("image", "video", "audio", "text")  # the modality signature's order (media, then text)
SUFFIX_TEMPLATE = "\nSummarize the above {modality} in one word:"
INTERLEAVED_SUFFIX = "\nSummarize the above in one word:"
Order = Literal["media-first", "text-first"]
EVAL_MAX_LENGTH = 300  # content tokens when encoding (the reference MTEB wrapper, LCO_Embedding.py)
EVAL_MAX_PIXELS = 1280 * 28 * 28  # pixels per image when encoding (ibid., the processor's max_pixels)


Side = Literal["query", "document"]


def check_side(side: str) -> None:
    """A one-line error for a side other than query / document (no silent fall-through to document)."""
    if side not in ("query", "document"):
        raise UserError(f"side: unknown '{side}' (query or document)")


@dataclass
class PromptConfig:
    """Suffix prompts and the order of an item's parts (docs/papers.md s2.4).

    ``suffix`` maps a modality key (text, image, audio, video, or an interleaved key such as ``image+text``)
    to its suffix; a single modality without an entry uses ``template`` (``"\nSummarize the above text in one
    word:"``), an interleaved item ``interleaved`` (``"\nSummarize the above in one word:"``), as the
    reference (``Training/train_VL_any2any.py``, ``_process_item``; the MTEB wrapper ``LCO_Embedding.py``).
    ``query`` / ``document`` override per side.

    Order of an interleaved item's parts in the user turn: ``train_order`` while training (the reference
    trainer: images, then the text, then the suffix), ``eval_order`` when encoding (the reference MTEB wrapper's
    fused inputs: the text, then the image, then the suffix).
    """

    template: str = SUFFIX_TEMPLATE
    interleaved: str = INTERLEAVED_SUFFIX
    suffix: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    document: dict[str, str] = field(default_factory=dict)
    system: str = ""  # an optional system message ("" = the template's default)
    chat_template: bool = True  # False: raw "content + suffix" even where a chat template exists
    train_order: Order = "media-first"
    eval_order: Order = "text-first"

    def suffix_for(self, key: str, side: Side = "document") -> str:
        check_side(side)
        per_side = self.query if side == "query" else self.document
        if key in per_side:
            return per_side[key]
        if key in self.suffix:
            return self.suffix[key]
        if "+" in key:
            return self.interleaved
        return self.template.format(modality=key)


@dataclass
class _Prepared:
    key: str  # modality signature, e.g. "text" or "image+text"
    prompt: str
    images: list
    videos: list
    audios: list
    length: int


def as_item(x: Any, where: str = "input") -> dict:
    """Normalise one input to ``{text?, image?, audio?, video?}``: a str is a text, a PIL image an
    image, a 1-D float array audio (16 kHz samples), a list of PIL images a video; a dict passes."""
    if isinstance(x, str):
        return {"text": x}
    if isinstance(x, dict):
        unknown = set(x) - set(MODALITIES) - {"id"}
        if unknown:
            raise UserError(f"{where}: unknown field(s) {sorted(unknown)} (use text, image, audio, video)")
        item = {k: v for k, v in x.items() if k in MODALITIES and v is not None}
        if not item:
            raise UserError(f"{where}: empty item (needs one of text, image, audio, video)")
        return item
    if hasattr(x, "convert") and hasattr(x, "size"):  # PIL image
        return {"image": x}
    if isinstance(x, np.ndarray) and x.ndim == 1:
        return {"audio": x}
    if isinstance(x, (list, tuple)) and x and all(hasattr(f, "convert") for f in x):
        return {"video": list(x)}
    raise UserError(f"{where}: cannot embed an object of type {type(x).__name__}")


def modality_key(item: dict) -> str:
    return "+".join(m for m in MODALITIES if m in item)


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Hidden state of each row's last real token (docs/papers.md s2.5: last-token pooling).

    Works for left padding (the last column) and right padding alike: the index is the last
    position whose mask is 1.
    """
    mask = attention_mask.to(torch.long)
    last = mask.shape[1] - 1 - mask.flip(1).argmax(1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.to(hidden.device)]


class EmbeddingModel:
    """A backbone plus the LCO-EMB input format and pooling. See the module docstring."""

    def __init__(
        self,
        backbone: Backbone,
        *,
        prompts: PromptConfig | None = None,
        layer: int = -1,
        max_length: int = EVAL_MAX_LENGTH,
        normalize: bool = True,
        max_pixels: int = EVAL_MAX_PIXELS,
    ):
        self.backbone = backbone
        self.prompts = prompts or PromptConfig()
        for name in ("train_order", "eval_order"):
            if getattr(self.prompts, name) not in ("media-first", "text-first"):
                raise UserError(f"prompts.{name}: unknown '{getattr(self.prompts, name)}' (media-first or text-first)")
        self.layer = layer
        self.max_length = max_length  # content tokens kept (the reference: 300 when encoding, 650 in training)
        self.normalize = normalize
        self.max_pixels = 0  # pixels per image for processors with a pixel budget (0 = the processor's own)
        self.set_max_pixels(max_pixels)
        self.head: torch.nn.Module | None = None  # an optional trained projection (method "head")
        self.forward_module: torch.nn.Module | None = None  # e.g. the DDP wrapper while training
        tok = backbone.tokenizer
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        if backbone.processor is not tok and hasattr(backbone.processor, "padding_side"):
            backbone.processor.padding_side = "left"
        forward = inspect.signature(backbone.model.forward).parameters
        self._keep_logits = "logits_to_keep" in forward
        # Causal LMs take explicit position ids; M-RoPE models derive them from the mask themselves.
        self._pass_positions = backbone.kind == "causal-lm" and "position_ids" in forward

    def set_max_pixels(self, max_pixels: int) -> None:
        """Cap the pixels per image (Qwen2-VL-family processors; the reference evaluates with 1280*28*28).
        Processors that resize to a fixed size keep it, and ``max_pixels`` stays 0."""
        if max_pixels and set_max_pixels(self.backbone.processor, max_pixels):
            self.max_pixels = int(max_pixels)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        kind: str | None = None,
        **kwargs,
    ) -> EmbeddingModel:
        """A bundled name (``smollm2-135m``, ``gemma3-270m``), a local directory or a hub id."""
        return cls(load_backbone(name_or_path, dtype=dtype, device=device, kind=kind), **kwargs)

    @property
    def model(self) -> torch.nn.Module:
        return self.backbone.model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ prompts
    def _truncate(self, text: str) -> str:
        tok = self.backbone.tokenizer
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max_length:
            return text
        return tok.decode(ids[: self.max_length])

    def prompt(self, item: Any, side: Side = "document", order: Order | None = None) -> _Prepared:
        """The exact prompt string an item is embedded with (plus its media). ``order`` places the text and
        the media of an interleaved item (default: the prompts' ``eval_order``)."""
        order = order or self.prompts.eval_order
        item = as_item(item)
        key = modality_key(item)
        for m in item:
            if m != "text" and m not in self.backbone.modalities:
                raise UserError(f"backbone '{self.backbone.name}' ({self.backbone.kind}) cannot embed {m}")
        text = self._truncate(item["text"]) if "text" in item else ""
        suffix = self.prompts.suffix_for(key, side)
        images = item["image"] if isinstance(item.get("image"), list) else ([item["image"]] if "image" in item else [])
        videos = [item["video"]] if "video" in item else []
        audios = [item["audio"]] if "audio" in item else []
        use_chat = self.prompts.chat_template and self.backbone.has_chat_template
        if self.backbone.kind == "causal-lm":
            content: Any = text + suffix
        else:
            media = (
                [{"type": "image"} for _ in images]
                + [{"type": "video"} for _ in videos]
                + [{"type": "audio"} for _ in audios]
            )
            if not media:  # a text: one part, content and suffix
                content = [{"type": "text", "text": text + suffix}]
            elif "text" not in item:
                content = media + [{"type": "text", "text": suffix}]
            elif order == "text-first":
                content = [{"type": "text", "text": text}] + media + [{"type": "text", "text": suffix}]
            else:
                content = media + [{"type": "text", "text": text}, {"type": "text", "text": suffix}]
        if use_chat:
            messages = [{"role": "user", "content": content}]
            if self.prompts.system:
                sys_content = (
                    self.prompts.system
                    if self.backbone.kind == "causal-lm"
                    else [{"type": "text", "text": self.prompts.system}]
                )
                messages.insert(0, {"role": "system", "content": sys_content})
            prompt = self.backbone.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            if images or videos or audios:
                raise UserError(f"backbone '{self.backbone.name}' has no chat template to place media in")
            bos = self.backbone.tokenizer.bos_token or ""
            prompt = bos + text + suffix
        length = len(self.backbone.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        return _Prepared(key, prompt, images, videos, audios, length)

    # ------------------------------------------------------------------ forward
    def _inputs(self, batch: Sequence[_Prepared]) -> dict[str, torch.Tensor]:
        prompts = [p.prompt for p in batch]
        if self.backbone.kind == "causal-lm":
            enc = self.backbone.tokenizer(prompts, padding=True, add_special_tokens=False, return_tensors="pt")
        else:
            kwargs: dict[str, Any] = {}
            if any(p.images for p in batch):
                kwargs["images"] = [p.images for p in batch]
            if any(p.videos for p in batch):
                kwargs["videos"] = [v for p in batch for v in p.videos]
            if any(p.audios for p in batch):
                kwargs["audio"] = [a for p in batch for a in p.audios]
            enc = self.backbone.processor(text=prompts, padding=True, return_tensors="pt", **kwargs)
        enc = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in dict(enc).items()}
        if self._pass_positions:
            enc["position_ids"] = (enc["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
        return enc

    def forward_hidden(self, batch: Sequence[_Prepared], layers: Sequence[int] | None = None) -> torch.Tensor:
        """Last-token hidden states ``[len(layers) or 1, B, d]`` (not normalised), with grad if enabled."""
        enc = self._inputs(batch)
        extra = {"logits_to_keep": 1} if self._keep_logits else {}
        out = (self.forward_module or self.model)(
            **enc, output_hidden_states=True, return_dict=True, use_cache=False, **extra
        )
        hidden = out.hidden_states
        picks = [self.layer] if layers is None else list(layers)
        return torch.stack([last_token_pool(hidden[i], enc["attention_mask"]) for i in picks])

    def embed_batch(self, items: Sequence[Any], side: Side = "document") -> torch.Tensor:
        """Embeddings ``[B, d]`` of one batch, in order, with autograd as the caller has it (training: the
        prompts' ``train_order``)."""
        prepared = [self.prompt(x, side, self.prompts.train_order) for x in items]
        keys = {p.key for p in prepared}
        if len(keys) == 1:
            h = self.forward_hidden(prepared)[0]
        else:  # one forward per modality signature, then back into order
            h = None
            for key in sorted(keys):
                idx = [i for i, p in enumerate(prepared) if p.key == key]
                part = self.forward_hidden([prepared[i] for i in idx])[0]
                if h is None:
                    h = part.new_zeros((len(prepared), part.shape[-1]))
                h = h.index_copy(0, torch.tensor(idx, device=part.device), part)
        h = h.float()  # type: ignore[union-attr]  # set by the loop (keys is non-empty)
        if self.head is not None:
            h = self.head(h)
        return F.normalize(h, dim=-1) if self.normalize else h

    # ------------------------------------------------------------------ inference API
    @torch.no_grad()
    def encode(
        self,
        inputs: Iterable[Any],
        *,
        batch_size: int = 16,
        side: Side = "document",
        layers: Sequence[int] | None = None,
        sort_by_length: bool = True,
        convert_to: Literal["numpy", "torch"] = "numpy",
        show_progress: bool = True,
        description: str = "encode",
    ):
        """Embed inputs: ``[N, d]`` (or ``[len(layers), N, d]`` with ``layers``), in the input order.

        ``side`` picks the query or document suffix; ``layers`` (hidden-state indices, 0 = the token
        embeddings) returns several layers for analysis; ``convert_to`` is ``numpy`` or ``torch``.
        """
        items = list(inputs)
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1 (got {batch_size})")
        check_side(side)
        if convert_to not in ("numpy", "torch"):
            raise UserError(f"convert_to: unknown '{convert_to}' (numpy or torch)")
        was_training = self.model.training
        self.model.eval()
        prepared = [self.prompt(x, side, self.prompts.eval_order) for x in items]
        order = list(range(len(prepared)))
        if sort_by_length:  # by modality signature, then longest first: batches pad little
            order.sort(key=lambda i: (prepared[i].key, -prepared[i].length))
        batches: list[list[int]] = []
        current: list[int] = []
        for i in order:
            if current and (len(current) == batch_size or prepared[current[0]].key != prepared[i].key):
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        out: torch.Tensor | None = None
        for idx in track(batches, description, total=len(batches), disable=not show_progress or len(batches) < 2):
            h = self.forward_hidden([prepared[i] for i in idx], layers).float()
            if self.head is not None and layers is None:
                h = self.head(h)
            if self.normalize:
                h = F.normalize(h, dim=-1)
            if out is None:
                out = torch.zeros((h.shape[0], len(items), h.shape[-1]))
            out[:, idx] = h.cpu()
        self.model.train(was_training)
        if out is None:
            out = torch.zeros((1 if layers is None else len(layers), 0, 0))
        if layers is None:
            out = out[0]
        return out.numpy() if convert_to == "numpy" else out

    @staticmethod
    def similarity(a, b) -> np.ndarray | torch.Tensor:
        """Cosine similarity matrix of two sets of embeddings (numpy or torch, as given)."""
        if torch.is_tensor(a):
            return F.normalize(a.float(), dim=-1) @ F.normalize(torch.as_tensor(b).float(), dim=-1).T
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
        return a @ b.T

    def _text_config(self):
        cfg = self.model.config
        return getattr(cfg, "text_config", None) or cfg

    def num_hidden_layers(self) -> int:
        return int(self._text_config().num_hidden_layers)

    def hidden_size(self) -> int:
        return int(self._text_config().hidden_size)
