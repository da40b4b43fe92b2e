"""torchrun --nproc_per_node 2 scripts_loss_ddp.py OUT: the LCO InfoNCE under DDP (gloo) on a fixed global batch
of 8 anchors / 8 positives / 8 negatives, each rank on its half (and on an uneven 5/3 split), against one process
on the whole batch, for every gather mode. Rank 0 writes the errors to OUT as JSON."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F

from genrep.core.distributed import cleanup, init_distributed
from genrep.lco.loss import chunked_contrastive_backward, full_batch_backward, info_nce

TAU = 0.05  # a little softer than 0.03, so that every candidate carries some gradient

info = init_distributed()
torch.set_num_threads(1)
torch.set_default_dtype(torch.float64)  # gradients of size ~10 (tau): compare them far below float32 rounding
g = torch.Generator().manual_seed(0)
A, P, N = (torch.randn(8, 6, generator=g) for _ in range(3))


def make() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.GELU(), torch.nn.Linear(16, 8))


def encoder(model):
    return lambda rows: F.normalize(model(torch.stack(list(rows))), dim=-1)


def grads(model) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


def err(xs, ys) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(xs, ys))


def split(rows: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    start = sum(sizes[: info.rank])
    return list(rows[start : start + sizes[info.rank]])


def average_grads(model) -> None:  # what DDP does
    for p in model.parameters():
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad /= info.world_size


# single-process references on the whole batch (gather="none" ignores the process group)
ref = make()
ref_loss = full_batch_backward(encoder(ref), list(A), list(P), list(N), temperature=TAU, gather="none")
ref_grads = grads(ref)


def uneven_reference(sizes: list[int]) -> tuple[float, list[torch.Tensor]]:
    """Gradient of the mean over ranks of each rank's mean loss (each rank's anchors against all candidates)."""
    model = make()
    enc = encoder(model)
    a, c = enc(list(A)), enc(list(P) + list(N))
    per_row = F.cross_entropy(a @ c.T / TAU, torch.arange(8), reduction="none")
    bounds = [0, *torch.tensor(sizes).cumsum(0).tolist()]
    loss = torch.stack([per_row[lo:hi].mean() for lo, hi in zip(bounds, bounds[1:])]).mean()
    loss.backward()
    return float(loss.detach()), grads(model)


out: dict[str, float] = {}
halves = [4, 4]
a, p, n = split(A, halves), split(P, halves), split(N, halves)

# (a) gather="local": the mean of the per-rank losses is the full-batch loss
with torch.no_grad():
    m = make()
    local = info_nce(encoder(m)(a), encoder(m)(p), encoder(m)(n), temperature=TAU, gather="local")
    mean_loss = local.clone()
    dist.all_reduce(mean_loss)
    out["loss_err"] = abs(float(mean_loss) / info.world_size - ref_loss)

# (b) gather="full" through a DDP wrapper: DDP's averaged gradient is the full-batch gradient
for gather in ("full", "local"):
    model = make()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    full_batch_backward(encoder(ddp), a, p, n, temperature=TAU, gather=gather)
    out[f"ddp_{gather}_grad_err"] = err(grads(model), ref_grads)  # (d) for "local": recorded, not asserted

# same with explicit averaging of the gradients (no DDP)
model = make()
full_batch_backward(encoder(model), a, p, n, temperature=TAU, gather="full")
average_grads(model)
out["allreduce_full_grad_err"] = err(grads(model), ref_grads)

# (c) the chunked path under DDP (chunks of 3 and 1 per side, one all-reduce thanks to no_sync)
model = make()
ddp = torch.nn.parallel.DistributedDataParallel(model)
loss = chunked_contrastive_backward(
    encoder(ddp), a, p, n, chunk_size=3, temperature=TAU, gather="full", no_sync=ddp.no_sync
)
out["chunked_full_grad_err"] = err(grads(model), ref_grads)
out["chunked_loss_err"] = abs(loss - float(local))
# the chunked "local" path equals the plain "local" path under DDP
model = make()
ddp = torch.nn.parallel.DistributedDataParallel(model)
chunked_contrastive_backward(encoder(ddp), a, p, n, chunk_size=3, temperature=TAU, gather="local", no_sync=ddp.no_sync)
local_chunked = grads(model)
model = make()
ddp = torch.nn.parallel.DistributedDataParallel(model)
full_batch_backward(encoder(ddp), a, p, n, temperature=TAU, gather="local")
out["chunked_local_vs_plain_local_err"] = err(local_chunked, grads(model))

# (e) gather="global" (the reference): every rank's loss is the global batch's; DDP's averaged gradient is the
# full-batch gradient divided by the world size, through the plain and the chunked path
model = make()
ddp = torch.nn.parallel.DistributedDataParallel(model)
g_loss = full_batch_backward(encoder(ddp), a, p, n, temperature=TAU, gather="global")
out["global_loss_err"] = abs(g_loss - ref_loss)
out["ddp_global_grad_err"] = err(grads(model), [g / info.world_size for g in ref_grads])
model = make()
ddp = torch.nn.parallel.DistributedDataParallel(model)
g_loss = chunked_contrastive_backward(
    encoder(ddp), a, p, n, chunk_size=3, temperature=TAU, gather="global", no_sync=ddp.no_sync
)
out["chunked_global_loss_err"] = abs(g_loss - ref_loss)
out["chunked_global_grad_err"] = err(grads(model), [g / info.world_size for g in ref_grads])

# uneven ranks (5 / 3 rows per side): padding in the "full" gather, offsets in both modes
sizes = [5, 3]
a, p, n = split(A, sizes), split(P, sizes), split(N, sizes)
uneven_loss, uneven_grads = uneven_reference(sizes)
model = make()
l_local = full_batch_backward(encoder(model), a, p, n, temperature=TAU, gather="local")
model = make()
l_full = chunked_contrastive_backward(encoder(model), a, p, n, chunk_size=2, temperature=TAU, gather="full")
average_grads(model)
both = torch.tensor([l_local, l_full], dtype=torch.float64)
dist.all_reduce(both)
out["uneven_loss_err"] = float((both / info.world_size - uneven_loss).abs().max())
out["uneven_full_grad_err"] = err(grads(model), uneven_grads)
model = make()  # "global" with uneven ranks: still the full-batch loss, and its gradient / world size
l_global = chunked_contrastive_backward(encoder(model), a, p, n, chunk_size=2, temperature=TAU, gather="global")
average_grads(model)
out["uneven_global_loss_err"] = abs(l_global - ref_loss)
out["uneven_global_grad_err"] = err(grads(model), [g / info.world_size for g in ref_grads])

# the per-rank errors: the worst of both ranks
errs = torch.tensor(list(out.values()), dtype=torch.float64)
dist.all_reduce(errs, op=dist.ReduceOp.MAX)
if info.is_main:
    with open(sys.argv[1], "w") as f:
        json.dump(dict(zip(out, errs.tolist())), f)
cleanup()
