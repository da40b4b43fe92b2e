"""Seeding, device choice and a description of the machine a result came from."""

from __future__ import annotations

import hashlib
import os
import platform
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """A CPU generator for one training step, derived from (seed, rank, step).

    Drawing a step's batch and noise from it makes a resumed run repeat the interrupted one
    exactly, whatever the global RNG state, and gives every DDP rank different draws.
    """
    digest = hashlib.sha256(f"{seed}/{rank}/{step}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def pick_device(preference: str = "auto") -> torch.device:
    """``auto``: CUDA when present (the local rank's GPU under torchrun), else CPU."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        from genrep.core.errors import UserError

        raise UserError(f"device '{preference}' requested but CUDA is not available")
    return device


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, object]:
    """Versions and hardware, for reports and benchmark pages."""
    info: dict[str, object] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info
