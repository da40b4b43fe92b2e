"""Captioning with the tiny VLM (``genrep.lco.tinyvlm``): the Fashion-MNIST caption data, the
chat-formatted captioning prompt, batches whose labels are the caption tokens only, the summed
caption loss, the held-out caption NLL and greedy captions. ``genrep.lco.pretrain_vlm`` trains and
scores backbones with these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from genrep.core.errors import UserError
from genrep.core.progress import track
from genrep.lco.captions import caption, image_attributes
from genrep.lco.tinyvlm import TinyVLM, TinyVLMProcessor


@dataclass
class CaptionData:
    """Fashion-MNIST images, labels and per-image attributes of one split (a fixed subset)."""

    images: np.ndarray
    labels: np.ndarray
    attributes: list

    def __len__(self) -> int:
        return len(self.labels)


def fashion_split(split: str, n: int, seed: int, offset: int = 0) -> CaptionData:
    """``n`` images of a Fashion-MNIST split, a fixed permutation of (seed, split) from ``offset``."""
    from genrep.core import assets

    ds = assets.load("fashion-mnist", split=split)
    perm = np.random.default_rng([seed, 1 if split == "test" else 0]).permutation(len(ds.labels))
    if offset + n > len(perm):
        raise UserError(f"fashion-mnist {split}: asked for images {offset}..{offset + n}, it has {len(perm)}")
    idx = perm[offset : offset + n]
    images = ds.images[idx]
    return CaptionData(images, ds.labels[idx].astype(np.int64), [image_attributes(im) for im in images])


def reference_captions(data: CaptionData, seed: int) -> list[str]:
    """One fixed caption per image (the held-out captions whose likelihood is the generative score)."""
    return [
        caption(int(data.labels[i]), data.attributes[i], np.random.default_rng([seed, 7, i])) for i in range(len(data))
    ]


def prompt_text(processor: TinyVLMProcessor, instruction: str) -> str:
    """The chat-formatted captioning prompt: one image, the instruction, the generation prompt."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def captioning_batch(processor: TinyVLMProcessor, prompt: str, images: list, captions: list[str]) -> dict:
    """``input_ids``, ``attention_mask``, ``labels`` (-100 except on caption + eos tokens) and
    ``pixel_values``, left-padded so every caption ends at the last column."""
    tok = processor.tokenizer
    p_ids = tok(processor.expand_image_tokens(prompt, 1, 0), add_special_tokens=False)["input_ids"]
    eos = tok.eos_token or ""
    rows = [p_ids + tok(c + eos, add_special_tokens=False)["input_ids"] for c in captions]
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
        labels[i, width - len(r) + len(p_ids) :] = torch.tensor(r[len(p_ids) :])
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        "pixel_values": processor.image_processor(images),
    }


def caption_loss(model: TinyVLM, batch: dict) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over the caption tokens of a ``captioning_batch`` and their count.

    Captions sit at the end of each row (left padding), so only the last ``K`` positions' logits are
    computed (K = longest caption + 1): the LM head over a 49k-262k vocabulary is not spent on the prompt."""
    batch = dict(batch)
    labels = batch.pop("labels")
    keep = int((labels != -100).sum(1).max()) + 1
    out = model(**batch, logits_to_keep=keep, use_cache=False)
    logits = out.logits[:, :-1].float()
    target = labels[:, labels.shape[1] - keep + 1 :]
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return total, int((target != -100).sum())


@torch.no_grad()
def caption_nll(
    model: TinyVLM, processor: TinyVLMProcessor, prompt: str, images: list, captions: list[str], batch_size: int = 32
) -> float:
    """Mean negative log-likelihood per caption token (caption + eos) given image and prompt."""
    total, count = 0.0, 0
    dev = next(model.parameters()).device
    for s in range(0, len(captions), batch_size):
        b = captioning_batch(processor, prompt, images[s : s + batch_size], captions[s : s + batch_size])
        part, n = caption_loss(model, {k: v.to(dev) for k, v in b.items()})
        total += float(part)
        count += n
    return total / max(count, 1)


@torch.no_grad()
def generate_captions(
    model: TinyVLM,
    processor: TinyVLMProcessor,
    prompt: str,
    images: list,
    max_new_tokens: int = 16,
    batch_size: int = 32,
    show_progress: bool = False,
) -> list[str]:
    """Greedy captions of ``images``."""
    tok = processor.tokenizer
    side = processor.padding_side
    processor.padding_side = "left"
    out: list[str] = []
    dev = next(model.parameters()).device
    try:
        starts = range(0, len(images), batch_size)
        for s in track(starts, "captioning", total=len(starts), disable=not show_progress):
            chunk = images[s : s + batch_size]
            enc = processor(text=[prompt] * len(chunk), images=[[im] for im in chunk])
            enc = {k: v.to(dev) for k, v in enc.items()}
            new = model.generate(**enc, max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id)
            out += [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
    finally:
        processor.padding_side = side
    return out
