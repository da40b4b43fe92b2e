"""python scripts_train_grad_ddp.py LM DATA OUT (one process) or torchrun --nproc_per_node 2 ... (two ranks, gloo):
the trainer's own first step (``genrep.lco.train.step_backward`` on the model ``_build_model`` makes, DDP-wrapped
under torchrun) on a tiny causal LM, with the default gather; rank 0 writes the trainable gradients (after DDP's
averaging) and the loss to OUT as safetensors."""

from __future__ import annotations

import sys

import torch
from safetensors.torch import save_file

from genrep.core.distributed import cleanup, init_distributed
from genrep.lco.train import TrainConfig, _build_model, load_training_rows, step_backward

lm, data, out = sys.argv[1:4]
chunk = int(sys.argv[4]) if len(sys.argv) > 4 else 0
info = init_distributed()
torch.set_num_threads(1)
cfg = TrainConfig(backbone=lm, data=data, batch_size=8, chunk_size=chunk, device="cpu")
cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout = 4, 8, 0.0  # no dropout: the ranks' masks would differ
torch.manual_seed(0)  # the same LoRA initialisation on every rank (DDP also broadcasts it)
emb, params, ddp = _build_model(cfg, torch.device("cpu"), info)
rows = load_training_rows(cfg)
loss = step_backward(cfg, rows, emb, ddp, 0, info)
named = {n: p.grad.detach().clone() for n, p in emb.backbone.model.named_parameters() if p.requires_grad}
if info.is_main:
    save_file({**named, "loss": torch.tensor([loss], dtype=torch.float64)}, out)
cleanup()
