"""torchrun --nproc_per_node 2 scripts_dit_ddp_step.py OUT: two train-dit steps under DDP (gloo), each rank
on its half of a fixed batch, against the same steps in one process on the whole batch."""

import json
import sys

import torch

from genrep.core.distributed import cleanup, init_distributed
from genrep.core.ema import EMA
from genrep.rae.dit import DiT, dit_config
from genrep.rae.train_dit import train_step

info = init_distributed()
torch.set_num_threads(1)
cfg = dit_config(
    "ditdh-tiny",
    in_channels=8,
    grid=2,
    num_classes=3,
    class_dropout=0.0,
    width=32,
    depth=2,
    heads=2,
    head_width=48,
    head_depth=1,
    head_heads=2,
)
g = torch.Generator().manual_seed(0)
batches = [
    (
        torch.randn(8, 8, 2, 2, generator=g),
        torch.randint(0, 3, (8,), generator=g),
        torch.rand(8, generator=g),
        torch.randn(8, 8, 2, 2, generator=g),
    )
    for _ in range(2)
]


def make():
    torch.manual_seed(0)
    model = DiT(cfg)
    for p in model.parameters():  # leave the adaLN-Zero init, so every parameter gets a gradient
        p.data.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)


model, opt = make()
ema = EMA(model, 0.9)
net = torch.nn.parallel.DistributedDataParallel(model)
norms = []
for x, y, t, eps in batches:
    sl = slice(4 * info.rank, 4 * info.rank + 4)
    _, norm = train_step(net, model, opt, x[sl], y[sl], 1.5, None, grad_clip=0.05, t=t[sl], noise=eps[sl])
    ema.update(model)
    norms.append(norm)  # the global (all-reduced) gradient norm before clipping

if info.is_main:
    ref, ref_opt = make()
    ref_ema = EMA(ref, 0.9)
    ref_norms = []
    for x, y, t, eps in batches:
        ref_norms.append(train_step(ref, ref, ref_opt, x, y, 1.5, None, grad_clip=0.05, t=t, noise=eps)[1])
        ref_ema.update(ref)
    err = max(float((a - b).detach().abs().max()) for a, b in zip(model.parameters(), ref.parameters()))
    moved = max(float((a - b).detach().abs().max()) for a, b in zip(model.parameters(), make()[0].parameters()))
    ema_err = max(
        float((a - b).detach().abs().max()) for a, b in zip(ema.module.parameters(), ref_ema.module.parameters())
    )
    norm_err = max(abs(a - b) / b for a, b in zip(norms, ref_norms))
    json.dump(
        {"param_err": err, "ema_err": ema_err, "moved": moved, "norm_rel_err": norm_err, "norms": norms},
        open(sys.argv[1], "w"),
    )
cleanup()
