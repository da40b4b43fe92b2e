"""An ``mteb`` / MIEB encoder over :class:`EmbeddingModel`, so MTEB and MIEB tasks run unchanged.

The paper reports MIEB(-Lite) (docs/papers.md s2.10); users ask for MTEB/MIEB integration (s2.12). ``mteb`` is an
optional extra (``pip install genrep[mteb]``) and is not imported here: the adapter implements the
encoder protocol by duck typing, for both API generations:

- mteb 1.x: ``encode(sentences, task_name=..., prompt_type=PromptType.query|document, batch_size=...)``;
  MIEB's ``get_text_embeddings`` / ``get_image_embeddings`` / ``get_fused_embeddings`` /
  ``calculate_probs``.
- mteb 2.x: ``encode(dataloader, task_metadata=..., hf_split=..., hf_subset=..., prompt_type=...)``
  where the dataloader yields dicts with ``text`` and/or ``image`` lists.

Queries get the query-side suffix prompt and documents the document side (the same by default,
as in the paper). Usage::

    import mteb
    from genrep.lco.adapters import load_model
    from genrep.lco.mteb_adapter import MTEBEncoder
    model = MTEBEncoder(load_model("runs/lco/model"))
    mteb.evaluate(model, mteb.get_tasks(tasks=["STS12"]))  # needs the task's data (network)
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from genrep.lco.embedding import EmbeddingModel, Side


def _side(prompt_type: Any) -> Side:
    value = getattr(prompt_type, "value", prompt_type)
    return "query" if str(value).lower().endswith("query") else "document"


class MTEBEncoder:
    """Duck-typed MTEB/MIEB encoder. ``model_card_data``-style metadata lives in ``mteb_model_meta``."""

    def __init__(self, model: EmbeddingModel, batch_size: int = 16, name: str = "genrep-lco"):
        self.model = model
        self.batch_size = batch_size
        self.mteb_model_meta = {
            "name": name,
            "revision": None,
            "similarity_fn_name": "cosine",
            "embed_dim": model.hidden_size(),
        }

    # ------------------------------------------------------------------ MTEB (text, and mteb 2.x batches)
    def encode(
        self, inputs, *, task_name: str | None = None, prompt_type=None, batch_size: int | None = None, **kwargs
    ) -> np.ndarray:
        side = _side(prompt_type)
        items = self._items(inputs)
        return self.model.encode(
            items, batch_size=batch_size or self.batch_size, side=side, description=task_name or "mteb"
        )

    @staticmethod
    def _items(inputs) -> list:
        """A list (texts, PIL images, item dicts) as is; an mteb 2.x DataLoader of column batches flattened."""

        def is_batch(x) -> bool:
            return isinstance(x, dict) and any(isinstance(v, (list, tuple)) for k, v in x.items() if k == "text")

        if isinstance(inputs, (list, tuple)) and not (inputs and is_batch(inputs[0])):
            return list(inputs)
        items: list = []
        for batch in inputs:
            columns = {k: v for k, v in batch.items() if k in ("text", "image") and v is not None}
            n = len(next(iter(columns.values())))
            items.extend({k: v[i] for k, v in columns.items() if v[i] is not None} for i in range(n))
        return items

    def similarity(self, a, b) -> np.ndarray:
        return np.asarray(EmbeddingModel.similarity(np.asarray(a), np.asarray(b)))

    def similarity_pairwise(self, a, b) -> np.ndarray:
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return (a * b).sum(1)

    # ------------------------------------------------------------------ MIEB (mteb 1.x image API)
    def get_text_embeddings(self, texts: list[str], *, batch_size: int | None = None, **kwargs) -> np.ndarray:
        return self.model.encode(list(texts), batch_size=batch_size or self.batch_size, description="texts")

    def get_image_embeddings(self, images: Iterable, *, batch_size: int | None = None, **kwargs) -> np.ndarray:
        items = [im for batch in images for im in (batch if isinstance(batch, (list, tuple)) else [batch])]
        return self.model.encode(items, batch_size=batch_size or self.batch_size, description="images")

    def get_fused_embeddings(
        self, texts: list[str] | None = None, images: Iterable | None = None, *, batch_size: int | None = None, **kwargs
    ) -> np.ndarray:
        """Interleaved items (image + text in one prompt), the paper's interleaved input."""
        imgs = None if images is None else [im for b in images for im in (b if isinstance(b, (list, tuple)) else [b])]
        if texts is None:
            return self.get_image_embeddings(imgs or [], batch_size=batch_size)
        if imgs is None:
            return self.get_text_embeddings(texts, batch_size=batch_size)
        items = [{"text": t, "image": im} for t, im in zip(texts, imgs)]
        return self.model.encode(items, batch_size=batch_size or self.batch_size, description="fused")

    def calculate_probs(self, text_embeddings, image_embeddings) -> np.ndarray:
        """Zero-shot class probabilities: softmax over texts of the image-text cosine / 0.03 (the training temperature)."""
        logits = self.similarity(image_embeddings, text_embeddings) / 0.03
        logits = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)
