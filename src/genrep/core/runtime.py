"""Seeding, device choice and a description of the machine a result came from."""

from __future__ import annotations

import hashlib
import os
import platform
import random

import numpy as np
import torch

from genrep.core.errors import UserError


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


# ---------------------------------------------------------------------------------------------- precision
#: bf16 autocast is chosen by ``precision: auto`` only where the probe measures it at least this much faster.
BF16_MIN_SPEEDUP = 1.5


def _time_matmul(a: torch.Tensor, b: torch.Tensor, reps: int) -> float:
    """Median seconds of ``a @ b`` over ``reps`` runs (after one warm-up), synchronising on CUDA."""
    import time

    def once() -> float:
        if a.is_cuda:
            torch.cuda.synchronize(a.device)
        t0 = time.perf_counter()
        (a @ b).sum().item()
        return time.perf_counter() - t0

    once()
    return float(np.median([once() for _ in range(reps)]))


def probe_bf16_speedup(device: torch.device, size: int | None = None, reps: int = 3) -> dict:
    """How much faster a bf16 matmul is than an fp32 one on ``device``: a square matmul (``size``
    512 on CPU, 4096 on CUDA), the median of ``reps`` runs each. Returns ``{"size", "fp32_ms",
    "bf16_ms", "speedup"}`` (speedup = fp32 time / bf16 time). CPUs differ: with AVX512-BF16 or AMX a
    bf16 matmul is several times faster, without them it is emulated and many times slower, so the
    choice is measured, never assumed. A bf16 run slower than the fp32 median ends the probe at once,
    so it costs well under a second either way."""
    size = size or (4096 if device.type == "cuda" else 512)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device)
    b = torch.randn(size, size, generator=gen).to(device)
    fp32 = _time_matmul(a, b, reps)
    a16, b16 = a.bfloat16(), b.bfloat16()
    bf16 = _time_matmul(a16, b16, 1)
    if bf16 < fp32:
        bf16 = _time_matmul(a16, b16, reps)
    return {
        "size": size,
        "fp32_ms": float(f"{fp32 * 1e3:.4g}"),
        "bf16_ms": float(f"{bf16 * 1e3:.4g}"),
        "speedup": float(f"{fp32 / max(bf16, 1e-12):.4g}"),
    }


def resolve_precision(requested: str, device: torch.device, probe=probe_bf16_speedup) -> tuple[str, dict]:
    """The precision a run uses, and why. ``fp32`` and ``bf16`` are taken as given; ``auto`` runs the
    matmul probe (:func:`probe_bf16_speedup`) and picks bf16 autocast only where it is at least
    :data:`BF16_MIN_SPEEDUP` times faster than fp32 on this device. The returned record
    (``requested``, ``chosen``, ``reason`` and the probe's numbers when it ran) goes into the run's log
    and metrics.json."""
    if requested in ("fp32", "bf16"):
        return requested, {"requested": requested, "chosen": requested, "reason": "set by the user or the config"}
    if requested != "auto":
        raise UserError(f"precision '{requested}': expected one of auto, fp32, bf16")
    result = probe(device)
    chosen = "bf16" if result["speedup"] >= BF16_MIN_SPEEDUP else "fp32"
    reason = (
        f"auto: a bf16 matmul ran {result['speedup']:.2f}x as fast as fp32 on {device.type} "
        f"({'>=' if chosen == 'bf16' else '<'} {BF16_MIN_SPEEDUP}x), so {chosen}"
    )
    return chosen, {"requested": "auto", "chosen": chosen, "reason": reason, **result}
