"""torch.distributed helpers for runs under ``torchrun`` (and plain single-process runs).

``init_distributed()`` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), picks NCCL
on GPUs and gloo on CPU, and returns a :class:`DistInfo`. Without torchrun it returns a world of
one and every helper here degrades to the identity.

``all_gather_keep_grad`` gathers a tensor from every rank and puts the *local* tensor (with its
autograd graph) back in its slot. If every rank computes the loss over the whole gathered batch
(e.g. InfoNCE over all anchors and all candidates), each rank's backward pass yields exactly the
full-batch gradient with respect to its own inputs; summing the parameter gradients over ranks
(= DDP's mean times the world size) gives the full-batch parameter gradient.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(backend: str | None = None) -> DistInfo:
    """Initialise the default process group from torchrun's environment, if present."""
    if dist.is_available() and dist.is_initialized():
        return current()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return current()


def current() -> DistInfo:
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        backend=dist.get_backend(),
    )


def is_main_process() -> bool:
    return current().is_main


def rank0_print(*args, **kwargs) -> None:
    """``print`` on rank 0 only."""
    if is_main_process():
        print(*args, **kwargs, flush=True)


def barrier() -> None:
    if current().enabled:
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ranks (a detached copy); the identity in a world of one."""
    info = current()
    if not info.enabled:
        return x.detach().clone()
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / info.world_size


def all_reduce_grads_sum(model: torch.nn.Module) -> None:
    """Sum every parameter gradient over ranks (for use without DDP)."""
    if not current().enabled:
        return
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def all_gather_keep_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` over ranks along dim 0; the local slice keeps its gradient.

    Ranks may hold different numbers of rows (the last batch of an epoch): sizes are
    exchanged first and the tensors padded for the collective, then trimmed.
    """
    info = current()
    if not info.enabled:
        return x
    size = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(info.world_size)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    padded = x.detach()
    if x.shape[0] < longest:
        pad = x.new_zeros((longest - x.shape[0], *x.shape[1:]))
        padded = torch.cat([padded, pad], 0)
    buckets = [torch.empty_like(padded) for _ in range(info.world_size)]
    dist.all_gather(buckets, padded.contiguous())
    parts = [b[:n] for b, n in zip(buckets, counts)]
    parts[info.rank] = x
    return torch.cat(parts, 0)
