"""torchrun --nproc_per_node 2 scripts_stats_ddp.py OUT: RunningStats over uneven shards, merged across ranks."""

import json
import sys

import torch

from genrep.core.distributed import cleanup, init_distributed
from genrep.rae.stats import RunningStats

info = init_distributed()
z = torch.randn(37, 3, 2, 2, generator=torch.Generator().manual_seed(0)) * 2 + 1
mine = z[:15] if info.rank == 0 else z[15:]
stats = RunningStats((3, 2, 2))
for chunk in torch.split(mine, 4):
    stats.update(chunk)
stats.all_reduce()
err_mean = float((stats.mean - z.double().mean(0)).abs().max())
err_var = float((stats.var - z.double().var(0, unbiased=False)).abs().max())
if info.is_main:
    json.dump({"count": stats.count, "err_mean": err_mean, "err_var": err_var}, open(sys.argv[1], "w"))
cleanup()
