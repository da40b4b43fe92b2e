"""Contrastive (InfoNCE) loss of LCO-EMB, with cross-rank candidates and a GradCache-style chunked backward.

The loss (docs/papers.md s2.7) scores every anchor against all positives and all hard negatives of the
*global* batch, with temperature 0.03 on cosine similarities of L2-normalised last-token embeddings::

    L = -1/B  sum_i  log( exp(s(a_i, p_i) / tau) / sum_{c in P u N} exp(s(a_i, c) / tau) )

where ``P`` are the positives and ``N`` the hard negatives of every rank (``2B`` candidates with one
negative per anchor) and ``s`` is the dot product of unit vectors.

Cross-rank gathering (``gather``):

* ``"global"`` (default, the reference's ``Training/train_VL_any2any.py``, ``compute_loss``): anchors,
  positives and negatives are all gathered with :func:`genrep.core.distributed.all_gather_keep_grad`
  (only the local slice carries a gradient) and every rank computes the loss of *every* anchor of the
  global batch. Each rank back-propagates the global loss into its own rows only, so after DDP's
  averaging the parameter gradient is exactly the single-process full-batch gradient divided by the
  world size ``W`` (what the reference's optimizer and its gradient clipping see).
* ``"full"``: the local anchors against candidates gathered differentiably (as
  ``torch.distributed.nn.functional.all_gather``): the loss of rank ``r`` depends on the candidates of
  every rank, so the backward sums over ranks the gradients for each gathered slice and hands them to the
  rank that owns it. With DDP's gradient averaging the parameter gradient is then the gradient of the mean
  over ranks of the per-rank losses, which equals the single-process full-batch gradient exactly (``W``
  times ``"global"``'s) when every rank holds the same number of anchors (with uneven ranks each rank's
  mean is weighted equally, as DDP always does). Every rank must run backward.
* ``"local"``: the local anchors against gathered candidates, only the local slice carrying a gradient.
  The terms of the other ranks' anchors are dropped, so the averaged gradient only approximates the
  full-batch gradient (a cheaper variant some contrastive codebases use; not the reference).
* ``"none"``: candidates are the local positives and negatives only, even under DDP.

In a single process the four modes are identical.

GradCache (Gao et al. 2021): :func:`chunked_contrastive_backward` encodes the batch chunk by chunk without
a graph, takes the gradient of the loss w.r.t. the embeddings, then re-encodes each chunk with a graph and
back-propagates that chunk's slice of the embedding gradient. The parameter gradients are those of
:func:`full_batch_backward` (same ``gather``) at the memory of one chunk: exactly the gradient of the loss
it returns, dropout included (the RNG state of each chunk is replayed). Whether the dropout masks also match
a one-shot forward depends on the generator: the CPU generator draws per element in order, so they do;
CUDA's Philox offsets depend on the call shapes, so there the chunked masks are other (equally valid) masks.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist

from genrep.core.distributed import all_gather_keep_grad, current

GatherMode = Literal["global", "full", "local", "none"]
GATHER_MODES: tuple[str, ...] = typing.get_args(GatherMode)
DEFAULT_TEMPERATURE = 0.03

Encode = Callable[[Sequence[Any]], torch.Tensor]


def _check_gather(gather: str) -> None:
    if gather not in GATHER_MODES:
        raise ValueError(f"gather must be one of {GATHER_MODES}, got {gather!r}")


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _row_counts(n: int, device: torch.device) -> list[int]:
    """Number of rows ``n`` of every rank (one small all_gather)."""
    world = current().world_size
    size = torch.tensor([n], device=device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


class _AllGatherFullGrad(torch.autograd.Function):
    """Concatenate ``x`` over ranks along dim 0 with a gradient path to every slice.

    Backward: every rank holds a gradient for the whole gathered tensor; they are summed over ranks
    (all_reduce) and each rank keeps the rows of its own slice, i.e. the sum over ranks of the gradients
    of their losses w.r.t. this rank's rows. Uneven row counts are padded to the longest and trimmed.
    (The same as ``torch.distributed.nn.functional.all_gather``, deprecated in recent torch, plus the
    handling of uneven counts.) Every rank must run the backward pass.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, counts: list[int], rank: int) -> torch.Tensor:
        ctx.counts, ctx.rank = counts, rank
        longest = max(counts)
        padded = x.detach()
        if x.shape[0] < longest:
            padded = torch.cat([padded, x.new_zeros((longest - x.shape[0], *x.shape[1:]))], 0)
        buckets = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(buckets, padded.contiguous())
        return torch.cat([b[:n] for b, n in zip(buckets, counts)], 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        total = grad.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        start = sum(ctx.counts[: ctx.rank])
        return total[start : start + ctx.counts[ctx.rank]], None, None


def _all_gather_full_grad(x: torch.Tensor, counts: list[int]) -> torch.Tensor:
    if max(counts) == 0:
        return x
    return _AllGatherFullGrad.apply(x, counts, current().rank)


def info_nce(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor | None = None,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    gather: GatherMode = "global",
) -> torch.Tensor:
    """InfoNCE of the anchors against the positives and hard negatives of the global batch.

    ``L = -1/B sum_i log( exp(s(a_i, p_i)/tau) / sum_{c in P u N} exp(s(a_i, c)/tau) )``, with ``B`` the
    number of anchors scored: every anchor of the global batch with ``gather="global"``, the *local*
    anchors otherwise (the result is the mean over them).

    Args:
        anchor: ``[B, d]`` anchor embeddings. All inputs must already be L2-normalised (they are not
            normalised here), so that ``s`` is the cosine similarity.
        positive: ``[B, d]``; row ``i`` is the positive of anchor ``i``.
        negative: ``[M, d]`` hard negatives (e.g. ``M = B`` or ``B * m``) or ``None``. Under DDP with
            ``gather != "none"`` it must be given on every rank or on none (each rank may hold a
            different number of rows).
        temperature: ``tau``; the paper's 0.03 by default.
        gather: ``"global"`` (the reference), ``"full"``, ``"local"`` or ``"none"`` (see the module docstring).

    Candidates are ``concat(positives of ranks 0..W-1, negatives of ranks 0..W-1)``; the target of local
    anchor ``i`` is the number of positive rows on lower ranks plus ``i``. Logits are computed in at
    least float32.
    """
    _check_gather(gather)
    _check_temperature(temperature)
    if anchor.dim() != 2 or anchor.shape != positive.shape:
        raise ValueError(
            f"anchor and positive must both be [B, d], got {tuple(anchor.shape)} and {tuple(positive.shape)}"
        )
    if negative is not None and (negative.dim() != 2 or negative.shape[1] != anchor.shape[1]):
        raise ValueError(f"negative must be [M, {anchor.shape[1]}], got {tuple(negative.shape)}")

    offset = 0
    pos, neg = positive, negative
    if gather != "none" and current().enabled:
        if gather == "global":  # every rank scores every anchor of the global batch
            anchor = all_gather_keep_grad(anchor)
            pos = all_gather_keep_grad(positive)
            neg = None if negative is None else all_gather_keep_grad(negative)
        elif gather == "local":
            offset = sum(_row_counts(positive.shape[0], anchor.device)[: current().rank])
            pos = all_gather_keep_grad(positive)
            neg = None if negative is None else all_gather_keep_grad(negative)
        else:
            pos_counts = _row_counts(positive.shape[0], anchor.device)
            offset = sum(pos_counts[: current().rank])
            pos = _all_gather_full_grad(positive, pos_counts)
            if negative is not None:
                neg = _all_gather_full_grad(negative, _row_counts(negative.shape[0], anchor.device))

    candidates = pos if neg is None else torch.cat([pos, neg], 0)
    dtype = torch.promote_types(anchor.dtype, torch.float32)
    logits = anchor.to(dtype) @ candidates.to(dtype).T / temperature
    target = torch.arange(anchor.shape[0], device=anchor.device) + offset
    return torch.nn.functional.cross_entropy(logits, target)


@dataclass(frozen=True)
class ContrastiveLoss:
    """``info_nce`` with a fixed temperature and gather mode: ``loss = ContrastiveLoss()(a, p, n)``."""

    temperature: float = DEFAULT_TEMPERATURE
    gather: GatherMode = "global"

    def __post_init__(self) -> None:
        _check_gather(self.gather)
        _check_temperature(self.temperature)

    def __call__(
        self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor | None = None
    ) -> torch.Tensor:
        return info_nce(anchor, positive, negative, temperature=self.temperature, gather=self.gather)


# ---------------------------------------------------------------------------------------------------------
# full batch and GradCache backward passes


def _validate(
    anchors: Sequence[Any], positives: Sequence[Any], negatives: Sequence[Any] | None, temperature: float, gather: str
) -> Sequence[Any] | None:
    _check_gather(gather)
    _check_temperature(temperature)
    b = len(anchors)
    if b == 0:
        raise ValueError("anchors is empty")
    if len(positives) != b:
        raise ValueError(f"anchors and positives must have the same length, got {b} and {len(positives)}")
    if negatives is not None:
        if len(negatives) % b != 0:
            raise ValueError(
                f"the number of negatives ({len(negatives)}) must be a multiple of the number of anchors ({b})"
            )
        if len(negatives) == 0:
            return None
    return negatives


def _encode(encode: Encode, items: Sequence[Any]) -> torch.Tensor:
    emb = encode(items)
    if not isinstance(emb, torch.Tensor) or emb.dim() != 2 or emb.shape[0] != len(items):
        shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
        raise ValueError(f"encode must return a [{len(items)}, d] tensor for {len(items)} items, got {shape}")
    return emb


def full_batch_backward(
    encode: Encode,
    anchors: Sequence[Any],
    positives: Sequence[Any],
    negatives: Sequence[Any] | None,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    gather: GatherMode = "global",
) -> float:
    """Encode anchors, positives and negatives (in that order, one call each) with a graph, compute
    :func:`info_nce` and back-propagate it into the parameters' ``.grad``. Returns the loss (global or local, as ``gather`` says).

    ``encode(items)`` must return the ``[len(items), d]`` L2-normalised embeddings of ``items``;
    ``negatives`` has ``m * len(anchors)`` items (any ``m >= 0``) or is ``None``.
    """
    negatives = _validate(anchors, positives, negatives, temperature, gather)
    a = _encode(encode, anchors)
    p = _encode(encode, positives)
    n = None if negatives is None else _encode(encode, negatives)
    loss = info_nce(a, p, n, temperature=temperature, gather=gather)
    loss.backward()
    return float(loss.detach())


@dataclass
class _RngState:
    """CPU generator state, plus every CUDA device's if CUDA is initialised (as ``torch.random.fork_rng``)."""

    cpu: torch.Tensor
    cuda: list[torch.Tensor] | None

    @classmethod
    def capture(cls) -> _RngState:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        return cls(torch.get_rng_state(), cuda)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


def chunked_contrastive_backward(
    encode: Encode,
    anchors: Sequence[Any],
    positives: Sequence[Any],
    negatives: Sequence[Any] | None,
    *,
    chunk_size: int,
    temperature: float = DEFAULT_TEMPERATURE,
    gather: GatherMode = "global",
    no_sync: Callable[[], AbstractContextManager[Any]] | None = None,
) -> float:
    """GradCache: the parameter gradients of :func:`full_batch_backward` with the memory of one chunk.

    1. Without a graph, encode every chunk of at most ``chunk_size`` items of the anchors, then the
       positives, then the negatives, recording the RNG state (CPU, and CUDA if initialised) before
       each chunk.
    2. Compute :func:`info_nce` (gathered as ``gather`` says) on the concatenated embeddings, detached
       into leaves, and back-propagate to get the gradient w.r.t. every embedding row.
    3. For each chunk: restore its RNG state (so dropout draws the same masks as in step 1), re-encode
       it with a graph and back-propagate its slice of the embedding gradient; ``.grad`` accumulates.

    After step 3 the RNG is restored to its state at the end of step 1, so this call advances the
    caller's RNG exactly as one pass over the chunks does (the re-encoding leaves no trace). With
    ``chunk_size >= len(negatives or anchors)`` the encode calls, and hence the RNG stream, are those of
    :func:`full_batch_backward`.

    The embedding gradient of step 2 is what the same ``gather`` mode gives, as in :func:`full_batch_backward`:
    with ``"global"`` the gradient of the global batch's loss w.r.t. this rank's rows (the reference), with
    ``"full"`` the sum over ranks of their losses' gradients (exact global gradients under DDP averaging), with
    ``"local"`` only this rank's loss.

    ``no_sync``: optional zero-argument callable returning a context manager, e.g. ``ddp_model.no_sync``.
    The forward and backward of every chunk but the last run inside it, so DDP all-reduces once, in the
    last chunk's backward. (With DDP, modules with buffers and ``broadcast_buffers=True`` need the same
    number of chunks on every rank; modules with batch statistics are not chunk-invariant.)

    Returns the loss (as :func:`info_nce` computes it for ``gather``, a float). Items are opaque and only sliced with ``[i:j]``.
    """
    negatives = _validate(anchors, positives, negatives, temperature, gather)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")

    sides = [anchors, positives] + ([] if negatives is None else [negatives])
    chunks = [[side[i : i + chunk_size] for i in range(0, len(side), chunk_size)] for side in sides]

    # step 1: embeddings without a graph, RNG state recorded before each chunk
    states: list[list[_RngState]] = []
    reps: list[torch.Tensor] = []
    with torch.no_grad():
        for side_chunks in chunks:
            side_states, side_embs = [], []
            for items in side_chunks:
                side_states.append(_RngState.capture())
                side_embs.append(_encode(encode, items))
            states.append(side_states)
            reps.append(torch.cat(side_embs, 0).detach().requires_grad_(True))
    end_state = _RngState.capture()

    # step 2: gradient of the loss w.r.t. the embeddings
    loss = info_nce(reps[0], reps[1], reps[2] if len(reps) > 2 else None, temperature=temperature, gather=gather)
    grads = torch.autograd.grad(loss, reps, allow_unused=True)

    # step 3: re-encode each chunk with a graph and push its embedding gradient into the parameters
    jobs = []
    for side_chunks, side_states, rep, grad in zip(chunks, states, reps, grads):
        if grad is None:
            grad = torch.zeros_like(rep)
        start = 0
        for items, state in zip(side_chunks, side_states):
            jobs.append((items, state, grad[start : start + len(items)]))
            start += len(items)
    try:
        for k, (items, state, grad) in enumerate(jobs):
            state.restore()
            ctx = no_sync() if no_sync is not None and k < len(jobs) - 1 else nullcontext()
            with ctx:
                emb = _encode(encode, items)
                emb.backward(grad.to(emb.dtype))
    finally:
        end_state.restore()
    return float(loss.detach())
