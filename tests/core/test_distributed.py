import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genrep.core.distributed import DistInfo, all_gather_keep_grad, all_reduce_mean, init_distributed

SCRIPT = Path(__file__).parent / "scripts" / "gather_grads.py"


def test_single_process_helpers_are_identities():
    assert init_distributed() == DistInfo()
    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather_keep_grad(x) is x
    assert torch.equal(all_reduce_mean(x), x.detach())


@pytest.mark.slow  # torchrun, 2 processes
def test_two_gloo_processes_match_one_process_on_the_whole_batch(tmp_path):
    out = tmp_path / "result.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(SCRIPT),
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and result["backend"] == "gloo"
    assert result["rows"] == 8  # uneven shards 3 + 5 gathered
    assert result["grad_scale"] > 1e-3  # the comparison is not between zeros
    assert result["plain_max_abs_err"] < 1e-5
    assert result["ddp_max_abs_err"] < 1e-5
