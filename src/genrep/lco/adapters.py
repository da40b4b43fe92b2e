"""What training changes in the backbone: LoRA (the paper's recipe), full fine-tuning, or a linear head.

docs/papers.md s2.6: LoRA r = 64, alpha = 128 (the reference's training scripts; the paper quotes 16 for
text-only runs), dropout 0.05, the base weights frozen. Which linear layers get an adapter is ``scope``:
``reference`` picks them as the reference's ``Training/train_VL_any2any.py`` does (every linear layer of the
model body except the LM head, which on Qwen2.5-VL includes the vision tower and merger: see
:func:`genrep.lco.backbones.reference_lora_names`), ``language`` the language model's decoder only. With 4-bit
base weights (QLoRA) the model first goes through peft's ``prepare_model_for_kbit_training``, as in the
reference. The two alternatives
are the paper's ablation (Qwen2.5-VL-7B: LoRA 71.98 > full FT 66.49): ``full`` trains every
language-model weight (towers, connectors and LM head frozen); ``head`` freezes the whole backbone
and trains one linear projection on the pooled embedding (initialised to the identity).

A trained model is a directory with ``lco_model.json`` (backbone, method, layer, prompts) and the
changed weights: ``adapter/`` (peft LoRA), ``model/`` (full weights) or ``head.safetensors``.
``merge`` folds a LoRA adapter into the base weights; ``soup`` averages several runs' weight
*deltas* (each adapter merged first, so the soup of LoRA runs is the average of B A, not of A
and B separately).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import torch

from genrep.core.errors import UserError
from genrep.core.files import read_json
from genrep.core.rundir import atomic_write_json
from genrep.lco.backbones import (
    TOWER_WORDS,
    language_linear_names,
    load_backbone,
    reference_lora_names,
)
from genrep.lco.embedding import EmbeddingModel, PromptConfig

METHODS = ("lora", "full", "head")
# Full fine-tuning trains the language model only (embeddings included); these stay frozen.
FROZEN_IN_FULL = tuple(w for w in TOWER_WORDS if w != "embed_tokens")
MODEL_FILE = "lco_model.json"


LoraScope = Literal["reference", "language"]


@dataclass
class LoraSettings:
    """LoRA hyper-parameters (the reference's ``Training/train_VL.sh``: r 64, alpha 128, dropout 0.05)."""

    r: int = 64
    alpha: float = 128.0
    dropout: float = 0.05
    scope: LoraScope = "reference"  # reference (every body linear but lm_head) | language (the decoder's only)
    targets: list[str] = field(default_factory=list)  # explicit module names; overrides scope


def lora_targets(model: torch.nn.Module, lora: LoraSettings) -> list[str]:
    """The module names that get a LoRA adapter: ``lora.targets`` if given, else by ``lora.scope``."""
    if lora.targets:
        return list(lora.targets)
    if lora.scope == "reference":
        return reference_lora_names(model)
    if lora.scope == "language":
        return language_linear_names(model)
    raise UserError(f"lora.scope: unknown '{lora.scope}' (reference or language)")


def apply_method(
    emb: EmbeddingModel,
    method: str,
    lora: LoraSettings | None = None,
    *,
    kbit: bool = False,
    grad_checkpointing: bool = False,
) -> list[torch.nn.Parameter]:
    """Freeze the backbone and make the method's parameters trainable; returns them.

    ``kbit`` (4-bit base weights): LoRA goes through ``peft.prepare_model_for_kbit_training`` first, as the
    reference does (non-quantized weights such as norms and embeddings cast to float32; the input embeddings
    made to require grad; gradient checkpointing turned on when ``grad_checkpointing``).
    """
    if method not in METHODS:
        raise UserError(f"method: unknown '{method}' (one of {', '.join(METHODS)})")
    model = emb.backbone.model
    for p in model.parameters():
        p.requires_grad_(False)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        lora = lora or LoraSettings()
        targets = lora_targets(model, lora)
        if kbit:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(
                model,
                use_gradient_checkpointing=grad_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False},
            )
        cfg = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,  # type: ignore[arg-type]  # float alpha works
            lora_dropout=lora.dropout,
            target_modules=targets,
            bias="none",
        )
        with warnings.catch_warnings():  # peft asks transformers a deprecated question; not ours to fix
            warnings.filterwarnings("ignore", category=FutureWarning)
            peft_model = get_peft_model(model, cfg)
        emb.backbone.model = peft_model
        return [p for p in peft_model.parameters() if p.requires_grad]
    if method == "full":
        params = []
        for name, p in model.named_parameters():
            if any(w in name for w in FROZEN_IN_FULL):
                continue
            p.requires_grad_(True)
            params.append(p)
        return params
    d = emb.hidden_size()
    head = torch.nn.Linear(d, d)
    with torch.no_grad():
        head.weight.copy_(torch.eye(d))
        head.bias.zero_()
    emb.head = head.to(emb.device)
    return list(head.parameters())


class TrainableState(torch.nn.Module):
    """A view of only the trainable tensors, for checkpoints that do not copy a frozen backbone."""

    def __init__(self, emb: EmbeddingModel):
        super().__init__()
        self._emb = [emb]

    def _named(self) -> dict[str, torch.nn.Parameter]:
        emb = self._emb[0]
        out = {f"backbone.{n}": p for n, p in emb.backbone.model.named_parameters() if p.requires_grad}
        if emb.head is not None:
            out.update({f"head.{n}": p for n, p in emb.head.named_parameters()})
        return out

    def state_dict(self, *args, **kwargs):  # noqa: D102
        return {n: p.detach() for n, p in self._named().items()}

    def load_state_dict(self, state, strict: bool = True):  # type: ignore[override]  # noqa: D102
        named = self._named()
        missing = set(named) - set(state)
        if strict and (missing or set(state) - set(named)):
            raise UserError(f"checkpoint does not match the trainable parameters (missing {sorted(missing)[:3]})")
        with torch.no_grad():
            for n, p in named.items():
                p.copy_(state[n])


def save_model(emb: EmbeddingModel, out: str | Path, *, method: str, backbone: str, info: dict | None = None) -> Path:
    """Write a trained embedding model directory (see module docstring)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = {
        "backbone": backbone,
        "base_backbone": backbone,
        "kind": emb.backbone.kind,
        "method": method,
        "layer": emb.layer,
        "max_length": emb.max_length,
        "max_pixels": emb.max_pixels,
        "normalize": emb.normalize,
        "prompts": dataclasses.asdict(emb.prompts),
        **(info or {}),
    }
    if method == "lora":
        emb.backbone.model.save_pretrained(out / "adapter")
    elif method in ("full", "merged"):
        model = emb.backbone.model
        model.save_pretrained(out / "model")
        emb.backbone.processor.save_pretrained(out / "model")
        spec["backbone"] = "model"
    elif method == "head":
        from safetensors.torch import save_file

        assert emb.head is not None  # method "head" trains one
        save_file({k: v.contiguous() for k, v in emb.head.state_dict().items()}, str(out / "head.safetensors"))
    atomic_write_json(out / MODEL_FILE, spec)
    return out


def read_spec(path: str | Path) -> dict:
    path = Path(path)
    f = path / MODEL_FILE
    if not f.is_file():
        raise UserError(f"{path}: not a trained LCO model (no {MODEL_FILE}); use base:NAME for an untuned backbone")
    spec = read_json(f, "model spec")
    if not isinstance(spec, dict) or "method" not in spec:
        raise UserError(f"{f}: not an LCO model spec (expected an object with 'method')")
    return spec


def load_model(
    spec_or_dir: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    merge: bool = True,
    prompts: PromptConfig | None = None,
) -> EmbeddingModel:
    """``base:NAME`` (an untuned backbone: bundled name, directory or hub id) or a trained model directory.

    A LoRA adapter is merged into the weights on load (``merge=False`` keeps the peft wrapper).
    """
    if spec_or_dir.startswith("base:"):
        return EmbeddingModel.from_pretrained(spec_or_dir[5:], device=device, dtype=dtype, prompts=prompts)
    root = Path(spec_or_dir)
    if not (root / MODEL_FILE).is_file() and not root.is_dir():
        raise UserError(f"--model: '{spec_or_dir}' is neither base:NAME nor a trained model directory")
    spec = read_spec(root)
    base = spec["backbone"]
    if base == "model":
        base = str(root / "model")
    backbone = load_backbone(base, device=device, dtype=dtype, kind=spec.get("kind"))
    p = spec.get("prompts") or {}
    emb = EmbeddingModel(
        backbone,
        prompts=prompts or PromptConfig(**p),
        layer=spec.get("layer", -1),
        max_length=spec.get("max_length", 512),
        normalize=spec.get("normalize", True),
        max_pixels=spec.get("max_pixels", 0),
    )
    if spec["method"] == "lora":
        from peft import PeftModel

        peft_model = PeftModel.from_pretrained(backbone.model, str(root / "adapter"))
        backbone.model = peft_model.merge_and_unload() if merge else peft_model
        backbone.model.eval()
    elif spec["method"] == "head":
        from safetensors.torch import load_file

        sd = load_file(str(root / "head.safetensors"))
        head = torch.nn.Linear(sd["weight"].shape[1], sd["weight"].shape[0])
        head.load_state_dict(sd)
        emb.head = head.to(emb.device).eval()
    return emb


def merge(model_dir: str | Path, out: str | Path) -> Path:
    """Fold a LoRA adapter into the base weights and write a standalone model directory."""
    spec = read_spec(model_dir)
    if spec["method"] != "lora":
        raise UserError(f"{model_dir}: method is '{spec['method']}', only a LoRA model can be merged")
    emb = load_model(str(model_dir), merge=True)
    return save_model(emb, out, method="merged", backbone=spec["backbone"], info={"merged_from": str(model_dir)})


def _deltas(model_dir: str | Path, base_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    emb = load_model(str(model_dir), merge=True)
    sd = emb.backbone.model.state_dict()
    return {k: sd[k].float() - base_sd[k].float() for k in base_sd if k in sd and not torch.equal(sd[k], base_sd[k])}


def soup(model_dirs: Sequence[str | Path], out: str | Path, weights: Sequence[float] | None = None) -> Path:
    """Model soup (docs/papers.md s2.8: separate runs combined by averaging their weights): W = W0 + sum_k w_k (W_k - W0).

    Every run must share the backbone and method (LoRA or full); weights default to uniform.
    """
    if len(model_dirs) < 2:
        raise UserError("soup needs at least two model directories")
    if weights is not None and not all(math.isfinite(w) for w in weights):
        raise UserError(f"soup: --weight must be finite numbers, got {list(weights)}")
    specs = [read_spec(d) for d in model_dirs]
    if any(s["method"] not in ("lora", "full", "merged") for s in specs):
        raise UserError("soup: only LoRA, full fine-tuning and merged models can be averaged")
    weights = weights or [1.0 / len(model_dirs)] * len(model_dirs)
    if len(weights) != len(model_dirs):
        raise UserError(f"soup: {len(weights)} weights for {len(model_dirs)} models")
    base_name = specs[0].get("base_backbone") or specs[0]["backbone"]
    if len({s.get("base_backbone") or s["backbone"] for s in specs}) > 1:
        raise UserError("soup: the runs start from different backbones")
    base = EmbeddingModel.from_pretrained(base_name, kind=specs[0].get("kind"))
    base_sd = {k: v.clone() for k, v in base.backbone.model.state_dict().items()}
    total: dict[str, torch.Tensor] = {}
    for w, d in zip(weights, model_dirs):
        for k, delta in _deltas(d, base_sd).items():
            total[k] = total.get(k, torch.zeros_like(delta)) + w * delta
    sd = base.backbone.model.state_dict()
    with torch.no_grad():
        for k, delta in total.items():
            sd[k].copy_((base_sd[k].float() + delta).to(sd[k].dtype))
    p = specs[0].get("prompts") or {}
    base.prompts = PromptConfig(**p)
    base.layer = specs[0].get("layer", -1)
    return save_model(
        base,
        out,
        method="merged",
        backbone=base_name,
        info={"soup_of": [str(d) for d in model_dirs], "soup_weights": weights, "base_backbone": base_name},
    )
