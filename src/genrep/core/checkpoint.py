"""Training checkpoints for exact resume, one safetensors file each.

A checkpoint holds the model, and optionally the optimizer, the EMA model, the LR scheduler and
every random number generator (torch CPU, CUDA, NumPy, Python). Tensors are stored as
safetensors entries under prefixes (``model.``, ``ema.``, ``optim.<optimizer>.<i>.<name>``, ``rng.``);
everything else (optimizer hyper-parameters, scheduler state, step, user extras) is JSON in the
safetensors metadata. Writes are atomic (temporary file + rename), so a process killed at any
moment leaves either the previous checkpoint set or the new one, never a torn file. Restoring
all of it makes a resumed CPU run bitwise identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from genrep.core.errors import UserError

_NAME = "step-{step:08d}.safetensors"
_PATTERN = re.compile(r"step-(\d{8})\.safetensors$")
# what save_checkpoint's mkstemp leaves behind when the process dies mid-write
_TEMP_PATTERN = re.compile(r"\.step-\d{8}\.safetensors\..*\.tmp$")


def _plain(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    # clone() breaks storage sharing (tied weights), which safetensors refuses to save
    return {f"{prefix}{k}": v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}


def _split_optimizer(state: dict, name: str) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta = {}, {"param_groups": state["param_groups"], "state": {}}
    for idx, entry in state["state"].items():
        scalars = {}
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{name}.{idx}.{key}"] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars[key] = value
        meta["state"][str(idx)] = scalars
    return tensors, meta


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict, name: str) -> dict:
    state: dict[int, dict[str, Any]] = {int(i): dict(s) for i, s in meta["state"].items()}
    prefix = f"optim.{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            idx, pname = key[len(prefix) :].split(".", 1)
            state.setdefault(int(idx), {})[pname] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _named(obj: Any) -> dict[str, Any]:
    """A single optimizer / scheduler is stored under the name "main"; a dict keeps its names."""
    if obj is None:
        return {}
    return dict(obj) if isinstance(obj, dict) else {"main": obj}


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """All generator states: tensors for safetensors, the rest as JSON."""
    np_state = np.random.get_state()
    assert isinstance(np_state, tuple)  # the legacy form (the default)
    tensors = {
        "rng.torch": torch.get_rng_state(),
        "rng.numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    py = random.getstate()
    meta = {
        "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py[0], list(py[1]), py[2]],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(tensors["rng.cuda"]))
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["rng.numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_checkpoint(
    path: str | Path,
    *,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | dict[str, torch.optim.Optimizer] | None = None,
    ema: Any | None = None,
    scheduler: Any | None = None,
    extra: dict | None = None,
    save_rng: bool = True,
) -> Path:
    """Write one checkpoint file atomically.

    ``optimizer`` and ``scheduler`` may be single objects or dicts of named ones (e.g. a
    generator's and a discriminator's); ``ema`` is anything with ``state_dict()``.
    """
    path = Path(path)
    tensors = _plain(model.state_dict(), "model.")
    meta: dict[str, Any] = {"step": step, "extra": extra or {}}
    if optimizer is not None:
        meta["optimizer"] = {}
        for name, opt in _named(optimizer).items():
            t, m = _split_optimizer(opt.state_dict(), name)
            tensors.update(t)
            meta["optimizer"][name] = m
    if ema is not None:
        ema_sd = ema.state_dict()
        tensors.update(_plain(ema_sd["model"], "ema."))
        meta["ema"] = {k: v for k, v in ema_sd.items() if k != "model"}
    if scheduler is not None:
        meta["scheduler"] = {name: sch.state_dict() for name, sch in _named(scheduler).items()}
    if save_rng:
        t, m = rng_state()
        tensors.update(t)
        meta["rng"] = m
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"genrep": json.dumps(meta)})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | dict[str, torch.optim.Optimizer] | None = None,
    ema: Any | None = None,
    scheduler: Any | None = None,
    restore_rng: bool = True,
    map_location: str | torch.device = "cpu",
) -> dict:
    """Restore whatever objects are given; returns the metadata (``step``, ``extra``, ...)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "ema": {}, "optim": {}, "rng": {}}
    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            meta = json.loads(f.metadata()["genrep"])
            for key in f.keys():
                group, rest = key.split(".", 1)
                groups[group][rest if group in ("model", "ema") else key] = f.get_tensor(key)
    except (OSError, KeyError, ValueError, SafetensorError) as err:
        raise UserError(f"{path}: not a genrep checkpoint ({type(err).__name__})") from None
    if model is not None:
        model.load_state_dict(groups["model"])
    for name, opt in _named(optimizer).items():
        if name not in meta.get("optimizer", {}):
            raise UserError(f"{path}: checkpoint has no state for optimizer '{name}'")
        opt.load_state_dict(_join_optimizer(groups["optim"], meta["optimizer"][name], name))
    if ema is not None:
        if "ema" not in meta:
            raise UserError(f"{path}: checkpoint has no EMA state")
        ema.load_state_dict({"model": groups["ema"], **meta["ema"]})
    for name, sch in _named(scheduler).items():
        if name in meta.get("scheduler", {}):
            sch.load_state_dict(meta["scheduler"][name])
    if restore_rng and "rng" in meta:
        set_rng_state(groups["rng"], meta["rng"])
    return meta


def read_metadata(path: str | Path) -> dict:
    """The JSON metadata of a checkpoint (``step``, ``extra``, ...) without reading any tensor."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return json.loads(f.metadata()["genrep"])
    except (OSError, KeyError, TypeError, ValueError, SafetensorError) as err:
        raise UserError(f"{path}: not a genrep checkpoint ({type(err).__name__})") from None


def load_model_weights(path: str | Path, prefix: str = "model") -> dict[str, torch.Tensor]:
    """Only the model (or ``prefix="ema"``) weights of a checkpoint, as a state dict."""
    out = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for key in f.keys():
            if key.startswith(prefix + "."):
                out[key[len(prefix) + 1 :]] = f.get_tensor(key)
    return out


class Checkpointer:
    """Numbered checkpoints in one directory: save every N steps, keep the last K, find the latest."""

    def __init__(self, directory: str | Path, keep_last: int = 2):
        self.dir = Path(directory)
        self.keep_last = keep_last

    def all(self) -> list[tuple[int, Path]]:
        if not self.dir.is_dir():
            return []
        found = []
        for p in self.dir.iterdir():
            m = _PATTERN.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1][1] if found else None

    def stale_temporaries(self) -> list[Path]:
        """Temporary files of checkpoint writes that were cut short (the process was killed)."""
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.iterdir() if _TEMP_PATTERN.match(p.name) and p.is_file())

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete :meth:`stale_temporaries`; call it on rank 0 only, when a run starts (no write is
        in flight then: ``--out`` is locked to one process). Returns the removed paths."""
        removed = self.stale_temporaries()
        for p in removed:
            p.unlink(missing_ok=True)
        return removed

    def remove_all(self) -> None:
        """Delete every checkpoint (and stale temporary file) of this directory, nothing else."""
        for _, p in self.all():
            p.unlink(missing_ok=True)
        self.remove_stale_temporaries()

    def save(self, step: int, **objects: Any) -> Path:
        path = save_checkpoint(self.dir / _NAME.format(step=step), step=step, **objects)
        if self.keep_last > 0:
            for _, old in self.all()[: -self.keep_last]:
                old.unlink(missing_ok=True)
        return path

    def resume(self, **objects: Any) -> dict | None:
        """Load the latest checkpoint into ``objects``; ``None`` when there is none."""
        latest = self.latest()
        return None if latest is None else load_checkpoint(latest, **objects)
