"""Exponential moving average of a model's weights (the EMA model used for sampling/evaluation).

After each optimizer step: ``theta_ema <- d * theta_ema + (1 - d) * theta`` with ``d = decay``.
With ``warmup=True`` the decay ramps up as ``d_t = min(decay, (1 + t) / (10 + t))`` after t
updates (the usual EMA warm-up), so a short run's EMA is not dominated by the initial weights
(0.9978^400 = 0.41); from a few thousand updates on it is the plain EMA.
Buffers (e.g. BatchNorm statistics) are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch


class EMA:
    """Holds ``module``, a frozen copy of the model whose weights are the moving average."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.9999, warmup: bool = False):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        t = self.num_updates
        return min(self.decay, (1.0 + t) / (10.0 + t))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = self.current_decay()
        ema_params = dict(self.module.named_parameters())
        pairs = [(ema_params[name], p.detach()) for name, p in model.named_parameters()]
        if pairs:  # one multi-tensor lerp: the same arithmetic as a loop of lerp_, fewer kernel launches
            torch._foreach_lerp_([e for e, _ in pairs], [p for _, p in pairs], 1.0 - d)
        ema_buffers = dict(self.module.named_buffers())
        for name, b in model.named_buffers():
            ema_buffers[name].copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {
            "model": self.module.state_dict(),
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.decay = float(state["decay"])
        self.warmup = bool(state.get("warmup", False))
        self.num_updates = int(state["num_updates"])
