"""A small but complete training loop for the resume test: dropout (torch RNG), numpy noise,
AdamW, warmup + cosine LR, EMA, gradient clipping and a checkpoint every few steps.

usage: train_loop.py OUT STEPS [--resume] [--slow SECONDS] [--stall-at STEP]
Writes OUT/final.safetensors with the model and EMA parameters at the end. With --stall-at the
loop stops before that step and waits to be killed.
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from genrep.core.checkpoint import Checkpointer
from genrep.core.ema import EMA
from genrep.core.lr_schedule import warmup_cosine
from genrep.core.runtime import seed_everything

out, steps = Path(sys.argv[1]), int(sys.argv[2])
resume = "--resume" in sys.argv
slow = float(sys.argv[sys.argv.index("--slow") + 1]) if "--slow" in sys.argv else 0.0
stall_at = int(sys.argv[sys.argv.index("--stall-at") + 1]) if "--stall-at" in sys.argv else None

torch.set_num_threads(1)
seed_everything(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Dropout(0.2), torch.nn.Linear(32, 1))
opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.01)
sched = warmup_cosine(opt, warmup=5, total=steps, final_ratio=0.1)
ema = EMA(model, decay=0.9)
ckpt = Checkpointer(out / "checkpoints", keep_last=2)
start = 0
if resume:
    meta = ckpt.resume(model=model, optimizer=opt, ema=ema, scheduler=sched)
    if meta is not None:
        start = meta["step"]
for step in range(start, steps):
    while step == stall_at:  # until SIGKILL
        time.sleep(1)
    x = torch.randn(16, 8)
    y = x.sum(1, keepdim=True) + torch.from_numpy(np.random.randn(16, 1).astype(np.float32)) * 0.1
    loss = torch.nn.functional.mse_loss(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    ema.update(model)
    if (step + 1) % 5 == 0:
        ckpt.save(step + 1, model=model, optimizer=opt, ema=ema, scheduler=sched)
        print(f"checkpoint {step + 1}", flush=True)
    time.sleep(slow)
final = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
final.update({f"ema.{k}": v.contiguous() for k, v in ema.module.state_dict().items()})
save_file(final, str(out / "final.safetensors"))
