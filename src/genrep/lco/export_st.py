"""Export a trained LCO-EMB model as a sentence-transformers directory (``genrep lco export``).

``SentenceTransformer(out).encode(texts)`` then gives genrep's embeddings
(``load_model(model_dir).encode(texts)``) without genrep and without ``trust_remote_code``. The
directory holds:

- the weights: a LoRA adapter merged into the base, or the full / merged weights, saved as the
  backbone's *base* model (``AutoModel``: no LM head), in float32;
- the tokenizer with an **LCO chat template**: a short Jinja header that appends the suffix
  prompt to the user's text (the query suffix when sentence-transformers renders with
  ``task="query"``, i.e. ``encode_query``; the document suffix otherwise, as genrep's default side),
  adds genrep's system message if there is one and switches the generation prompt on, followed by
  the backbone's own chat template verbatim. The string sentence-transformers renders is therefore
  genrep's prompt string exactly, and it is tokenised once, as a whole, with
  ``add_special_tokens=False``, as genrep does. A model embedded without a chat template
  (``prompts.chat_template: false`` or a backbone without one) gets a template that writes
  ``bos + text + suffix``;
- right padding: with a causal LM and last-token pooling the real tokens of a right-padded row
  see the positions ``0..n-1`` and never attend to the padding, which is what genrep's explicit
  position ids (``cumsum(mask) - 1`` under left padding) give, so no position ids need passing;
- the length cap: sentence-transformers truncates the whole rendered sequence and then writes the
  template's fixed tail back over the last tokens (``_restore_chat_template_suffix``); the cap is
  set to ``prefix + max_length + tail`` tokens per side, so a long text keeps its first
  ``max_length`` content tokens followed by the suffix prompt, as in genrep;
- modules: ``Transformer`` (``last_hidden_state``, or ``hidden_states[layer]`` for a model that
  embeds with another layer), ``Pooling("lasttoken")``, a ``Dense`` identity-activation layer for a
  ``head`` model's projection, ``Normalize`` when the model normalises;
- ``export.json``: the source model, a SHA-256 over its files, what was carried and the result of
  the export's own check (token ids and embeddings of probe texts against genrep's).

Needs sentence-transformers >= 6.0 to load (task-aware chat templates, per-task lengths and the
template-tail restore). Only text causal-LM backbones export; see docs/lco.md for the limits.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from genrep.core.errors import UserError
from genrep.core.files import hash_files
from genrep.core.rundir import atomic_write_json, atomic_write_text, model_dir, signature
from genrep.lco.adapters import MODEL_FILE, load_model, read_spec
from genrep.lco.embedding import EmbeddingModel, Side

FORMATS = ("sentence-transformers",)
SIDES: tuple[Side, ...] = ("document", "query")
EXPORT_FILE = "export.json"
MIN_SENTENCE_TRANSFORMERS = "6.0"
CHECK_TOLERANCE = 1e-4  # the export's own check (float32); the tests hold it to 1e-5
# Probe texts of the export's check: mixed lengths, edge whitespace, newlines, CJK, emoji.
PROBE_TEXTS = (
    "a",
    "I like drinking tea.",
    "The quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat.",
    " leading space",
    "trailing space ",
    "two lines\nof text\n",
    "我喜欢喝茶。",
    "emoji 🙂 and tab\t",
)
_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_FULL_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


# ---------------------------------------------------------------------------------------- checks
def _resolve(model: str | Path) -> tuple[Path, dict]:
    """The trained model directory (``model`` or ``model/model`` for a run directory) and its spec."""
    path = Path(model)
    if not path.is_dir():
        raise UserError(f"--model {path}: no such directory")
    root = model_dir(path, MODEL_FILE)
    if not (root / MODEL_FILE).is_file():
        raise UserError(
            f"{root / MODEL_FILE}: missing; {path} is not a trained LCO model (genrep lco train writes one)"
        )
    return root, read_spec(root)


def _first_present(folder: Path, names: Sequence[str]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def check_exportable(root: Path, spec: dict) -> None:
    """Raise a one-line UserError naming the file when the model cannot be exported: a backbone kind
    other than a text causal LM, or a missing adapter / weights / head file."""
    spec_file = root / MODEL_FILE
    kind = spec.get("kind") or "causal-lm"
    if kind != "causal-lm":
        raise UserError(
            f"{spec_file}: backbone kind '{kind}' cannot be exported to sentence-transformers (only text "
            "causal-LM backbones: the image/audio/video towers, their processor and M-RoPE positions are not carried)"
        )
    method = spec["method"]
    if method == "lora":
        adapter = root / "adapter"
        if not (adapter / "adapter_config.json").is_file():
            raise UserError(f"{adapter / 'adapter_config.json'}: missing, so there are no merged weights to export")
        if _first_present(adapter, _ADAPTER_WEIGHTS) is None:
            raise UserError(f"{adapter / _ADAPTER_WEIGHTS[0]}: missing, so there are no merged weights to export")
    elif method in ("full", "merged"):
        weights = root / "model"
        if not (weights / "config.json").is_file():
            raise UserError(f"{weights / 'config.json'}: missing, so there are no merged weights to export")
        if _first_present(weights, _FULL_WEIGHTS) is None:
            raise UserError(f"{weights / _FULL_WEIGHTS[0]}: missing, so there are no merged weights to export")
    elif method == "head":
        if not (root / "head.safetensors").is_file():
            raise UserError(f"{root / 'head.safetensors'}: missing, so the trained head cannot be exported")
    else:
        raise UserError(f"{spec_file}: method '{method}' cannot be exported (lora, full, merged or head)")


def _import_sentence_transformers():
    try:
        import sentence_transformers
    except ImportError:
        raise UserError(
            f"export --format sentence-transformers needs sentence-transformers>={MIN_SENTENCE_TRANSFORMERS}: "
            f"pip install 'sentence-transformers>={MIN_SENTENCE_TRANSFORMERS}'"
        ) from None
    from packaging.version import Version

    if Version(sentence_transformers.__version__) < Version(MIN_SENTENCE_TRANSFORMERS):
        raise UserError(
            f"export --format sentence-transformers needs sentence-transformers>={MIN_SENTENCE_TRANSFORMERS} "
            f"(installed: {sentence_transformers.__version__}; older versions ignore the query template and the "
            "template-tail restore)"
        )
    return sentence_transformers


# ---------------------------------------------------------------------------------------- template
def _literal(text: str) -> str:
    """A Jinja string literal for ``text`` (JSON escapes are Jinja escapes; non-ASCII stays as is)."""
    return json.dumps(text, ensure_ascii=False)


def lco_chat_template(emb: EmbeddingModel) -> str:
    """The chat template that renders a user text the way ``emb.prompt`` does (see the module docstring).

    The header only sets variables: ``messages`` becomes genrep's conversation (an optional system
    message and one user turn, content = the last user text + the side's suffix) and
    ``add_generation_prompt`` is switched on. It ends with a newline after a block tag, which the
    template environment's ``trim_blocks`` removes, so the backbone's template that follows starts
    at a line start, exactly as when it is rendered alone.
    """
    prompts = emb.prompts
    query, document = prompts.suffix_for("text", "query"), prompts.suffix_for("text", "document")
    header = (
        "{% set lco = namespace(text='') %}"
        "{% for m in messages %}{% if m['role'] == 'user' %}"
        "{% if m['content'] is string %}{% set lco.text = m['content'] %}"
        "{% else %}{% set lco.text = m['content'] | selectattr('type', 'equalto', 'text') "
        "| map(attribute='text') | join('') %}{% endif %}"
        "{% endif %}{% endfor %}"
        f"{{% set lco_suffix = {_literal(query)} if (task is defined and task == 'query') else {_literal(document)} %}}"
    )
    if emb.prompts.chat_template and emb.backbone.has_chat_template:
        conversation = "[{'role': 'user', 'content': lco.text + lco_suffix}]"
        if prompts.system:
            conversation = f"[{{'role': 'system', 'content': {_literal(prompts.system)}}}] + {conversation}"
        original = emb.backbone.tokenizer.chat_template
        if isinstance(original, dict):  # named templates: apply_chat_template renders the "default" one
            original = original.get("default")
        if not isinstance(original, str):
            raise UserError(f"backbone '{emb.backbone.name}': no default chat template to build the export's on")
        return f"{header}{{% set messages = {conversation} %}}{{% set add_generation_prompt = true %}}\n{original}"
    bos = emb.backbone.tokenizer.bos_token or ""
    return f"{header}\n{{{{ {_literal(bos)} }}}}{{{{ lco.text }}}}{{{{ lco_suffix }}}}"


def _affix_lengths(emb: EmbeddingModel, side: Side) -> tuple[int, int]:
    """Token counts of the fixed prompt prefix and tail around the content, on ``side``.

    Two fillers that tokenise differently ("0", "1 2 3 4", the fillers sentence-transformers uses to
    find the tail it restores after truncation) leave the template's prefix and tail as the common
    token prefix and suffix of their prompts.
    """
    tok = emb.backbone.tokenizer
    a, b = (tok(emb.prompt(f, side).prompt, add_special_tokens=False)["input_ids"] for f in ("0", "1 2 3 4"))
    prefix = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    tail = next((i for i, (x, y) in enumerate(zip(reversed(a), reversed(b))) if x != y), min(len(a), len(b)))
    return prefix, tail


# ---------------------------------------------------------------------------------------- export
def _digest(root: Path) -> str:
    """SHA-256 over the relative paths and contents of every file in the model directory."""
    h = hashlib.sha256()
    hash_files(h, root, sorted(p for p in root.rglob("*") if p.is_file()))
    return h.hexdigest()


def _weights_note(spec: dict) -> str:
    method = spec["method"]
    if method == "lora":
        return "LoRA adapter merged into the base weights"
    if method in ("full", "merged"):
        return f"{'full fine-tuned' if method == 'full' else 'merged'} weights"
    return "base weights (the backbone is frozen in a head model)"


def _write_transformer_files(emb: EmbeddingModel, stage: Path, template: str, lengths: dict[Side, int]) -> None:
    """Save the base model (no LM head) and the tokenizer with the LCO template, right padding and the cap."""
    from transformers import AutoTokenizer

    base: Any = getattr(emb.model, "base_model", emb.model)  # e.g. LlamaModel inside LlamaForCausalLM
    base.save_pretrained(stage)
    emb.backbone.tokenizer.save_pretrained(stage)
    tok = AutoTokenizer.from_pretrained(stage)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.chat_template = template
    tok.padding_side = tok.truncation_side = "right"
    tok.init_kwargs.update(padding_side="right", truncation_side="right")  # written even where right is the default
    tok.model_max_length = lengths["document"]
    tok.save_pretrained(stage)


def _tidy_tokenizer_config(out: Path) -> None:
    """Drop the loading flags transformers records in ``tokenizer_config.json`` (``local_files_only``,
    ``is_local``: how this process loaded the files, not a property of the exported model)."""
    path = out / "tokenizer_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    if any(k in config for k in ("local_files_only", "is_local")):
        config = {k: v for k, v in config.items() if k not in ("local_files_only", "is_local")}
        atomic_write_text(path, json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def _probe_texts(emb: EmbeddingModel) -> list[str]:
    """The check's texts: ``PROBE_TEXTS`` plus one text long enough to be truncated at ``max_length``."""
    words = " ".join(PROBE_TEXTS[2].split() * (emb.max_length // 16 + 1))  # more than max_length tokens
    return [*PROBE_TEXTS, words]


def _check(st: Any, emb: EmbeddingModel, texts: list[str], batch_size: int) -> dict:
    """Compare the exported model with genrep on ``texts``: token ids per row and embeddings, both sides."""
    tok = emb.backbone.tokenizer
    result: dict[str, Any] = {"texts": len(texts), "tolerance": CHECK_TOLERANCE, "sides": {}}
    for side in SIDES:
        task = {"task": "query"} if side == "query" else {}
        features = st.preprocess(texts, **task)
        mask = features["attention_mask"].bool()
        ids = [row[m].tolist() for row, m in zip(features["input_ids"], mask)]
        want = [tok(emb.prompt(t, side).prompt, add_special_tokens=False)["input_ids"] for t in texts]
        differ = [i for i, (a, b) in enumerate(zip(ids, want)) if a != b]
        encode = st.encode_query if side == "query" else st.encode
        got = encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
        ref = emb.encode(texts, batch_size=batch_size, side=side, show_progress=False)
        result["sides"][side] = {
            "token_ids_identical": not differ,
            "rows_with_other_token_ids": differ,
            "max_abs_diff": float(np.abs(np.asarray(got, dtype=np.float64) - ref).max()),
        }
    return result


def export_sentence_transformers(
    model: str | Path,
    out: str | Path,
    *,
    check: bool = True,
    check_texts: Sequence[str] | None = None,
    batch_size: int = 4,
) -> dict:
    """Write the trained LCO model ``model`` (a model directory or a training run's ``--out``) to
    ``out`` as a sentence-transformers directory; returns what ``export.json`` records.

    With ``check`` the written directory is loaded with ``SentenceTransformer`` and compared with
    genrep on probe texts (``check_texts``, default ``PROBE_TEXTS`` plus one truncated text): token ids
    row by row and embeddings within ``CHECK_TOLERANCE``; a mismatch is an error after ``export.json``
    (with the details) is written.
    """
    root, spec = _resolve(model)
    check_exportable(root, spec)
    out = Path(out)
    if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
        raise UserError(f"--out {out}: inside the model directory {root}; export to a directory of its own")
    st_lib = _import_sentence_transformers()
    from sentence_transformers import SentenceTransformer

    emb = load_model(str(root), merge=True)
    if emb.backbone.kind != "causal-lm":
        raise UserError(
            f"{root / MODEL_FILE}: backbone '{spec['backbone']}' loads as kind '{emb.backbone.kind}', which cannot "
            "be exported to sentence-transformers (only text causal-LM backbones)"
        )
    out.mkdir(parents=True, exist_ok=True)
    lengths = {side: sum(_affix_lengths(emb, side)) + emb.max_length for side in SIDES}
    _write_st_directory(emb, root, out, lengths)
    info = _export_info(root, spec, emb, lengths, st_lib.__version__)
    if check:
        loaded = SentenceTransformer(str(out), device="cpu", local_files_only=True)
        info["check"] = _check(loaded, emb, list(check_texts or _probe_texts(emb)), batch_size)
    atomic_write_json(out / EXPORT_FILE, info)
    if check:
        _raise_on_mismatch(info["check"], out / EXPORT_FILE)
    return info


def _write_st_directory(emb: EmbeddingModel, root: Path, out: Path, lengths: dict[Side, int]) -> None:
    """Save the sentence-transformers pipeline of ``emb`` to ``out`` (its transformer files written
    first to a staging directory under ``out``, removed afterwards)."""
    from sentence_transformers import SentenceTransformer

    template = lco_chat_template(emb)
    stage = out / ".export-staging"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        _write_transformer_files(emb, stage, template, lengths)
        modules = _st_modules(emb, root, stage, lengths)
        st = SentenceTransformer(modules=modules, device="cpu", similarity_fn_name="cosine")
        st.save(str(out), create_model_card=False)
        del st, modules
        _tidy_tokenizer_config(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _st_modules(emb: EmbeddingModel, root: Path, stage: Path, lengths: dict[Side, int]) -> list[Any]:
    """Transformer (the staged files), last-token Pooling, the linear head as Dense, Normalize."""
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    output: Any = "last_hidden_state" if emb.layer == -1 else ["hidden_states", emb.layer]
    modality_config: Any = {
        "text": {"method": "forward", "method_output_name": output},
        "message": {"method": "forward", "method_output_name": output, "format": "flat"},
    }
    transformer = Transformer(
        str(stage),
        modality_config=modality_config,
        module_output_name="token_embeddings",
        query_length=lengths["query"],
        document_length=lengths["document"],
    )
    modules: list[Any] = [transformer, Pooling(emb.hidden_size(), pooling_mode="lasttoken")]
    if emb.head is not None:
        head = emb.head
        if not isinstance(head, torch.nn.Linear):
            raise UserError(f"{root}: the head is a {type(head).__name__}, only a linear head exports (as Dense)")
        bias = None if head.bias is None else head.bias.detach().clone()
        modules.append(
            Dense(
                head.in_features,
                head.out_features,
                bias=bias is not None,
                activation_function=None,
                init_weight=head.weight.detach().clone(),
                init_bias=bias,
            )
        )
    if emb.normalize:
        modules.append(Normalize())
    return modules


def _export_info(
    root: Path, spec: dict, emb: EmbeddingModel, lengths: dict[Side, int], st_version: str
) -> dict[str, Any]:
    """What ``export.json`` records (before the check): the source, what is carried, and what not."""
    import transformers

    return {
        "format": "sentence-transformers",
        "source": str(root.resolve()),
        "source_sha256": _digest(root),
        "method": spec["method"],
        "backbone": spec.get("base_backbone") or spec["backbone"],
        "base_revision": getattr(emb.model.config, "_commit_hash", None),
        "requires": f"sentence-transformers>={MIN_SENTENCE_TRANSFORMERS}",
        "carried": {
            "weights": _weights_note(spec),
            "dtype": "float32",
            "head": "2_Dense (identity activation)" if emb.head is not None else None,
            "normalize": emb.normalize,
            "layer": emb.layer,
            "pooling": "lasttoken",
            "padding_side": "right",
            "chat_template": bool(emb.prompts.chat_template and emb.backbone.has_chat_template),
            "system": emb.prompts.system,
            "suffix": {side: emb.prompts.suffix_for("text", side) for side in SIDES},
            "max_length": emb.max_length,
            "max_seq_length": lengths,
        },
        "not_carried": [
            "images, audio and video (text only)",
            "suffixes for modalities other than text",
            "sentence-transformers prompts: the suffix prompts live in the chat template; choose the side "
            "with encode_query / encode_document (encode uses the document side)",
        ],
        "versions": {"sentence_transformers": st_version, "transformers": transformers.__version__},
        "signature": signature(),
    }


def _raise_on_mismatch(check: dict, path: Path) -> None:
    """UserError for the first side whose embeddings differ from genrep's beyond ``CHECK_TOLERANCE``."""
    bad = {s: r for s, r in check["sides"].items() if r["max_abs_diff"] > CHECK_TOLERANCE}
    if bad:
        side, r = next(iter(bad.items()))
        raise UserError(
            f"{path}: the exported model does not reproduce genrep's {side} embeddings "
            f"(max |diff| {r['max_abs_diff']:.2e} > {CHECK_TOLERANCE:g}; token ids "
            f"{'identical' if r['token_ids_identical'] else 'differ in rows ' + str(r['rows_with_other_token_ids'])})"
        )
