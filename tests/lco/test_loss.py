from __future__ import annotations

import inspect
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from genrep.lco.loss import (
    ContrastiveLoss,
    chunked_contrastive_backward,
    full_batch_backward,
    info_nce,
)

# unit vectors in the plane; scores are plain dot products
A = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
P = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
N = torch.tensor([[-1.0, 0.0], [0.8, -0.6]])


def test_info_nce_by_hand_without_negatives():
    tau = 0.5
    # a1.p1 = 1, a1.p2 = 0.6; a2.p1 = 0, a2.p2 = 0.8
    l1 = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(0.6 / tau)))
    l2 = -math.log(math.exp(0.8 / tau) / (math.exp(0 / tau) + math.exp(0.8 / tau)))
    assert info_nce(A, P, temperature=tau).item() == pytest.approx((l1 + l2) / 2, rel=1e-6)


def test_info_nce_by_hand_with_negatives():
    tau = 0.5
    # a1.n1 = -1, a1.n2 = 0.8; a2.n1 = 0, a2.n2 = -0.6: every anchor sees both positives and both negatives
    l1 = -math.log(
        math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(0.6 / tau) + math.exp(-1 / tau) + math.exp(0.8 / tau))
    )
    l2 = -math.log(
        math.exp(0.8 / tau) / (math.exp(0 / tau) + math.exp(0.8 / tau) + math.exp(0 / tau) + math.exp(-0.6 / tau))
    )
    expected = (l1 + l2) / 2
    assert info_nce(A, P, N, temperature=tau).item() == pytest.approx(expected, rel=1e-6)
    for gather in ("none", "local", "full", "global"):  # one process: the modes agree
        assert info_nce(A, P, N, temperature=tau, gather=gather).item() == pytest.approx(expected, rel=1e-6)
    assert ContrastiveLoss(temperature=tau)(A, P, N).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("m", [0, 1, 3])
def test_info_nce_matches_cross_entropy(m):
    g = torch.Generator().manual_seed(m)
    a, p = (F.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=-1) for _ in range(2))
    n = F.normalize(torch.randn(6 * m, 5, generator=g, dtype=torch.float64), dim=-1) if m else None
    cands = p if n is None else torch.cat([p, n])
    # row i: -log softmax of (a_i . c / tau) at the column of p_i
    logits = torch.einsum("id,jd->ij", a, cands) / 0.03
    expected = F.cross_entropy(logits, torch.arange(6))
    per_row = [-(logits[i, i] - torch.logsumexp(logits[i], 0)) for i in range(6)]
    assert torch.allclose(expected, torch.stack(per_row).mean())
    assert torch.allclose(info_nce(a, p, n), expected, rtol=1e-12, atol=0)


def test_default_temperature_is_the_papers():
    for fn in (info_nce, chunked_contrastive_backward, full_batch_backward):
        assert inspect.signature(fn).parameters["temperature"].default == 0.03
        assert inspect.signature(fn).parameters["gather"].default == "global"
    assert ContrastiveLoss().temperature == 0.03


def test_inputs_are_not_renormalised():
    assert info_nce(2 * A, P, temperature=0.5).item() != pytest.approx(info_nce(A, P, temperature=0.5).item())


# --- GradCache -----------------------------------------------------------------------------------------------

B, D_IN = 12, 7
# float64: gradients of size ~10 (1 / tau) are compared to 1e-6, far above the rounding of the summation orders
FEATS = torch.randn(3 * B, D_IN, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
ANCHORS, POSITIVES, NEGATIVES = list(range(B)), list(range(B, 2 * B)), list(range(2 * B, 3 * B))


def _model(p: float = 0.1) -> torch.nn.Module:
    torch.manual_seed(0)
    layers = [torch.nn.Linear(D_IN, 16), torch.nn.GELU(), torch.nn.Dropout(p), torch.nn.Linear(16, 8)]
    return torch.nn.Sequential(*layers).double()


def _encoder(model):
    # items are opaque indices; the encoder looks their features up
    return lambda idx: F.normalize(model(FEATS[list(idx)]), dim=-1)


def _run(chunk_size: int | None, *, negatives=NEGATIVES, p: float = 0.1, seed: int = 1, tau: float = 0.05):
    model = _model(p)
    model.train()
    torch.manual_seed(seed)
    kw = {"temperature": tau}
    if chunk_size is None:
        loss = full_batch_backward(_encoder(model), ANCHORS, POSITIVES, negatives, **kw)
    else:
        loss = chunked_contrastive_backward(_encoder(model), ANCHORS, POSITIVES, negatives, chunk_size=chunk_size, **kw)
    after = torch.rand(3)  # where the caller's RNG stream continues
    return loss, [q.grad.clone() for q in model.parameters()], after


def _max_err(xs, ys):
    return max(float((x - y).abs().max()) for x, y in zip(xs, ys))


@pytest.mark.parametrize("negatives", [NEGATIVES, None])
def test_chunked_equals_full_batch_with_dropout(negatives):
    # chunks of 5, 5, 2 per side; dropout active. The CPU generator draws dropout masks per element in order,
    # so one [12, h] mask is the three chunk masks: the chunked path must replay them in its second pass.
    full_loss, full_grads, full_after = _run(None, negatives=negatives)
    loss, grads, after = _run(5, negatives=negatives)
    assert loss == pytest.approx(full_loss, abs=1e-6)
    assert _max_err(grads, full_grads) < 1e-6
    assert torch.equal(after, full_after)  # the re-encoding pass leaves no trace in the RNG stream
    # dropout mattered: without it the gradients differ
    assert _max_err(_run(None, negatives=negatives, p=0.0)[1], full_grads) > 1e-3


def test_chunked_with_big_chunks_is_the_full_path():
    full_loss, full_grads, full_after = _run(None)
    for chunk_size in (B, 100):
        loss, grads, after = _run(chunk_size)
        assert loss == full_loss
        assert _max_err(grads, full_grads) < 1e-6
        assert torch.equal(after, full_after)


def test_chunked_several_negatives_and_no_sync():
    calls = []

    class Ctx:
        def __enter__(self):
            calls.append("enter")

        def __exit__(self, *exc):
            return False

    model = _model(0.0)
    negatives = NEGATIVES + list(range(B))  # two negatives per anchor
    full = full_batch_backward(_encoder(model), ANCHORS, POSITIVES, negatives)
    full_grads = [q.grad.clone() for q in model.parameters()]
    model.zero_grad()
    loss = chunked_contrastive_backward(_encoder(model), ANCHORS, POSITIVES, negatives, chunk_size=7, no_sync=Ctx)
    assert loss == pytest.approx(full, abs=1e-6)
    assert _max_err([q.grad for q in model.parameters()], full_grads) < 1e-6
    assert len(calls) == 2 + 2 + 4 - 1  # every chunk but the last runs inside no_sync


def test_invalid_inputs():
    enc = _encoder(_model())
    with pytest.raises(ValueError, match="same length"):
        chunked_contrastive_backward(enc, ANCHORS, POSITIVES[:-1], None, chunk_size=4)
    with pytest.raises(ValueError, match="same length"):
        full_batch_backward(enc, ANCHORS, POSITIVES[:-1], None)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_contrastive_backward(enc, ANCHORS, POSITIVES, None, chunk_size=0)
    with pytest.raises(ValueError, match="multiple"):
        chunked_contrastive_backward(enc, ANCHORS, POSITIVES, NEGATIVES[:-1], chunk_size=4)
    with pytest.raises(ValueError, match="empty"):
        full_batch_backward(enc, [], [], None)
    with pytest.raises(ValueError, match="gather"):
        chunked_contrastive_backward(enc, ANCHORS, POSITIVES, None, chunk_size=4, gather="all")
    with pytest.raises(ValueError, match="encode must return"):
        full_batch_backward(lambda items: torch.zeros(1, 3), ANCHORS, POSITIVES, None)
    with pytest.raises(ValueError, match="gather"):
        info_nce(A, P, gather="reference")
    with pytest.raises(ValueError, match="temperature"):
        ContrastiveLoss(temperature=0.0)
    with pytest.raises(ValueError, match="anchor and positive"):
        info_nce(A, P[:1])
    with pytest.raises(ValueError, match="negative"):
        info_nce(A, P, torch.zeros(2, 3))


@pytest.mark.slow  # torchrun, 2 processes
def test_two_process_gather_and_grad_cache(tmp_path):
    script = Path(__file__).with_name("scripts_loss_ddp.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        str(tmp_path / "r.json"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["loss_err"] < 1e-6  # (a) mean over ranks of the "local" losses = full-batch loss
    assert r["ddp_full_grad_err"] < 1e-6 and r["allreduce_full_grad_err"] < 1e-6  # (b)
    assert r["chunked_full_grad_err"] < 1e-6 and r["chunked_loss_err"] < 1e-6  # (c)
    assert r["chunked_local_vs_plain_local_err"] < 1e-6
    assert r["uneven_loss_err"] < 1e-6 and r["uneven_full_grad_err"] < 1e-6  # 5 / 3 rows per rank
    assert r["ddp_local_grad_err"] > 1e-3  # (d) the "local" gather drops the other ranks' loss terms
    # (e) the default, the reference's: each rank's loss is the global batch's, the gradient full-batch / world size
    assert r["global_loss_err"] < 1e-6 and r["ddp_global_grad_err"] < 1e-6
    assert r["chunked_global_loss_err"] < 1e-6 and r["chunked_global_grad_err"] < 1e-6
    assert r["uneven_global_loss_err"] < 1e-6 and r["uneven_global_grad_err"] < 1e-6
