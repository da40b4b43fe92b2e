"""Run under torchrun with 2 CPU processes (gloo): compare the distributed gradient of an
InfoNCE loss over gathered embeddings with the single-process gradient on the whole batch.

usage: torchrun --nproc_per_node 2 gather_grads.py OUT_JSON
Rank r holds rows sizes[r] of the batch (uneven on purpose). Two ways are checked:
  plain: all_gather_keep_grad + loss on the full batch + sum of gradients over ranks;
  ddp:   the same inside DistributedDataParallel (mean over ranks) with the loss times world size.
"""

import json
import sys

import torch
import torch.nn.functional as F

from genrep.core.distributed import all_gather_keep_grad, all_reduce_grads_sum, cleanup, init_distributed

SIZES = [3, 5]


def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))


def info_nce(q, d, temperature=0.05):
    q, d = F.normalize(q, dim=-1), F.normalize(d, dim=-1)
    logits = q @ d.T / temperature
    return F.cross_entropy(logits, torch.arange(len(q)))


def main():
    info = init_distributed()
    g = torch.Generator().manual_seed(1)
    queries = torch.randn(sum(SIZES), 6, generator=g)
    docs = queries + 0.3 * torch.randn(sum(SIZES), 6, generator=g)
    lo = sum(SIZES[: info.rank])
    hi = lo + SIZES[info.rank]

    # single process on the concatenated batch (every rank computes it, for comparison)
    ref = make_model()
    info_nce(ref(queries), ref(docs)).backward()
    ref_grads = [p.grad.clone() for p in ref.parameters()]

    # plain: gather with local gradient, full-batch loss, sum of gradients over ranks
    model = make_model()
    q = all_gather_keep_grad(model(queries[lo:hi]))
    d = all_gather_keep_grad(model(docs[lo:hi]))
    info_nce(q, d).backward()
    all_reduce_grads_sum(model)
    plain = max(float((p.grad - r).abs().max()) for p, r in zip(model.parameters(), ref_grads))

    # DDP: gradients are averaged over ranks, so scale the loss by the world size
    ddp = torch.nn.parallel.DistributedDataParallel(make_model())
    q = all_gather_keep_grad(ddp(queries[lo:hi]))
    d = all_gather_keep_grad(ddp.module(docs[lo:hi]))
    (info_nce(q, d) * info.world_size).backward()
    ddp_err = max(float((p.grad - r).abs().max()) for p, r in zip(ddp.parameters(), ref_grads))

    gathered_rows = q.shape[0]
    if info.is_main:
        with open(sys.argv[1], "w") as f:
            json.dump(
                {
                    "world_size": info.world_size,
                    "backend": info.backend,
                    "rows": gathered_rows,
                    "plain_max_abs_err": plain,
                    "ddp_max_abs_err": ddp_err,
                    "grad_scale": max(float(r.abs().max()) for r in ref_grads),
                },
                f,
            )
    cleanup()


if __name__ == "__main__":
    main()
